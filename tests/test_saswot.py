"""SasWOT pieces: the ground-truth evaluator and runner, architecture sampling, and the
training-free evolutionary search (planted objectives, latency target, determinism), as a library
call and as a `segnas search saswot` job."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from segnas.config.train import DataConfig
from segnas.cost import count_parameters
from segnas.cost.machine import cpu_model
from segnas.engine.device import describe_device
from segnas.errors import SegnasError
from segnas.evaluate.base import Evaluator
from segnas.evaluate.groundtruth import run_groundtruth, sample_archs
from segnas.evaluate.proxy import ProxyEvaluator
from segnas.evaluate.records import check_one_cpu, fill_latency, load_groundtruth, load_groundtruth_runs, untrained_net
from segnas.evaluate.short_train import evaluate_arch, item_key, make_item
from segnas.jobs.search import make_settings, search_job
from segnas.metrics.ranking import noise_ceiling_tau, rank_correlations, split_indices
from segnas.search.strategies.saswot import training_free_search
from segnas.spaces import arch_key, read_arch_file
from segnas.spaces.joint import JointSpace
from segnas.spaces.multires import MultiResSpace

TINY = MultiResSpace(layers=4, base_width=2, width_ratios=(0.5, 1.0))
SMALL_OPTIONS = {"layers": 6, "base_width": 2, "width_ratios": [0.5, 0.75, 1.0]}
SMALL = MultiResSpace(**SMALL_OPTIONS)
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


def test_a_network_whose_training_diverges_is_recorded_and_the_ground_truth_goes_on(tmp_path, cache, monkeypatch):
    """A diverged training is a ground-truth record with val_miou None and its reason; the other
    networks train, a resume trains none again, and readers of the file leave it out."""
    import segnas.evaluate.short_train as short_train
    from segnas.errors import TrainingDiverged

    archs = sample_archs(TINY, 2, seed=3)
    real = short_train.train_job

    def train_job(cfg, **kw):
        if Path(cfg.out_dir).name.endswith(item_key(make_item(TINY, archs[0], tiny_settings(tmp_path / "runs")))):
            raise TrainingDiverged("optim.lr: the loss became nan at step 1")
        return real(cfg, **kw)

    monkeypatch.setattr(short_train, "train_job", train_job)
    path = tmp_path / "gt.jsonl"
    first, second = run_groundtruth(TINY, archs, tiny_settings(tmp_path / "runs"), results_path=path)
    assert first["val_miou"] is None and "nan at step 1" in first["diverged"] and first["space"] == TINY.name
    assert TINY.arch_from_dict(first["arch"]) == archs[0] and 0.0 <= second["val_miou"] <= 1.0
    monkeypatch.setattr(short_train, "train_job", lambda *a, **k: pytest.fail("a recorded network trained again"))
    assert run_groundtruth(TINY, archs, tiny_settings(tmp_path / "runs"), results_path=path) == [first, second]
    assert [arch_key(r["arch"]) for r in load_groundtruth_runs(path)] == [arch_key(archs[1])]


def test_a_groundtruth_file_is_only_read_and_its_records_checked_first(tmp_path):
    """Reading a user's ground-truth file changes nothing in it (a damaged last line is skipped, not
    cut off), and a record whose network or score cannot be used is named before any work."""
    arch = sample_archs(TINY, 1, seed=0)[0].to_dict()
    good = json.dumps({"key": "a", "result": {"space": TINY.name, "arch": arch, "val_miou": 0.4}}) + "\n"
    path = tmp_path / "gt.jsonl"
    path.write_text(good + '{"key": "b", "res')
    before = path.read_bytes()
    assert [r["key"] for r in load_groundtruth(path)] == ["a"]
    assert path.read_bytes() == before
    for bad, needle in (({**arch, "layers": "x"}, "record 'c'"), (arch, "val_miou must be a number")):
        score = "high" if bad is arch else 0.4
        path.write_text(good + json.dumps({"key": "c", "result": {"space": TINY.name, "arch": bad,
                                                                  "val_miou": score}}) + "\n")
        with pytest.raises(SegnasError, match=needle):
            load_groundtruth(path)


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
class PlantedParams(Evaluator):
    """The planted objective as an evaluator: a SMALL architecture scores its parameter count."""

    def __init__(self):
        super().__init__()
        self.params = Params()

    def evaluate(self, arch):
        return {"score": self.params(SMALL.arch_from_dict(arch))}


def planted_search(seed=0, candidates=150, **kw):
    """Maximize the parameter count subject to a fake latency of params/1000 ms: the optimum sits
    just under the target."""
    params = Params()
    sizes = sorted(params(a) for a in sample_archs(SMALL, 40, seed=7))
    target = sizes[len(sizes) // 2] / 1000 * 1.003
    result = training_free_search(SMALL, PlantedParams(), lambda a: params(a) / 1000, target, candidates=candidates,
                                  population=20, sample_size=5, seed=seed, **kw)
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
    assert result.best_score == max(h["score"] for h in result.history)
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
        training_free_search(SMALL, PlantedParams(), lambda a: 10.0, 1.0, candidates=5)


def random_batches():
    import torch

    g = torch.Generator().manual_seed(0)
    return [(torch.randn(2, 3, 32, 48, generator=g), torch.randint(0, 5, (2, 32, 48), generator=g))]


def test_search_with_a_registered_proxy_inline_equals_process():
    params = Params()
    run = lambda executor: training_free_search(  # noqa: E731
        SMALL, "params", lambda a: params(a) / 1000, 1e9, candidates=8, population=4, sample_size=2, seed=0,
        batches=random_batches(), num_classes=5, executor=executor, workers=2)
    inline, process = run("inline"), run("process")
    assert [h["score"] for h in inline.history] == [h["score"] for h in process.history]
    assert inline.best_score == max(params(t.arch) for t in inline.top)


def saswot_job(out_dir, echo=None, **section):
    """A tiny `segnas search saswot` job over SMALL on synthetic images, without final training."""
    settings = make_settings("saswot", {
        "data": {"name": "synthetic", "options": {"size": [48, 64], "length": 4}}, "out_dir": str(out_dir),
        "latency": {"target_ms": 1e9, "size": [48, 64], "backend": "eager", "table_min_runs": 1,
                    "table_min_time_s": 0.0},
        "progress": False, "final": {"epochs": 0}, "saswot": {"space_options": SMALL_OPTIONS, **section}})
    summary = search_job(settings, echo=echo)
    return Path(summary["run_dir"]), summary


def run_config(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def test_saswot_search_job_writes_the_best_arch(tmp_path, cache):
    scoring = {"proxy": "nwot", "images": 4, "batch_size": 2, "size": [32, 48]}
    run, summary = saswot_job(tmp_path / "out", scoring=scoring, candidates=6, population=3, sample_size=2)
    result = json.loads((run / "search_result.json").read_text())
    details, best = result["details"], result["details"]["top"][0]
    assert result["method"] == "saswot" and result["space"] == "multires"
    assert "checking the latency target" in (run / "log.txt").read_text()  # (said before the run folder existed)
    assert details["candidates_scored"] == 6 == len(details["history"]) and details["stopped"] == "candidates"
    assert np.isfinite(best["score"]) and best["score"] == max(h["score"] for h in details["history"])
    data = read_arch_file(run / "arch.json")
    assert data["space"] == "multires" and data["method"] == "saswot" and data["arch"] == best["arch"]
    assert data["score"] == best["score"] == details["score"] and data["candidates_scored"] == 6
    assert data["predicted_latency_ms"] == pytest.approx(best["latency_ms"])
    assert summary["networks"]["arch"]["predicted_ms"] == pytest.approx(best["latency_ms"])
    assert run_config(run)["saswot"]["scoring"]["proxy"] == "nwot"
    # the job runs the library's search: the same evaluator proposes and scores the same candidates
    evaluator = ProxyEvaluator(SMALL, "nwot", data=DataConfig.model_validate(run_config(run)["data"]), images=4,
                               batch_size=2, size=(32, 48))
    alone = training_free_search(SMALL, evaluator, lambda a: 1.0, 2.0, candidates=6, population=3, sample_size=2)
    assert [h["score"] for h in alone.history] == [h["score"] for h in details["history"]]
    assert SMALL.arch_from_dict(data["arch"]) == alone.best_arch


def test_a_proxy_file_used_on_other_images_than_it_was_discovered_on_gets_a_notice(tmp_path, cache):
    from segnas.proxies.discovery import DiscoveredProxy

    found = DiscoveredProxy.from_expression("layer_sum(mean_w(abs_w(W)))")
    found.settings["scored_on"] = {"data": "synthetic", "split": "train", "images": 4, "size": [32, 48], "seed": 0}
    found.save(tmp_path / "p.json")
    same, other = [], []
    for out, size, messages in ((tmp_path / "a", [32, 48], same), (tmp_path / "b", [48, 64], other)):
        saswot_job(out, messages.append, scoring={"proxy": str(tmp_path / "p.json"), "images": 4, "batch_size": 2,
                                                  "size": size}, candidates=2, population=2, sample_size=1)
    assert not any(m.startswith("note:") for m in same)
    assert any(m.startswith("note:") and "size [32, 48]" in m and "size [48, 64]" in m for m in other)
    found.settings["scored_on"]["size"] = None  # discovered at the images' own size (48x64 here)
    found.save(tmp_path / "native.json")
    for out, size, messages in ((tmp_path / "c", None, same), (tmp_path / "d", [32, 48], other)):
        messages.clear()
        run, _ = saswot_job(out, messages.append, scoring={"proxy": str(tmp_path / "native.json"), "images": 4,
                                                           "batch_size": 2, **({"size": size} if size else {})},
                            candidates=2, population=2, sample_size=1)
    assert not any(m.startswith("note:") for m in same)  # scored as discovered: at the images' own size
    assert any(m.startswith("note:") and "size native" in m and "size [32, 48]" in m for m in other)
    found.settings["scored_on"]["spaces"] = ["mobile", "encdec"]  # its ground truth's networks: of other spaces
    found.save(tmp_path / "mobile.json")
    other.clear()
    saswot_job(tmp_path / "e", other.append, scoring={"proxy": str(tmp_path / "mobile.json"), "images": 4,
                                                      "batch_size": 2}, candidates=2, population=2, sample_size=1)
    assert any(m.startswith("note:") and "on space mobile, encdec" in m and "scores on space multires" in m
               for m in other)
    found.settings["scored_on"]["spaces"] = ["mobile", "multires"]  # (one of them)
    found.save(tmp_path / "both.json")
    other.clear()
    saswot_job(tmp_path / "f", other.append, scoring={"proxy": str(tmp_path / "both.json"), "images": 4,
                                                      "batch_size": 2}, candidates=2, population=2, sample_size=1)
    assert not any("space" in m for m in other if m.startswith("note:"))


def test_a_proxy_discovered_at_native_size_is_refused_on_images_of_several_sizes_before_the_search(tmp_path, cache):
    from PIL import Image

    from segnas.proxies.discovery import DiscoveredProxy
    from test_data_validation import CLASSES, make_folder

    found = DiscoveredProxy.from_expression("layer_sum(mean_w(abs_w(W)))")
    found.settings["scored_on"] = {"data": "folder", "split": "train", "images": 2, "size": None, "seed": 0}
    found.save(tmp_path / "native.json")
    make_folder(tmp_path / "data", n=3)
    for kind, mode in (("images", "RGB"), ("masks", "L")):  # one training pair of another size
        Image.new(mode, (48, 40)).save(tmp_path / "data" / kind / "train" / "img2.png")
    settings = make_settings("saswot", {
        "data": {"name": "folder", "root": str(tmp_path / "data"), "options": {"classes": list(CLASSES)},
                 "crop_size": [32, 40], "batch_size": 2},
        "out_dir": str(tmp_path / "runs"),
        "latency": {"target_ms": 1e9, "backend": "eager", "table_min_runs": 1, "table_min_time_s": 0.0},
        "progress": False, "final": {"epochs": 0},
        "saswot": {"space_options": SMALL_OPTIONS, "scoring": {"proxy": str(tmp_path / "native.json"), "images": 2,
                                                               "batch_size": 2}}})
    with pytest.raises(SegnasError, match=r"saswot\.scoring\.size: .*native.json was discovered at its images' own "
                                          r"size, but the 'train' images differ in size"):
        search_job(settings)
    assert not (tmp_path / "runs").exists()


def test_scores_over_several_initializations_are_the_mean_of_each_one():
    batches = random_batches()
    arch = sample_archs(SMALL, 1, seed=4)[0]
    score = lambda **kw: ProxyEvaluator(SMALL, "nwot", batches=batches, num_classes=5, **kw)(arch.to_dict())  # noqa: E731
    one = [score(proxy_seed=s, init_seed=s)["score"] for s in (3, 4)]
    both = score(proxy_seed=3, init_seed=3, inits=2)["score"]
    assert one[0] != one[1] and both == pytest.approx(np.mean(one))
    set_up = ProxyEvaluator(SMALL, "nwot", batches=batches, num_classes=5, proxy_seed=3, init_seed=3, inits=2)
    set_up.setup()
    assert set_up.score_arch(arch) == both
    with pytest.raises(SegnasError, match="inits: expected a positive number"):
        ProxyEvaluator(SMALL, "nwot", batches=batches, num_classes=5, inits=0)


def test_finalists_scored_again_over_more_initializations_pick_the_winner():
    """With final_inits the top candidates are rescored as a mean over more initializations, and the
    best of them by that mean wins, whichever the search's single draws ranked first."""
    batches = random_batches()
    kwargs = dict(candidates=12, population=6, sample_size=3, seed=1, batches=batches, num_classes=5, top_k=5)
    plain = training_free_search(SMALL, "nwot", lambda a: 1.0, 2.0, **kwargs)
    again = training_free_search(SMALL, "nwot", lambda a: 1.0, 2.0, final_inits=3, **kwargs)
    assert plain.final_inits == 0 and all(c.final_score is None for c in plain.top)
    assert [h["score"] for h in plain.history] == \
        [h["score"] for h in again.history]  # the search itself is unchanged
    assert again.final_inits == 3 and {c.index for c in again.top} == {c.index for c in plain.top}
    finals = [c.final_score for c in again.top]
    assert finals == sorted(finals, reverse=True) and again.best is again.top[0]
    rescorer = ProxyEvaluator(SMALL, "nwot", batches=batches, num_classes=5, proxy_seed=0, init_seed=1, inits=3)
    assert again.best.final_score == pytest.approx(rescorer(again.best.arch.to_dict())["score"])
    assert again.to_dict()["best"]["final_score"] == pytest.approx(again.best.final_score)
    assert training_free_search(SMALL, "nwot", lambda a: 1.0, 2.0, inits=3, final_inits=3, **kwargs).final_inits == 0
    with pytest.raises(SegnasError, match="final_inits"):
        training_free_search(SMALL, "nwot", lambda a: 1.0, 2.0, final_inits=-1, **kwargs)


def test_a_proxy_file_gives_the_search_its_number_of_initializations(tmp_path, cache):
    """`segnas search saswot` scores as the proxy was discovered: images, size and initializations."""
    from typer.testing import CliRunner

    from segnas.cli.main import app
    from segnas.proxies.discovery import DiscoveredProxy

    proxy = str(tmp_path / "p.json")
    found = DiscoveredProxy.from_expression("layer_mean(std_a(A))")  # reads activations: images and size count
    found.settings["scored_on"] = {"data": "synthetic", "split": "train", "images": 2, "size": [32, 48], "seed": 0,
                                   "inits": 2}
    found.save(proxy)

    def search(out, *args):
        result = CliRunner().invoke(app, ["search", "saswot", "--size", "32x48", "--target-ms", "1e9", "--proxy", proxy,
                                          "--backend", "eager", "--out-dir", str(out), "--set", "final.epochs=0",
                                          "--set", "latency.table_min_runs=1", "--set", "latency.table_min_time_s=0",
                                          "--set", "progress=false", *args])
        assert result.exit_code == 0, result.output
        run = next(out.iterdir())
        details = json.loads((run / "search_result.json").read_text())["details"]
        return result.output, details, DataConfig.model_validate(run_config(run)["data"])

    def file_score(arch, data, images=2, size=(32, 48), inits=2):
        return ProxyEvaluator("multires", proxy, data=data, images=images, size=size, inits=inits)(arch)["score"]

    output, details, data = search(tmp_path / "runs", "--candidates", "2")
    winner = details["top"][0]["arch"]
    assert "note:" not in output and "final_score" not in details
    assert details["score"] == pytest.approx(file_score(winner, data))
    for other in ({"images": 8}, {"size": (48, 64)}, {"inits": 1}):  # each of the file's settings matters
        assert file_score(winner, data, **other) != pytest.approx(details["score"])
    # a cheaper search at one initialization: its finalists are scored again at the file's two
    output, details, data = search(tmp_path / "fast", "--candidates", "3", "--inits", "1")
    winner = details["top"][0]["arch"]
    assert details["score"] == pytest.approx(file_score(winner, data, inits=1))
    assert details["final_score"] == pytest.approx(file_score(winner, data))
    assert all("final_score" in c for c in details["top"]) and "finalists scored again over 2" in output
