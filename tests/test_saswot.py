"""SasWOT pieces: the ground-truth evaluator and runner, architecture sampling, and the
training-free evolutionary search (planted proxies, latency target, determinism)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from segnas.cost import count_parameters
from segnas.errors import SegnasError
from segnas.search.groundtruth import (
    arch_key, evaluate_arch, item_key, load_groundtruth, make_item, rank_correlations, run_groundtruth, sample_archs)
from segnas.search.saswot import saswot_search, training_free_search
from segnas.spaces import read_arch_file
from segnas.spaces.joint import JointSpace
from segnas.spaces.multires import MultiResSpace

TINY = MultiResSpace(layers=4, base_width=2, width_ratios=(0.5, 1.0))
SMALL = MultiResSpace(layers=6, base_width=2, width_ratios=(0.5, 0.75, 1.0))
DATA = {"name": "synthetic", "options": {"size": [48, 64], "length": 8}, "crop_size": [48, 64], "batch_size": 4}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))  # inherited by spawned workers


def tiny_settings(out_dir) -> dict:
    return {"data": DATA, "epochs": 1, "minutes": None, "size": [48, 64], "backend": "eager", "threads": 1,
            "table_min_runs": 1, "table_min_time_s": 0.0, "out_dir": str(out_dir),
            "train": {"bf16": False, "ema_decay": None, "channels_last": False}}


class Params:
    """Deployed parameter count of a SMALL architecture, memoized (a cheap, exact planted quantity)."""

    def __init__(self):
        self.cache = {}

    def __call__(self, arch) -> float:
        k = arch_key(arch)
        if k not in self.cache:
            self.cache[k] = float(count_parameters(SMALL.build(arch, 5, aux=False)))
        return self.cache[k]


# ------------------------------------------------------------------------------ ground truth
def test_evaluate_arch_trains_a_tiny_network_and_reuses_its_run(tmp_path, cache):
    item = make_item(TINY, sample_archs(TINY, 1, seed=0)[0], tiny_settings(tmp_path / "runs"))
    result = evaluate_arch(item)
    assert 0.0 <= result["val_miou"] <= 1.0
    for name in ("latency_ms", "params", "gflops"):
        assert math.isfinite(result[name]) and result[name] > 0
    assert result["epochs"] == 1 and result["train_minutes"] >= 0 and result["steps"] == 2
    assert TINY.arch_from_dict(result["arch"]) == TINY.arch_from_dict(item["arch"])
    folder = tmp_path / "runs" / f"multires-{item_key(item)}"
    assert (folder / "arch.json").is_file()
    # a second call finds the item's finished run and returns its result without a new run
    assert evaluate_arch(item) == result
    assert len([p for p in folder.iterdir() if p.is_dir()]) == 1
    assert json.loads(json.dumps(result)) == result


def test_evaluate_arch_rejects_bad_settings(tmp_path):
    arch = sample_archs(TINY, 1)[0]
    with pytest.raises(SegnasError, match="data"):
        evaluate_arch(make_item(TINY, arch, {"epochs": 1}))
    bad = {**tiny_settings(tmp_path), "latency": "guess"}
    with pytest.raises(SegnasError, match="latency"):
        evaluate_arch(make_item(TINY, arch, bad))


def test_groundtruth_runner_is_executor_independent_and_resumes(tmp_path, cache):
    archs = sample_archs(TINY, 2, seed=3)
    path = tmp_path / "gt.jsonl"
    inline = run_groundtruth(TINY, archs, tiny_settings(tmp_path / "a"), results_path=path)
    process = run_groundtruth(TINY, archs, tiny_settings(tmp_path / "b"), results_path=None,
                              executor="process", workers=2)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "train_minutes"} for r in rs]  # noqa: E731
    assert strip(inline) == strip(process)
    # resuming from the results file trains nothing (the run folder is never created)
    again = run_groundtruth(TINY, archs, tiny_settings(tmp_path / "c"), results_path=path)
    assert again == inline and not (tmp_path / "c").exists()
    records = load_groundtruth(path)
    assert {r["key"] for r in records} == {item_key(make_item(TINY, a, tiny_settings(tmp_path))) for a in archs}


def test_sample_archs_are_distinct_deterministic_and_spread():
    params = Params()
    archs = sample_archs(SMALL, 24, seed=0)
    assert len({arch_key(a) for a in archs}) == 24
    assert [arch_key(a) for a in archs] == [arch_key(a) for a in sample_archs(SMALL, 24, seed=0)]
    assert [arch_key(a) for a in archs] != [arch_key(a) for a in sample_archs(SMALL, 24, seed=1)]
    sizes = [params(a) for a in archs]
    assert max(sizes) / min(sizes) > 2.5  # slow to fast, not bunched in the middle
    joint = JointSpace(channels=(8, 16), slots=(2, 2), stem_channels=4, decoder_width=8)
    assert len({arch_key(a) for a in sample_archs(joint, 10, seed=0)}) == 10
    with pytest.raises(SegnasError, match="distinct"):
        sample_archs(SMALL, 10, max_tries=3)


def test_rank_correlations():
    assert rank_correlations([1, 2, 3, 4], [10, 20, 30, 40])["kendall_tau"] == pytest.approx(1.0)
    assert rank_correlations([1, 2, 3, 4], [4, 3, 2, 1])["spearman_rho"] == pytest.approx(-1.0)


# ------------------------------------------------------------------------------ search
def planted_search(seed=0, candidates=150, **kw):
    """Maximize the parameter count subject to a fake latency of params/1000 ms: the optimum sits
    just under the target."""
    params = Params()
    sizes = sorted(params(a) for a in sample_archs(SMALL, 40, seed=7))
    target = sizes[len(sizes) // 2] / 1000 * 1.003
    result = training_free_search(SMALL, params, lambda a: params(a) / 1000, target, candidates=candidates,
                                  population=20, sample_size=5, seed=seed, proxy_input="arch", **kw)
    return result, target, sizes


@pytest.mark.parametrize("seed", [0, 1])
def test_search_finds_the_planted_optimum_under_the_target(seed):
    result, target, sizes = planted_search(seed)
    assert result.candidates_scored == 150 == len(result.history) and result.stopped == "candidates"
    assert all(h["latency_ms"] <= target for h in result.history) and result.rejected > 0
    assert result.best_latency_ms <= target
    assert (target - result.best_latency_ms) / target < 0.01  # within 1% of the constrained optimum
    best_random = max(s for s in sizes if s / 1000 <= target)
    assert result.best_score >= 0.99 * best_random
    assert result.top[0] is result.best and [t.score for t in result.top] == sorted(
        (t.score for t in result.top), reverse=True)
    assert [h["best_score"] for h in result.history] == sorted(h["best_score"] for h in result.history)
    assert len({arch_key(t.arch) for t in result.top}) == len(result.top)


def test_search_is_deterministic_for_a_seed_and_honours_limits():
    a, _, _ = planted_search(3, candidates=40)
    b, _, _ = planted_search(3, candidates=40)
    c, _, _ = planted_search(4, candidates=40)
    key = lambda r: [(h["score"], h["latency_ms"]) for h in r.history]  # noqa: E731
    assert key(a) == key(b) and arch_key(a.best_arch) == arch_key(b.best_arch)
    assert key(a) != key(c)
    timed, _, _ = planted_search(0, candidates=10**6, time_limit_s=0.5)
    assert timed.stopped == "time" and 0 < timed.candidates_scored < 10**6
    with pytest.raises(SegnasError, match="target_ms"):
        training_free_search(SMALL, lambda a: 0.0, lambda a: 10.0, 1.0, candidates=5, proxy_input="arch")


def test_search_with_a_registered_proxy_inline_equals_process(tmp_path):
    import torch

    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(2, 3, 32, 48, generator=g), torch.randint(0, 5, (2, 32, 48), generator=g))]
    params = Params()
    run = lambda executor: training_free_search(  # noqa: E731
        SMALL, "params", lambda a: params(a) / 1000, 1e9, candidates=8, population=4, sample_size=2, seed=0,
        batches=batches, num_classes=5, executor=executor, workers=2)
    inline, process = run("inline"), run("process")
    assert [h["score"] for h in inline.history] == [h["score"] for h in process.history]
    assert inline.best_score == max(params(t.arch) for t in inline.top)


def test_saswot_search_writes_the_best_arch(tmp_path, cache):
    result = saswot_search(tmp_path / "out", target_ms=1e9, latency_size=(48, 64), space=SMALL, proxy="nwot",
                           data="synthetic", data_options={"size": [48, 64], "length": 4}, images=4, batch_size=2,
                           score_size=(32, 48), backend="eager", table_min_runs=1, table_min_time_s=0.0,
                           candidates=6, population=3, sample_size=2)
    data = read_arch_file(tmp_path / "out" / "arch.json")
    assert data["space"] == "multires" and SMALL.arch_from_dict(data["arch"]) == result.best_arch
    assert data["proxy"] == "nwot" and data["predicted_latency_ms"] == pytest.approx(result.best_latency_ms)
    summary = json.loads(Path(tmp_path / "out" / "saswot_result.json").read_text())
    assert summary["candidates_scored"] == 6 and len(summary["history"]) == 6
    assert np.isfinite(summary["best"]["score"])
