"""RL search with auxiliary cells (Nekrasov et al., "Fast Neural Architecture Search of Compact
Semantic Segmentation Models via Auxiliary Cells", CVPR 2019; docs/methods/rl.md).

An ask/tell strategy: ``ask`` draws a decision sequence from an LSTM controller
(``segnas.search.controllers.lstm``) and turns it into an architecture of a ``DecisionSpace``
(``encdec`` by default); the loop (``segnas.search.asktell``) rejects proposals slower than the
target, evaluates the rest on ``--workers`` workers, and checkpoints; ``tell`` updates the controller
(PPO or REINFORCE, with a moving-average baseline) on the batch's rewards. On ``encdec`` the children
are scored by the paper's two-stage child evaluator (``segnas.evaluate.rl.ChildEvaluator``: decoder
on cached features, progressive termination, end-to-end fine-tuning, Polyak averaging, distillation;
``tell`` also moves the termination threshold) and the reward is the child's meta-validation reward;
on any other decision space (``mobile``) by ``rl.evaluator`` (a proxy, a short training or a
supernet, as random search's) and the reward is the score's rank among the children scored so far
(0 to 1: a proxy's scale is arbitrary). Either is multiplied by (latency / target)^w when
``latency_weight`` w is set (MnasNet's form). Every draw updates the
controller (``tell_skipped``): a duplicate with its earlier child's reward, a proposal over the
target with ``infeasible_reward``. The encoder the children share is pre-trained and cached before
the first child (``segnas.evaluate.rl.encoder``); the found network's final training starts from it
(``FoundNetwork.init`` → ``model.init``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
from pydantic import Field

from segnas.config.base import Settings
from segnas.config.search import EvaluatorSettings
from segnas.errors import SegnasError
from segnas.evaluate.base import Evaluator
from segnas.evaluate.rl import ChildEvaluator, ChildSettings, EncoderSettings, child_crop, pretrained_encoder
from segnas.search.asktell import AskTellStrategy, Candidate, Skipped
from segnas.search.base import SearchContext, SearchResult, strategy
from segnas.search.controllers.lstm import LSTMController, PolicyGradient
from segnas.search.evaluation import build_evaluator, check_evaluator
from segnas.spaces.base import Architecture, DecisionSpace, SearchSpace
from segnas.spaces.encdec import EncDecSpace


class ControllerSettings(Settings):
    """The LSTM controller and how it learns."""

    agent: Literal["ppo", "reinforce"] = "ppo"
    hidden: int = Field(100, ge=1)
    layers: int = Field(2, ge=1)
    #: Adam's learning rate (the official 1e-4 is for ~20000 children; a CPU search sees hundreds).
    lr: float = Field(1e-3, gt=0)
    baseline_decay: float = Field(0.95, ge=0, lt=1)
    #: PPO: clip ε, buffer of the last ``buffer`` children, passes over it, minibatch size.
    clip: float = Field(0.1, gt=0)
    buffer: int = Field(100, ge=1)
    epochs: int = Field(1, ge=1)
    minibatch: int = Field(10, ge=1)
    clip_grad_norm: float = Field(2.0, gt=0)
    entropy_weight: float = Field(0.0, ge=0)


class TerminationSettings(Settings):
    """Progressive termination: after stage 1 a child continues only if its stage-1 reward reaches a
    moving average (decay ``decay``) of the earlier children's stage-1 rewards; the first ``warmup``
    children all continue."""

    enabled: bool = True
    decay: float = Field(0.9, ge=0, lt=1)
    warmup: int = Field(5, ge=0)


class RLSettings(Settings):
    space: str = "encdec"
    #: Settings of the space (its constructor's arguments), e.g. ``{width: 32, blocks: 3}``.
    space_options: dict = Field(default_factory=dict)
    candidates: int = Field(100, ge=1)
    top_k: int = Field(10, ge=1)
    controller: ControllerSettings = Field(default_factory=ControllerSettings)
    #: How children of a space other than ``encdec`` are scored (``child``, ``encoder`` and
    #: ``termination`` are the ``encdec`` child evaluator's).
    evaluator: EvaluatorSettings = Field(default_factory=EvaluatorSettings)
    child: ChildSettings = Field(default_factory=ChildSettings)
    encoder: EncoderSettings = Field(default_factory=EncoderSettings)
    termination: TerminationSettings = Field(default_factory=TerminationSettings)
    #: w of reward × (latency / target)^w (MnasNet's soft constraint uses −0.07); 0: accuracy only.
    latency_weight: float = 0.0
    #: The controller's reward for a proposal predicted slower than the target (never trained):
    #: 0, the reward of a child that segments nothing, below every trained child's.
    infeasible_reward: float = 0.0


@strategy("rl")
class RLSearch(AskTellStrategy):
    settings_class: ClassVar[type[Settings]] = RLSettings
    cli_options = {"space": ("rl.space", str, "Search space (encdec: a fixed encoder and a searched decoder; "
                                              "or any decision space, e.g. mobile, scored by rl.evaluator)."),
                   "candidates": ("rl.candidates", int, "Children to train and score."),
                   "agent": ("rl.controller.agent", str, "Controller update: ppo or reinforce."),
                   "teacher": ("rl.child.teacher", str, "Trained network checkpoint whose logits children distil."),
                   "encoder-weights": ("rl.encoder.weights", str,
                                       "Encoder weights to use instead of pre-training one (e.g. ImageNet)."),
                   "encoder-steps": ("rl.encoder.steps", int, "Optimizer steps of the encoder's pre-training."),
                   "latency-weight": ("rl.latency_weight", float, "w of reward × (latency/target)^w (0: off).")}

    def __init__(self) -> None:
        super().__init__()
        self.evaluator: Evaluator | None = None
        self.target_ms: float | None = None
        #: the pre-trained encoder's weights file (the children's and the final training's start)
        self.encoder_weights: Path | None = None
        #: rewards are scores' ranks among the children's (scores of an arbitrary scale: rl.evaluator's)
        self.rank_rewards = False

    # ------------------------------------------------------------------ set-up
    def prepare(self, ctx: SearchContext) -> None:
        sec = ctx.section
        for key, instead in (("aux_cells", "rl.child.aux_weight (0: none)"), ("encoder_weights", "rl.encoder.weights")):
            if key in sec.space_options:
                raise SegnasError(f"rl.space_options.{key}: set by the search itself; use {instead}")
        space = self.search_space(ctx)
        if not isinstance(space, DecisionSpace):
            raise SegnasError(f"rl.space: {space.name!r} is not a decision space (decision_sizes, decision_names, "
                              "to_decisions, from_decisions)")
        if not isinstance(space, EncDecSpace):  # the children scored by rl.evaluator
            encdec_only = [f for f in ("child", "encoder", "termination")
                           if getattr(sec, f) != RLSettings.model_fields[f].default_factory()]
            if encdec_only:
                raise SegnasError(f"rl.{encdec_only[0]}: settings of the encdec child evaluator; the children of "
                                  f"{space.name!r} are scored by rl.evaluator")
            check_evaluator(sec.evaluator, "rl.evaluator", space, ctx)
            super().prepare(ctx)
            return
        if sec.evaluator != EvaluatorSettings():
            raise SegnasError("rl.evaluator: encdec children are scored by the child evaluator (rl.child)")
        child_crop(sec.child, ctx.settings.data)  # a missing crop size, before the run directory exists
        for field, path in (("rl.child.teacher", sec.child.teacher), ("rl.encoder.weights", sec.encoder.weights)):
            if path is not None and not Path(path).is_file():
                raise SegnasError(f"{field}: {path}: file not found")
        super().prepare(ctx)

    def begin(self, space: SearchSpace, seed: int, settings: RLSettings) -> None:
        super().begin(space, seed, settings)
        assert isinstance(space, DecisionSpace)  # prepare refused any other
        c = settings.controller
        self.controller = LSTMController(space.decision_sizes(), c.hidden, c.layers, seed=seed)
        self.learner = PolicyGradient(self.controller, c.agent, c.lr, c.baseline_decay, c.clip, c.buffer, c.epochs,
                                      c.minibatch, c.clip_grad_norm, c.entropy_weight)
        #: moving average of the stage-1 rewards, and how many children it has seen
        self.stage1_average: float | None = None
        self.stage1_seen = 0
        self.last_update: dict[str, float] = {}
        #: duplicates of a child of the batch being evaluated: their decisions wait for its reward
        self.waiting: dict[str, list[list[int]]] = {}
        #: log-probabilities of the draws not yet learned from, by decision sequence (PPO's old policy)
        self.drawn: dict[tuple[int, ...], list[float]] = {}
        #: skipped proposals the controller learned from, by reason
        self.skipped = {"duplicate": 0, "infeasible": 0, "degenerate": 0}
        #: every child's score so far, by key (outside ``encdec`` a reward is a score's rank among them)
        self.scores_seen: dict[str, float] = {}

    def make_evaluator(self, ctx: SearchContext) -> Evaluator:
        sec, s = ctx.section, ctx.settings
        space = self.space
        self.target_ms = ctx.latency.target_ms
        if not isinstance(space, EncDecSpace):
            self.evaluator = build_evaluator(sec.evaluator, space, ctx, sec.space_options)
            self.rank_rewards = True
            return self.evaluator
        weights = pretrained_encoder(s.data, space.encoder, space.encoder_width, sec.encoder, s.device,
                                     s.threads, s.progress, ctx.echo)
        self.encoder_weights = weights
        options = {**sec.space_options, "encoder_weights": str(weights)}
        self.evaluator = ChildEvaluator(sec.space, options, s.data, sec.child, ctx.num_classes, s.seed, s.device)
        self._sync_threshold()
        return self.evaluator

    # ------------------------------------------------------------------ ask / tell
    def ask(self) -> Architecture:
        decisions, log_prob = self.controller.draw(self.rng)
        self.drawn.setdefault(tuple(decisions), []).append(log_prob)
        return self.space.from_decisions(decisions)

    def reward(self, cand: Candidate) -> float:
        """The controller's reward: the child's score (0 if it has none; outside ``encdec`` its rank
        among the scores seen so far), times (latency / target)^w."""
        scored = cand.score is not None and bool(np.isfinite(cand.score))
        r = float(cand.score) if scored else 0.0
        if self.rank_rewards and scored:  # a proxy score of 0 is a score too
            seen = np.sort(list(self.scores_seen.values()))
            r = float(np.searchsorted(seen, cand.score, side="right")) / max(len(seen), 1)
        w = self.settings.latency_weight
        if w and self.target_ms:
            r *= (cand.latency_ms / self.target_ms) ** w
        return r

    def learn(self, decisions: list[list[int]], rewards: list[float]) -> None:
        """One controller update on (decisions, reward) pairs, each against the policy that drew it."""
        drawn = []
        for d in decisions:
            queue = self.drawn.get(tuple(d), [])
            drawn.append(queue.pop(0) if queue else None)
            if not queue:
                self.drawn.pop(tuple(d), None)
        self.last_update = self.learner.update(decisions, rewards, self.rng, drawn) or self.last_update

    def tell(self, candidates: list[Candidate]) -> None:
        self.scores_seen.update((c.key, float(c.score)) for c in candidates if c.score is not None and np.isfinite(c.score))
        decisions = [self.space.to_decisions(c.arch) for c in candidates]
        rewards = [self.reward(c) for c in candidates]
        for c in candidates:  # same-batch duplicates drawn before this batch was evaluated
            for d in self.waiting.pop(c.key, []):
                decisions.append(d)
                rewards.append(self.reward(c))
        self.learn(decisions, rewards)
        d = self.settings.termination.decay
        for c in candidates:
            first = (c.record.get("stage1") or {}).get("reward")
            if first is None:
                continue
            self.stage1_average = first if self.stage1_average is None else d * self.stage1_average + (1 - d) * first
            self.stage1_seen += 1
        self._sync_threshold()

    def rescored(self, scored: Sequence[Candidate]) -> None:
        """Scores that are ranks within the population moved: the rewards rank against the new ones."""
        self.scores_seen = {c.key: float(c.score) for c in scored if c.score is not None and np.isfinite(c.score)}

    def tell_skipped(self, skipped: Skipped) -> None:
        """The controller learns from every draw, as in the paper: a duplicate of an evaluated child
        gets that child's reward now (one of the batch being evaluated: with that batch), a proposal
        over the latency target gets ``infeasible_reward`` now, and one whose network cannot segment
        (its cell cuts the image off) gets 0, the reward of a network that predicts nothing (the
        termination average is left alone: none of these was trained)."""
        decisions = self.space.to_decisions(skipped.arch)
        self.skipped[skipped.reason] += 1
        if skipped.reason == "infeasible":
            self.learn([decisions], [self.settings.infeasible_reward])
        elif skipped.reason == "degenerate":
            self.learn([decisions], [0.0])
        elif skipped.earlier is not None:
            self.learn([decisions], [self.reward(skipped.earlier)])
        else:
            self.waiting.setdefault(skipped.key, []).append(list(decisions))

    def threshold(self) -> float | None:
        """The stage-1 reward the next children must reach to continue (None: all continue)."""
        t = self.settings.termination
        return self.stage1_average if t.enabled and self.stage1_seen >= max(t.warmup, 1) else None

    def _sync_threshold(self) -> None:
        if isinstance(self.evaluator, ChildEvaluator):
            self.evaluator.threshold = self.threshold()

    def choose(self, top: list[Candidate], ctx: SearchContext) -> list[Candidate]:
        """The finalists by the controller's reward (the score unless ``latency_weight`` is set)."""
        return sorted(top, key=lambda c: (-self.reward(c), c.index))

    def describe(self) -> dict[str, Any]:
        return {"controller": {"agent": self.settings.controller.agent, "updates": self.learner.updates,
                               "baseline": self.learner.baseline, **self.last_update,
                               "skipped_told": dict(self.skipped),
                               "infeasible_reward": self.settings.infeasible_reward},
                "termination_threshold": self.threshold(),
                "encoder_weights": str(self.encoder_weights) if self.encoder_weights else None}

    def run(self, ctx: SearchContext) -> SearchResult:
        """The ask/tell search; the found network's final training starts from the children's
        pre-trained encoder (the paper's setting; see docs/methods/rl.md)."""
        result = super().run(ctx)
        if self.encoder_weights is not None:
            result.found.init = str(self.encoder_weights)
        return result

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "learner": self.learner.state_dict(), "stage1_average": self.stage1_average,
                "stage1_seen": self.stage1_seen, "last_update": dict(self.last_update), "skipped": dict(self.skipped),
                "scores_seen": dict(self.scores_seen),
                "waiting": {k: [list(d) for d in v] for k, v in self.waiting.items()},
                "drawn": [[list(d), list(lps)] for d, lps in self.drawn.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.learner.load_state_dict(state["learner"])
        self.stage1_average, self.stage1_seen = state["stage1_average"], state["stage1_seen"]
        self.last_update = state["last_update"]
        self.waiting = {k: [list(d) for d in v] for k, v in state.get("waiting", {}).items()}
        self.drawn = {tuple(d): [float(lp) for lp in lps] for d, lps in state.get("drawn", [])}
        self.skipped = {"duplicate": 0, "infeasible": 0, "degenerate": 0, **state.get("skipped", {})}
        self.scores_seen = {k: float(v) for k, v in state.get("scores_seen", {}).items()}
        self._sync_threshold()
