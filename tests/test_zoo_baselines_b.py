"""STDC1-Seg, DDRNet-23-slim and PP-LiteSeg-T: published size, any input size, train/eval outputs,
backward, and ONNX export checked against onnxruntime."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
import torch

from segnas.engine.losses import SegmentationLoss
from segnas.errors import SegnasError

from segnas.cost.params import count_parameters
from segnas.zoo import ddrnet, pp_liteseg, stdc

NETS = [
    pytest.param(stdc, stdc.STDCSeg, id="stdc1_seg"),
    pytest.param(ddrnet, ddrnet.DDRNet, id="ddrnet_23_slim"),
    pytest.param(pp_liteseg, pp_liteseg.PPLiteSeg, id="pp_liteseg_t"),
]


@pytest.mark.parametrize("module, cls", NETS)
def test_deployed_parameter_count_matches_published(module, cls):
    model = cls(num_classes=19)
    deployed = count_parameters(model)
    assert module.PUBLISHED_PARAMS_SOURCE.strip()
    assert abs(deployed - module.PUBLISHED_PARAMS) <= 0.05 * module.PUBLISHED_PARAMS, (
        f"{deployed:,} deployed parameters vs {module.PUBLISHED_PARAMS:,} ({module.PUBLISHED_PARAMS_SOURCE})")
    # the training-only heads exist and are left out of the deployed count
    assert count_parameters(model, deploy=False) > deployed
    assert count_parameters(cls(num_classes=19, aux=False), deploy=False) == deployed


def test_other_variants_match_their_published_sizes():
    # same sources as the default variants: PaddleSeg model-zoo table (STDC2-Seg50 12.33M),
    # DDRNet paper (DDRNet-23 20.1M)
    assert abs(count_parameters(stdc.STDCSeg(19, "stdc2")) - 12_330_000) <= 0.05 * 12_330_000
    assert abs(count_parameters(ddrnet.DDRNet(19, "23")) - 20_100_000) <= 0.05 * 20_100_000
    for cls in (stdc.STDCSeg, ddrnet.DDRNet, pp_liteseg.PPLiteSeg):
        with pytest.raises(SegnasError, match="model.options: variant: "):
            cls(19, variant="nope")


@pytest.mark.parametrize("module, cls", NETS)
def test_eval_output_matches_odd_input_size(module, cls):
    torch.manual_seed(0)
    model = cls(num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 97, 131))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 5, 97, 131)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("module, cls", NETS)
def test_train_returns_main_and_aux_and_backward_works(module, cls):
    torch.manual_seed(0)
    model = cls(num_classes=5).train()
    x = torch.randn(2, 3, 64, 96)
    out = model(x)
    assert set(out) == ({"out", "aux", "detail"} if isinstance(model, stdc.STDCSeg) else {"out", "aux"})
    assert out["out"].shape == (2, 5, 64, 96)
    assert len(out["aux"]) >= 1
    for a in out["aux"]:
        assert a.shape == (2, 5, 64, 96)
    target = torch.randint(0, 5, (2, 64, 96))
    if isinstance(model, stdc.STDCSeg):  # detail-guidance logits, 1 channel, upsampled like the rest
        assert out["detail"].shape == (2, 1, 64, 96)
    loss, parts = SegmentationLoss()(out, target)
    assert ("detail" in parts) == isinstance(model, stdc.STDCSeg)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"

    plain = cls(num_classes=5, aux=False).train()
    assert isinstance(plain(x), torch.Tensor)


def calibrate_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Give BN running statistics of real activations (fresh ones, mean 0 and variance 1, blow
    up the outputs of deep residual nets in eval mode), so outputs have a trained net's scale."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 3, 64, 96))
    return model.eval()


@pytest.mark.parametrize("module, cls", NETS)
def test_onnx_export_matches_pytorch(module, cls):
    torch.manual_seed(0)
    model = calibrate_batchnorm(cls(num_classes=5))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = model(x).numpy()
    assert expected.std() > 0.05  # outputs large enough for the tolerance below to mean something
    buf = io.BytesIO()
    torch.onnx.export(model.eval(), x, buf, dynamo=False, opset_version=17)
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert got.shape == (1, 5, 64, 96)
    # 1e-4 relative to the output scale: float32 kernels differ between the two runtimes, and
    # the logits reach tens (DDRNet), where an absolute 1e-4 is below float32 accumulation noise
    scale = max(1.0, float(np.abs(expected).max()))
    assert float(np.abs(got - expected).max()) <= 1e-4 * scale
