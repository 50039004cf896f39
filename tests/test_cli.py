import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from segnas.cli.main import app
from segnas.errors import SegnasError

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("command", ["train", "eval", "predict", "demo"])
def test_help_everywhere(command):
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "Usage" in result.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    result = run("train", "--data", "synthetic", "--size", "48x64", "--epochs", "1", "--batch-size", "4",
                 "--threads", "1", "--out-dir", tmp / "runs", "--set", "data.options={size: [48, 64], length: 8}",
                 "--set", "model.options.width=0.5", "--set", "progress=false")
    assert result.exit_code == 0, result.output
    run_dir = next((tmp / "runs").iterdir())
    return run_dir / "checkpoints" / "best.pt", tmp


def test_a_method_flag_named_like_a_shared_option_is_refused(monkeypatch):
    import segnas.search.base as base
    from segnas.cli.main import _search_command

    real = base.get_strategy("random")
    clashing = type("Clashing", (real,), {"cli_options": {"target-ms": ("random.candidates", int, "x")}})
    monkeypatch.setattr(base, "get_strategy", lambda name: clashing)
    with pytest.raises(SegnasError, match="its flag --target-ms is an option every method shares"):
        _search_command("random")


def test_eval_takes_dataset_options(trained):
    ckpt, _ = trained
    import torch

    threads = torch.get_num_threads()
    result = run("eval", ckpt, "--data", "synthetic", "--data-option", "size=[48, 64]", "--data-option", "length=3",
                 "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.output and torch.get_num_threads() == 1  # (--threads: torch's threads for the command)
    torch.set_num_threads(threads)
    # an option other than its training's is said (a split it defines may hold images it trained on)
    assert "note: data.options length=3, its training's 8: a split this option defines" in result.output
    assert "note: data.options size" not in result.output
    same = run("eval", ckpt, "--data", "synthetic", "--data-option", "seed=0")  # its training's, by default
    assert same.exit_code == 0 and "note: data.options" not in same.output, same.output
    bad = run("eval", ckpt, "--data", "synthetic", "--data-option", "length")
    assert bad.exit_code == 2 and "--data-option: expected key=value, got 'length'" in bad.output
    unknown = run("eval", ckpt, "--data", "camvid", "--data-root", ".", "--data-option", "nope=1")
    assert unknown.exit_code == 2 and "nope" in unknown.output


def test_train_eval_predict(trained, tmp_path):
    ckpt, _ = trained
    result = run("eval", ckpt, "--data", "synthetic", "--json", tmp_path / "scores.json", "--data-option", "length=1")
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.output and "Pole" in result.output

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    scores = json.loads((tmp_path / "scores.json").read_text(), parse_constant=refuse)  # (NaN is not JSON)
    absent = [name for name, iou in zip(scores["classes"], scores["iou"]) if iou is None]
    assert absent and all(re.search(rf"{name}\s+│\s+-\s+│\s+-", result.output) for name in absent)  # no pixels
    from segnas.engine.rundir import RunDir, release_all

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text((ckpt.parents[1] / "config.yaml").read_text())
    records = RunDir.existing(tmp_path / "run")
    records.write_metrics({"epoch": 1, "val_iou": [0.5, float("nan")]})
    records.write_metrics({"epoch": 2, "val_iou": [0.6, float("nan")]})
    records.truncate_metrics(1)  # (a resume drops the records after its checkpoint, rewriting the file)
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text(), parse_constant=refuse) == \
        {"epoch": 1, "val_iou": [0.5, None]}
    (row,) = records.read_metrics()  # read back as the trainer had it, as SegMetrics has it: NaN
    assert row["val_iou"][0] == 0.5 and np.isnan(row["val_iou"][1])
    release_all()

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, size in enumerate([(37, 53), (64, 80)]):  # odd sizes, like arbitrary video frames
        Image.fromarray(np.random.randint(0, 255, (*size, 3), dtype=np.uint8)).save(frames / f"f{i}.png")
    result = run("predict", ckpt.parents[1], frames, "--out", tmp_path / "pred")  # (a run folder: its best.pt)
    assert result.exit_code == 0, result.output
    mask = np.asarray(Image.open(tmp_path / "pred" / "f0_mask.png"))
    assert mask.shape == (37, 53, 3)
    assert (tmp_path / "pred" / "f1_overlay.png").is_file()


def test_a_training_without_a_validation_split_says_so_at_its_end(tmp_path):
    result = run("train", "--data", "synthetic", "--size", "48x64", "--steps", "1", "--batch-size", "2", "--threads",
                 "1", "--out-dir", tmp_path, "--set", "data.options={size: [48, 64], length: 4}",
                 "--set", "model.options.width=0.5", "--set", "data.val_split=null", "--set", "progress=false")
    assert result.exit_code == 0, result.output
    assert "no validation split: best.pt holds the last weights" in result.output and "-100" not in result.output
    log = (next(tmp_path.iterdir()) / "log.txt").read_text().splitlines()
    assert log[-1].endswith("finished: no validation split: best.pt holds the last weights")  # (the run keeps it)
    assert run("eval", tmp_path, "--data", "synthetic").output.count("no checkpoints/best.pt: give a checkpoint") == 1
    assert run("eval", next(tmp_path.iterdir()), "--data", "synthetic").exit_code == 0  # a run folder: its best.pt


def test_predict_runs_the_network_at_the_size_it_was_trained_at(trained, tmp_path):
    """A checkpoint trained on images resized to data.base_size predicts each frame resized to it (as
    eval scores), with the mask written at the frame's own size; --base-size native opts out."""
    import torch
    import torch.nn.functional as F

    from segnas.data.transforms import Normalize
    from segnas.report.draw import colorize
    from segnas.training.models import load_trained

    ckpt, _ = trained
    state = torch.load(ckpt, weights_only=False)
    state["config"]["data"]["base_size"] = [48, 64]
    resized = tmp_path / "resized.pt"
    torch.save(state, resized)
    frame = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(frame).save(tmp_path / "f.png")
    result = run("predict", resized, tmp_path / "f.png", "--out", tmp_path / "pred")
    assert result.exit_code == 0, result.output
    assert "predicting at 48x64 (the checkpoint's data.base_size" in result.output
    model, classes, _, _ = load_trained(resized)
    x, _ = Normalize()(torch.from_numpy(frame).permute(2, 0, 1).float() / 255.0, torch.empty(0))
    with torch.no_grad():
        logits = model.eval()(F.interpolate(x[None], size=(48, 64), mode="bilinear", align_corners=False))
    expected = colorize(F.interpolate(logits, size=(96, 128), mode="bilinear", align_corners=False)
                        .argmax(1)[0].numpy().astype(np.uint8), classes.palette())
    assert np.array_equal(np.asarray(Image.open(tmp_path / "pred" / "f_mask.png")), expected)
    result = run("predict", resized, tmp_path / "f.png", "--out", tmp_path / "native", "--base-size", "native")
    assert result.exit_code == 0 and "predicting at each image's own size (as given)" in result.output
    assert np.asarray(Image.open(tmp_path / "native" / "f_mask.png")).shape == (96, 128, 3)
    # an export without --size is made at that size too, and says so in its metadata
    import onnx

    result = run("export", resized, "--out", tmp_path / "m.onnx")
    assert result.exit_code == 0 and "parity onnxruntime at 1x3x48x64" in result.output, result.output
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert meta["trained_size"] == meta["exported_size"] == "48x64"


@pytest.mark.parametrize("args, needle", [
    (["train", "--data", "nope"], "nope"),
    (["train", "--size", "12by3"], "12by3"),
    (["train", "--data", "camvid", "--data-root", "/no/such/dir"], "/no/such/dir"),
    (["train", "--config", "/no/such.yaml"], "/no/such.yaml"),
    (["train", "--set", "optim.lr=-1"], "optim.lr"),
    (["train", "--set", "epochs"], "epochs"),
    (["train", "--device", "gpu0"], "device"),
    (["eval", "/no/ckpt.pt", "--data", "synthetic"], "/no/ckpt.pt"),
    (["predict", "/no/ckpt.pt", "x.png"], "/no/ckpt.pt"),
    (["demo", "--size", "0x10"], "0x10"),
])
def test_user_mistakes_are_one_line_with_exit_2(args, needle):
    result = run(*args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "error:" in lines[0] and needle in lines[0], result.output
    assert "Traceback" not in result.output


def test_bad_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\n data: [\n")
    result = run("train", "--config", bad)
    assert result.exit_code == 2
    assert "bad.yaml: line 2 invalid YAML" in result.output


def test_predict_can_leave_out_unreadable_frames(trained, tmp_path):
    ckpt, _ = trained
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("f0", "f1", "f2"):
        Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(frames / f"{name}.png")
    (frames / "f1.png").write_bytes((frames / "f1.png").read_bytes()[:60])  # a truncated frame
    result = run("predict", ckpt, frames, "--out", tmp_path / "refused")
    assert result.exit_code == 2 and "f1.png" in result.output and "--skip-unreadable" in result.output
    assert not (tmp_path / "refused").exists()
    result = run("predict", ckpt, frames, "--out", tmp_path / "pred", "--skip-unreadable")
    assert result.exit_code == 0, result.output
    assert "note: 1 unreadable image(s) left out; the first: " in result.output and "f1.png" in result.output
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == [
        "f0_mask.png", "f0_overlay.png", "f2_mask.png", "f2_overlay.png"]


def test_predict_on_missing_checkpoint_input(trained, tmp_path):
    ckpt, _ = trained
    result = run("predict", ckpt, tmp_path / "missing.png")
    assert result.exit_code == 2 and "missing.png" in result.output


def test_bench_prints_table_and_json(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))
    result = run("bench", "--model", "fast_scnn", "--size", "64x96", "--backend", "eager", "--backend", "onnxruntime",
                 "--threads", "1", "--classes", "5", "--json", tmp_path / "rows.json")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["backend"] for r in rows] == ["eager", "onnxruntime"]
    assert all(r["median_ms"] > 0 and 0 < r["fraction_of_peak"] for r in rows)
    from segnas.cost.machine import cpu_model

    assert rows[0]["machine"]["cpu"] == cpu_model() and f"1 thread on {cpu_model()}" in result.output  # (where)
    # measured beside other work: said, and kept in the rows
    monkeypatch.setattr("segnas.jobs.bench.other_processes_cores", lambda *a, **k: 1.5)
    result = run("bench", "--model", "fast_scnn", "--size", "64x96", "--backend", "eager", "--threads", "1",
                 "--classes", "5", "--json", tmp_path / "rows.json")
    assert result.exit_code == 0 and "other processes kept 1.5 cores busy" in result.output
    assert json.loads((tmp_path / "rows.json").read_text())[0]["other_processes_cores"] == 1.5
    # more threads than cores: said, and the peak is the cores' (the fraction stays one of what they reach)
    monkeypatch.setattr("segnas.jobs.bench.default_threads", lambda: 1)
    peaks = []
    monkeypatch.setattr("segnas.jobs.bench.matmul_peak_gflops", lambda threads: peaks.append(threads) or 50.0)
    result = run("bench", "--model", "fast_scnn", "--size", "64x96", "--backend", "eager", "--threads", "2",
                 "--classes", "5")
    assert result.exit_code == 0 and "note: 2 threads on 1 available cores" in result.output and peaks == [1]


def test_export_onnx_with_parity_and_failure_removes_file(trained, tmp_path, monkeypatch):
    ckpt, _ = trained
    result = run("export", ckpt, "--out", tmp_path / "m.onnx", "--size", "48x64")
    assert result.exit_code == 0, result.output
    assert "parity onnxruntime" in result.output and (tmp_path / "m.onnx").is_file()
    assert "note: a static graph" not in result.output
    # no --size, and a checkpoint scored at each image's own size: the default size, said
    import segnas.jobs.bench as bench

    monkeypatch.setattr(bench, "DEFAULT_EXPORT_SIZE", (48, 64))  # (small: the test stays quick)
    result = run("export", ckpt, "--out", tmp_path / "d.onnx")
    assert result.exit_code == 0, result.output
    assert "note: a static graph at 48x64, the default (the checkpoint was scored at each image's own size)" \
        in result.output
    assert "note: a static graph" not in run("export", ckpt, "--out", tmp_path / "y.onnx", "--dynamic").output
    result = run("export", ckpt, "--out", tmp_path / "c.onnx", "--size", "48x64", "--classes", "99")
    assert result.exit_code == 2 and "--classes 99" in result.output and "was trained for" in result.output
    assert not (tmp_path / "c.onnx").exists()

    from segnas.cost.export import ParityResult

    monkeypatch.setattr(bench, "check_parity", lambda m, p, s, tol: ParityResult("onnxruntime", s, 0.5, tol))
    result = run("export", ckpt, "--out", tmp_path / "bad.onnx", "--size", "48x64")
    assert result.exit_code == 2 and "parity check failed" in result.output
    assert not (tmp_path / "bad.onnx").exists()
    good = (tmp_path / "m.onnx").read_bytes()  # a failed export over an earlier one leaves that one as it was
    result = run("export", ckpt, "--out", tmp_path / "m.onnx", "--size", "32x48")  # (another file than the good one)
    assert result.exit_code == 2 and "the earlier file there is kept" in result.output
    assert (tmp_path / "m.onnx").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    monkeypatch.undo()
    result = run("export", ckpt, "--out", tmp_path / "m.pt", "--size", "48x64", "--format", "torchscript")
    assert result.exit_code == 0, result.output
    import torch

    scripted = torch.jit.load(tmp_path / "m.pt")
    assert scripted(torch.zeros(2, 3, 48, 64)).shape[-2:] == (48, 64)  # another batch runs
    with pytest.raises(torch.jit.Error, match="takes inputs of 48x64"):  # another size would give wrong logits
        scripted(torch.zeros(1, 3, 64, 96))


def test_an_exported_onnx_file_says_what_it_expects_and_the_docs_example_runs_it(trained, tmp_path, monkeypatch):
    import onnx

    from segnas.training.models import load_trained

    ckpt, _ = trained
    result = run("export", ckpt, "--out", tmp_path / "model.onnx", "--size", "48x64", "--dynamic")
    assert result.exit_code == 0, result.output
    proto = onnx.load(str(tmp_path / "model.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    classes = load_trained(ckpt)[1]
    assert json.loads(meta["classes"]) == list(classes.names) and len(json.loads(meta["palette"])) == classes.num_classes
    assert json.loads(meta["mean"]) == [0.485, 0.456, 0.406] and meta["exported_size"].startswith("any")
    for value in (proto.graph.input[0], proto.graph.output[0]):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims[:1] + dims[2:] == ["batch", "height", "width"]
    # the deployment page's example, run as written, gives segnas predict's mask: a network trained on
    # images resized to 40x56, a frame of another size (resized to it and the logits back, as segnas does)
    result = run("train", "--data", "synthetic", "--base-size", "40x56", "--steps", "30", "--batch-size", "4",
                 "--threads", "1", "--out-dir", tmp_path / "runs", "--set", "data.options={size: [48, 64], length: 8}",
                 "--set", "model.options.width=0.5", "--set", "progress=false", "--set", "data.val_split=null")
    assert result.exit_code == 0, result.output
    resized = next((tmp_path / "runs").iterdir())
    page = (Path(__file__).parents[1] / "docs" / "deployment.md").read_text()
    example = next(b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "InferenceSession" in b)
    frame = np.random.default_rng(1).integers(0, 255, (61, 83, 3), dtype=np.uint8)
    Image.fromarray(frame).save(tmp_path / "frame.png")
    monkeypatch.chdir(tmp_path)
    assert run("predict", resized, tmp_path / "frame.png", "--out", tmp_path / "pred").exit_code == 0
    theirs = np.asarray(Image.open(tmp_path / "pred" / "frame_mask.png"))
    for dynamic in ([], ["--dynamic"]):
        assert run("export", resized, "--out", tmp_path / "model.onnx", *dynamic).exit_code == 0
        exec(compile(example, "deployment.md", "exec"), {})
        ours = np.asarray(Image.open(tmp_path / "frame_mask.png"))
        assert ours.shape == theirs.shape and (ours == theirs).all(-1).mean() > 0.999, dynamic


def test_an_export_replaces_only_an_earlier_export_and_says_what_it_holds(trained, tmp_path):
    """`export --out` over the checkpoint being exported, or over a file that is not an export,
    replaced it without a word; a TorchScript file carried no metadata."""
    import shutil

    from segnas.cost.export import TORCHSCRIPT_METADATA

    ckpt, _ = trained
    copy = tmp_path / "best.pt"
    shutil.copy(ckpt, copy)
    result = run("export", copy, "--out", copy, "--format", "torchscript", "--size", "48x64")
    assert result.exit_code == 2 and "is the network being exported" in result.output, result.output
    notes = tmp_path / "notes.onnx"
    notes.write_text("important")
    result = run("export", copy, "--out", notes, "--size", "48x64")
    assert result.exit_code == 2 and "exists and is not an ONNX file" in result.output
    assert notes.read_text() == "important"
    other = tmp_path / "other.pt"
    shutil.copy(ckpt, other)  # a checkpoint is not a TorchScript export
    assert "is not a TorchScript file" in run("export", copy, "--out", other, "--format", "torchscript").output
    assert torch.load(copy, weights_only=False) and torch.load(other, weights_only=False)  # both as they were
    for _ in range(2):  # an earlier export is replaced
        result = run("export", copy, "--out", tmp_path / "m.ts.pt", "--format", "torchscript", "--size", "48x64")
        assert result.exit_code == 0, result.output
    extra = {TORCHSCRIPT_METADATA: ""}
    torch.jit.load(tmp_path / "m.ts.pt", _extra_files=extra)
    meta = json.loads(extra[TORCHSCRIPT_METADATA])
    assert meta["exported_size"] == "48x64" and len(json.loads(meta["classes"])) == 11 and "resize" in meta


def test_a_checkpoint_with_damaged_weights_is_refused(trained, tmp_path):
    ckpt, _ = trained
    state = torch.load(ckpt, weights_only=False)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name].view(-1)[0] = float("nan")
    state.pop("ema", None)
    torch.save(state, tmp_path / "nan.pt")
    result = run("predict", tmp_path / "nan.pt", tmp_path)
    assert result.exit_code == 2 and "damaged file" in result.output and "NaN" in result.output, result.output


def test_predict_refuses_a_video_and_an_animation_with_how_to_extract_frames(trained, tmp_path):
    ckpt, _ = trained
    (tmp_path / "clip.mp4").write_bytes(b"\0" * 64)
    result = run("predict", ckpt, tmp_path / "clip.mp4", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "a video" in result.output and "ffmpeg -i" in result.output
    result = run("predict", ckpt, tmp_path, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "clip.mp4 is a video" in result.output
    frames = [Image.fromarray(np.full((20, 30, 3), v, np.uint8)) for v in (0, 128, 255)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    result = run("predict", ckpt, tmp_path / "anim.gif", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "an image of 3 frames" in result.output, result.output
    assert not (tmp_path / "out").exists()
    frames[0].save(tmp_path / "photo.jpg", format="MPO", save_all=True, append_images=frames[1:])  # (a phone's
    assert run("predict", ckpt, tmp_path / "photo.jpg", "--out", tmp_path / "out").exit_code == 0  # gain map: a still)


def test_predict_writes_class_ids_in_the_classes_colours_with_ids(trained, tmp_path):
    """Masks a folder dataset reads back as labels (they were colour images only)."""
    from segnas.api import load

    ckpt, _ = trained
    frame = np.random.default_rng(2).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    Image.fromarray(frame).save(tmp_path / "f.png")
    assert run("predict", ckpt, tmp_path / "f.png", "--out", tmp_path / "rgb").exit_code == 0
    assert run("predict", ckpt, tmp_path / "f.png", "--out", tmp_path / "ids", "--ids").exit_code == 0
    written = Image.open(tmp_path / "ids" / "f_mask.png")
    assert written.mode == "P" and (np.asarray(written) == load(ckpt)(frame)).all()
    assert (np.asarray(written.convert("RGB")) == np.asarray(Image.open(tmp_path / "rgb" / "f_mask.png"))).all()


def test_a_found_network_is_measured_and_exported_at_the_size_it_was_searched_for(tmp_path):
    from segnas.jobs.bench import bench_job, export_job
    from segnas.spaces import get_space, save_arch

    space = get_space("multires")
    arch = space.sample(np.random.default_rng(0))
    save_arch(tmp_path / "found.json", space, arch, num_classes=5, size=[32, 48])
    rows = bench_job([str(tmp_path / "found.json")], None, ["eager"], threads=1, min_time_s=0.0, progress=False)
    assert rows[0]["size"] == "32x48"
    said = []
    export_job(str(tmp_path / "found.json"), tmp_path / "f.onnx", progress=False, echo=said.append)
    assert not [line for line in said if line.startswith("note")], said  # (no note of a default size)
    import onnx

    dims = onnx.load(str(tmp_path / "f.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][2:] == [32, 48]


@pytest.mark.parametrize("args, needle", [
    (["train", "--resume", "/nonexistent/segnas-run", "--epochs", "3"], "segnas-run: run directory not found"),
    (["train", "--set", "a=[1,"], "--set a"),
    (["train", "--set", "epochs=3", "--set", "epochs.x=1"], "epochs"),
    (["train", "--data", "synthetic", "--set", "data.options.bogus=1"], "data.options"),
])
def test_more_user_mistakes(args, needle):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_search_checkpoint_is_refused_by_predict(tmp_path):
    import torch

    bad = tmp_path / "search_last.pt"
    torch.save({"model": {}, "model_spec": {"kind": "supernet"}}, bad)
    result = run("predict", bad, tmp_path)
    assert result.exit_code == 2 and "not a trained-network checkpoint" in result.output


@pytest.mark.parametrize("args, message", [
    (["--set", "ssr.space.channels=[8,4]"], "more channels than the one before: channels[0]=8 is not above "
                                            "stem_channels=16"),
    (["--resource", "flops"], "target_gflops"),
    (["--set", "ssr.shrink_threshold=1.5"], "ssr.shrink_threshold: Input should be less than 1"),
    (["--set", "shrink_threshold=0.5"], "shrink_threshold: unknown setting (did you mean ssr.shrink_threshold?)"),
])
def test_ssr_search_settings_errors_are_one_line(tmp_path, args, message):
    result = run("search", "ssr", "--data", "synthetic", "--size", "48x64", "--target-ms", "5",
                 "--out-dir", tmp_path, *args)
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing written for a refused job


def test_proxy_score_and_saswot_search(tmp_path):
    import json

    result = run("proxy", "score", "fast_scnn", "--proxy", "params", "--proxy", "grad_norm", "--images", "2",
                 "--size", "32x48")
    assert result.exit_code == 0, result.output
    assert "params" in result.output and "grad_norm" in result.output
    bad = run("proxy", "score", "fast_scnn", "--proxy", "nope")
    assert bad.exit_code == 2 and "unknown name or missing file 'nope'" in bad.output
    # a rank aggregate ranks the networks given among themselves (params: fast_scnn > enet; flops: enet > fast_scnn)
    ranked = run("proxy", "score", "fast_scnn", "enet", "-p", "rank_mean(params,flops)", "--images", "2",
                 "--size", "32x48")
    assert ranked.exit_code == 0, ranked.output
    assert "fast_scnn: rank_mean(params,flops) 0.75" in ranked.output and "enet: rank_mean(params,flops) 0.75" in ranked.output
    alone = run("proxy", "score", "fast_scnn", "-p", "az_nas")
    assert alone.exit_code == 2 and "give at least two" in alone.output
    (tmp_path / "run").mkdir()
    torch.save({}, tmp_path / "run" / "best.pt")  # (trained weights: refused before a file is read)
    for trained in (tmp_path / "run" / "best.pt", tmp_path / "run"):
        refused = run("proxy", "score", "fast_scnn", str(trained), "-p", "params")
        assert refused.exit_code == 2 and f"{trained}: trained weights; a proxy scores a network untrained" \
            in refused.output.replace("\n", ""), refused.output
    result = run("search", "saswot", "--size", "32x48", "--target-ms", "1000", "--proxy", "params",
                 "--candidates", "6", "--backend", "eager", "--workers", "2", "--executor", "process",
                 "--set", "saswot.scoring.size=[32,48]", "--set", "saswot.scoring.images=2", "--set", "final.epochs=0",
                 "--set", "progress=false", "--set", "latency.table_min_runs=1", "--set", "latency.table_min_time_s=0",
                 "--out-dir", tmp_path / "searches")
    assert result.exit_code == 0, result.output
    run_dir = next((tmp_path / "searches").iterdir())
    assert (run_dir / "arch.json").is_file() and (run_dir / "config.yaml").is_file()
    summary = json.loads((run_dir / "search_result.json").read_text())
    assert summary["method"] == "saswot" and summary["details"]["candidates_scored"] == 6
    assert summary["networks"]["arch"]["predicted_ms"] <= 1000
    refused = run("search", "saswot", "--resume", run_dir, "--candidates", "10", "--executor", "inline")
    assert refused.exit_code == 2 and "drop --candidates (a resumed run takes anew only" in refused.output
    resumed = run("search", "saswot", "--resume", run_dir, "--executor", "inline", "--set", "task_retries=0")
    assert resumed.exit_code == 0 and "this search has finished" in resumed.output, resumed.output
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())  # a finished run is left as it is
    assert saved["executor"] == "process" and saved["saswot"]["candidates"] == 6


def test_proxy_discover_on_repeated_groundtruth(tmp_path):
    import json

    from segnas.evaluate.groundtruth import sample_archs
    from segnas.spaces.multires import MultiResSpace

    archs = sample_archs(MultiResSpace(layers=4, base_width=2, width_ratios=(0.5, 1.0)), 8, seed=0)
    files = []
    for seed in (0, 1):  # two training seeds of the same networks, keyed differently
        path = tmp_path / f"gt{seed}.jsonl"
        path.write_text("".join(json.dumps({"key": f"{seed}-{i}", "result": {
            "space": "multires", "arch": a.to_dict(), "val_miou": 0.1 + 0.01 * i + 0.005 * seed}}) + "\n"
            for i, a in enumerate(archs)))
        files.append(path)
    out = tmp_path / "found.json"
    result = run("proxy", "discover", *files, "--out", out, "--data", "synthetic", "--images", "2", "--size", "32x48",
                 "--population", "6", "--generations", "1")
    assert result.exit_code == 0, result.output
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["train_archs"] + summary["held_out_archs"] == 8 and summary["parsimony"] == 0
    assert run("proxy", "score", "fast_scnn", "--proxy", out, "--images", "2", "--size", "32x48").exit_code == 0
    assert re.search(r"held-out τ (-|-?\d\.\d{3}); saved", result.output), result.output  # (rounded)
    scores = [run("proxy", "score", "fast_scnn", "--proxy", "nwot", "--images", "2", "--size", "32x48", *more).output
              for more in ((), ("--data-option", "length=3"))]
    assert all(s.startswith("fast_scnn: nwot ") for s in scores) and scores[0] != scores[1]  # other images drawn
    result = run("proxy", "discover", *files, "--out", out, "--data", "synthetic", "--images", "2", "--size", "32x48",
                 "--population", "6", "--generations", "1", "--data-option", "length=3")
    assert result.exit_code == 0 and json.loads(out.read_text())["settings"]["scored_on"]["data_options"] == \
        {"length": 3}
    assert json.loads(out.read_text())["settings"]["scored_on"]["spaces"] == ["multires"]  # (its ground truth's)
    result = run("proxy", "discover", *files, "--out", out, "--data", "synthetic", "--images", "2", "--size", "32x48",
                 "--population", "6", "--generations", "1", "--train-fraction", "0.75", "--cv-folds", "2")
    assert result.exit_code == 0, result.output
    assert result.output.count("cross-validation {'parsimony'") == 4
    saved = json.loads(out.read_text())["settings"]
    assert saved["parsimony"] == saved["cross_validation"]["chosen"]["parsimony"]
    result = run("proxy", "discover", *files, "--out", out, "--data", "synthetic", "--images", "2", "--size", "32x48",
                 "--population", "6", "--generations", "1", "--members", "2")
    assert result.exit_code == 0, result.output
    assert result.output.count("member ") == 2 and "mean_quantile(" in result.output
    assert all(re.search(r"held-out τ -?\d\.\d{3};", line) for line in result.output.splitlines()
               if line.startswith("member ")), result.output  # rounded
    saved = json.loads(out.read_text())
    assert saved["format"] == "segnas.proxy_ensemble" and saved["settings"]["scored_on"]["images"] == 2
    result = run("proxy", "discover", *files, "--out", out, "--data", "synthetic", "--images", "2", "--size", "32x48",
                 "--population", "6", "--generations", "1", "--members", "2", "--bag-fraction", "0.5")
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["settings"]["bag_fraction"] == 0.5
    result = run("proxy", "discover", *files, "--out", out, "--data", "synthetic", "--bag-fraction", "0.5")
    assert result.exit_code != 0 and "needs members > 1" in result.output, result.output
    assert run("proxy", "score", "fast_scnn", "--proxy", out, "--images", "2", "--size", "32x48").exit_code == 0
    result = run("proxy", "discover", *files, "--out", out, "--data", "synthetic", "--images", "2", "--size", "32x48",
                 "--population", "6", "--generations", "1", "--inits", "2")
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["settings"]["scored_on"]["inits"] == 2
    result = run("proxy", "discover", *files, "--out", out, "--data", "synthetic", "--images", "2", "--size", "32x48",
                 "--population", "6", "--generations", "1", "--extra-terminal", "R", "--extra-terminal", "GA")
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["settings"]["extra_terminals"] == ["GA", "R"]
    result = run("proxy", "score", "fast_scnn", "--proxy", out, "-p", "params", "--images", "2", "--size", "32x48",
                 "--inits", "2")
    assert result.exit_code == 0 and "params 1" in result.output, result.output


def test_checkpoints_hold_absolute_paths(tmp_path, monkeypatch):
    """A checkpoint's settings name their folders absolutely, so that a report or an evaluation run
    from another folder finds the data and runs it names."""
    monkeypatch.chdir(tmp_path)
    result = run("train", "--data", "synthetic", "--size", "32x40", "--steps", "1", "--batch-size", "2",
                 "--threads", "1", "--out-dir", "runs", "--set", "data.options={size: [32, 40], length: 4}",
                 "--set", "model.options.width=0.5", "--set", "progress=false")
    assert result.exit_code == 0, result.output
    run_dir = next((tmp_path / "runs").iterdir())
    saved = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=False)["config"]
    assert saved["out_dir"] == str(tmp_path / "runs")


def test_the_demo_takes_its_target_in_frames_per_second_as_every_search_does():
    from segnas.jobs.demo import demo_settings

    assert demo_settings(target_fps=50).latency.target == pytest.approx(20.0)
    assert demo_settings(target_ms=7).latency.target == 7
