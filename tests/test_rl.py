"""The RL strategy (Nekrasov et al.): the LSTM controller learns, also from the proposals the loop
skips (duplicates, over the target), the ask/tell search resumes exactly (also after kill -9 through
the CLI), children are evaluated in two stages with termination (its threshold reaches worker
processes), Polyak averaging and distillation, the found network has no auxiliary cells and its
final training starts from the cached pre-trained encoder, and the CLI command exists."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from segnas.config.train import DataConfig
from segnas.data import dataset_classes
from segnas.engine.checkpoint import save_checkpoint
from segnas.errors import SegnasError
from segnas.evaluate.base import Evaluator
from segnas.evaluate.rl import ChildEvaluator, ChildSettings, EncoderSettings, pretrained_encoder
from segnas.evaluate.rl import child as child_module
from segnas.search.asktell import AskTellLoop, AskTellStrategy, Candidate, Skipped
from segnas.search.controllers.lstm import LSTMController, PolicyGradient
from segnas.search.strategies.rl import RLSearch, RLSettings
from segnas.spaces.base import DecisionSpace, SearchSpace, get_space
from segnas.zoo import build_model
from test_search_core import kill_and_resume

TINY_DATA = {"name": "synthetic", "options": {"size": [48, 64], "length": 10}, "crop_size": [48, 64]}
TINY_SPACE = {"encoder_width": 0.25, "width": 8}
TINY_CHILD = {"stage1_images": 6, "stage1_steps": 4, "stage1_batch": 3, "stage2_steps": 2, "stage2_batch": 2}


# ------------------------------------------------------------------ a fake decision space
@dataclass(frozen=True)
class Seq:
    values: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"values": list(self.values)}


class FakeSpace(SearchSpace[Seq]):
    """Eight decisions of four choices each (the first has two): nothing to build."""

    name = "fake-seq"
    version = 1
    sizes = [2] + [4] * 7

    def decision_sizes(self) -> list[int]:
        return list(self.sizes)

    def decision_names(self) -> list[str]:
        return [f"d{i}" for i in range(len(self.sizes))]

    def to_decisions(self, arch: Seq) -> list[int]:
        return list(arch.values)

    def from_decisions(self, decisions: list[int]) -> Seq:
        return Seq(tuple(int(d) for d in decisions))

    def arch_from_dict(self, data: Any) -> Seq:
        return Seq(tuple(data["values"]))

    def build(self, arch, num_classes):
        raise NotImplementedError

    def sample(self, rng, spread=False):
        return Seq(tuple(int(rng.integers(s)) for s in self.sizes))

    def mutate(self, arch, rng):
        raise NotImplementedError

    def latency_keys(self, arch, num_classes, input_size):
        return []


def planted(values) -> float:
    """The planted reward: the share of decisions (after the first) that chose operator 1."""
    return float(np.mean([v == 1 for v in list(values)[1:]]))


class PlantedEvaluator(Evaluator):
    def evaluate(self, arch: dict[str, Any]) -> dict[str, Any]:
        r = planted(arch["values"])
        return {"score": r, "stage1": {"reward": r / 2}}


def test_the_fake_space_is_a_decision_space():
    assert isinstance(FakeSpace(), DecisionSpace)
    assert isinstance(get_space("encdec"), DecisionSpace)


@pytest.mark.parametrize("agent", ["ppo", "reinforce"])
def test_the_controller_learns_a_planted_reward_faster_than_random_sampling(agent):
    space, rng = FakeSpace(), np.random.default_rng(0)
    controller = LSTMController(space.decision_sizes(), hidden=16, layers=2, seed=0)
    learner = PolicyGradient(controller, agent, lr=0.02, buffer=10, minibatch=10)
    rewards = []
    for _ in range(50):
        batch = [controller.sample(rng) for _ in range(2)]
        rewards += [planted(d) for d in batch]
        learner.update(batch, [planted(d) for d in batch], rng)
    random_rewards = [planted(space.sample(rng).values) for _ in range(100)]  # the same budget, at random
    last = float(np.mean(rewards[-30:]))
    assert last > float(np.mean(random_rewards[-30:])) + 0.2, (agent, last)
    assert last > float(np.mean(rewards[:20])) + 0.2


def test_the_controller_log_probability_matches_its_sampling_distribution():
    controller = LSTMController([3, 2], hidden=8, layers=1, seed=3)
    log_prob, _ = controller.log_prob([[a, b] for a in range(3) for b in range(2)])
    assert torch.isclose(log_prob.exp().sum(), torch.tensor(1.0), atol=1e-5)
    rng = np.random.default_rng(0)
    draws = [tuple(controller.sample(rng)) for _ in range(1000)]
    freq = draws.count((0, 0)) / len(draws)
    assert abs(freq - float(log_prob[0].detach().exp())) < 0.05
    with pytest.raises(SegnasError, match="length 2"):
        controller.log_prob([[0, 0, 0]])


def test_ppo_takes_each_ratio_against_the_policy_that_drew_the_child():
    search = RLSearch()
    search.begin(FakeSpace(), 0, RLSettings(controller={"hidden": 8, "lr": 0.05, "buffer": 8, "minibatch": 4}))
    first = search.ask()
    decisions = search.space.to_decisions(first)
    drawn = search.drawn[tuple(decisions)][0]
    assert drawn == pytest.approx(float(search.controller.log_prob([decisions])[0][0].detach()), abs=1e-5)
    other = search.ask()  # drawn and rejected while the first child trains: the controller moves
    assert search.space.to_decisions(other) != decisions
    search.learner.baseline = 0.5  # (an earlier child's reward: the rejected one's advantage is not 0)
    search.tell_skipped(Skipped(other, "other", "infeasible", 9.0))
    assert abs(float(search.controller.log_prob([decisions])[0][0].detach()) - drawn) > 1e-4
    search.tell([Candidate(first, "first", 0.5, 1.0, 0, {"score": 0.5})])
    assert [lp for d, lp, _ in search.learner.buffer if d == decisions] == [pytest.approx(drawn)]
    assert search.drawn == {}


def slow_if_first_is_one(arch) -> float:
    """A latency of 2 ms for the architectures whose first decision is 1, else 1 ms (target 1.5)."""
    return 1.0 + arch.values[0]


def _loop(run_dir: Path, candidates: int, agent: str = "ppo") -> RLSearch:
    search = RLSearch()
    settings = RLSettings(candidates=candidates, controller={"agent": agent, "hidden": 16, "lr": 0.01,
                                                             "buffer": 8, "minibatch": 4},
                          termination={"warmup": 3, "decay": 0.5})
    search.begin(FakeSpace(), 7, settings)
    AskTellLoop(search, PlantedEvaluator(), slow_if_first_is_one, 1.5, candidates=candidates, workers=2,
                executor="inline", run_dir=run_dir).run()
    return search


@pytest.mark.parametrize("agent", ["ppo", "reinforce"])
def test_a_search_stopped_after_k_batches_resumes_to_the_uninterrupted_controller(tmp_path, agent):
    whole = _loop(tmp_path / "whole", 12, agent)
    _loop(tmp_path / "cut", 6, agent)  # its checkpoint after 3 batches is what a kill there leaves
    resumed = _loop(tmp_path / "cut", 12, agent)
    for (name, a), b in zip(whole.controller.state_dict().items(), resumed.controller.state_dict().values()):
        assert torch.equal(a, b), name
    assert whole.learner.baseline == resumed.learner.baseline and whole.learner.buffer == resumed.learner.buffer
    assert whole.skipped == resumed.skipped and whole.skipped["infeasible"] > 0  # the rejected ones were learned from
    assert whole.learner.updates == resumed.learner.updates
    lines = [(tmp_path / d / "candidates.jsonl").read_text().splitlines() for d in ("whole", "cut")]
    assert [json.loads(x)["result"]["arch"] for x in lines[0]] == [json.loads(x)["result"]["arch"] for x in lines[1]]
    assert [whole.controller.sample(np.random.default_rng(5)) for _ in range(3)] == \
        [resumed.controller.sample(np.random.default_rng(5)) for _ in range(3)]
    # the termination threshold: the moving average (decay 0.5) of the stage-1 rewards told so far
    firsts = [json.loads(x)["result"]["stage1"]["reward"] for x in lines[0]]
    average = firsts[0]
    for r in firsts[1:]:
        average = 0.5 * average + 0.5 * r
    assert resumed.threshold() == pytest.approx(average) and whole.threshold() == pytest.approx(average)


# ------------------------------------------------------------------ skipped proposals
class SmallSpace(FakeSpace):
    """Three binary decisions: eight architectures, so a search draws duplicates."""

    name = "fake-small"
    sizes = [2, 2, 2]


class Recording(AskTellStrategy):
    """Random proposals; records what the loop tells."""

    def ask(self):
        return self.space.sample(self.rng)

    def make_evaluator(self, ctx):
        raise NotImplementedError

    def tell(self, candidates):
        self.told = getattr(self, "told", []) + [c.key for c in candidates]

    def tell_skipped(self, skipped):
        self.skipped = getattr(self, "skipped", []) + [(skipped, list(getattr(self, "told", [])))]


def test_the_loop_tells_the_strategy_every_proposal_it_skips():
    strategy = Recording()
    strategy.begin(SmallSpace(), 0, None)
    outcome = AskTellLoop(strategy, PlantedEvaluator(), slow_if_first_is_one, 1.5, candidates=4, workers=2).run()
    assert outcome.evaluated == 4  # the four architectures within the target
    reasons = [s.reason for s, _ in strategy.skipped]
    assert reasons.count("infeasible") == outcome.rejected > 0 and reasons.count("duplicate") == outcome.duplicates > 0
    for s, told in strategy.skipped:
        if s.reason == "infeasible":
            assert s.arch.values[0] == 1 and s.latency_ms == 2.0 and s.earlier is None
        elif s.earlier is not None:  # a duplicate of an evaluated candidate: that one, already told
            assert s.earlier.key == s.key and s.key in told and s.earlier.arch == s.arch
        else:  # a duplicate of a proposal of the batch being drawn: told right after
            assert s.key not in told and s.key in strategy.told


class LearningLog(RLSearch):
    def learn(self, decisions, rewards):
        self.log = getattr(self, "log", []) + [list(zip(map(tuple, decisions), rewards))]
        super().learn(decisions, rewards)


def test_the_controller_learns_from_duplicates_and_from_proposals_over_the_target():
    search = LearningLog()
    search.begin(SmallSpace(), 3, RLSettings(candidates=4, infeasible_reward=-0.5,
                                             controller={"hidden": 8, "buffer": 8, "minibatch": 4}))
    outcome = AskTellLoop(search, PlantedEvaluator(), slow_if_first_is_one, 1.5, candidates=4, workers=1).run()
    learned = [pair for update in search.log for pair in update]
    assert outcome.evaluated == 4 and outcome.duplicates > 0 and outcome.rejected > 0
    # every draw reached the controller: the evaluated children, the duplicates and the rejected ones
    assert len(learned) == outcome.evaluated + outcome.duplicates + outcome.rejected
    assert search.learner.updates == len(search.log) == len(learned)  # one child per batch: one update each
    assert search.skipped == {"duplicate": outcome.duplicates, "infeasible": outcome.rejected, "degenerate": 0}
    for values, reward in learned:
        # over the target: the penalty; a duplicate: its earlier child's reward (the planted score)
        assert reward == (-0.5 if values[0] == 1 else planted(values))
    assert search.describe()["controller"]["skipped_told"] == search.skipped


class CutSpace(SmallSpace):
    """The small space where an architecture ending in 1, 1 cannot segment (``defect``)."""

    name = "fake-cut"

    def defect(self, arch):
        return "cut off" if arch.values[1:] == (1, 1) else None


def test_proposals_that_cannot_segment_are_not_evaluated_and_teach_the_controller_reward_0():
    search = LearningLog()
    search.begin(CutSpace(), 2, RLSettings(candidates=6, controller={"hidden": 8, "buffer": 8, "minibatch": 4}))
    # six of the eight architectures can segment: the search draws until it has trained them all
    outcome = AskTellLoop(search, PlantedEvaluator(), lambda a: 1.0, None, candidates=6, workers=1).run()
    learned = [pair for update in search.log for pair in update]
    assert outcome.evaluated == 6 and outcome.degenerate > 0
    assert outcome.summary()["rejected_degenerate"] == outcome.degenerate == search.skipped["degenerate"]
    assert all(c.arch.values[1:] != (1, 1) for c in outcome.top)  # none of them was trained
    cut = [reward for values, reward in learned if values[1:] == (1, 1)]
    assert len(cut) == outcome.degenerate and set(cut) == {0.0}


def test_a_duplicate_within_a_batch_learns_its_twins_reward_with_that_batch():
    search = LearningLog()
    search.begin(SmallSpace(), 0, RLSettings(controller={"hidden": 8}))
    arch = Seq((0, 1, 1))
    search.tell_skipped(Skipped(arch, "k", "duplicate", 1.0, None))
    assert not getattr(search, "log", []) and search.waiting == {"k": [[0, 1, 1]]}
    state = search.state_dict()  # a checkpoint now would keep the waiting duplicate
    search.tell([Candidate(arch, "k", 0.25, 1.0, 1, {"score": 0.25})])
    assert search.log == [[((0, 1, 1), 0.25), ((0, 1, 1), 0.25)]] and search.waiting == {}
    search.load_state_dict(state)
    assert search.waiting == {"k": [[0, 1, 1]]}


# ------------------------------------------------------------------ the child evaluator (encdec)
@pytest.fixture(scope="module")
def child_setup():
    data = DataConfig.model_validate(TINY_DATA)
    num_classes = dataset_classes(data).num_classes
    arch = get_space("encdec", **TINY_SPACE).sample(np.random.default_rng(0)).to_dict()
    return data, num_classes, arch


def _evaluator(child_setup, **child) -> ChildEvaluator:
    data, num_classes, _ = child_setup
    return ChildEvaluator("encdec", TINY_SPACE, data, ChildSettings(**{**TINY_CHILD, **child}), num_classes, seed=0)


def test_termination_skips_stage_two_for_a_child_below_the_threshold(child_setup):
    arch = child_setup[2]
    ev = _evaluator(child_setup)
    full = ev(arch)
    assert not full["terminated"] and full["stage2"] is not None and full["score"] == full["stage2"]["reward"]
    ev.threshold = full["stage1"]["reward"] + 1.0
    cut = ev(arch)
    assert cut["terminated"] and cut["stage2"] is None and cut["score"] == cut["stage1"]["reward"]
    assert cut["stage1"]["reward"] == full["stage1"]["reward"]  # a child trains the same way every time
    ev.threshold = full["stage1"]["reward"]
    assert not ev(arch)["terminated"]


def test_polyak_weights_are_what_is_validated(child_setup, monkeypatch):
    arch = child_setup[2]
    averages, scored = [], []

    class Recording(child_module.ModelEMA):
        def update(self, model):
            super().update(model)
            self.raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if self not in averages:
                averages.append(self)

    monkeypatch.setattr(child_module, "ModelEMA", Recording)
    ev = _evaluator(child_setup, stage2_steps=0)
    monkeypatch.setattr(ev, "_score", lambda model: scored.append(
        {k: v.detach().clone() for k, v in model.state_dict().items()}) or
        child_module.evaluate(model, ev.meta_val, ev.num_classes))
    ev(arch)
    (ema,) = averages
    validated, averaged, raw = scored[0], ema.module.state_dict(), ema.raw
    assert all(torch.equal(validated[k], averaged[k] if not k.startswith("encoder.") else raw[k]) for k in validated)
    moved = [k for k in validated if validated[k].is_floating_point() and not torch.equal(validated[k], raw[k])]
    assert moved and all(not k.startswith("encoder.") for k in moved)  # stage 1 leaves the encoder alone
    scored.clear()
    off = _evaluator(child_setup, stage2_steps=0, polyak=False)
    monkeypatch.setattr(off, "_score", lambda model: scored.append(
        {k: v.detach().clone() for k, v in model.state_dict().items()}) or
        child_module.evaluate(model, off.meta_val, off.num_classes))
    off(arch)
    assert any(not torch.equal(scored[0][k], validated[k]) for k in moved)


def test_distillation_adds_a_kd_term_only_with_a_teacher(child_setup, tmp_path):
    data, num_classes, arch = child_setup
    teacher = build_model("fast_scnn", num_classes, width=0.5)
    path = tmp_path / "teacher.pt"
    from segnas.data import open_data

    names = list(open_data(data).classes.names)  # a teacher of the dataset's classes
    save_checkpoint(path, {"model": teacher.state_dict(), "classes": {"names": names,
                                                                       "colors": [[0, 0, 0]] * num_classes},
                           "model_spec": {"kind": "zoo", "name": "fast_scnn", "options": {"width": 0.5}}})
    without = _evaluator(child_setup, stage2_steps=0)(arch)
    with_kd = _evaluator(child_setup, stage2_steps=0, teacher=str(path))(arch)
    assert without["stage1"]["losses"]["kd"] == 0.0 and with_kd["stage1"]["losses"]["kd"] > 0.0
    assert with_kd["stage1"]["losses"]["seg"] != without["stage1"]["losses"]["seg"]


def test_the_found_network_has_no_auxiliary_cells(child_setup):
    _, num_classes, arch_dict = child_setup
    space = get_space("encdec", **TINY_SPACE)
    arch = space.arch_from_dict(arch_dict)
    with_aux = get_space("encdec", **TINY_SPACE, aux_cells=True).build(arch, num_classes).train()
    out = with_aux(torch.randn(1, 3, 48, 64))
    assert isinstance(out, dict) and len(out["aux"]) == len(arch.blocks)
    found = space.build(arch, num_classes)  # the strategy's space: what the search job measures and exports
    assert not any("aux" in name for name, _ in found.named_parameters())
    assert isinstance(found.eval()(torch.randn(1, 3, 48, 64)), torch.Tensor)


def test_meta_validation_is_carved_from_the_training_split():
    train, val = child_module.meta_split(20, 0.2, seed=0)
    assert len(val) == 4 and not set(train) & set(val) and sorted(train + val) == list(range(20))
    with pytest.raises(SegnasError, match="meta_val_fraction"):
        child_module.meta_split(1, 0.5, seed=0)


def test_a_child_without_a_crop_size_is_refused(child_setup):
    data = DataConfig.model_validate({**TINY_DATA, "crop_size": None})
    with pytest.raises(SegnasError, match="rl.child.size"):
        ChildEvaluator("encdec", TINY_SPACE, data, ChildSettings(), child_setup[1])


def test_the_child_evaluators_device_is_resolved_like_every_jobs(child_setup):
    data, num_classes, _ = child_setup
    auto = ChildEvaluator("encdec", TINY_SPACE, data, ChildSettings(), num_classes, device="auto")
    assert auto.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(SegnasError, match="device: 'tpu'"):
        ChildEvaluator("encdec", TINY_SPACE, data, ChildSettings(), num_classes, device="tpu")


def test_the_encoder_is_pre_trained_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))
    data = DataConfig.model_validate({**TINY_DATA, "batch_size": 2})
    settings = EncoderSettings(steps=2)
    path = pretrained_encoder(data, "mobilenetv2", 0.25, settings)
    assert path.is_file() and (path.parents[2] / "trained.json").is_file()
    get_space("encdec", **TINY_SPACE, encoder_weights=str(path)).build(
        get_space("encdec", **TINY_SPACE).sample(np.random.default_rng(0)), 11)  # the weights fit
    messages = []
    assert pretrained_encoder(data, "mobilenetv2", 0.25, settings, echo=messages.append) == path
    assert any("reusing" in m for m in messages)
    other = pretrained_encoder(data, "mobilenetv2", 0.25, EncoderSettings(steps=3))
    assert other != path
    assert pretrained_encoder(data, "mobilenetv2", 0.25, EncoderSettings(weights=str(path))) == path
    with pytest.raises(SegnasError, match="rl.encoder.weights"):
        pretrained_encoder(data, "mobilenetv2", 0.25, EncoderSettings(weights=str(tmp_path / "nope.pt")))


def test_segnas_search_rl_help():
    from typer.testing import CliRunner

    from segnas.cli.main import app

    result = CliRunner().invoke(app, ["search", "rl", "--help"])
    assert result.exit_code == 0
    for flag in ("--agent", "--teacher", "--encoder-weights", "--latency-weight", "--workers", "--resume"):
        assert flag in result.output


def test_rl_search_job_on_two_worker_processes(tmp_path, monkeypatch):
    """The search job end to end with ``--workers 2 --executor process``: the termination threshold
    the strategy updates after each batch reaches the workers' set-up evaluators (which are reused
    between batches, so only ``Evaluator.batch_settings`` carries it), and the found network's final
    training starts from the pre-trained encoder and says so."""
    from segnas.jobs.search import make_settings, search_job
    from segnas.spaces.encdec import read_encoder_state

    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))
    settings = make_settings("rl", {
        "data": {**TINY_DATA, "batch_size": 2}, "out_dir": str(tmp_path), "progress": False, "threads": 1,
        "workers": 2, "executor": "process", "final": {"steps": 1, "eval_every": 1},
        "latency": {"target_ms": 1e9, "size": [48, 64], "backend": "eager", "table_min_runs": 1,
                    "table_min_time_s": 0.0},
        "rl": {"space_options": TINY_SPACE, "candidates": 4, "encoder": {"steps": 1},
               "child": {**TINY_CHILD, "stage1_steps": 2, "stage2_steps": 1},
               "controller": {"hidden": 16}, "termination": {"warmup": 1, "decay": 0.5}}})
    summary = search_job(settings)
    run = Path(summary["run_dir"])
    assert summary["method"] == "rl" and summary["space"] == "encdec"
    details = summary["details"]
    assert details["candidates_scored"] == 4 and details["controller"]["updates"] == 2 + sum(
        details["controller"]["skipped_told"].values())
    records = [json.loads(x)["result"] for x in (run / "candidates.jsonl").read_text().splitlines()]
    assert all(r["stage1"] is not None and "score" in r for r in records)
    # batch 1 ran without a threshold; batch 2 with the average of batch 1's stage-1 rewards
    first = [r["stage1"]["reward"] for r in records[:2]]
    assert [r["threshold"] for r in records[:2]] == [None, None]
    assert [r["threshold"] for r in records[2:]] == [pytest.approx(0.5 * first[0] + 0.5 * first[1])] * 2
    assert all(r["terminated"] == (r["stage1"]["reward"] < r["threshold"]) for r in records[2:])
    state = json.loads((run / "search_state.json").read_text())["strategy"]
    assert state["learner"]["updates"] == details["controller"]["updates"] and state["stage1_seen"] == 4
    (encoder,) = (tmp_path / "cache" / "encoders").iterdir()  # the encoder was pre-trained into the cache
    init = summary["networks"]["arch"]["training"]["init"]
    assert Path(init["weights"]).parents[2] == encoder and init["weights"] == details["encoder_weights"]
    assert init["loaded"] == len(read_encoder_state(init["weights"])) and init["shape_mismatch"] == 0
    # the found network trained and saved without the children's auxiliary cells
    from segnas.engine import load_checkpoint

    trained = load_checkpoint(Path(summary["run_dir"]) / summary["networks"]["arch"]["training"]["run_dir"]
                              / "checkpoints" / "best.pt")
    assert trained["model"] and not [k for k in trained["model"] if "aux" in k]


def rl_kill_case(run: Path) -> bool:
    """Far enough to kill: the first batch of children is checkpointed."""
    return (run / "search_state.json").is_file()


@pytest.mark.slow
def test_rl_search_killed_mid_way_resumes_through_the_cli_to_the_same_search(tmp_path):
    own = ["--candidates", "4", "--workers", "1", "--set", "data.crop_size=[48,64]", "--set", "data.batch_size=2",
           "--set", "rl.space_options={encoder_width: 0.25, width: 8}", "--set", "rl.encoder.steps=1",
           "--set", "rl.child={stage1_images: 4, stage1_steps: 2, stage1_batch: 2, stage2_steps: 1, "
                    "stage2_batch: 2}",
           "--set", "rl.controller.hidden=16", "--set", "rl.termination.warmup=1"]
    whole, resumed = kill_and_resume(tmp_path, "rl", own, rl_kill_case)
    read = lambda d, f: json.loads((d / f).read_text())  # noqa: E731

    def children(run: Path) -> list:
        records = [json.loads(x)["result"] for x in (run / "candidates.jsonl").read_text().splitlines()]
        return [(r["arch"], r["score"], r["stage1"]["reward"], r["threshold"], r["terminated"]) for r in records]

    assert children(resumed) == children(whole) and len(children(whole)) == 4
    a, b = read(whole, "search_state.json")["strategy"], read(resumed, "search_state.json")["strategy"]
    weights = [torch.load(io.BytesIO(base64.b64decode(s["learner"].pop("weights"))), weights_only=True) for s in (a, b)]
    for part in ("controller", "optimizer"):
        flat = [torch.nn.utils.parameters_to_vector([t for t in _tensors(w[part])]) for w in weights]
        assert torch.equal(*flat), part
    assert a == b  # baseline, PPO buffer, updates, termination average, skipped counts, random generator
    assert read(resumed, "arch.json")["arch"] == read(whole, "arch.json")["arch"]
    assert read(resumed, "search_result.json")["details"]["controller"]["updates"] == \
        read(whole, "search_result.json")["details"]["controller"]["updates"]


def _tensors(state: Any) -> list:
    """Every tensor of a (nested) state dict, in order."""
    if isinstance(state, torch.Tensor):
        return [state.reshape(-1).float()]
    if isinstance(state, dict):
        return [t for k in sorted(state, key=str) for t in _tensors(state[k])]
    if isinstance(state, (list, tuple)):
        return [t for v in state for t in _tensors(v)]
    return []


MOBILE_SMALL = {"stem_widths": [[8], [8, 16], [16]], "stage_widths": [[16], [16, 24], [24], [24, 32], [32]],
                "stage_depths": [[0, 1], [1, 2], [0, 1], [1, 2], [0, 1]], "fusion_widths": [16, 24]}


def mobile_rl_settings(tmp_path, **rl):
    from segnas.jobs.search import make_settings

    return make_settings("rl", {
        "data": {"name": "synthetic", "options": {"size": [48, 64], "length": 8}, "crop_size": [48, 64],
                 "batch_size": 2},
        "out_dir": str(tmp_path), "progress": False, "threads": 1, "final": {"epochs": 0},
        "latency": {"target_ms": 1e9, "size": [48, 64], "backend": "eager", "table_min_runs": 1,
                    "table_min_time_s": 0.0, "calibration_networks": 0},
        "rl": {"space": "mobile", "space_options": MOBILE_SMALL, "candidates": 5, "controller": {"hidden": 16},
               "evaluator": {"kind": "proxy", "proxy": {"proxy": "nwot", "images": 2, "size": [48, 64],
                                                         "batch_size": 2}}, **rl}})


def test_the_controller_searches_the_mobile_space_rewarded_by_the_rank_of_a_proxy_score(tmp_path, monkeypatch):
    """Outside encdec the children are scored by rl.evaluator (here a proxy) and the controller's
    reward is a score's rank among the children scored so far (a proxy's scale is arbitrary)."""
    from segnas.jobs.search import search_job

    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))
    learned: list[float] = []  # the rewards the job's controller learns from
    original = RLSearch.learn
    monkeypatch.setattr(RLSearch, "learn", lambda self, decisions, rewards: (
        learned.extend(float(r) for r in rewards), original(self, decisions, rewards))[-1])
    summary = search_job(mobile_rl_settings(tmp_path))
    details = summary["details"]
    assert summary["space"] == "mobile" and details["candidates_scored"] == 5
    assert details["controller"]["updates"] == 5 + sum(details["controller"]["skipped_told"].values())
    state = json.loads((Path(summary["run_dir"]) / "search_state.json").read_text())["strategy"]
    scores = sorted(state["scores_seen"].values())
    assert len(scores) == 5 and scores[-1] > 1.0  # nwot's scale, not a reward's
    # every reward the job's controller learned from is a rank among the children so far, not a raw score
    assert len(learned) >= 5 and all(0 <= r <= 1 for r in learned) and max(learned) == 1.0
    search = RLSearch()
    search.rank_rewards, search.scores_seen, search.settings = True, state["scores_seen"], RLSettings()
    ranked = [search.reward(SimpleNamespace(score=s, latency_ms=1.0)) for s in scores]
    assert ranked == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])


@pytest.mark.parametrize("rl, message", [
    ({"child": {"stage1_steps": 3}}, "rl.child: settings of the encdec child evaluator"),
    ({"termination": {"enabled": False}}, "rl.termination: settings of the encdec child evaluator"),
    ({"evaluator": {"kind": "proxy", "proxy": {"proxy": "nosuch"}}}, "rl.evaluator.proxy.proxy"),
    ({"space": "encdec", "space_options": {}}, "rl.evaluator: encdec children are scored by the child evaluator"),
])
def test_settings_for_another_kind_of_child_are_refused_before_the_search(tmp_path, rl, message):
    from segnas.jobs.search import search_job

    with pytest.raises(SegnasError, match=message):
        search_job(mobile_rl_settings(tmp_path, **rl))
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]
