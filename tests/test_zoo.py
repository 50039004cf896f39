import importlib

import pytest
import torch

from segnas.cost import count_parameters
from segnas.errors import SegnasError
from segnas.zoo import MODELS, build_model

MODULES = {"fast_scnn": "fast_scnn", "enet": "enet", "bisenetv2": "bisenetv2", "stdc1_seg": "stdc",
           "ddrnet_23_slim": "ddrnet", "pp_liteseg_t": "pp_liteseg", "mobilenetv2_deeplabv3": "mobilenetv2"}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registered_model_matches_its_published_parameter_count(name):
    module = importlib.import_module(f"segnas.zoo.{MODULES[name]}")
    ours = count_parameters(build_model(name, 19))
    assert abs(ours - module.PUBLISHED_PARAMS) / module.PUBLISHED_PARAMS < 0.05, (ours, module.PUBLISHED_PARAMS_SOURCE)


def test_unknown_model_and_bad_option_are_user_errors():
    with pytest.raises(SegnasError, match="nope"):
        build_model("nope", 3)
    with pytest.raises(SegnasError, match="model.options"):
        build_model("fast_scnn", 3, nonsense=1)


def test_fast_scnn_uneven_pyramid_pooling_exports_with_the_fast_exporter(tmp_path):
    model = build_model("fast_scnn", 4, width=0.5).eval()
    x = torch.randn(1, 3, 96, 160)  # 1/32 map is 3x5: bins 2, 3, 6 do not divide it
    torch.onnx.export(model, (x,), str(tmp_path / "m.onnx"), dynamo=False, opset_version=17)
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        assert abs(out - model(x).numpy()).max() < 1e-4
