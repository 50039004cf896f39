"""FasterSeg end to end on tiny settings: search → derive → arch files → (short) final training;
λ adaptation, a start from another run's pre-trained supernet, resume after kill -9."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from segnas.cost import LatencyModel, count_flops
from segnas.cost.table import LatencyTable
from segnas.engine import load_checkpoint
from segnas.jobs.search import make_settings, search_job
from segnas.search.strategies.fasterseg import adapt_lambda
from segnas.spaces import build_from_arch, read_arch_file


def test_lambda_adaptation_moves_towards_the_target():
    assert adapt_lambda(0.01, latency_ms=5.0, target_ms=10.0, tolerance=0.1) == 0.005  # too fast: relax
    assert adapt_lambda(0.01, latency_ms=15.0, target_ms=10.0, tolerance=0.1) == 0.02  # too slow: push
    assert adapt_lambda(0.01, latency_ms=10.5, target_ms=10.0, tolerance=0.1) == 0.01


def tiny_settings(tmp_path, **section) -> dict:
    return {
        "method": "fasterseg",
        "data": {"name": "synthetic", "options": {"size": [64, 96], "length": 8}, "crop_size": [64, 96],
                 "batch_size": 2},
        "latency": {"target_ms": 5.0, "backend": "eager", "threads": 1, "table_min_runs": 1, "table_min_time_s": 0.0,
                    "calibration_networks": 0},
        "fasterseg": {"space": {"layers": 5, "base_width": 2, "width_ratios": [0.5, 1.0]},
                      "pretrain_epochs": 1, "search_epochs": 2, "derive_val_images": 4, **section},
        "threads": 1, "final": {"epochs": 1, "overrides": {"ema_decay": None}}, "out_dir": str(tmp_path / "runs"), "progress": False}


@pytest.fixture
def tiny_search(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))
    return lambda **section: tiny_settings(tmp_path, **section)


def records_of(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_search_derives_trains_and_reports(tiny_search):
    summary = search_job(make_settings("fasterseg", tiny_search()))
    run = Path(summary["run_dir"])
    records = records_of(run)
    assert [r["phase"] for r in records] == ["pretrain", "search", "search"]
    assert all("student_latency_ms" in r and "lambda" in r for r in records[1:])
    # the official search step: the student's α/β also learn from its widest and narrowest networks
    assert all("arch1_seg_max" in r and "arch1_seg_min" in r and "arch0_seg_max" not in r for r in records[1:])
    # the λ logged for each search epoch is the previous one adapted to that epoch's derived student
    first, second = records[1], records[2]
    assert second["lambda"] == adapt_lambda(first["lambda"], first["student_latency_ms"], 5.0, 0.1)
    for name in ("teacher", "student"):
        data = read_arch_file(run / f"{name}.json")
        assert data["space"] == "multires" and data["predicted_latency_ms"] > 0
        build_from_arch(data, 11)
        assert (run / "archs" / f"{name}_epoch002.json").is_file()
    assert read_arch_file(run / "arch.json")["arch"] == read_arch_file(run / "student.json")["arch"]  # the found one
    student = summary["networks"]["student"]
    assert summary["method"] == "fasterseg" and student["role"] == "found" and student["measured_ms"] > 0
    assert summary["networks"]["teacher"]["role"] == "teacher"
    assert student["training"]["best_val_miou"] >= 0
    student_run = run / json.loads((run / "student_train.json").read_text())["run_dir"]  # relative to the run
    assert records_of(student_run)[-1]["train_kd"] > 0  # distilled from the trained teacher
    assert (run / "search_result.json").is_file()


class FlopsTable(LatencyTable):
    """A deterministic stand-in for a measured table: an operator costs 1 ms per 10 MFLOPs, no call
    overhead. The search sees costs that follow the work of each choice, without timing noise."""

    def _measure(self, key) -> float:
        with torch.random.fork_rng():  # building the operator must not move the search's RNG
            return count_flops(key.build().eval(), key.input_shape).gflops * 100.0

    def call_overhead(self, shape) -> float:
        return 0.0


@pytest.fixture
def flops_search(tmp_path):
    """``search(data)``: the search job on those settings with its latency from the FLOPs table."""

    def search(data: dict) -> Path:
        cfg = make_settings("fasterseg", data)
        table = FlopsTable("eager", threads=1, path=tmp_path / "flops_table.json")
        return Path(search_job(cfg, latency=LatencyModel(table, cfg.deployment_size(), cfg.latency.target))["run_dir"])

    return search


def test_lambda_doubles_and_the_latency_term_falls_under_a_demanding_target(tiny_search, flops_search):
    """With a target far below anything reachable, λ doubles every search epoch and the student's
    expected latency (the regularized quantity, λ factored out) falls epoch after epoch. (Whether the
    *derived* network gets faster depends on argmax flips; the CamVid benchmark measures that.) Costs
    come from FLOPs, not timings: a measured table's noise is as large as these tiny steps."""
    # (without the widest and narrowest passes, whose segmentation losses also move α and β)
    data = tiny_search(pretrain_epochs=0, search_epochs=4, arch_lr=0.05, lam=1.0, search_extremes=False)
    data.update(final={"epochs": 0}, latency={**data["latency"], "target_ms": 1e-3, "check_target": False})
    records = records_of(flops_search(data))
    assert [r["lambda"] for r in records] == [1.0, 2.0, 4.0, 8.0]
    expected = [r["arch1_latency"] / r["lambda"] for r in records]
    assert all(b < a for a, b in zip(expected, expected[1:])), expected


def test_lambda_adaptation_moves_the_derived_latency_towards_the_target(tiny_search, flops_search):
    """Same seed, data and starting λ, two targets: one below anything reachable, one above
    everything. λ doubles under the first and halves under the second, and the students derived
    after the first epoch are faster under the tight target: the adaptation steers the *derived*
    network. (The last epoch's alone is not: on an AMD EPYC the tight run's argmax flipped back
    there, 1.66 against 1.58 ms, after 1.54, 1.54, 1.52 against 1.75, 1.55, 1.58. The
    three terms weigh equally here: at the official 1/500, 497/500, 2/500 the operator and width
    terms are too weak to flip an argmax within a few tiny epochs. With λ not adapting, both runs
    are identical: the FLOPs table keeps the search's RNG untouched.)"""
    base = tiny_search(pretrain_epochs=0, search_epochs=5, arch_lr=0.1, derive_val_images=2, lam=10.0,
                       weights=[1.0, 1.0, 1.0])
    base["fasterseg"]["space"]["base_width"] = 4
    base.update(final={"epochs": 0}, data={**base["data"], "options": {"size": [64, 96], "length": 16}})

    def search(target_ms: float) -> list[dict]:
        data = {**base, "latency": {**base["latency"], "target_ms": target_ms, "check_target": False}}
        return records_of(flops_search(data))

    tight, loose = search(0.1), search(100.0)
    assert [r["lambda"] for r in tight] == [10.0, 20.0, 40.0, 80.0, 160.0]
    assert [r["lambda"] for r in loose] == [10.0, 5.0, 2.5, 1.25, 0.625]
    # over the adapted epochs as a whole, not at the end alone (a single epoch's argmax can flip back;
    # how it wanders within one run differs between CPUs' kernels)
    mean_after_first = lambda rs: sum(r["student_latency_ms"] for r in rs[1:]) / (len(rs) - 1)  # noqa: E731
    assert mean_after_first(tight) < mean_after_first(loose), (tight, loose)


def test_search_from_another_runs_pretrained_supernet(tiny_search, flops_search):
    """``fasterseg.pretrained`` skips pre-training: the search adopts the other run's pre-trained
    supernet and pre-training length and finds what that run found (same seed, same settings)."""
    first = flops_search({**tiny_search(), "final": {"epochs": 0}})
    again = tiny_search(pretrained=str(first), pretrain_epochs=7)  # its own pretrain setting is replaced
    run = flops_search({**again, "final": {"epochs": 0}})
    assert [r["phase"] for r in records_of(run)] == ["search", "search"]
    assert records_of(run)[-1]["epochs_done"] == 3
    assert (run / "checkpoints" / "pretrained.pt").is_file()  # it can seed further searches in turn
    for name in ("teacher", "student"):
        assert read_arch_file(run / f"{name}.json")["arch"] == read_arch_file(first / f"{name}.json")["arch"]


def test_killed_search_resumes_to_the_same_architecture(tiny_search, tmp_path):
    """kill -9 a `segnas search fasterseg` mid-search, `--resume` it: same networks as an
    uninterrupted run (the latency table is cached, so both read the same latencies)."""
    data = tiny_search(search_epochs=3)
    data.update(final={"epochs": 0})
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(data))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "segnas", "search", "fasterseg", "--config", str(config)]

    full_run = Path(search_job(make_settings("fasterseg", {**data, "out_dir": str(tmp_path / "full")}))["run_dir"])

    proc = subprocess.Popen(cmd + ["--out-dir", str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline, run = time.time() + 300, None
    while time.time() < deadline and run is None:
        metrics = list((tmp_path / "killed").glob("*/metrics.jsonl"))
        if metrics and len(metrics[0].read_text().splitlines()) >= 2:  # pre-training and search epoch 1 done
            run = metrics[0].parent
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert run is not None, "the search did not reach search epoch 1"
    assert load_checkpoint(run / "checkpoints" / "search_last.pt")["epoch"] < 3
    assert not (run / "search_result.json").is_file()

    resumed = subprocess.run([sys.executable, "-m", "segnas", "search", "fasterseg", "--resume", str(run)],
                             capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epochs_done"] for r in records_of(run)] == [1, 2, 3, 4]
    assert [r["lambda"] for r in records_of(run)[1:]] == [r["lambda"] for r in records_of(full_run)[1:]]
    for name in ("teacher", "student"):
        assert read_arch_file(run / f"{name}.json")["arch"] == read_arch_file(full_run / f"{name}.json")["arch"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_search_runs_on_a_gpu(tiny_search):
    summary = search_job(make_settings("fasterseg", {**tiny_search(), "device": "cuda"}))
    records = records_of(Path(summary["run_dir"]))
    assert [r["phase"] for r in records] == ["pretrain", "search", "search"]
    assert summary["networks"]["student"]["training"]["best_val_miou"] >= 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_a_missing_gpu_is_refused_before_the_run_directory_exists(tiny_search, tmp_path):
    from segnas.errors import SegnasError

    with pytest.raises(SegnasError, match="no CUDA GPU"):
        search_job(make_settings("fasterseg", {**tiny_search(), "device": "cuda"}))
    assert not (tmp_path / "runs").exists()


@pytest.mark.calibration
def test_the_latency_correction_is_calibrated_on_networks_like_the_student(tiny_search, monkeypatch):
    """The student (the network that must meet the target) has FasterSeg's narrower stem and head:
    the correction is fitted on networks of that space, and the student's prediction uses it."""
    from segnas.cost.latency_model import space_id
    from segnas.spaces.multires import OFFICIAL_STEM_HEAD_WIDTH, MultiResSpace

    monkeypatch.setenv("SEGNAS_IGNORE_LOAD", "1")
    settings = tiny_search(search_epochs=1)
    settings["latency"]["calibration_networks"] = 8
    settings["latency"]["check_target"] = False  # the calibration is tested, not the target (on a busy host, out of reach)
    settings["final"] = {"epochs": 0}
    summary = search_job(make_settings("fasterseg", settings))
    student = read_arch_file(Path(summary["run_dir"]) / "student.json")["arch"]
    stem, head = OFFICIAL_STEM_HEAD_WIDTH[1]
    assert (student["stem_width"], student["head_width"]) == (stem, head) != (1.0, 1.0)
    space = MultiResSpace(layers=5, base_width=2, width_ratios=[0.5, 1.0], stem_width=stem, head_width=head)
    cache = json.loads(next((Path(os.environ["SEGNAS_CACHE"]) / "latency").glob("*.corrections.json")).read_text())
    assert [k.split("/")[0] for k in cache["entries"]] == [f"{space_id(space)}@v{space.version}"]
    assert summary["networks"]["student"]["correction"] is True


def test_the_width_passes_follow_the_settings(tiny_search, monkeypatch):
    from segnas.search.oneshot.engine import OneShotEngine

    seen: list[tuple[str, str]] = []
    real = OneShotEngine._seg_loss

    def counted(self, images, masks, index, *rest):
        seen.append((self.phase, self.net.width_mode if index == 1 else "teacher"))
        return real(self, images, masks, index, *rest)

    monkeypatch.setattr(OneShotEngine, "_seg_loss", counted)
    search_job(make_settings("fasterseg", {**tiny_search(search_extremes=False, pretrain_random_widths=1),
                                           "final": {"epochs": 0}}))
    student = [mode for phase, mode in seen if mode != "teacher"]
    assert {m for m in student} <= {"max", "min", "random", "gumbel"} and "max" in student
    assert not any(phase == "search" and mode in ("max", "min") for phase, mode in seen)
    pretrain = [mode for phase, mode in seen if phase == "pretrain" and mode != "teacher"]
    assert pretrain.count("random") == pretrain.count("max")  # one random width per step
