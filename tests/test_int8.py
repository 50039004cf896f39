"""segnas export --int8: a trained network quantized with ONNX Runtime, calibrated on its data and
kept only when its val mIoU stays within --max-drop of the float graph's."""

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from segnas import SegnasError, api
from segnas.cli.main import app
from segnas.cost.backends import onnxruntime_runner
from segnas.cost.export import export_onnx
from segnas.cost.quantize import onnx_precision
from segnas.data import build_dataset, eval_transforms
from segnas.jobs.bench import Int8Settings, bench_job, export_job
from segnas.training.models import load_trained

TINY = {"model.name": "fast_scnn", "model.options.width": 0.5, "data.name": "synthetic",
        "data.options": {"size": [48, 64], "length": 8}, "data.crop_size": "48x64", "data.base_size": "48x64",
        "max_steps": 20, "threads": 1, "progress": False}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    trained = api.train({**TINY, "out_dir": str(tmp_path_factory.mktemp("int8"))}, recipe="cpu-short", echo=None)
    return str(Path(trained.run_dir) / "checkpoints" / "best.pt")


def miou_by_definition(path: Path, data: str, options: dict, num_classes: int) -> float:
    """Mean over classes present (in labels or predictions) of |pred ∩ label| / |pred ∪ label|,
    counted over every val pixel, of the ONNX file run directly on ONNX Runtime."""
    run = onnxruntime_runner(path, 1, "cpu")
    val = build_dataset(data, None, "val", eval_transforms((48, 64)), **options)
    inter, union = np.zeros(num_classes), np.zeros(num_classes)
    for image, label in (val[i] for i in range(len(val))):
        pred, label = run(image[None].numpy()).argmax(1)[0], label.numpy()
        scored = label != 255
        for c in range(num_classes):
            p, t = (pred == c) & scored, (label == c) & scored
            inter[c] += (p & t).sum()
            union[c] += (p | t).sum()
    return float((inter[union > 0] / union[union > 0]).mean())


def test_an_int8_export_is_calibrated_on_its_training_data_and_scored_against_the_float_graph(checkpoint, tmp_path):
    said = []
    path, _ = export_job(checkpoint, tmp_path / "m8.onnx", progress=False, echo=said.append,
                         int8=Int8Settings(calibration_images=3))
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert onnx_precision(proto) == "int8" and meta["precision"].startswith("int8: static quantization")
    assert meta["exported_size"] == "48x64" and meta["num_classes"] == "11" and "Pole" in meta["classes"]
    check = json.loads(meta["int8_check"])
    assert check["data"] == "synthetic" and check["split"] == "val" and check["calibration_images"] == 3
    assert check["images"] == 8
    options = {"size": [48, 64], "length": 8}
    assert check["int8_miou"] == pytest.approx(miou_by_definition(path, "synthetic", options, 11), abs=1e-4)
    assert check["float_miou"] == pytest.approx(api.evaluate(checkpoint, "synthetic").miou, abs=1e-3)
    assert any(line.startswith("parity onnxruntime at 1x3x48x64") for line in said), said
    assert any(line.startswith("int8 on synthetic val (8 images): mIoU ") for line in said), said
    assert any("float graph" in line and " ms" in line for line in said), said
    assert not list(tmp_path.glob(".*")), "a trial file was left behind"
    row = bench_job([str(path)], None, ["onnxruntime"], progress=False, min_time_s=0.0)[0]
    assert row["precision"] == "int8" and row["size"] == "48x64"
    float_row = bench_job([checkpoint], None, ["onnxruntime"], progress=False, min_time_s=0.0)[0]
    assert float_row["precision"] == "fp32"


def test_an_int8_graph_that_loses_more_than_max_drop_is_not_written(checkpoint, tmp_path, monkeypatch):
    """A quantizer whose graph predicts the least likely class loses mIoU: refused, named with its
    figures, the earlier export at --out kept and no trial file left."""
    import segnas.jobs.bench as bench

    model = load_trained(checkpoint)[0]

    class LeastLikely(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return -model(x)

    def wrong(source, out, calibration, metadata=None):
        list(calibration)
        export_onnx(LeastLikely(), out, (1, 3, 48, 64), metadata=metadata)

    earlier, _ = export_job(checkpoint, tmp_path / "m8.onnx", progress=False)
    before = earlier.read_bytes()
    monkeypatch.setattr(bench, "quantize_onnx", wrong)
    with pytest.raises(SegnasError, match=r"m8\.onnx: int8 on synthetic val \(8 images\): mIoU .*points\); "
                                          r".*loses more than --max-drop 0\.5 points; not written .*"
                                          r"\(the earlier file there is kept\)$"):
        export_job(checkpoint, earlier, progress=False, int8=Int8Settings(max_drop=0.5))
    assert earlier.read_bytes() == before
    assert not list(tmp_path.glob(".*"))


@pytest.mark.parametrize("args, message", [
    (["fast_scnn", "--int8"], r"--int8: fast_scnn is not a trained checkpoint"),
    (["CKPT", "--int8", "--format", "torchscript"], r"--int8: ONNX Runtime quantizes ONNX graphs; use --format onnx"),
    (["CKPT", "--data", "camvid", "--max-drop", "2"], r"--data, --max-drop: settings of an int8 export; add --int8"),
    (["CKPT", "--int8", "--calibration-images", "0"], r"--calibration-images: must be >= 1, got 0"),
    (["CKPT", "--int8", "--data", "cityscapes", "--data-root", "NOWHERE"], r"NOWHERE"),
])
def test_int8_export_settings_are_refused_in_one_line_before_any_work(checkpoint, tmp_path, args, message):
    out = tmp_path / ("m.pt" if "torchscript" in args else "m.onnx")
    args = [checkpoint if a == "CKPT" else str(tmp_path / a) if a == "NOWHERE" else a for a in args]
    result = CliRunner().invoke(app, ["export", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output, result.output
    assert re.search(message, result.output), result.output
    assert not out.exists()


def test_the_pages_export_and_bench_run_from_python_as_the_commands_do(checkpoint, tmp_path, monkeypatch):
    """docs/python.md's export and bench block, on what load() returns: the files written, int8
    rows labelled so; bench's errors name the API's arguments; the caller's random state kept."""
    import functools
    import re as regex

    import segnas.jobs.bench as bench

    monkeypatch.setattr(bench, "bench_job", functools.partial(bench.bench_job, min_time_s=0.0))
    monkeypatch.chdir(tmp_path)
    page = (Path(__file__).resolve().parents[1] / "docs" / "python.md").read_text()
    block = regex.findall(r"```python\n(.*?)```", page, regex.S)[2]
    assert "api.export(" in block and "api.bench(" in block
    torch.manual_seed(5)
    state = torch.get_rng_state()
    scope = {"api": api, "trained": api.load(checkpoint)}
    exec(compile(block, "docs/python.md", "exec"), scope)
    assert torch.equal(torch.get_rng_state(), state)
    assert scope["path"] == Path("model.onnx") and onnx_precision(onnx.load("model.onnx")) == "fp32"
    assert onnx_precision(onnx.load(str(scope["int8"]))) == "int8"
    assert [(r["precision"], r["size"]) for r in scope["rows"]] == [("fp32", "48x64"), ("int8", "48x64"),
                                                                    ("fp32", "360x480")]
    with pytest.raises(SegnasError, match=r"^networks: expected a checkpoint, .* got int$"):
        api.bench([3])
    with pytest.raises(SegnasError, match=r"^calibration_images: settings of an int8 export; add int8=True$"):
        api.export(checkpoint, "x.onnx", calibration_images=3)


def test_quantizing_without_calibration_images_is_one_line_and_leaves_no_file(tmp_path):
    from segnas.cost.quantize import quantize_onnx
    from segnas.zoo import build_model

    export_onnx(build_model("fast_scnn", 3, width=0.5), tmp_path / "m.onnx", (1, 3, 32, 48))
    with pytest.raises(SegnasError, match=r"^int8 calibration: no calibration images$"):
        quantize_onnx(tmp_path / "m.onnx", tmp_path / "m8.onnx", [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_bench_times_a_networks_int8_graph_beside_its_float_one(tmp_path):
    said = []
    rows = bench_job(["fast_scnn"], "32x48", ["onnxruntime"], num_classes=3, min_time_s=0.0, progress=False,
                     echo=said.append, int8=True)
    assert [(r["backend"], r["precision"]) for r in rows] == [("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    assert rows[1]["calibration"] == "random inputs: latency only" and rows[1]["classes"] == 3
    assert rows[1]["gflops"] == rows[0]["gflops"] and rows[1]["params_m"] == pytest.approx(rows[0]["params_m"], 0.05)
    assert any("int8 rows time each network's int8 graph calibrated on random inputs" in line for line in said)
    with pytest.raises(SegnasError, match=r"^--int8: times ONNX Runtime's int8 graph on the CPU; add -b onnxruntime"):
        bench_job(["fast_scnn"], "32x48", ["eager"], int8=True, progress=False)
