"""What a new user hits first (issue 30) and what `eval` / `bench` report (issue 32): budgets,
help, resumable settings, predict outputs, eval's weights and size, bench's class count and table,
progress lines, the demo's latency warning, the search's target check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from segnas.cli.main import app
from segnas.config.recipes import RECIPES_DIR
from segnas.errors import SegnasError

runner = CliRunner()
TINY = ["--data", "synthetic", "--size", "32x40", "--set", "data.options={size: [48, 64], length: 4}",
        "--set", "model.options.width=0.5", "--batch-size", "4", "--threads", "1", "--set", "progress=false"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def small_arch(path: Path, **extra) -> Path:
    from segnas.spaces.multires import MultiResSpace

    space = MultiResSpace(layers=4, base_width=2, width_ratios=(0.5, 1.0))
    path.write_text(json.dumps({"space": "multires", "version": 1,
                                "arch": space.sample(np.random.default_rng(0)).to_dict(), **extra}))
    return path


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    """A finished one-epoch run trained with EMA and a base size (last.pt keeps raw and EMA weights)."""
    tmp = tmp_path_factory.mktemp("ema")
    result = run("train", *TINY, "--base-size", "40x48", "--steps", "1", "--set", "ema_decay=0.5",
                 "--out-dir", tmp / "runs")
    assert result.exit_code == 0, result.output
    return next((tmp / "runs").iterdir())


# ----------------------------------------------------------------------------- item 1: budgets, help
def test_a_step_budget_alone_is_not_capped_by_the_default_epochs(tmp_path):
    # 4 images at batch 4: one step per epoch, so 12 steps are 12 epochs (the old default capped at 10)
    result = run("train", *TINY, "--steps", "12", "--set", "eval_every=100", "--out-dir", tmp_path)
    assert result.exit_code == 0, result.output
    records = metrics(next(tmp_path.iterdir()))
    assert records[-1]["epoch"] == 12 and records[-1]["step"] == 12


def test_a_time_budget_alone_is_not_capped_by_the_default_epochs(tmp_path):
    result = run("train", *TINY, "--minutes", "0.05", "--set", "eval_every=1000", "--out-dir", tmp_path)
    assert result.exit_code == 0, result.output
    records = metrics(next(tmp_path.iterdir()))
    assert records[-1]["epoch"] > 10 and records[-1]["train_s"] >= 3.0


def test_epochs_default_only_without_a_budget():
    from segnas.config import TrainConfig

    assert TrainConfig().epochs == 10
    assert TrainConfig(time_budget_min=60).epochs is None
    assert TrainConfig(max_steps=500).epochs is None
    assert TrainConfig(max_steps=500, epochs=3).epochs == 3


def test_search_final_training_has_the_same_meaning():
    from segnas.config.search import FinalTraining

    assert FinalTraining().epoch_limit == 100 and FinalTraining().enabled
    assert FinalTraining(steps=800).epoch_limit is None  # the step budget alone ends it
    assert FinalTraining(minutes=5).epoch_limit is None
    assert FinalTraining(steps=800, epochs=4).epoch_limit == 4
    assert not FinalTraining(epochs=0).enabled


def test_train_help_shows_defaults(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("TERMINAL_WIDTH", "250")
    result = run("train", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for default in ("default: (fast_scnn)", "default: (synthetic)", "default: (8)", "default: (0.05)",
                    "default: (runs)", "until the budget", "default: (no limit)"):
        assert default in text, default


def test_help_paragraphs_flow_with_the_terminal(monkeypatch):
    """A docstring's source line breaks do not show: a paragraph fills the terminal's width."""
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("TERMINAL_WIDTH", "250")
    result = run("train", "--help")
    assert result.exit_code == 0
    line = next(ln for ln in result.output.splitlines() if "Without --epochs" in ln)
    assert "global batch" in line, line


def test_train_without_arguments_shows_help(monkeypatch):
    import segnas.jobs

    def refuse(*a, **k):
        raise AssertionError("a training started")

    monkeypatch.setattr(segnas.jobs, "train_job", refuse)
    result = run("train")
    assert "Usage" in result.output and "--model" in result.output


# ----------------------------------------------------------------------------- item 3: resolved paths
def test_config_yaml_stores_absolute_paths_and_resume_works_from_another_folder(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    small_arch(work / "arch.json")
    i = TINY.index("model.options.width=0.5")
    tiny = TINY[:i - 1] + TINY[i + 1:]  # without the zoo network's option (refused with --arch)
    result = run("train", *tiny, "--arch", "arch.json", "--steps", "1", "--out-dir", "runs")
    assert result.exit_code == 0, result.output
    run_dir = next((work / "runs").iterdir())
    text = (run_dir / "config.yaml").read_text()
    assert text.startswith("# ") and "absolute paths" in text.splitlines()[0]
    saved = yaml.safe_load(text)
    assert saved["model"]["arch"] == str(work / "arch.json") and saved["out_dir"] == str(work / "runs")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run("train", "--resume", run_dir.resolve())
    assert result.exit_code == 0, result.output


def test_save_config_resolves_every_path_setting(tmp_path, monkeypatch):
    from segnas.config import TrainConfig, load_config, save_config

    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig.model_validate({"data": {"name": "camvid", "root": "data/camvid"},
                                      "model": {"name": None, "arch": "../a.json"},
                                      "loss": {"teacher": "t/best.pt"}, "out_dir": "runs"})
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(TrainConfig, tmp_path / "c.yaml")
    assert again.data.root == str(tmp_path / "data" / "camvid")
    assert again.model.arch == str(tmp_path.parent / "a.json")
    assert again.loss.teacher == str(tmp_path / "t" / "best.pt") and again.out_dir == str(tmp_path / "runs")


# ----------------------------------------------------------------------------- item 5: predict
def test_predict_keeps_both_outputs_of_images_sharing_a_stem(ema_run, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for ext in ("png", "jpg"):
        Image.fromarray(np.random.randint(0, 255, (20, 24, 3), dtype=np.uint8)).save(frames / f"x.{ext}")
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(frames / "y.png")
    result = run("predict", ema_run / "checkpoints" / "best.pt", frames, "--out", tmp_path / "out", "--alpha", "1")
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["x.jpg_mask.png", "x.jpg_overlay.png", "x.png_mask.png", "x.png_overlay.png",
                       "y_mask.png", "y_overlay.png"]
    assert "wrote 3" in result.output


def test_predict_mirrors_subfolders_and_never_reads_or_replaces_its_own_outputs(ema_run, tmp_path):
    frames = tmp_path / "frames"
    (frames / "cam1").mkdir(parents=True)
    image = np.random.randint(0, 255, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(image).save(frames / "x.png")
    Image.fromarray(image).save(frames / "cam1" / "x.png")
    Image.fromarray(image).save(frames / "x_mask.png")  # e.g. a label kept beside its image
    before = (frames / "x_mask.png").read_bytes()
    ckpt = ema_run / "checkpoints" / "best.pt"
    result = run("predict", ckpt, frames, "--out", frames)
    assert result.exit_code == 2 and "is the input folder" in result.output
    assert (frames / "x_mask.png").read_bytes() == before and not (frames / "x_overlay.png").exists()
    for _ in range(2):  # an output folder inside the input folder: a rerun predicts the same 3 images
        result = run("predict", ckpt, frames, "--out", frames / "pred")
        assert result.exit_code == 0 and "wrote 3" in result.output, result.output
    assert sorted(p.relative_to(frames / "pred").as_posix() for p in (frames / "pred").rglob("*.png")) == [
        "cam1/x_mask.png", "cam1/x_overlay.png", "x_mask.png", "x_mask_mask.png", "x_mask_overlay.png",
        "x_overlay.png"]
    # a prediction that would land on an input (frames/frames/x.png -> OUT/frames/x_mask.png with OUT the
    # parent of frames): refused before anything is written
    (frames / "frames").mkdir()
    Image.fromarray(image).save(frames / "frames" / "x.png")
    result = run("predict", ckpt, frames, "--out", tmp_path)
    assert result.exit_code == 2 and "would replace an input image" in result.output, result.output
    assert (frames / "x_mask.png").read_bytes() == before and not (tmp_path / "x_mask.png").exists()


# ----------------------------------------------------------------------------- item 7: eval
def _scored(monkeypatch):
    import segnas.jobs.evaluate as ev

    seen = {}
    real = ev.evaluate

    def spy(model, dataset, *args, **kwargs):
        seen["state"] = {k: v.clone() for k, v in model.state_dict().items()}
        seen["shape"] = tuple(dataset[0][0].shape)
        return real(model, dataset, *args, **kwargs)

    monkeypatch.setattr(ev, "evaluate", spy)
    return seen


def _same(a, b) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_eval_scores_the_ema_weights_at_the_checkpoints_base_size(ema_run, monkeypatch):
    last = ema_run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=False)
    ema, raw = state["ema"]["module"], state["model"]
    assert not _same(ema, raw)
    seen = _scored(monkeypatch)

    result = run("eval", last, "--data", "synthetic")
    assert result.exit_code == 0, result.output
    assert _same(seen["state"], ema) and seen["shape"][-2:] == (40, 48)
    assert "EMA weights at 40x48 (the checkpoint's data.base_size" in result.output

    result = run("eval", last, "--data", "synthetic", "--raw", "--base-size", "native")
    assert result.exit_code == 0, result.output
    assert _same(seen["state"], raw) and seen["shape"][-2:] == (48, 64)  # its training's synthetic scenes' size
    assert "raw weights at native size (as given)" in result.output


def test_eval_progress_lines_when_not_on_a_terminal(ema_run, monkeypatch):
    import sys

    import segnas.progress

    engine_eval = sys.modules["segnas.engine.evaluate"]

    monkeypatch.setattr(segnas.progress, "PLAIN_EVERY_S", 0.01)
    real = engine_eval.iter_batches

    def slow(dataset, batch_size):
        for batch in real(dataset, batch_size):
            import time

            time.sleep(0.05)
            yield batch

    monkeypatch.setattr(engine_eval, "iter_batches", slow)
    result = run("eval", ema_run / "checkpoints" / "best.pt", "--data", "synthetic", "--batch-size", "1")
    assert result.exit_code == 0, result.output
    import re

    assert re.search(r"^eval synthetic/val: \d+/\d+ after \d+ s$", result.output, re.M), result.output


def test_task_progress_prints_periodic_lines(capsys, monkeypatch):
    import time

    import segnas.progress
    from segnas.progress import task_progress

    monkeypatch.setattr(segnas.progress, "PLAIN_EVERY_S", 0.02)
    with task_progress("bench", 2) as ticker:
        time.sleep(0.1)
        ticker.advance()
        time.sleep(0.1)
    lines = capsys.readouterr().err.splitlines()
    assert lines and lines[0].startswith("bench: 0/2 after") and any("1/2" in line for line in lines)
    assert len(lines) <= 4  # the wait doubles after each line (0.02, 0.06, 0.14 s): not one every 0.02 s
    with task_progress("quiet", 1, enabled=False):
        time.sleep(0.05)
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- item 7: bench
def _fake_latency(monkeypatch):
    import segnas.jobs.bench as bench
    from segnas.cost import LatencyResult

    monkeypatch.setattr(bench, "measure_latency",
                        lambda model, shape, backend, *a, **k: LatencyResult(backend, shape, 2.0, 0.1, 10, 1))
    monkeypatch.setattr(bench, "matmul_peak_gflops", lambda threads: 100.0)


def test_bench_class_count_from_arch_file_and_names_whole_in_80_columns(tmp_path, monkeypatch):
    _fake_latency(monkeypatch)
    monkeypatch.setenv("COLUMNS", "80")
    arch = small_arch(tmp_path / "saswot_camvid_steps300_r_ops_inits1.json", num_classes=11)
    result = run("bench", "-m", arch, "-m", "fast_scnn", "--size", "32x48", "-b", "onnxruntime", "-b", "eager-cl",
                 "--threads", "1", "--json", tmp_path / "rows.json")
    assert result.exit_code == 0, result.output
    assert "saswot_camvid_steps300_r_ops_inits1" in result.output and "…" not in result.output
    assert "11 classes (arch file)" in result.output and "19 classes (default; give --classes)" in result.output
    assert "onnxruntime" in result.output and "eager-cl" in result.output
    names = (str(arch), "fast_scnn")  # each network's name line is the -m as given, whole
    assert max(len(line) for line in result.output.splitlines() if line not in names) <= 80
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["classes"] for r in rows] == [11, 11, 19, 19]

    result = run("bench", "-m", "fast_scnn", "--size", "32x48", "-b", "eager", "--classes", "7", "--threads", "1")
    assert result.exit_code == 0 and "7 classes (--classes)" in result.output
    monkeypatch.setenv("COLUMNS", "40")  # a narrow window: the table at its own width, numbers whole ("661…" before)
    result = run("bench", "-m", "fast_scnn", "--size", "32x48", "-b", "onnxruntime", "--threads", "1")
    assert result.exit_code == 0 and "…" not in result.output and " 500.0 " in result.output, result.output


def test_bench_takes_a_checkpoints_classes_and_an_exported_onnx_file(ema_run, tmp_path, monkeypatch):
    _fake_latency(monkeypatch)
    best = ema_run / "checkpoints" / "best.pt"
    result = run("bench", "-m", best, "--size", "32x48", "-b", "eager", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "11 classes (checkpoint)" in result.output  # synthetic scenes have 11 classes
    result = run("bench", "-m", best, "--size", "32x48", "-b", "eager", "--classes", "3", "--threads", "1")
    assert result.exit_code == 2 and "--classes 3: " in result.output and "was trained for 11 classes" in result.output

    result = run("export", best, "--out", tmp_path / "m.onnx", "--size", "32x48")
    assert result.exit_code == 0, result.output
    result = run("bench", "-m", tmp_path / "m.onnx", "--size", "32x48", "--threads", "1", "--json",
                 tmp_path / "rows.json")
    assert result.exit_code == 0, result.output
    row = json.loads((tmp_path / "rows.json").read_text())[0]
    assert row["model"] == str(tmp_path / "m.onnx") and row["backend"] == "onnxruntime" and row["classes"] == 11
    assert row["median_ms"] > 0 and row["params_m"] > 0 and row["gflops"] is None
    result = run("bench", "-m", tmp_path / "m.onnx", "--size", "64x64", "--threads", "1")
    assert result.exit_code == 2 and "--size 32x48" in result.output


# ----------------------------------------------------------------------------- item 8: demo warning
# (the demo is a comparison: its run and its table's warning are tested in tests/test_compare.py)
def test_demo_latency_warning_only_when_noisy():
    from segnas.cost import LatencyResult
    from segnas.jobs.demo import latency_warning

    assert latency_warning(LatencyResult("eager", (1, 3, 8, 8), 2.0, 0.5, 10, 1)) is None
    assert "IQR" in latency_warning(LatencyResult("eager", (1, 3, 8, 8), 2.0, 2.5, 10, 1))


# ----------------------------------------------------------------------------- item 6: search target
class _Latency:
    """A latency model whose networks cost 1 ms per MMAC, with a fixed call overhead."""

    target_ms: float
    size = (32, 48)

    def __init__(self, target_ms, overhead=0.05):
        self.target_ms, self.overhead, self.predicted = target_ms, overhead, 0

    def call_overhead(self):
        return self.overhead

    def describe(self):
        return "fake"

    def predict(self, space, arch, num_classes):
        self.predicted += 1
        keys = space.latency_keys(arch, num_classes, self.size)
        return self.overhead + 1e-6 * sum(k.cin * k.cout * k.h * k.w / k.stride ** 2 for k in keys)


def test_an_unreachable_target_is_refused_before_the_search():
    from segnas.errors import SegnasError
    from segnas.search.target import check_target_reachable
    from segnas.spaces import get_space

    space = get_space("multires")
    with pytest.raises(SegnasError, match="below the runtime's call overhead"):
        check_target_reachable(space, _Latency(0.01), 19)
    torch_state = torch.get_rng_state()
    fastest = min(_Latency(1).predict(space, space.sample(np.random.default_rng(s), spread=True), 19)
                  for s in range(50))
    latency = _Latency(fastest / 3)
    with pytest.raises(SegnasError, match="latency.target_ms: .* out of reach of space 'multires'.*fewer layers or a "
                                          "smaller base_width in the method's space settings; for saswot") as refused:
        check_target_reachable(space, latency, 19)
    assert "--space mobile" not in refused.value.in_comparison()  # (compare has no such option)
    assert "give this method a smaller space in its methods entry" in refused.value.in_comparison()
    assert latency.predicted == 1  # one prediction, not a search
    for name, hint in (("cells", r"smaller channels or fewer cells in layout in the method's space settings; for"),
                       ("mobile", r"shallower stage_depths in the method's space settings\)")):  # its own options
        with pytest.raises(SegnasError, match=hint):
            check_target_reachable(get_space(name), _Latency(1e-9, overhead=0.0), 19)
    check_target_reachable(space, _Latency(fastest), 19)  # reachable: no error
    check_target_reachable(space, _Latency(None), 19)  # no target: nothing to check
    assert torch.equal(torch.get_rng_state(), torch_state)  # the search's random streams are untouched


def test_ssr_with_a_flops_resource_needs_no_latency_target(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))
    result = run("search", "ssr", "--data", "synthetic", "--size", "48x64", "--backend", "eager", "--threads", "1",
                 "--resource", "flops", "--target-gflops", "4", "--out-dir", tmp_path / "runs",
                 "--set", "ssr.space={channels: [8, 16], slots: [2, 2], stem_channels: 4, decoder_width: 8, "
                          "dilations: [1, 2], width_ratios: [1.0, 0.5]}",
                 "--set", "ssr.pretrain_epochs=1", "--set", "ssr.search_epochs=1", "--set", "ssr.gap_val_images=0",
                 "--set", "final.epochs=0", "--set", "progress=false", "--set", "latency.table_min_runs=1",
                 "--set", "latency.table_min_time_s=0", "--set", "data.options={size: [48, 64], length: 4}",
                 "--set", "data.batch_size=2")
    assert result.exit_code == 0, result.output
    assert "done: " in result.output


def test_resume_takes_anew_only_where_the_run_computes(tmp_path):
    """A run moved to another machine continues with its data elsewhere (``--data-root``, kept in its
    config.yaml for the next resume); a setting that changes what it computes is refused, named."""
    data = tmp_path / "camvid"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for k in range(2):
            name = f"0001TP_{6690 + 30 * k:06d}.png"
            for folder, array in ((split, rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)),
                                  (f"{split}annot", rng.integers(0, 12, (48, 64), dtype=np.uint8))):
                (data / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(data / folder / name)
    result = run("train", "--data", "camvid", "--data-root", data, "--arch", small_arch(tmp_path / "arch.json"),
                 "--size", "32x40", "--batch-size", "2", "--threads", "1", "--steps", "1", "--set", "progress=false",
                 "--out-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    run_dir = next((tmp_path / "runs").iterdir())
    moved = data.rename(tmp_path / "moved")

    result = run("train", "--resume", run_dir)
    assert result.exit_code == 2 and str(data) in result.output
    result = run("train", "--resume", run_dir, "--epochs", "3", "--data-root", moved)
    assert result.exit_code == 2 and "drop --epochs (a resumed run takes anew only data.root," in result.output
    result = run("train", "--resume", run_dir, "--set", "executor=inline")  # a search's setting, not a training's
    assert result.exit_code == 2 and ("drop executor (a resumed run takes anew only data.root, data.workers, "
                                      "data.cache, threads, device, progress)") in result.output
    result = run("train", "--resume", run_dir, "--data-root", tmp_path / "nowhere")
    assert result.exit_code == 2 and "nowhere" in result.output
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["root"] == str(data)  # nothing kept

    result = run("train", "--resume", run_dir, "--data-root", moved, "--threads", "2")
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["data"]["root"] == str(moved) and saved["threads"] == 2
    result = run("train", "--resume", run_dir)  # the next resume reads the new place from config.yaml
    assert result.exit_code == 0, result.output


def test_resumable_values_reads_the_dotted_settings_a_dump_holds():
    from segnas.training import RESUMABLE, resumable_values

    assert resumable_values({"data": {"root": "/d", "batch_size": 8}, "device": "cpu", "seed": 1}) == {
        "data.root": "/d", "device": "cpu"}
    assert resumable_values({}) == {} and "seed" not in RESUMABLE


def test_a_setting_that_holds_a_name_or_a_file_is_saved_absolute_only_when_it_is_a_file(tmp_path, monkeypatch):
    from segnas.config.compare import CompareSettings
    from segnas.config.io import saved_form
    from segnas.jobs.search import make_settings

    monkeypatch.chdir(tmp_path)
    settings = make_settings("gas", {"data": {"name": "synthetic"}, "latency": {"probe": "probe/arch.json"},
                                     "gas": {"pretrained": "runs/old"}})
    saved = saved_form(settings)
    assert saved["latency"]["probe"] == str(tmp_path / "probe" / "arch.json")
    assert saved["gas"]["pretrained"] == str(tmp_path / "runs" / "old")
    saved = saved_form(make_settings("saswot", {"data": {"name": "synthetic"}, "latency": {"probe": "fast_scnn"},
                                                "saswot": {"scoring": {"proxy": "my_proxy.json"}}}))
    assert saved["latency"]["probe"] == "fast_scnn" and saved["saswot"]["scoring"]["proxy"] == str(
        tmp_path / "my_proxy.json")
    assert saved_form(make_settings("saswot", {"data": {"name": "synthetic"}}))["saswot"]["scoring"]["proxy"] == "nwot"
    compare = CompareSettings.model_validate({"data": {"name": "synthetic"},
                                              "latency": {"target_ms": 5, "size": [48, 64]},
                                              "measure_probe": "probe.json"})
    assert saved_form(compare)["measure_probe"] == str(tmp_path / "probe.json")


def test_one_setting_given_twice_in_one_form_or_another_is_taken_and_two_values_are_refused():
    from segnas.cli.main import parse_overrides
    from segnas.errors import SegnasError

    assert parse_overrides(["optim.lr=1e-2", "optim.lr=0.01"]) == {"optim.lr": 0.01}
    assert parse_overrides(["data.crop_size=48x64", "data.crop_size=48 x 64"])["data.crop_size"] == "48 x 64"
    assert parse_overrides(["loss.x=nan", "loss.x=nan"]) == {"loss.x": "nan"}  # (nan is not equal to itself)
    with pytest.raises(SegnasError, match="--set optim.lr: given twice"):
        parse_overrides(["optim.lr=0.1", "optim.lr=0.2"])


def test_an_interrupted_command_says_how_to_continue_the_run_it_was_in(tmp_path, monkeypatch):
    import segnas.jobs as jobs
    import segnas.jobs.bench as bench
    from segnas.engine.rundir import RunDir, release_all

    release_all()  # (runs earlier tests' runners kept)
    folder = tmp_path / "runs" / "r1"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("method: random\n")  # a search run's settings

    def interrupted(*args, **kwargs):
        search = RunDir.existing(folder)  # noqa: F841  (held, as a job's run is, when Ctrl-C comes)
        (folder / "train" / "t").mkdir(parents=True)
        (folder / "train" / "t" / "config.yaml").write_text("epochs: 1\n")
        final = RunDir.existing(folder / "train" / "t")  # noqa: F841  (its final training, inside it)
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "train_job", interrupted)
    result = CliRunner().invoke(app, ["train", "--data", "synthetic", "--steps", "1"])
    assert result.exit_code == 130
    assert f"interrupted; continue with segnas search random --resume {folder.resolve()}" in result.output
    release_all()  # (the runner keeps the traceback, and with it the runs)
    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))
    teacher = tmp_path / "cache" / "teachers" / "k1" / "r"
    teacher.mkdir(parents=True)
    (teacher / "config.yaml").write_text("epochs: 1\n")

    def teaching(*args, **kwargs):
        held = RunDir.existing(teacher)  # noqa: F841  (a teacher trained once, in the cache)
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "train_job", teaching)
    result = CliRunner().invoke(app, ["train", "--data", "synthetic", "--steps", "1"])
    assert result.output.strip() == "interrupted; run the same command again to continue"
    release_all()
    monkeypatch.setattr(bench, "bench_job", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    result = CliRunner().invoke(app, ["bench", "-m", "fast_scnn", "--size", "32x48"])
    assert result.exit_code == 130 and result.output.strip() == "interrupted"  # (bench makes no run to continue)


def test_a_searchs_training_record_given_as_an_architecture_is_named_for_what_it_is(tmp_path):
    from segnas.errors import SegnasError
    from segnas.spaces import read_arch_file

    (tmp_path / "arch_train.json").write_text(json.dumps({"run_dir": "train/x", "best_val_miou": 0.5}))
    with pytest.raises(SegnasError, match=r"arch_train.json: a search's record of a finished training, not an "
                                          r"architecture; give the search's arch.json"):
        read_arch_file(tmp_path / "arch_train.json")
    (tmp_path / "arch.json").write_text("{}")  # a search's run folder given for its architecture
    with pytest.raises(SegnasError, match=r"^.*: a folder; its found network is .*arch\.json$"):
        read_arch_file(tmp_path)


def test_segnas_warnings_print_as_one_line_and_other_packages_warnings_as_python_shows_them(capsys, monkeypatch,
                                                                                           tmp_path):
    """The command shows segnas's own warnings (a busy host, a rebuilt cache file) as one
    ``warning:`` line, not Python's two lines with the source line that raised them
    (tests/test_plugins.py checks the hook is installed when the command starts)."""
    import segnas.cli.main as cli
    import segnas.cost.table as table
    from segnas.errors import SegnasWarning

    cli.one_line_warning(SegnasWarning("latency table: other processes keep 1.0 cores busy"), SegnasWarning,
                         table.__file__, 210)
    assert capsys.readouterr().err == "warning: latency table: other processes keep 1.0 cores busy\n"
    shown = []
    monkeypatch.setattr(cli, "SHOW_WARNING", lambda *args: shown.append(args))
    cli.one_line_warning(RuntimeWarning("divide by zero"), RuntimeWarning, table.__file__, 3)
    assert capsys.readouterr().err == "" and shown and shown[0][1] is RuntimeWarning
    # in the log of the run the command holds (a refitted correction's only explanation was on stderr)
    from segnas.engine.rundir import RunDir, release_all

    run = RunDir.create(tmp_path, "t")
    cli.one_line_warning(SegnasWarning("corrections.json: unusable; they will be refitted"), SegnasWarning,
                         table.__file__, 210)
    release_all()
    assert "warning: corrections.json: unusable; they will be refitted" in (run.path / "log.txt").read_text()


def _segnas(*args: str, **popen) -> "subprocess.Popen":
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "segnas", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, **popen)


def _wait_for(paths, proc, seconds: float = 120.0) -> None:
    import time

    end = time.monotonic() + seconds
    while not any(paths()) and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.1)
    assert any(paths()), proc.communicate(timeout=30)[0] if proc.poll() is not None else "timed out"


def test_a_terminated_command_says_and_logs_how_to_continue(tmp_path):
    """SIGTERM (a batch system's time limit) ended a job silently: its log never named the run to resume."""
    import signal

    proc = _segnas("train", "--data", "synthetic", "--set", "data.options={size: [32, 40], length: 4}",
                   "--set", "progress=false", "--set", "model.options.width=0.25", "--steps", "100000",
                   "--threads", "1", "--out-dir", str(tmp_path))
    _wait_for(lambda: list(tmp_path.glob("*/metrics.jsonl")), proc)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0]
    run = next(tmp_path.iterdir())
    assert proc.returncode == 143, output
    assert f"interrupted; continue with segnas train --resume {run.resolve()}" in output
    assert "interrupted; continue with" in (run / "log.txt").read_text()


def test_ctrl_c_on_a_search_with_worker_processes_prints_one_line(tmp_path):
    """Ctrl-C reaches the whole process group: each pool worker printed a KeyboardInterrupt traceback."""
    import os
    import signal

    proc = _segnas("search", "random", "--data", "synthetic", "--size", "32x48", "--backend", "eager",
                   "--set", "data.options={size: [32, 48], length: 8}", "--set", "progress=false",
                   "--target-ms", "1000", "--candidates", "100000", "--workers", "2", "--threads", "1",
                   "--set", "latency.calibration_networks=0", "--final-steps", "1", "--out-dir", str(tmp_path),
                   start_new_session=True)
    _wait_for(lambda: [p for p in tmp_path.glob("*/candidates.jsonl") if p.stat().st_size], proc, 300)
    os.killpg(proc.pid, signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "interrupted; continue with segnas search random --resume" in output


def test_a_home_folder_in_a_path_setting_is_where_the_run_goes(tmp_path, monkeypatch):
    """``out_dir: ~/runs`` made a folder named ``~`` here and saved the home folder's path in config.yaml."""
    from segnas.config import TrainConfig
    from segnas.config.io import build_config

    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = build_config(TrainConfig, {"out_dir": "~/runs", "data": {"name": "folder", "root": "~/data"}})
    assert cfg.out_dir == str(tmp_path / "runs") and cfg.data.root == str(tmp_path / "data")
    # a search's final-training recipe file, and the Python API's file and folder arguments
    from segnas import api
    from segnas.config.search import FinalTraining

    shutil.copy(RECIPES_DIR / "cpu-short.yaml", tmp_path / "mine.yaml")
    assert FinalTraining(recipe="~/mine.yaml").recipe == str(tmp_path / "mine.yaml")
    with pytest.raises(SegnasError, match=f"^{tmp_path / 'nowhere'}: run directory not found"):
        api.train(resume="~/nowhere")


def test_a_write_that_finds_no_room_is_one_line_with_how_to_continue(tmp_path):
    """A full disk (here the file-size limit, `ulimit -f`) while a checkpoint was written: a torch
    traceback ("unexpected pos"), no continue line. Now one line naming the file, why, and how to
    continue once there is room; the resume, with room, ends the training."""
    import resource

    args = ["train", *TINY, "--steps", "2", "--out-dir", str(tmp_path)]
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))  # noqa: E731
    proc = _segnas(*args, preexec_fn=limit)
    output = proc.communicate(timeout=300)[0]
    run = next(tmp_path.iterdir())
    assert proc.returncode == 2 and "Traceback" not in output, output
    said = " ".join(output.split())
    assert f"error: {run / 'checkpoints'}" in output, output
    assert ("cannot be written: the file-size limit of this process (ulimit -f); once there is room, continue with "
            f"segnas train --resume {run}") in said, output
    assert not [p for p in run.rglob("*.tmp")]
    resumed = _segnas("train", "--resume", str(run))
    assert resumed.communicate(timeout=300)[0] and resumed.returncode == 0
    assert (run / "checkpoints" / "last.pt").is_file()


def test_a_job_whose_output_pipe_closes_goes_on(tmp_path):
    """`segnas train ... | head -1`, or a tee that died with its ssh session: rich stopped the job at
    its next line with exit status 1 and no word. The job goes on; its run's log keeps its lines."""
    proc = _segnas("train", *TINY, "--steps", "6", "--out-dir", str(tmp_path))
    assert proc.stdout.readline().startswith("training: run ")
    proc.stdout.close()
    assert proc.wait(timeout=300) == 0
    log = next(tmp_path.iterdir()).joinpath("log.txt").read_text()
    assert "epoch 6 " in log or "step 6" in log, log[-500:]
