"""FasterSeg end to end on tiny settings: search → derive → arch files → (short) final training."""

import json
from pathlib import Path

import pytest
import torch

from segnas.config.search import SearchConfig
from segnas.cost import count_flops
from segnas.cost.table import LatencyTable
from segnas.jobs.search import fasterseg_job
from segnas.search import fasterseg
from segnas.search.fasterseg import adapt_lambda
from segnas.spaces import build_from_arch, read_arch_file


def test_lambda_adaptation_moves_towards_the_target():
    assert adapt_lambda(0.01, latency_ms=5.0, target_ms=10.0, tolerance=0.1) == 0.005  # too fast: relax
    assert adapt_lambda(0.01, latency_ms=15.0, target_ms=10.0, tolerance=0.1) == 0.02  # too slow: push
    assert adapt_lambda(0.01, latency_ms=10.5, target_ms=10.0, tolerance=0.1) == 0.01


@pytest.fixture
def tiny_search(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))
    return SearchConfig.model_validate({
        "data": {"name": "synthetic", "options": {"size": [64, 96], "length": 8}, "crop_size": [64, 96],
                 "batch_size": 2},
        "space": {"layers": 5, "base_width": 2, "width_ratios": [0.5, 1.0]},
        "latency": {"target_ms": 5.0, "backend": "eager", "threads": 1, "table_min_runs": 1, "table_min_time_s": 0.0},
        "pretrain_epochs": 1, "search_epochs": 2, "derive_val_images": 4, "threads": 1,
        "final_epochs": 1, "final_ema_decay": None, "out_dir": str(tmp_path / "runs"), "progress": False})


def test_search_derives_trains_and_reports(tiny_search):
    summary = fasterseg_job(tiny_search)
    run = Path(summary["run_dir"])
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in records] == ["pretrain", "search", "search"]
    assert all("student_latency_ms" in r and "lambda" in r for r in records[1:])
    # the λ logged for each search epoch is the previous one adapted to that epoch's derived student
    first, second = records[1], records[2]
    assert second["lambda"] == adapt_lambda(first["lambda"], first["student_latency_ms"], 5.0, 0.1)
    for name in ("teacher", "student"):
        data = read_arch_file(run / f"{name}.json")
        assert data["space"] == "multires" and data["predicted_latency_ms"] > 0
        build_from_arch(data, 11)
    assert summary["student_measured_ms"] > 0
    assert summary["training"]["student"]["best_val_miou"] >= 0
    student_run = Path(json.loads((run / "student_train.json").read_text())["run_dir"])
    student_metrics = [json.loads(x) for x in (student_run / "metrics.jsonl").read_text().splitlines()]
    assert student_metrics[-1]["train_kd"] > 0  # distilled from the trained teacher
    assert (run / "search_result.json").is_file()


def test_lambda_doubles_and_the_latency_term_falls_under_a_demanding_target(tiny_search, tmp_path, monkeypatch):
    """With a target far below anything reachable, λ doubles every search epoch and the student's
    expected latency (the regularized quantity, λ factored out) falls epoch after epoch. (Whether the
    *derived* network gets faster depends on argmax flips; the CamVid benchmark measures that.) Costs
    come from FLOPs, not timings: a measured table's noise is as large as these tiny steps."""
    monkeypatch.setattr(fasterseg, "latency_table", lambda target, threads: FlopsTable(
        "eager", threads=1, path=tmp_path / "flops_table.json"))
    cfg = tiny_search.model_copy(update={
        "pretrain_epochs": 0, "search_epochs": 4, "arch_lr": 0.05, "final_epochs": 0,
        "latency": tiny_search.latency.model_copy(update={"target_ms": 1e-3, "lam": 1.0})})
    summary = fasterseg_job(cfg)
    records = [json.loads(x) for x in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert [r["lambda"] for r in records] == [1.0, 2.0, 4.0, 8.0]
    expected = [r["arch1_latency"] / r["lambda"] for r in records]
    assert all(b < a for a, b in zip(expected, expected[1:])), expected


class FlopsTable(LatencyTable):
    """A deterministic stand-in for a measured table: an operator costs 1 ms per 10 MFLOPs, no call
    overhead. The search sees costs that follow the work of each choice, without timing noise."""

    def _measure(self, key) -> float:
        with torch.random.fork_rng():  # building the operator must not move the search's RNG
            return count_flops(key.build().eval(), key.input_shape).gflops * 100.0

    def call_overhead(self, shape) -> float:
        return 0.0


def test_lambda_adaptation_moves_the_derived_latency_towards_the_target(tiny_search, tmp_path, monkeypatch):
    """Same seed, data and starting λ, two targets: one below anything reachable, one above
    everything. λ doubles under the first and halves under the second, and the student derived at
    the end is faster under the tight target: the adaptation steers the *derived* network. (The
    three terms weigh equally here: at the official 1/500, 497/500, 2/500 the operator and width
    terms are too weak to flip an argmax within a few tiny epochs. With λ not adapting, both runs
    are identical: the FLOPs table keeps the search's RNG untouched.)"""
    monkeypatch.setattr(fasterseg, "latency_table", lambda target, threads: FlopsTable(
        "eager", threads=1, path=tmp_path / "flops_table.json"))
    base = tiny_search.model_copy(update={
        "data": tiny_search.data.model_copy(update={"options": {"size": [64, 96], "length": 16}}),
        "space": tiny_search.space.model_copy(update={"base_width": 4}),
        "pretrain_epochs": 0, "search_epochs": 5, "arch_lr": 0.1, "final_epochs": 0, "derive_val_images": 2})

    def search(target_ms: float) -> list[dict]:
        latency = base.latency.model_copy(update={"lam": 10.0, "target_ms": target_ms, "weights": (1.0, 1.0, 1.0)})
        run = Path(fasterseg_job(base.model_copy(update={"latency": latency}))["run_dir"])
        return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]

    tight, loose = search(0.1), search(100.0)
    assert [r["lambda"] for r in tight] == [10.0, 20.0, 40.0, 80.0, 160.0]
    assert [r["lambda"] for r in loose] == [10.0, 5.0, 2.5, 1.25, 0.625]
    assert tight[-1]["student_latency_ms"] < loose[-1]["student_latency_ms"], (tight, loose)
    # over the adapted epochs as a whole, not only at the end (a single epoch's argmax can flip back;
    # how it wanders within one run differs between CPUs' kernels)
    mean_after_first = lambda rs: sum(r["student_latency_ms"] for r in rs[1:]) / (len(rs) - 1)  # noqa: E731
    assert mean_after_first(tight) < mean_after_first(loose), (tight, loose)
