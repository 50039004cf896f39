"""ENet and BiSeNetV2: published size, any input size, train/eval outputs, backward, ONNX export."""

import importlib

import numpy as np
import pytest
import torch

from segnas.cost.params import count_parameters

NETWORKS = [("segnas.zoo.enet", "ENet"), ("segnas.zoo.bisenetv2", "BiSeNetV2")]
IDS = [cls for _, cls in NETWORKS]


def _load(module_name: str, cls_name: str):
    module = importlib.import_module(module_name)
    return module, getattr(module, cls_name)


@pytest.mark.parametrize("module_name,cls_name", NETWORKS, ids=IDS)
def test_deployed_params_match_published(module_name, cls_name):
    module, cls = _load(module_name, cls_name)
    assert module.PUBLISHED_PARAMS_SOURCE
    n = count_parameters(cls(19))
    assert abs(n - module.PUBLISHED_PARAMS) / module.PUBLISHED_PARAMS < 0.05, (n, module.PUBLISHED_PARAMS)


@pytest.mark.parametrize("module_name,cls_name", NETWORKS, ids=IDS)
def test_aux_heads_excluded_from_deployed_count(module_name, cls_name):
    _, cls = _load(module_name, cls_name)
    torch.manual_seed(0)
    with_aux, without_aux = cls(19, aux=True), cls(19, aux=False)
    assert len(with_aux.aux_heads) > 0 and len(without_aux.aux_heads) == 0
    assert count_parameters(with_aux) == count_parameters(without_aux)
    assert count_parameters(with_aux, deploy=False) > count_parameters(with_aux)


@pytest.mark.parametrize("module_name,cls_name", NETWORKS, ids=IDS)
def test_eval_output_matches_odd_input_size(module_name, cls_name):
    _, cls = _load(module_name, cls_name)
    model = cls(5).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 97, 131))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 5, 97, 131)


@pytest.mark.parametrize("module_name,cls_name", NETWORKS, ids=IDS)
def test_train_outputs_and_backward(module_name, cls_name):
    _, cls = _load(module_name, cls_name)
    torch.manual_seed(0)
    model = cls(5, aux=True).train()
    x = torch.randn(2, 3, 45, 70)
    out = model(x)
    assert isinstance(out, dict) and set(out) == {"out", "aux"}
    assert out["out"].shape == (2, 5, 45, 70)
    assert len(out["aux"]) == len(model.aux_heads) > 0
    assert all(a.shape == (2, 5, 45, 70) for a in out["aux"])
    loss = out["out"].square().mean() + sum(a.square().mean() for a in out["aux"])
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_enet_default_has_no_aux_and_returns_tensor_in_train():
    from segnas.zoo.enet import ENet

    model = ENet(5).train()
    out = model(torch.randn(2, 3, 33, 41))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5, 33, 41)
    out.mean().backward()


@pytest.mark.parametrize("module_name,cls_name", NETWORKS, ids=IDS)
def test_onnx_export_matches_pytorch(module_name, cls_name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    _, cls = _load(module_name, cls_name)
    torch.manual_seed(0)
    model = cls(5).eval()
    # Non-trivial BatchNorm statistics so that the comparison exercises them.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 64, 96)
    path = tmp_path / f"{cls_name}.onnx"
    torch.onnx.export(model, x, str(path), dynamo=False, opset_version=17, input_names=["x"], output_names=["y"])
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy()})[0]
    assert got.shape == expected.shape == (1, 5, 64, 96)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_enet_unpool_matches_torch_max_unpool():
    import torch.nn.functional as F

    from segnas.zoo.enet import max_unpool2x2

    torch.manual_seed(0)
    for shape in [(2, 3, 8, 12), (1, 5, 16, 6)]:
        y = torch.randn(*shape)
        y[..., :4, :4] = 0  # ties: the first maximum wins in both
        _, idx = F.max_pool2d(y, 2, 2, return_indices=True)
        v = torch.randn(idx.shape)
        assert torch.equal(max_unpool2x2(v, idx), F.max_unpool2d(v, idx, 2, 2))
