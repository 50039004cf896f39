"""SasWOT's NSGA-II mode (``saswot.mode: nsga2``): the Pareto front of (proxy score, latency) within
the target, the winner rules, budget use against the evolution when the proxy prefers small networks,
resume after a kill, determinism, crossover on decision spaces only, and the search job with the
front's finalists trained briefly."""

import hashlib
import json
import math

import numpy as np
import pytest

from segnas.cost import count_parameters
from segnas.errors import SegnasError
from segnas.evaluate.base import Evaluator
from segnas.evaluate.groundtruth import sample_archs
from segnas.evaluate.proxy import ProxyEvaluator
from segnas.jobs.search import make_settings, search_job
from segnas.parallel import default_key
from segnas.search.asktell import Candidate
from segnas.search.strategies.nsga2 import rank_front, uniform_crossover
from segnas.search.strategies.saswot import training_free_search
from segnas.spaces import DecisionSpace, arch_key
from segnas.spaces.mobile import MobileSpace
from segnas.spaces.multires import MultiResSpace

SMALL_OPTIONS = {"layers": 6, "base_width": 2, "width_ratios": [0.5, 0.75, 1.0]}
SMALL = MultiResSpace(**SMALL_OPTIONS)
_PARAMS: dict[str, float] = {}


def params(arch) -> float:
    """Deployed parameter count of a SMALL architecture (memoized); the fake latency is params/1000 ms."""
    k = arch_key(arch)
    if k not in _PARAMS:
        _PARAMS[k] = float(count_parameters(SMALL.build(arch, 5, aux=False)))
    return _PARAMS[k]


def noise(arch) -> float:
    """A fixed pseudo-random number in [0, 1) per architecture."""
    return int(hashlib.sha256(arch_key(arch).encode()).hexdigest()[:8], 16) / 16 ** 8


class SmallFirst(Evaluator):
    """A proxy that prefers small networks: -log(params) plus a fixed per-network jitter; dies after
    ``kill_after`` evaluations when set (a killed search)."""

    def __init__(self, kill_after: int | None = None):
        super().__init__()
        self.kill_after, self.calls = kill_after, 0

    def evaluate(self, arch):
        self.calls += 1
        if self.kill_after is not None and self.calls > self.kill_after:
            raise KeyboardInterrupt("killed")
        a = SMALL.arch_from_dict(arch)
        return {"score": -math.log(params(a)) + 0.5 * noise(a)}


TARGET = sorted(params(a) for a in sample_archs(SMALL, 40, seed=7))[20] / 1000  # the median network's


def search(mode="nsga2", seed=0, candidates=120, **kw):
    kw.setdefault("population", 20)
    return training_free_search(SMALL, kw.pop("evaluator", SmallFirst()), lambda a: params(a) / 1000, TARGET,
                                candidates=candidates, sample_size=5, seed=seed, mode=mode, **kw)


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] >= b[0] and a[1] >= b[1] and a != b


def cand(index, score, latency) -> Candidate:
    arch = sample_archs(SMALL, 1, seed=index)[0]
    return Candidate(arch, default_key(arch), score, latency, index)


# ------------------------------------------------------------------------------ the front and the winner
@pytest.fixture(scope="module")
def nsga():
    return search()


def test_the_front_is_every_non_dominated_candidate_within_the_target(nsga):
    points = [(h["score"], h["latency_ms"]) for h in nsga.history]
    front = [(f["score"], f["latency_ms"]) for f in nsga.nsga2["front"]]
    assert nsga.candidates_scored == 120 and nsga.rejected > 0 and nsga.nsga2["generations"] >= 4
    assert all(lat <= TARGET for _, lat in points)
    assert len(front) >= 5 and all(p in points for p in front)
    assert not any(dominates(p, f) for f in front for p in points)  # non-dominated...
    assert all(p in front or any(dominates(f, p) for f in front) for p in points)  # ...and every one of them
    assert [f[1] for f in front] == sorted(f[1] for f in front)
    assert all(f["budget_use"] == pytest.approx(f["latency_ms"] / TARGET, abs=1e-4) for f in nsga.nsga2["front"])
    assert max(f["budget_use"] for f in nsga.nsga2["front"]) > 0.95  # the front spans the budget


def test_the_winner_is_the_best_score_using_at_least_80_percent_of_the_budget(nsga):
    band = [h for h in nsga.history if 0.8 * TARGET <= h["latency_ms"] <= TARGET]
    assert nsga.nsga2["winner_rule"] == {"rule": "budget", "min_budget_use": 0.8}
    assert band and nsga.best_score == max(h["score"] for h in band)
    assert nsga.budget_use == pytest.approx(nsga.best_latency_ms / TARGET, abs=1e-4) and nsga.budget_use >= 0.8
    assert nsga.to_dict()["budget_use"] == nsga.budget_use and nsga.to_dict()["mode"] == "nsga2"
    assert [t.score for t in nsga.top] == sorted((t.score for t in nsga.top), reverse=True)
    assert all(t.latency_ms >= 0.8 * TARGET for t in nsga.top) and len(nsga.top) <= 10


def test_nsga2_uses_more_of_the_budget_than_the_evolution_when_the_proxy_prefers_small_networks(nsga):
    evolution = search("evolution")
    assert evolution.mode == "evolution" and evolution.nsga2 == {}
    assert evolution.budget_use == pytest.approx(evolution.best_latency_ms / TARGET, abs=1e-4)
    assert evolution.budget_use < 0.65 and nsga.budget_use >= 0.8
    # in the band, NSGA-II scores far more candidates than the evolution
    in_band = lambda r: sum(h["latency_ms"] >= 0.8 * TARGET for h in r.history)  # noqa: E731
    assert in_band(nsga) > 2 * in_band(evolution)


def test_winner_rules_on_a_hand_made_front():
    # (latency, score): the knee is (9, 9), far above the chord from (1, 10) to (10, 0)
    front = [cand(1, 10.0, 1.0), cand(2, 9.5, 2.0), cand(3, 9.0, 9.0), cand(4, 0.0, 10.0), cand(5, 11.0, 12.0)]
    target = 10.0  # member 5 is over the target: no rule picks it
    assert [c.index for c in rank_front(front, "score", target)] == [1, 2, 3, 4]
    assert rank_front(front, "knee", target)[0].index == 3
    assert [c.index for c in rank_front(front, "budget", target, 0.8)] == [3, 4]
    assert [c.index for c in rank_front(front, "budget", target, 0.95)] == [4]
    assert [c.index for c in rank_front(front, "budget", 100.0, 0.8)] == [5]  # none in the band: the slowest
    front[3].final_score = 9.5  # a finer score counts over the search's
    assert [c.index for c in rank_front(front, "budget", target, 0.8)] == [4, 3]
    with pytest.raises(SegnasError, match="latency target"):
        rank_front(front, "budget", None)


def test_knee_and_score_rules_pick_from_the_front(nsga):
    knee = search(nsga2={"winner": "knee"})
    best = search(nsga2={"winner": "score"})
    assert [h["score"] for h in knee.history] == [h["score"] for h in nsga.history]  # the rule only picks
    assert best.best_score == max(h["score"] for h in nsga.history)
    # the knee from its definition: farthest above the chord of the front's ends, objectives scaled to [0, 1]
    pts = np.array([(f["latency_ms"], f["score"]) for f in nsga.nsga2["front"]])
    t, s = [(v - v.min()) / (v.max() - v.min()) for v in pts.T]
    a, b = int(np.argmax(s)), int(np.argmax(t))
    dist = (t[b] - t[a]) * (s - s[a]) - (s[b] - s[a]) * (t - t[a])
    assert knee.best_latency_ms == pts[int(np.argmax(dist))][0] and knee.best_score == pts[int(np.argmax(dist))][1]


def test_finalists_are_trained_when_asked_and_the_best_trained_wins(nsga):
    class Trained(Evaluator):  # a stand-in for the short training: prefers the slower finalists
        def evaluate(self, arch):
            return {"score": params(SMALL.arch_from_dict(arch)) / 1e6, "steps": 1}

    trained = search(nsga2={"train_top": 3}, trainer=Trained())
    records = trained.nsga2["trained"]
    assert [r["index"] for r in records] == [t.index for t in nsga.top[:3]]
    assert trained.best.index == max(records, key=lambda r: r["val_miou"])["index"]
    assert trained.best_latency_ms == max(t.latency_ms for t in nsga.top[:3])
    with pytest.raises(SegnasError, match="train_top"):
        search(nsga2={"train_top": 3})


def test_a_finalist_whose_short_training_diverges_loses_and_the_search_goes_on(nsga, monkeypatch):
    """TrainEvaluator scores a diverged training as failed (None); the best of the others wins; a
    search none of whose finalists trained is refused, naming the recipe."""
    import segnas.evaluate.short_train as short_train
    from segnas.errors import TrainingDiverged

    slowest = max(nsga.top[:3], key=lambda t: t.latency_ms)

    def evaluate_arch(item):
        if arch_key(SMALL.arch_from_dict(item["arch"])) == arch_key(slowest.arch):
            raise TrainingDiverged("optim.lr: the loss became nan at step 7")
        return {"val_miou": params(SMALL.arch_from_dict(item["arch"])) / 1e6, "steps": 1}

    monkeypatch.setattr(short_train, "make_item", lambda space, arch, settings: {"space": "multires", "arch": arch})
    monkeypatch.setattr(short_train, "evaluate_arch", evaluate_arch)
    trainer = short_train.TrainEvaluator("multires", {})
    trained = search(nsga2={"train_top": 3}, trainer=trainer)
    records = {r["index"]: r for r in trained.nsga2["trained"]}
    assert records[slowest.index]["val_miou"] is None and "nan at step 7" in records[slowest.index]["diverged"]
    finite = [r for r in records.values() if r["val_miou"] is not None]
    assert len(finite) == 2 and trained.best.index == max(finite, key=lambda r: r["val_miou"])["index"]

    monkeypatch.setattr(short_train, "evaluate_arch", lambda item: (_ for _ in ()).throw(TrainingDiverged("nan")))
    with pytest.raises(SegnasError, match="the short training of every one of the 3 finalists failed"):
        search(nsga2={"train_top": 3}, trainer=trainer)


def test_finalists_scored_again_over_more_initializations_are_ranked_by_that():
    import torch

    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(2, 3, 32, 48, generator=g), torch.randint(0, 5, (2, 32, 48), generator=g))]
    kw = dict(candidates=16, population=4, top_k=4, batches=batches, num_classes=5, seed=1, mode="nsga2",
              nsga2={"winner": "score"})
    run = lambda **more: training_free_search(SMALL, "nwot", lambda a: params(a) / 1000, TARGET, **kw, **more)  # noqa: E731
    plain, again = run(), run(final_inits=3)
    assert [h["score"] for h in plain.history] == [h["score"] for h in again.history]
    assert again.final_inits == 3 and len(again.top) >= 2 and all(c.final_score is not None for c in again.top)
    assert [c.final_score for c in again.top] == sorted((c.final_score for c in again.top), reverse=True)
    assert {c.index for c in again.top} == {c.index for c in plain.top}
    rescorer = ProxyEvaluator(SMALL, "nwot", batches=batches, num_classes=5, proxy_seed=0, init_seed=1, inits=3)
    assert again.best.final_score == pytest.approx(rescorer(again.best.arch.to_dict())["score"])


# ------------------------------------------------------------------------------ resume and determinism
def test_a_killed_search_resumes_to_the_same_result(tmp_path):
    kw = dict(candidates=60, population=10, workers=2)
    whole = search(**kw, run_dir=tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        search(**kw, run_dir=tmp_path / "killed", evaluator=SmallFirst(kill_after=35))  # mid-generation
    state = json.loads((tmp_path / "killed" / "search_state.json").read_text())["strategy"]
    assert state["generations"] >= 1 and state["parents"] and state["offspring"] and state["front"]
    resumed = search(**kw, run_dir=tmp_path / "killed")
    key = lambda r: [(h["score"], h["latency_ms"]) for h in r.history]  # noqa: E731
    assert key(resumed) == key(whole) and resumed.nsga2["front"] == whole.nsga2["front"]
    assert resumed.best.index == whole.best.index and resumed.nsga2["generations"] == whole.nsga2["generations"]


def test_the_search_is_deterministic_for_a_seed_and_workers(nsga):
    key = lambda r: [(h["score"], h["latency_ms"]) for h in r.history]  # noqa: E731
    assert key(search()) == key(nsga)
    assert key(search(seed=1)) != key(nsga)
    two = [search(workers=2, candidates=60) for _ in range(2)]
    assert key(two[0]) == key(two[1]) and two[0].nsga2["front"] == two[1].nsga2["front"]


# ------------------------------------------------------------------------------ crossover
class SpyMobile(MobileSpace):
    """The mobile space recording the decision vectors it turns into architectures."""

    def __init__(self):
        super().__init__()
        self.built = []

    def from_decisions(self, decisions):
        self.built.append(list(decisions))
        return super().from_decisions(decisions)


def decision_search(space, crossover_prob=0.9):
    class Cost(Evaluator):  # small decision indices score well; latency grows with them
        def evaluate(self, arch):
            d = space.to_decisions(space.arch_from_dict(arch))
            return {"score": -sum(d) + noise(space.arch_from_dict(arch))}

    latency = lambda a: 1.0 + sum(space.to_decisions(a))  # noqa: E731
    return training_free_search(space, Cost(), latency, 40.0, candidates=60, population=10, mode="nsga2",
                                nsga2={"crossover_prob": crossover_prob})


def test_uniform_crossover_takes_every_decision_from_a_parent():
    spy, rng = SpyMobile(), np.random.default_rng(0)
    a, b = spy.sample(rng), spy.sample(rng)
    da, db = spy.to_decisions(a), spy.to_decisions(b)
    differ = [i for i, (x, y) in enumerate(zip(da, db)) if x != y]
    assert len(differ) > 5
    spy.built.clear()
    for _ in range(20):
        uniform_crossover(spy, a, b, rng)
    assert len(spy.built) == 20
    assert all(c[i] in (da[i], db[i]) for c in spy.built for i in range(len(da)))
    from_a = np.mean([[c[i] == da[i] for i in differ] for c in spy.built])
    assert 0.3 < from_a < 0.7  # both parents contribute, about equally


def test_crossover_only_on_decision_spaces(monkeypatch):
    from segnas.search.strategies import nsga2

    crossed_pairs = []

    def counted(space, a, b, rng):
        crossed_pairs.append((a, b))
        return uniform_crossover(space, a, b, rng)

    monkeypatch.setattr(nsga2, "uniform_crossover", counted)
    mobile = MobileSpace()
    assert isinstance(mobile, DecisionSpace) and not isinstance(SMALL, DecisionSpace)
    crossed = decision_search(mobile)
    assert crossed.nsga2["crossovers"] == len(crossed_pairs) > 10
    crossed_pairs.clear()
    assert decision_search(mobile, crossover_prob=0.0).nsga2["crossovers"] == 0 == len(crossed_pairs)
    # multires has no decision vectors: NSGA-II breeds by mutation alone, whatever crossover_prob says
    plain = search(candidates=60, population=10, nsga2={"crossover_prob": 1.0})
    assert plain.nsga2["crossovers"] == 0 == len(crossed_pairs) and plain.nsga2["generations"] >= 3


# ------------------------------------------------------------------------------ the search job
def test_saswot_job_in_nsga2_mode_records_the_front_and_trains_its_finalists(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))
    data = {"name": "synthetic", "options": {"size": [48, 64], "length": 4}}

    def job(name, **section):
        settings = make_settings("saswot", {
            "data": data, "out_dir": str(tmp_path / name), "seed": 0,
            "latency": {"target_ms": 1e9, "size": [48, 64], "backend": "eager", "table_min_runs": 1,
                        "table_min_time_s": 0.0, "calibration_networks": 0},
            "progress": False, "final": {"epochs": 0},
            "saswot": {"space_options": SMALL_OPTIONS, "candidates": 8, "population": 4,
                       "scoring": {"proxy": "params", "images": 2, "batch_size": 2, "size": [32, 48]},
                       **({"sample_size": 2} if section.get("mode") != "nsga2" else {}), **section}})
        summary = search_job(settings)
        return json.loads((tmp_path / name / summary["run_dir"].split("/")[-1] / "search_result.json").read_text())

    recipe = {"bf16": False, "ema_decay": None, "channels_last": False}
    nsga = job("nsga2", mode="nsga2", nsga2={"winner": "score", "train_top": 2, "train": {"steps": 2, "recipe": recipe}})
    d = nsga["details"]
    assert d["mode"] == "nsga2" and d["candidates_scored"] == 8 and d["front"]
    assert d["budget_use"] == pytest.approx(d["top"][0]["latency_ms"] / 1e9, rel=1e-3)
    assert [t["index"] for t in d["trained"]] == [t["index"] for t in sorted(d["front"], key=lambda f: -f["score"])[:2]]
    assert all(0 <= t["val_miou"] <= 1 and t["steps"] == 2 for t in d["trained"])
    assert d["top"][0]["index"] == max(d["trained"], key=lambda t: t["val_miou"])["index"]
    evolution = job("evolution")["details"]
    assert evolution["mode"] == "evolution" and "front" not in evolution
    assert evolution["budget_use"] == pytest.approx(evolution["top"][0]["latency_ms"] / 1e9, rel=1e-3)


def test_a_search_none_of_whose_candidates_trains_is_refused_naming_the_recipe(monkeypatch):
    """A sample-based search scored by short training, every candidate of which diverged, stops with
    the reason instead of 'winning' with a network that never trained."""
    import segnas.evaluate.short_train as short_train
    from segnas.errors import TrainingDiverged
    from segnas.search.asktell import AskTellLoop
    from segnas.search.strategies.random import RandomSearch, RandomSettings

    monkeypatch.setattr(short_train, "make_item", lambda space, arch, settings: {"space": "multires", "arch": arch})
    monkeypatch.setattr(short_train, "evaluate_arch", lambda item: (_ for _ in ()).throw(
        TrainingDiverged("optim.lr: the loss became nan at step 3")))
    search = RandomSearch()
    search.begin(SMALL, 0, RandomSettings(candidates=3))
    loop = AskTellLoop(search, short_train.TrainEvaluator("multires", {}), lambda a: 1.0, None, candidates=3)
    with pytest.raises(SegnasError, match=r"no candidate's short training gave a score \(3 scored; .*nan at step 3"):
        loop.run()
