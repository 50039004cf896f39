"""SasWOT pieces: the ground-truth evaluator and runner, architecture sampling, and the
training-free evolutionary search (planted proxies, latency target, determinism)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from segnas.cost import count_parameters
from segnas.cost.machine import cpu_model
from segnas.errors import SegnasError
from segnas.search.groundtruth import (
    arch_key, check_one_cpu, evaluate_arch, fill_latency, item_key, load_groundtruth, load_groundtruth_runs, make_item, noise_ceiling_tau,
    rank_correlations, run_groundtruth, sample_archs, split_indices, untrained_net)
from segnas.engine.device import describe_device
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
    assert result["cpu"] == cpu_model() and result["device"] == "cpu"
    # a step budget, the same on any machine
    steps = make_item(TINY, sample_archs(TINY, 1, seed=0)[0], {**tiny_settings(tmp_path / "runs"), "epochs": 5,
                                                               "max_steps": 3})
    assert item_key(steps) != item_key(item)
    # where and how an item runs is not part of its key
    assert item_key({**item, "settings": {**item["settings"], "device": "cuda", "record_latency": False}}) == item_key(item)
    stepped = evaluate_arch({**steps, "settings": {**steps["settings"], "device": "auto", "record_latency": False}})
    assert stepped["latency_ms"] is None and stepped["latency_source"] is None
    assert stepped["device"] == describe_device("auto")
    assert stepped["steps"] == 3 and stepped["max_steps"] == 3 and stepped["epochs"] == 2
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


def test_groundtruth_records_do_not_depend_on_finishing_order(tmp_path):
    rows = [{"key": k, "result": {"space": TINY.name, "arch": a.to_dict(), "val_miou": m}}
            for k, a, m in zip(("b", "a", "c"), sample_archs(TINY, 3, seed=0), (0.2, 0.1, 0.3))]
    one, two = tmp_path / "1.jsonl", tmp_path / "2.jsonl"
    one.write_text("".join(json.dumps(r) + "\n" for r in rows))
    two.write_text("".join(json.dumps(r) + "\n" for r in rows[::-1]))
    assert load_groundtruth(one) == load_groundtruth(two)
    assert [r["key"] for r in load_groundtruth(one)] == ["a", "b", "c"]
    first = untrained_net(load_groundtruth(one)[0], 5, seed=1)
    again = untrained_net(load_groundtruth(one)[0], 5, seed=1)
    assert all((p == q).all() for p, q in zip(first.parameters(), again.parameters()))


def test_groundtruth_repeats_average_per_architecture(tmp_path):
    archs = sample_archs(TINY, 3, seed=0)
    first = [{"key": k, "result": {"space": TINY.name, "arch": a.to_dict(), "val_miou": m}}
             for k, a, m in zip(("a", "b", "c"), archs, (0.2, 0.1, 0.3))]
    # another seed: other keys, other order, one architecture missing, one without a result
    second = [{"key": "z", "result": {"space": TINY.name, "arch": archs[1].to_dict(), "val_miou": 0.3}},
              {"key": "y", "result": {"space": TINY.name, "arch": archs[0].to_dict(), "val_miou": 0.4}}]
    one, two = tmp_path / "1.jsonl", tmp_path / "2.jsonl"
    one.write_text("".join(json.dumps(r) + "\n" for r in first))
    two.write_text("".join(json.dumps(r) + "\n" for r in second))
    assert load_groundtruth_runs(one) == [dict(r, val_miou_runs=[r["val_miou"]]) for r in load_groundtruth(one)]
    both = load_groundtruth_runs([one, two])
    assert [r["key"] for r in both] == ["a", "b"]
    assert [r["val_miou"] for r in both] == pytest.approx([0.3, 0.2])
    assert both[0]["val_miou_runs"] == [0.2, 0.4]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(SegnasError, match="every file"):
        load_groundtruth_runs([one, empty])
    # a CPU-minute budget buys different training on another CPU: such files are not repeats
    other_cpu = tmp_path / "3.jsonl"
    on_cpu = lambda records, cpu, **budget: "".join(  # noqa: E731
        json.dumps({**r, "result": {**r["result"], "cpu": cpu, **budget}}) + "\n" for r in records)
    other_cpu.write_text(on_cpu(second, "B", minutes=2))
    one.write_text(on_cpu(first, "A", minutes=2))
    with pytest.raises(SegnasError, match="different CPUs"):
        load_groundtruth_runs([one, other_cpu])
    with pytest.raises(SegnasError, match="this machine is C"):
        check_one_cpu({"1.jsonl": load_groundtruth(one)}, this_cpu="C")
    check_one_cpu({"1.jsonl": load_groundtruth(one)}, this_cpu="A")
    # a step budget means the same on any CPU, in one precision
    other_cpu.write_text(on_cpu(second, "B", minutes=None, max_steps=300, bf16=False))
    one.write_text(on_cpu(first, "A", minutes=None, max_steps=300, bf16=False))
    assert len(load_groundtruth_runs([one, other_cpu])) == 2
    check_one_cpu({"1.jsonl": load_groundtruth(one)}, this_cpu="C")
    one.write_text(on_cpu(first, "A", minutes=None, max_steps=300, bf16=True))
    with pytest.raises(SegnasError, match="one precision"):
        load_groundtruth_runs([one, other_cpu])


def test_split_indices_partition_and_depend_on_the_seed():
    train, held = split_indices(10, 0.5, seed=0)
    assert sorted(train + held) == list(range(10)) and len(train) == 5
    assert split_indices(10, 0.5, seed=0) == (train, held) and split_indices(10, 0.5, seed=1) != (train, held)
    assert len(split_indices(4, 0.1)[0]) == 3  # at least 3 to train on
    with pytest.raises(SegnasError, match="train_fraction"):
        split_indices(10, 1.0)


def test_sample_archs_are_distinct_deterministic_and_spread():
    params = Params()
    archs = sample_archs(SMALL, 24, seed=0)
    assert len({arch_key(a) for a in archs}) == 24
    assert [arch_key(a) for a in archs] == [arch_key(a) for a in sample_archs(SMALL, 24, seed=0)]
    assert [arch_key(a) for a in archs] != [arch_key(a) for a in sample_archs(SMALL, 24, seed=1)]
    # a larger n draws the same first networks: a ground truth grows by sampling more
    assert [arch_key(a) for a in sample_archs(SMALL, 30, seed=0)[:24]] == [arch_key(a) for a in archs]
    sizes = [params(a) for a in archs]
    assert max(sizes) / min(sizes) > 2.5  # slow to fast, not bunched in the middle
    joint = JointSpace(channels=(8, 16), slots=(2, 2), stem_channels=4, decoder_width=8)
    assert len({arch_key(a) for a in sample_archs(joint, 10, seed=0)}) == 10
    with pytest.raises(SegnasError, match="distinct"):
        sample_archs(SMALL, 10, max_tries=3)


def test_fill_latency_completes_records_trained_without_one(tmp_path):
    archs = sample_archs(SMALL, 3, seed=0)
    path = tmp_path / "gt.jsonl"
    lines = [{"key": f"k{i}", "result": {"arch": a.to_dict(), "val_miou": 0.1 * i,
                                         "latency_ms": 5.0 if i == 0 else None, "latency_source": None}}
             for i, a in enumerate(archs)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    before = path.read_text()
    assert fill_latency(path, {arch_key(archs[0]): 9.0}, "table:x") == 0  # has one already: kept
    assert path.read_text() == before
    assert fill_latency(path, {arch_key(a): 7.0 + i for i, a in enumerate(archs[:2])}, "table:x") == 1
    records = [json.loads(line)["result"] for line in path.read_text().splitlines()]
    assert [r["latency_ms"] for r in records] == [5.0, 8.0, None]  # order kept; unknown arch left as it was
    assert records[1]["latency_source"] == "table:x" and records[2]["val_miou"] == 0.2


def test_rank_correlations():
    assert rank_correlations([1, 2, 3, 4], [10, 20, 30, 40])["kendall_tau"] == pytest.approx(1.0)
    assert rank_correlations([1, 2, 3, 4], [4, 3, 2, 1])["spearman_rho"] == pytest.approx(-1.0)


@pytest.mark.parametrize("runs", [1, 3])
def test_noise_ceiling_predicts_how_well_the_truth_ranks_like_noisy_runs(runs):
    """Simulated ground truth: each run = expected mIoU + Gaussian noise. The ceiling computed from
    the τ of two runs must match the τ of the expectation against the mean of ``runs`` runs."""
    rng = np.random.default_rng(0)
    truth = rng.normal(size=4000)
    noisy = truth[None] + rng.normal(scale=0.8, size=(runs + 1, truth.size))
    seed_tau = rank_correlations(noisy[0], noisy[1])["kendall_tau"]
    actual = rank_correlations(truth, noisy[:runs].mean(axis=0))["kendall_tau"]
    assert noise_ceiling_tau(seed_tau, runs) == pytest.approx(actual, abs=0.02)
    assert noise_ceiling_tau(seed_tau, runs + 1) > noise_ceiling_tau(seed_tau, runs)
    assert noise_ceiling_tau(1.0) == pytest.approx(1.0) and noise_ceiling_tau(-0.1) == 0.0
    assert math.isnan(noise_ceiling_tau(float("nan")))
    with pytest.raises(SegnasError, match="runs"):
        noise_ceiling_tau(0.5, 0)


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


def test_a_proxy_file_used_on_other_images_than_it_was_discovered_on_gets_a_notice(tmp_path, cache):
    from segnas.proxies.discovery import DiscoveredProxy

    found = DiscoveredProxy.from_expression("layer_sum(mean_w(abs_w(W)))")
    found.settings["scored_on"] = {"data": "synthetic", "split": "train", "images": 4, "size": [32, 48], "seed": 0}
    found.save(tmp_path / "p.json")
    kwargs = dict(target_ms=1e9, latency_size=(48, 64), space=SMALL, proxy=str(tmp_path / "p.json"),
                  data="synthetic", data_options={"size": [48, 64], "length": 4}, images=4, batch_size=2,
                  backend="eager", table_min_runs=1, table_min_time_s=0.0, candidates=2, population=2, sample_size=1)
    same, other = [], []
    saswot_search(tmp_path / "a", score_size=(32, 48), echo=same.append, **kwargs)
    saswot_search(tmp_path / "b", score_size=(48, 64), echo=other.append, **kwargs)
    assert not any(m.startswith("note:") for m in same)
    assert any(m.startswith("note:") and "size [32, 48]" in m and "size [48, 64]" in m for m in other)


def test_scores_over_several_initializations_are_the_mean_of_each_one(tmp_path):
    import torch

    from segnas.search.saswot import CandidateScorer

    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(2, 3, 32, 48, generator=g), torch.randint(0, 5, (2, 32, 48), generator=g))]
    arch = sample_archs(SMALL, 1, seed=4)[0]
    one = [CandidateScorer(SMALL, "nwot", batches, 5, proxy_seed=s, init_seed=s)(arch) for s in (3, 4)]
    both = CandidateScorer(SMALL, "nwot", batches, 5, proxy_seed=3, init_seed=3, inits=2)(arch)
    assert one[0] != one[1] and both == pytest.approx(np.mean(one))
    with pytest.raises(SegnasError, match="inits: expected a positive number"):
        CandidateScorer(SMALL, "nwot", batches, 5, inits=0)


def test_finalists_scored_again_over_more_initializations_pick_the_winner():
    """With final_inits the top candidates are rescored as a mean over more initializations, and the
    best of them by that mean wins, whichever the search's single draws ranked first."""
    import torch

    from segnas.search.saswot import CandidateScorer

    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(2, 3, 32, 48, generator=g), torch.randint(0, 5, (2, 32, 48), generator=g))]
    kwargs = dict(candidates=12, population=6, sample_size=3, seed=1, batches=batches, num_classes=5, top_k=5)
    plain = training_free_search(SMALL, "nwot", lambda a: 1.0, 2.0, **kwargs)
    again = training_free_search(SMALL, "nwot", lambda a: 1.0, 2.0, final_inits=3, **kwargs)
    assert plain.final_inits == 0 and all(c.final_score is None for c in plain.top)
    assert [h["score"] for h in plain.history] == \
        [h["score"] for h in again.history]  # the search itself is unchanged
    assert again.final_inits == 3 and {c.index for c in again.top} == {c.index for c in plain.top}
    finals = [c.final_score for c in again.top]
    assert finals == sorted(finals, reverse=True) and again.best is again.top[0]
    rescorer = CandidateScorer(SMALL, "nwot", batches, 5, proxy_seed=0, init_seed=1, inits=3)
    assert again.best.final_score == pytest.approx(rescorer(again.best.arch))
    assert again.to_dict()["best"]["final_score"] == pytest.approx(again.best.final_score)
    assert training_free_search(SMALL, "nwot", lambda a: 1.0, 2.0, inits=3, final_inits=3, **kwargs).final_inits == 0
    with pytest.raises(SegnasError, match="final_inits"):
        training_free_search(SMALL, "nwot", lambda a: 1.0, 2.0, final_inits=-1, **kwargs)


def test_a_proxy_file_gives_the_search_its_number_of_initializations(tmp_path, cache):
    """`segnas search saswot` scores as the proxy was discovered: images, size and initializations."""
    from typer.testing import CliRunner

    from segnas.cli.main import app
    from segnas.proxies.discovery import DiscoveredProxy

    found = DiscoveredProxy.from_expression("layer_sum(mean_w(abs_w(W)))")
    found.settings["scored_on"] = {"data": "synthetic", "split": "train", "images": 2, "size": [32, 48], "seed": 0,
                                   "inits": 2}
    found.save(tmp_path / "p.json")
    result = CliRunner().invoke(app, ["search", "saswot", "--size", "32x48", "--target-ms", "1e9", "--proxy",
                                      str(tmp_path / "p.json"), "--candidates", "2", "--backend", "eager",
                                      "--out-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    summary = json.loads(next((tmp_path / "runs").glob("*/saswot_result.json")).read_text())
    assert summary["settings"]["inits"] == 2 and summary["settings"]["images"] == 2 and "note:" not in result.output
    assert summary["settings"]["final_inits"] == 0
    # a cheaper search at one initialization: its finalists are scored again at the file's two
    result = CliRunner().invoke(app, ["search", "saswot", "--size", "32x48", "--target-ms", "1e9", "--proxy",
                                      str(tmp_path / "p.json"), "--candidates", "3", "--backend", "eager",
                                      "--inits", "1", "--out-dir", str(tmp_path / "fast")])
    assert result.exit_code == 0, result.output
    summary = json.loads(next((tmp_path / "fast").glob("*/saswot_result.json")).read_text())
    assert summary["settings"]["inits"] == 1 and summary["settings"]["final_inits"] == 2
    assert "final_score" in summary["best"] and "finalists scored again over 2" in result.output
