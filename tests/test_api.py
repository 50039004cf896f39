"""segnas.api: the commands from Python, and a trained network that segments images."""

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from segnas import SegnasError, api
from segnas.config import TrainConfig
from segnas.engine.trainer import TrainResult
from segnas.training.models import trained_checkpoint

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "python.md"
TINY = {"model.name": "fast_scnn", "model.options.width": 0.5, "data.name": "synthetic",
        "data.options": {"size": [48, 64], "length": 8}, "data.crop_size": "48x64", "max_steps": 2, "threads": 1,
        "progress": False}


def page_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("api")
    return api.train({**TINY, "out_dir": str(out)}, recipe="cpu-short", echo=None)


def test_dotted_and_nested_settings_are_one_and_a_section_given_in_part_keeps_the_recipe(tmp_path):
    nested = api.job_settings(TrainConfig, None, api.dotted(TrainConfig, {"data": {"name": "synthetic",
                                                                                   "crop_size": "48x64"},
                                                                          "optim": {"lr": 0.05}, "loss": {}}),
                              recipe="cpu-short")
    flat = api.job_settings(TrainConfig, None, {"data.name": "synthetic", "data.crop_size": [48, 64], "optim.lr": 0.05},
                            recipe="cpu-short")
    assert nested == flat
    assert nested.optim.lr == 0.05 and nested.optim.schedule == "poly" and nested.data.scale == (0.75, 1.5)
    assert nested.loss.kind == "ohem"  # an empty section changes nothing
    # a setting whose value is a mapping is one value: it replaces the settings file's, as --set does
    (tmp_path / "s.yaml").write_text("data: {name: synthetic, options: {size: [48, 64], length: 8}}\n")
    cfg = api.job_settings(TrainConfig, tmp_path / "s.yaml",
                           api.dotted(TrainConfig, {"data": {"options": {"length": 4}}}))
    assert cfg.data.options == {"length": 4}
    assert api.dotted(TrainConfig, {"data.options": {"size": [8, 8]}, "model": {"options": {"width": 0.5}}}) == {
        "data.options": {"size": [8, 8]}, "model.options": {"width": 0.5}}


def test_a_bad_setting_is_refused_before_any_work_naming_it(tmp_path):
    with pytest.raises(SegnasError, match=r"settings: optim.lr: .*greater than 0"):
        api.train({**TINY, "optim.lr": -1, "out_dir": str(tmp_path)}, echo=None)
    with pytest.raises(SegnasError, match="unknown_setting"):
        api.train({**TINY, "unknown_setting": 1, "out_dir": str(tmp_path)}, echo=None)
    assert not any(tmp_path.iterdir())  # no run directory was left behind


def test_train_then_load_segments_as_segnas_predict_does(trained, tmp_path):
    assert trained.epochs_done >= 1 and Path(trained.run_dir, "checkpoints", "best.pt").is_file()
    segment = api.load(trained.run_dir)  # a training's run directory stands for its best.pt
    frame = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    mask = segment(frame)
    assert mask.shape == (50, 70) and mask.dtype == np.uint8
    # the scores as the definition gives them: RGB scaled to [0, 1], normalized by ImageNet's mean
    # and std, eval-mode logits at the image's size; the mask their argmax
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = ((torch.from_numpy(frame).float() / 255.0 - mean) / std).permute(2, 0, 1)
    with torch.no_grad():
        expected = segment.model.eval()(x[None])
    assert torch.allclose(segment.logits(frame), expected, atol=1e-5)
    assert np.array_equal(mask, expected.argmax(1)[0].numpy())
    # a file, a PIL image, the array and a BGR view turned back to RGB give one mask; segnas predict
    # writes its colours
    Image.fromarray(frame).save(tmp_path / "f.png")
    assert np.array_equal(segment(tmp_path / "f.png"), mask)
    assert np.array_equal(segment(Image.open(tmp_path / "f.png")), mask)
    assert np.array_equal(segment(frame[..., ::-1].copy()[..., ::-1]), mask)
    read_only = np.asarray(Image.open(tmp_path / "f.png"))  # (what np.asarray of a PIL image gives)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about a tensor over a read-only array
        assert not read_only.flags.writeable and np.array_equal(segment(read_only), mask)
    from segnas.jobs.evaluate import predict_job

    predict_job(Path(trained.run_dir) / "checkpoints" / "best.pt", tmp_path / "f.png", tmp_path / "pred",
                progress=False)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "pred" / "f_mask.png")), segment.colorize(mask))
    # at the size it was trained at: resized there and back
    resized = api.load(Path(trained.run_dir) / "checkpoints" / "best.pt", base_size="48x64")
    with torch.no_grad():
        logits = resized.model(F.interpolate(x[None], size=(48, 64), mode="bilinear", align_corners=False))
    assert np.array_equal(resized(frame), F.interpolate(logits, size=(50, 70), mode="bilinear",
                                                        align_corners=False).argmax(1)[0].numpy())
    with pytest.raises(SegnasError, match=r"uint8 HxWx3 RGB array.*shape \(4, 4\)"):
        segment(np.zeros((4, 4)))
    with pytest.raises(SegnasError, match=r"uint8 HxWx3 RGB array.*shape \(0, 0, 3\)"):
        segment(np.zeros((0, 0, 3), np.uint8))
    assert api.load(trained.run_dir, base_size="native").size is None
    # a network being fine-tuned stays in training mode (BatchNorm learning) when a frame is checked
    segment.model.train()
    assert np.array_equal(segment(frame), mask) and segment.model.training
    assert repr(segment) == (f"Segmenter({str(segment.checkpoint)!r}, 11 classes, EMA weights, at each image's own "
                             "size, on cpu)")


def test_an_open_image_segments_as_its_file_and_sizes_past_the_memory_are_refused(trained, tmp_path):
    segment = api.load(trained.run_dir)
    grey16 = np.random.default_rng(1).integers(0, 65535, (30, 40), dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g.png")  # 16-bit grey: its top byte, as predict reads it
    assert np.array_equal(segment.rgb(Image.open(tmp_path / "g.png")), segment.rgb(tmp_path / "g.png"))
    assert np.array_equal(segment.rgb(tmp_path / "g.png")[..., 0], (grey16 >> 8).astype(np.uint8))
    with pytest.raises(SegnasError, match=r"image: a floating-point image \(mode F\)"):
        segment(Image.fromarray(np.full((4, 4), 0.5, np.float32)))
    checkpoint = Path(trained.run_dir) / "checkpoints" / "best.pt"
    with pytest.raises(SegnasError, match=r"base_size: a forward pass of 1 × 100000x100000 needs more than"):
        api.load(checkpoint, base_size="100000x100000")
    with pytest.raises(SegnasError, match=r"^base_size \(--base-size\): a forward pass of 4 × 100000x100000"):
        api.evaluate(checkpoint, "synthetic", None, "val", base_size="100000x100000")


def test_load_finds_a_searchs_trained_network_or_says_why_not(trained, tmp_path):
    search = tmp_path / "search"
    (search / "train").mkdir(parents=True)
    training = Path(trained.run_dir)
    (search / "train" / training.name).symlink_to(training)
    result = {"networks": {"teacher": {"role": "teacher", "arch_file": "teacher.json"},
                           "found": {"role": "found", "arch_file": "arch.json",
                                     "training": {"run_dir": f"train/{training.name}"}}}}
    (search / "search_result.json").write_text(json.dumps(result))
    assert trained_checkpoint(search) == search / "train" / training.name / "checkpoints" / "best.pt"
    del result["networks"]["found"]["training"]
    (search / "search_result.json").write_text(json.dumps(result))
    with pytest.raises(SegnasError, match=r"trained no found network.*'model.arch': '.*arch.json'"):
        api.load(search)
    with pytest.raises(SegnasError, match="no checkpoints/best.pt"):
        api.load(tmp_path)
    (search / "search_result.json").unlink()  # a search still running, or killed
    (search / "config.yaml").write_text("method: gas\n")
    with pytest.raises(SegnasError, match="a search that has not finished"):
        api.load(search)


def test_search_and_compare_take_the_settings_as_the_command_line_does(monkeypatch, tmp_path):
    """What the search and compare jobs receive: the method filled in, the settings validated (the
    method's own under its name); a resume takes only the settings of where it computes."""
    import segnas.jobs.compare as compare_jobs
    import segnas.jobs.search as search_jobs

    got = {}
    monkeypatch.setattr(search_jobs, "search_job", lambda cfg, resume, **kw: got.update(cfg=cfg, resume=resume, **kw)
                        or {"run_dir": "r"})
    monkeypatch.setattr(compare_jobs, "compare_job", lambda cfg, resume, **kw: got.update(cfg=cfg, **kw)
                        or {"run_dir": "c"})
    data = {"data.name": "synthetic", "data.crop_size": "64x96", "latency.target_ms": 20}
    api.search("gas", {**data, "gas": {"ggm": False}}, echo=None)
    assert got["cfg"].method == "gas" and got["cfg"].gas.ggm is False and got["cfg"].latency.target_ms == 20
    with pytest.raises(SegnasError, match="settings: gas.ggm"):
        api.search("gas", {**data, "gas.ggm": "maybe"}, echo=None)
    with pytest.raises(SegnasError, match="method: the method is search\\(\\)'s first argument"):
        api.search("gas", {**data, "method": "saswot"})
    api.compare({**data, "methods": ["gas", "saswot"],
                 "train.steps": 10}, echo=None, workers=2)
    assert list(got["cfg"].methods) == ["gas", "saswot"] and got["cfg"].train.steps == 10 and got["workers"] == 2
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("method: gas\n")
    with pytest.raises(SegnasError, match="^resume continues .* drop optim.lr"):  # Python's names, not the CLI's
        api.train({"optim.lr": 0.1}, resume=run, echo=None)
    with pytest.raises(SegnasError, match=r"^resume continues .*; drop recipe \(a resumed run takes anew only data"):
        api.train(resume=run, recipe="cpu-short", echo=None)
    with pytest.raises(SegnasError, match="a gas search run; continue it with search\\('gas'"):
        api.search("saswot", resume=run, echo=None)
    api.search(resume=run, settings={"threads": 1})  # the run names its method; only where it computes changes
    assert got["cfg"] is None and got["resume"] == run and got["changes"] == {"threads": 1}
    (tmp_path / "other.yaml").write_text("method: saswot\n")
    with pytest.raises(SegnasError, match="method: saswot, but this is a gas search"):
        api.search("gas", data, config=tmp_path / "other.yaml", echo=None)


def test_the_pages_first_run_runs_as_written(tmp_path, monkeypatch):
    """docs/python.md's first example, as written (synthetic scenes), in an empty folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))
    exec(compile(page_blocks()[0], str(PAGE), "exec"), {})
    assert Image.open(tmp_path / "mask.png").size == (160, 128)


def test_the_pages_settings_on_your_data_are_valid(monkeypatch):
    """Every settings mapping docs/python.md passes to train, search and compare on a user's data is
    accepted as the command line accepts it (the jobs themselves are not run here)."""
    import segnas.jobs as jobs
    import segnas.jobs.compare as compare_jobs
    import segnas.jobs.search as search_jobs

    calls = []
    result = {"run_dir": "r", "networks": {"n": {"role": "found", "measured_ms": 1.0,
                                                 "training": {"best_val_miou": 0.5}}}}
    monkeypatch.setattr(jobs, "train_job", lambda cfg, **kw: calls.append(cfg) or TrainResult("r", 0.0, 0, {}, 0, 0.0))
    monkeypatch.setattr(search_jobs, "search_job", lambda cfg, resume, **kw: calls.append(cfg) or result)
    monkeypatch.setattr(compare_jobs, "compare_job", lambda cfg, resume, **kw: calls.append(cfg) or result)
    monkeypatch.setattr(api, "load", lambda path: calls.append(path))
    exec(compile(page_blocks()[1], str(PAGE), "exec"), {})
    assert [type(c).__name__ for c in calls[:1]] == ["TrainConfig"] and len(calls) == 4
    assert calls[0].data.crop_size == (360, 480) and calls[0].max_steps == 2700 and calls[0].optim.lr == 0.08
    assert calls[1].method == "gas" and calls[1].latency.target_ms == 25 and calls[1].final.steps == 2700
    assert calls[2] == str(Path("r").resolve()) and calls[3].train.steps == 1800 and calls[3].latency.target_ms == 15


def test_compare_options_are_checked_before_any_work_and_a_network_given_one_way_replaces_the_other(
        monkeypatch, tmp_path):
    with pytest.raises(SegnasError, match=r"--rerun \(rerun\) runs jobs of an existing comparison again"):
        api.compare({"data.name": "synthetic", "data.crop_size": "64x96", "latency.target_ms": 20,
                     "methods": ["gas"], "out_dir": str(tmp_path)}, rerun="gas")
    for option, value in (("device", "gpu"), ("workers", 0)):
        with pytest.raises(SegnasError, match=f"--{option}"):
            api.compare({"data.name": "synthetic", "data.crop_size": "64x96", "latency.target_ms": 20,
                         "methods": ["gas"], "out_dir": str(tmp_path)}, **{option: value})
    assert not any(tmp_path.iterdir())
    import segnas.jobs as jobs

    got = []
    monkeypatch.setattr(jobs, "train_job", lambda cfg, **kw: got.append(cfg) or TrainResult("r", 0.0, 0, {}, 0, 0.0))
    (tmp_path / "s.yaml").write_text("model: {name: fast_scnn}\n")
    api.train({"model.arch": str(tmp_path / "arch.json")}, config=tmp_path / "s.yaml")
    assert got[-1].model.name is None and got[-1].model.arch.endswith("arch.json")
    (tmp_path / "a.yaml").write_text(f"model: {{arch: {tmp_path / 'arch.json'}}}\n")
    api.train({"model.name": "enet"}, config=tmp_path / "a.yaml")
    assert got[-1].model.name == "enet" and got[-1].model.arch is None


def test_evaluate_scores_a_training_as_its_validation_did(trained):
    metrics = api.evaluate(trained.run_dir, "synthetic", options={"size": [48, 64], "length": 8})
    assert len(metrics.iou) == 11 and metrics.miou == pytest.approx(trained.best_miou, abs=0.01)
    assert api.evaluate(trained.run_dir, "synthetic").miou == metrics.miou  # its training's options by default
    with pytest.raises(SegnasError, match="base_size"):
        api.evaluate(trained.run_dir, "synthetic", base_size="48")
    # what load() returned is scored as its checkpoint is, at the size it runs at
    loaded = api.load(trained.run_dir, base_size="32x48")
    assert api.evaluate(loaded, "synthetic", options={"size": [48, 64], "length": 8}).miou == \
        api.evaluate(trained.run_dir, "synthetic", options={"size": [48, 64], "length": 8}, base_size="32x48").miou
    for call in (api.evaluate, api.load):  # what train() returned is taken; anything else is one line
        with pytest.raises(SegnasError, match=r"^trained: expected a checkpoint, a run folder, what train\(\) or "
                                              r"load\(\) returned, got int$"):
            call(3, "synthetic") if call is api.evaluate else call(3)
    assert api.load(trained).checkpoint == api.load(trained.run_dir).checkpoint
    with pytest.raises(SegnasError, match=r"^options: expected a mapping of dataset options \(data.options\), "
                                          r"got list"):
        api.evaluate(trained, "synthetic", options=[1])


def test_bench_and_export_take_a_size_as_text_as_the_command_line_does(trained, tmp_path):
    from segnas.jobs.bench import bench_job, export_job

    checkpoint = str(Path(trained.run_dir) / "checkpoints" / "best.pt")
    path, _ = export_job(checkpoint, tmp_path / "m.onnx", "48x64", progress=False)
    assert path.is_file()
    with pytest.raises(SegnasError, match=r"--size: expected HxW .* got \(64.5, 96\)"):
        export_job(checkpoint, tmp_path / "n.onnx", (64.5, 96), progress=False)
    with pytest.raises(SegnasError, match=r"--size: expected HxW .* got '64\*96'"):
        bench_job([checkpoint], "64*96", ["eager"], progress=False)
    import onnx  # a run folder stands for its best.pt: its classes and trained size, not a zoo default's

    path, _ = export_job(trained.run_dir, tmp_path / "r.onnx", "48x64", progress=False)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["num_classes"] == "11" and "Pole" in meta["classes"], meta
    row = bench_job([trained.run_dir], "48x64", ["eager"], progress=False, min_time_s=0.0)[0]
    assert row["classes"] == 11 and row["classes_from"] == "checkpoint" and row["model"] == str(trained.run_dir)


def test_bench_labels_each_network_as_given_and_measures_each_at_its_own_size(trained, tmp_path):
    """Two checkpoints of one run are two rows, each named as given; without a size, a checkpoint
    is measured at its training size, a static ONNX file at its input, with the backends an ONNX
    file cannot run on left out for it (said); --classes does not rebuild a checkpoint."""
    from segnas.jobs.bench import bench_job, export_job

    resized = api.train({**TINY, "data.base_size": "40x56", "max_steps": 1, "out_dir": str(tmp_path)}, echo=None)
    folder = Path(resized.run_dir) / "checkpoints"
    onnx_file, _ = export_job(str(folder / "best.pt"), tmp_path / "m.onnx", "32x48", progress=False)
    said = []
    rows = bench_job([str(folder / "best.pt"), str(folder / "last.pt"), str(onnx_file)], None, ["eager", "onnxruntime"],
                     progress=False, min_time_s=0.0, echo=said.append)
    assert [(r["model"], r["backend"]) for r in rows] == [
        (str(folder / "best.pt"), "eager"), (str(folder / "best.pt"), "onnxruntime"),
        (str(folder / "last.pt"), "eager"), (str(folder / "last.pt"), "onnxruntime"), (str(onnx_file), "onnxruntime")]
    assert [r["size"] for r in rows] == ["40x56"] * 4 + ["32x48"]
    assert said == [f"note: {onnx_file}: an ONNX file is measured on onnxruntime only (eager left out for it)"]
    with pytest.raises(SegnasError, match=r"--classes 3: .*best\.pt was trained for 11 classes"):
        bench_job([str(folder / "best.pt")], "48x64", ["eager"], num_classes=3, progress=False)


def test_a_job_without_threads_computes_on_the_cores_not_on_the_callers_torch_setting(tmp_path, monkeypatch):
    """``threads`` unset: OMP_NUM_THREADS where set, else the cores the process may use, as on the
    command line (the caller's torch setting made the same settings train differently); the
    caller's setting is put back."""
    import segnas.cost.latency as latency

    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(latency, "default_threads", lambda: 3)
    seen = []
    settings = {**TINY, "threads": None, "max_steps": 1, "out_dir": str(tmp_path)}
    done = api.train(settings, echo=lambda line: seen.append(torch.get_num_threads()))
    assert set(seen) == {3} and torch.get_num_threads() == 1
    seen.clear()  # resumed alike (its own folder, opened first, is not another job's)
    api.train(resume=done.run_dir, echo=lambda line: seen.append(torch.get_num_threads()))
    assert set(seen) == {3}
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    seen.clear()
    api.train(settings, echo=lambda line: seen.append(torch.get_num_threads()))
    assert set(seen) == {2} and torch.get_num_threads() == 1
    # a job run inside another of this process (a search's candidate training) keeps the process's
    # threads; a pool worker limited to 1 thread has the jobs it starts keep 1 (OMP_NUM_THREADS)
    from segnas.engine.rundir import RunDir
    from segnas.parallel.executors import call_with_threads

    outer = RunDir.create(tmp_path / "outer", "job")
    seen.clear()
    api.train(settings, echo=lambda line: seen.append(torch.get_num_threads()))
    assert set(seen) == {1}
    del outer
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert call_with_threads(lambda item: (latency.job_threads(), torch.get_num_threads()), None, 1) == (1, 1)


def test_a_job_on_a_gpu_leaves_tf32_as_the_caller_set_it(tmp_path, monkeypatch):
    """A job on a GPU turns TF32 off for its fp32 arithmetic (``resolve_device``); the caller's
    switches are put back when it returns."""
    import segnas.engine.trainer as trainer

    turned_off = []

    def as_on_a_gpu(name: str = "cpu") -> torch.device:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        turned_off.append(name)
        return torch.device("cpu")

    monkeypatch.setattr(trainer, "resolve_device", as_on_a_gpu)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        api.train({**TINY, "threads": 1, "out_dir": tmp_path})
        assert turned_off
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_a_loaded_network_computes_in_true_fp32_and_leaves_tf32_as_the_caller_set_it(trained, monkeypatch):
    import segnas.jobs.evaluate as evaluate

    inside = []

    def predicting(model, x, bf16):
        inside.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return model(x)

    monkeypatch.setattr(evaluate, "predict_logits", predicting)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        segment = api.load(trained.run_dir)
        segment(np.zeros((48, 64, 3), np.uint8))
        assert inside == [(False, False)]
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    last = Path(trained.run_dir) / "checkpoints" / "last.pt"  # EMA (the recipe's) and raw weights
    assert api.load(last).weights == "EMA" and api.load(last, raw=True).weights == "raw"


def test_a_resume_refused_for_its_new_data_folder_touches_nothing_in_the_run(tmp_path):
    run = Path(api.train({**TINY, "out_dir": str(tmp_path / "runs")}).run_dir)
    (run / ".config.yaml.ab12cd34.tmp").write_text("x")  # a kill's leftover, which opening the run removes
    (run / "checkpoints" / ".last.pt.ab12cd34.tmp").write_text("x")
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*")}, (run / "log.txt").read_text()
    with pytest.raises(SegnasError, match=r"^data\.root \(--data-root\): the synthetic dataset .* name your dataset "
                                          r"in data\.name"):
        api.train({"data.root": str(tmp_path)}, resume=run)
    assert ({p.name: p.stat().st_mtime_ns for p in run.rglob("*")}, (run / "log.txt").read_text()) == before


def test_a_call_leaves_the_process_as_it_was_even_when_it_fails(tmp_path):
    """Threads and random streams are the caller's again after a job; its run folder is unlocked and
    its log closed even while a caught exception's traceback keeps the job's frames alive (a REPL
    keeps the last one); a folder given as a Path is taken as its text."""
    import fcntl
    import os
    import random

    torch.set_num_threads(2)
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    expected = random.random(), np.random.random(), torch.rand(1).item()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)

    def stop(line: str) -> None:  # raises once the run folder exists, at the first epoch's line
        raise RuntimeError(f"stopped at: {line}")

    with pytest.raises(RuntimeError, match="stopped at") as caught:
        api.train({**TINY, "threads": 1, "out_dir": tmp_path}, echo=stop)
    assert torch.get_num_threads() == 2
    assert (random.random(), np.random.random(), torch.rand(1).item()) == expected
    run = next(tmp_path.glob("*-train"))
    with open(run / ".lock", "a") as other:  # another holder of the lock: refused while the job keeps it
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    opened = []
    for fd in os.listdir("/proc/self/fd") if Path("/proc").is_dir() else []:
        try:
            opened.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # (the listing's own descriptor, closed since)
            pass
    assert str(run / "log.txt") not in opened
    assert caught.value is not None  # (the traceback, with the job's frames, still alive here)


def test_mistakes_made_from_python_are_one_line_errors_before_any_work(trained, tmp_path):
    with pytest.raises(SegnasError, match="echo: a function that takes each line"):
        api.train({**TINY, "out_dir": str(tmp_path)}, echo=True)
    with pytest.raises(SegnasError, match="settings: expected a mapping of setting names to values, got list"):
        api.train([("max_steps", 2)])
    with pytest.raises(SegnasError, match="settings: 1: setting names are text"):
        api.train({1: 2})
    with pytest.raises(SegnasError, match="settings: ' optim.lr': setting names are text without spaces around them"):
        api.train({" optim.lr": 0.1})
    with pytest.raises(SegnasError, match=r"settings: optim.lr given twice, dotted and nested \(0.1 and 0.2\)"):
        api.train({**TINY, "out_dir": str(tmp_path), "optim.lr": 0.1, "optim": {"lr": 0.2}})
    with pytest.raises(SegnasError, match=r"settings: optim\.schedule\.x: unknown setting: optim\.schedule takes a value"):
        api.train({**TINY, "out_dir": str(tmp_path), "optim": {"schedule.x": 1}})
    with pytest.raises(SegnasError, match="compare: unknown option 'foo'; the options are any_machine, device, "
                                          "measure, measure_now, rerun, workers"):
        api.compare({}, foo=1)
    with pytest.raises(SegnasError, match="device='cuda' and settings device='cpu': two values for device"):
        api.compare({"device": "cpu", "out_dir": str(tmp_path)}, device="cuda")
    with pytest.raises(SegnasError, match="workers=2 and settings workers=3: two values for workers"):
        api.compare({"workers": 3, "out_dir": str(tmp_path)}, workers=2)
    assert not list(tmp_path.iterdir())
    segment = api.load(trained.run_dir)
    with pytest.raises(SegnasError, match="mask: expected an HxW array of class ids"):
        segment.colorize(np.zeros((4, 4), np.float32))
    with pytest.raises(SegnasError, match="mask: class id 200, but the network has 11 classes"):
        segment.colorize(np.full((4, 4), 200, np.uint8))
    assert segment.colorize(np.full((4, 4), 255, np.uint8)).shape == (4, 4, 3)  # ignored pixels: drawn, not refused
    with pytest.raises(SegnasError, match="mask: class id -1: class ids are 0 or more"):
        segment.colorize(np.full((4, 4), -1, np.int64))
    with pytest.raises(SegnasError, match="image: expected a uint8 HxWx3 RGB array"):
        segment(torch.rand(48, 64, 3, requires_grad=True))


def test_a_budget_within_the_warm_up_is_noted(tmp_path):
    said: list[str] = []
    api.train({**TINY, "out_dir": str(tmp_path)}, recipe="cpu-short", echo=said.append)  # 2 steps, a 100-step warm-up
    assert any("the 2-step budget ends within the learning rate's 100-step warm-up" in line for line in said)
    said.clear()  # an epoch budget: 8 images in batches of 4, 2 steps
    api.train({**TINY, "max_steps": None, "epochs": 1, "data.batch_size": 4, "optim.warmup_iters": 5,
               "out_dir": str(tmp_path)}, echo=said.append)
    assert any("the 2-step budget ends within the learning rate's 5-step warm-up" in line for line in said)
    said.clear()
    api.train({**TINY, "out_dir": str(tmp_path)}, echo=said.append)  # no warm-up
    assert not any("warm-up" in line for line in said)


def test_a_call_closes_the_log_it_opened_and_leaves_the_runs_of_a_job_it_runs_inside_of(trained, tmp_path):
    """After a call its run's log.txt is closed and its folder unlocked, also when it succeeded; a
    call made inside a running job (from its echo, a thread, a notebook cell) leaves that job's run
    folder locked and logging."""
    import logging

    from segnas.engine.rundir import RunDir, held_runs

    done = api.train({**TINY, "max_steps": 1, "out_dir": str(tmp_path / "a")}, echo=None)
    assert f"segnas.run.{Path(done.run_dir).resolve()}" not in logging.Logger.manager.loggerDict  # (none kept)
    assert Path(done.run_dir).resolve() not in held_runs()
    outer = RunDir.create(tmp_path / "outer", "job")  # a job under way in this process
    api.evaluate(trained.run_dir, "synthetic")
    assert outer.path.resolve() in held_runs()
    outer.log("still logging")
    assert "still logging" in (outer.path / "log.txt").read_text()
    del outer
    assert not held_runs()


def test_the_run_dir_a_call_returns_holds_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = api.train({**TINY, "max_steps": 1, "out_dir": "relative"}, echo=None)
    assert Path(result.run_dir).is_absolute() and Path(result.run_dir).parent == tmp_path / "relative"
    monkeypatch.chdir("/")
    assert api.load(result.run_dir).checkpoint.is_absolute()  # (a checkpoint of its folder, resumable from here)


def test_a_call_leaves_the_run_another_thread_opened_while_it_ran(trained, tmp_path):
    import threading

    from segnas.engine.rundir import RunDir, held_runs, releasing_what_it_opens

    go, opened, finish = threading.Event(), threading.Event(), threading.Event()

    def job_in_a_thread() -> None:  # (a training a notebook starts in the background meanwhile)
        go.wait(60)
        with releasing_what_it_opens():
            run = RunDir.create(tmp_path / "background", "job")
            opened.set()
            finish.wait(60)
            run.log("still mine")

    def echo(line: str) -> None:  # the other thread opens its run while this call runs
        go.set()
        opened.wait(60)

    thread = threading.Thread(target=job_in_a_thread)
    thread.start()
    api.evaluate(trained.run_dir, "synthetic", echo=echo)
    assert [p.parent for p in held_runs()] == [(tmp_path / "background").resolve()]
    finish.set()
    thread.join(60)
    assert not held_runs()
    assert "still mine" in next((tmp_path / "background").iterdir()).joinpath("log.txt").read_text()


def test_a_run_another_thread_is_running_is_not_continued_beside_it(tmp_path):
    """A resume from the main thread while a thread still trained the run was accepted: both wrote
    its checkpoints and metrics (epochs 1, 2, 3, 4, 3, 5, 4, ...). Once that thread ends, it resumes."""
    import threading

    from segnas.engine.rundir import RunDir, releasing_what_it_opens

    opened, finish = threading.Event(), threading.Event()
    run: list[RunDir] = []

    def job_in_a_thread() -> None:
        with releasing_what_it_opens():
            run.append(RunDir.create(tmp_path, "job"))
            opened.set()
            finish.wait(60)

    thread = threading.Thread(target=job_in_a_thread, name="background")
    thread.start()
    assert opened.wait(60)
    path = run[0].path
    (path / "config.yaml").write_text("model: {name: fast_scnn}\n")
    with pytest.raises(SegnasError, match=r"another thread of this process \(background\) is running this job now"):
        RunDir.existing(path)
    finish.set()
    thread.join(60)
    RunDir.existing(path).log("continued")  # the thread ended: a resume continues it
    assert "continued" in (path / "log.txt").read_text()


def test_arguments_of_the_wrong_type_are_named_before_any_work(trained, tmp_path):
    """A settings mapping given as config, a dict as search's method, None as a split, "no" as a
    switch (a comparison ran whole with measure="no"), an echo that takes no line: each was a
    traceback from deep inside, or was taken."""
    cases = [(lambda: api.search({"data.name": "synthetic"}), r"^method: expected text or None, got dict"),
             (lambda: api.train(TINY, config={"optim": {"lr": 0.1}}), r"^config: expected text or a path or None"),
             (lambda: api.train(TINY, recipe=["cpu-short"]), r"^recipe: expected text or a path or None, got list"),
             (lambda: api.train(resume=123), r"^resume: expected text or a path or None, got int 123"),
             (lambda: api.evaluate(trained.run_dir, "synthetic", None, None), r"^split: expected text, got NoneType"),
             (lambda: api.evaluate(trained.run_dir, Path("synthetic")), r"^data: expected text, got PosixPath"),
             (lambda: api.load(trained.run_dir, bf16="yes"), r"^bf16: expected True or False, got str 'yes'"),
             (lambda: api.compare({"out_dir": str(tmp_path)}, measure="no"), r"^measure: expected True or False"),
             (lambda: api.train(TINY, echo=lambda: None), r"^echo: .* must take one argument, each line"),
             (lambda: api.train(TINY, 5), r"^train: too many positional arguments"),
             (lambda: api.train({**TINY, "max_steps": 1}, resume=tmp_path / "nope"), r"nope: run directory not found"),
             (lambda: api.train({**TINY, "data.options.length": 4}),
              r"^settings: data.options given whole and data.options.length in part; give one of them")]
    for call, message in cases:
        with pytest.raises(SegnasError, match=message):
            call()
    assert not list(tmp_path.iterdir())


def test_load_keeps_the_random_generators_and_takes_what_load_returned(trained):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    segment = api.load(trained.run_dir)
    assert torch.equal(torch.rand(3), expected)  # (building the network drew its initial weights)
    again = api.load(segment, base_size="native")
    assert again.checkpoint == segment.checkpoint and again.size is None


def test_import_segnas_alone_reaches_the_api_and_stays_light():
    import subprocess
    import sys

    code = ("import sys, segnas; assert 'torch' not in sys.modules; "
            "assert callable(segnas.api.train) and 'api' in segnas.__all__")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_script_without_the_main_guard_fails_at_once_in_its_workers_not_after_running_them(tmp_path):
    """Each spawned worker imports the script; unguarded, it ran the whole search again in every
    worker (retried three times: 16 stray run folders and minutes) before a WorkerError."""
    import subprocess
    import sys

    settings = {"data.name": "synthetic", "data.crop_size": "32x48", "latency.target_ms": 1e9, "latency.size": "32x48",
                "latency.backend": "eager", "latency.table_min_runs": 1, "latency.table_min_time_s": 0,
                "latency.calibration_networks": 0, "random.space_options": {"layers": 6, "base_width": 4},
                "random.candidates": 2, "random.top_k": 1,
                "random.evaluator": {"proxy": {"proxy": "params", "images": 2, "batch_size": 2, "size": [32, 48]}},
                "final.epochs": 0, "workers": 2, "executor": "process", "task_retries": 0, "progress": False,
                "out_dir": str(tmp_path / "runs")}
    (tmp_path / "unguarded.py").write_text(f"from segnas import api\n\napi.search('random', {settings!r})\n")
    done = subprocess.run([sys.executable, str(tmp_path / "unguarded.py")], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode != 0
    assert "search: called while a worker process of a segnas job starts" in done.stderr, done.stderr[-3000:]
    assert len(list((tmp_path / "runs").iterdir())) == 1  # the script's own run, none of a worker's
