"""NSGA-II (Deb, Pratap, Agarwal & Meyarivan, IEEE TEC 2002) as an ask/tell strategy over two
objectives of an evaluated candidate: its score (maximized) and its predicted latency (maximized,
within the latency target), and the rules that pick one winner from the Pareto front.

**Why maximize latency.** The usual trade-off, score up and latency down, is the wrong one under a
latency *ceiling* when the score (a zero-cost proxy) prefers small networks: then the fast networks
also score best, they dominate every slower one, the front collapses to the fast end and nothing
draws the search towards the budget (SasWOT's evolution winners used 55-65% of theirs). Adding a
bonus for budget use to the score needs a weight in the proxy's units, different for every proxy.
Maximizing both the score and the latency, with the latency capped by the target, makes the two
objectives conflict exactly when the proxy prefers small networks: the front runs from the
proxy's favourite to the slowest feasible network, crowding distance keeps both ends (infinite
distance), so the population holds networks near the budget all along, and a network that is both
slower (still within the target) and better-scoring dominates, which is what a budget is for.
Under the hard cap, maximizing the latency is minimizing the unused budget ``target - latency``.
When the proxy prefers large networks the objectives agree and the front shrinks to the best
networks near the budget: still the right answer.

**Infeasible candidates** (predicted over the target) are rejected by ``AskTellLoop`` before they
are scored and never reach ``tell``: they never enter the population, the front or a tournament.
``rank_front`` drops any member over the target it is handed all the same. A candidate whose
evaluation failed (no finite score) is not a point of the trade-off: it is left out too.

**Generations in ask/tell.** The first ``population`` evaluated candidates are random spread
samples; then each ``ask`` breeds one child of the current parents: two binary tournaments on
(non-domination rank, crowding distance), on a ``DecisionSpace`` the uniform crossover of the two
winners' decision vectors with probability ``crossover_prob``, then ``space.mutate``. Evaluated
children collect in ``offspring``; once there are ``population`` of them, environmental selection
(``deap.tools.selNSGA2`` over parents and children) keeps the next parents and a generation ends.
With ``workers`` > 1 the loop asks for that many children from the same parents at once, so the
result depends on the seed and ``workers``, not on the executor. Ranks and crowding of the parents
are recomputed from the parents alone after each selection (and on resume), so the state is the
lists of candidates and the random generator.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import numpy as np
from deap import base
from deap.tools import selNSGA2, sortNondominated
from deap.tools.emo import assignCrowdingDist
from pydantic import Field, ValidationInfo, model_validator

from segnas.config.base import Settings, refuse_idle
from segnas.config.search import TrainEvaluatorSettings
from segnas.errors import SegnasError
from segnas.evaluate.base import fitness
from segnas.parallel import default_key
from segnas.search.asktell import AskTellStrategy, Candidate
from segnas.spaces.base import Architecture, DecisionSpace, SearchSpace

WinnerRule = Literal["budget", "knee", "score"]


class NSGA2Settings(Settings):
    """NSGA-II's own settings (the population size is the strategy's ``population``)."""

    #: Probability that a child is the uniform crossover of two parents (``DecisionSpace`` spaces only).
    crossover_prob: float = Field(0.9, ge=0, le=1)
    #: How the winner is picked from the front: ``budget`` (the best score among members predicted
    #: at >= ``min_budget_use`` of the target), ``knee`` (the knee of the front), ``score`` (the best score).
    winner: WinnerRule = "budget"
    min_budget_use: float = Field(0.8, gt=0, le=1)
    #: Train this many of the rule's first front members briefly and let the best val mIoU win (0: off).
    train_top: int = Field(0, ge=0)
    #: The short training of those members (steps and recipe overrides of the ground-truth recipe).
    train: TrainEvaluatorSettings = Field(default_factory=TrainEvaluatorSettings)

    @model_validator(mode="after")
    def _training_of_the_top(self, info: ValidationInfo) -> "NSGA2Settings":
        refuse_idle(self, info, {"train": (self.train_top == 0, "the short training of the train_top members, "
                                                                "which is off (train_top: 0)")})
        return self


class _Fitness(base.Fitness):
    weights = (1.0, 1.0)  # (score, latency), both maximized


class _Member:
    """A candidate as DEAP's selection sees it."""

    __slots__ = ("cand", "fitness")

    def __init__(self, cand: Candidate) -> None:
        self.cand = cand
        self.fitness = _Fitness((float(cand.score), float(cand.latency_ms)))


def rule_score(c: Candidate) -> float:
    """The score the winner rules use: the finalist's finer score when it has one."""
    return fitness(c.final_score if c.final_score is not None else c.score)


def is_scored(c: Candidate) -> bool:
    return math.isfinite(fitness(c.score))


def pareto_front(cands: Sequence[Candidate]) -> list[Candidate]:
    """The non-dominated candidates by (score up, latency up), fastest first (failed ones left out)."""
    members = [_Member(c) for c in cands if is_scored(c)]
    if not members:
        return []
    front = sortNondominated(members, len(members), first_front_only=True)[0]
    return sorted((m.cand for m in front), key=lambda c: (c.latency_ms, c.index))


def uniform_crossover(space: DecisionSpace, a: Any, b: Any, rng: np.random.Generator) -> Any:
    """The architecture whose every decision is taken from ``a`` or ``b`` with equal chance."""
    da, db = space.to_decisions(a), space.to_decisions(b)
    take_a = rng.random(len(da)) < 0.5
    return space.from_decisions([int(x if t else y) for x, y, t in zip(da, db, take_a)])


def _cands_to_json(cands: Sequence[Candidate]) -> list[list[Any]]:
    return [[c.arch.to_dict(), c.score, c.latency_ms, c.index] for c in cands]


def _cands_from_json(space: SearchSpace, rows: list[list[Any]]) -> list[Candidate]:
    out = []
    for data, score, latency, index in rows:
        arch = space.arch_from_dict(data)
        out.append(Candidate(arch, default_key(arch), score, latency, index))
    return out


class NSGA2(AskTellStrategy):
    """NSGA-II over (score, latency), see the module docstring; settings ``population`` and ``nsga2``
    (``NSGA2Settings``). ``front`` is the Pareto front of every candidate told so far."""

    def begin(self, space: SearchSpace, seed: int, settings: Any) -> None:
        super().begin(space, seed, settings)
        self.parents: list[Candidate] = []
        self.offspring: list[Candidate] = []
        self.front: list[Candidate] = []
        self.generations = self.crossovers = 0
        self._rate()

    @property
    def crosses(self) -> bool:
        return isinstance(self.space, DecisionSpace) and self.settings.nsga2.crossover_prob > 0

    def ask(self) -> Architecture:
        if not self.parents:
            return self.space.sample(self.rng, spread=True)
        first = self._tournament()
        if self.crosses and self.rng.random() < self.settings.nsga2.crossover_prob:
            second = self._tournament()
            self.crossovers += 1
            child = uniform_crossover(self.space, first.arch, second.arch, self.rng)
        else:
            child = first.arch
        return self.space.mutate(child, self.rng)

    def tell(self, candidates: list[Candidate]) -> None:
        scored = [c for c in candidates if is_scored(c)]
        self.offspring += scored
        known = {c.index for c in self.front}
        self.front = pareto_front(self.front + [c for c in scored if c.index not in known])
        if len(self.offspring) >= self.settings.population:
            chosen = selNSGA2([_Member(c) for c in self.parents + self.offspring], self.settings.population)
            self.parents, self.offspring = [m.cand for m in chosen], []
            self.generations += 1
            self._rate()

    def rescored(self, scored: Sequence[Candidate]) -> None:
        """Population-relative scores changed: parents and offspring take their new scores, the front
        is that of every candidate scored so far, and the parents are rated again."""
        by_index = {c.index: c for c in scored}
        self.parents = [by_index.get(c.index, c) for c in self.parents]
        self.offspring = [by_index.get(c.index, c) for c in self.offspring]
        self.front = pareto_front(scored)
        self._rate()

    def _rate(self) -> None:
        """Non-domination rank and crowding distance of every parent (among the parents)."""
        members = [_Member(c) for c in self.parents]
        self.rank, self.crowding = [0] * len(members), [0.0] * len(members)
        where = {id(m): i for i, m in enumerate(members)}
        for r, front in enumerate(sortNondominated(members, len(members)) if members else []):
            assignCrowdingDist(front)
            for m in front:
                self.rank[where[id(m)]], self.crowding[where[id(m)]] = r, m.fitness.crowding_dist

    def _tournament(self) -> Candidate:
        """Binary tournament: the lower rank wins, then the larger crowding distance, then the first drawn."""
        if len(self.parents) == 1:
            return self.parents[0]
        i, j = (int(k) for k in self.rng.choice(len(self.parents), size=2, replace=False))
        better = (self.rank[j], -self.crowding[j]) < (self.rank[i], -self.crowding[i])
        return self.parents[j if better else i]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "generations": self.generations, "crossovers": self.crossovers,
                "parents": _cands_to_json(self.parents), "offspring": _cands_to_json(self.offspring),
                "front": _cands_to_json(self.front)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.generations, self.crossovers = state["generations"], state["crossovers"]
        self.parents = _cands_from_json(self.space, state["parents"])
        self.offspring = _cands_from_json(self.space, state["offspring"])
        self.front = _cands_from_json(self.space, state["front"])
        self._rate()


# ---------------------------------------------------------------------------------- winner rules
def knee_distance(cands: Sequence[Candidate]) -> list[float]:
    """Each point's signed distance to the chord between the best-scoring and the slowest point, in
    objectives scaled to [0, 1] over ``cands``; positive towards the ideal (best score, slowest)."""
    s = np.array([rule_score(c) for c in cands], dtype=float)
    t = np.array([c.latency_ms for c in cands], dtype=float)
    if np.ptp(s) == 0 or np.ptp(t) == 0:
        return [0.0] * len(cands)
    s, t = (s - s.min()) / np.ptp(s), (t - t.min()) / np.ptp(t)
    a = int(np.lexsort((-t, -s))[0])  # best score (slowest among ties)
    b = int(np.lexsort((-s, -t))[0])  # slowest (best score among ties)
    d = np.array([t[b] - t[a], s[b] - s[a]])
    norm = float(np.hypot(*d))
    if norm == 0:
        return [0.0] * len(cands)
    # the cross product of the chord and the point; the ideal point (1, 1) lies on its positive side
    return [float(d[0] * (s[i] - s[a]) - d[1] * (t[i] - t[a])) / norm for i in range(len(cands))]


def rank_front(front: Sequence[Candidate], rule: WinnerRule, target_ms: float | None,
               min_budget_use: float = 0.8) -> list[Candidate]:
    """The members ``rule`` may pick, its winner first (members over ``target_ms`` never appear):

    - ``budget``: members predicted at >= ``min_budget_use`` x target, best score first (the slower
      first among equal scores); when none reaches it, the slowest member alone (the rule's threshold
      falls to the most budget the search reached). On a Pareto front this is the best score of
      every candidate in the band [``min_budget_use`` x target, target];
    - ``knee``: every member, the farthest above the chord of the front's two ends first;
    - ``score``: every member, best score first.
    Ties go to the earlier evaluated candidate."""
    feasible = [c for c in front if target_ms is None or c.latency_ms <= target_ms]
    by_score = sorted(feasible, key=lambda c: (-rule_score(c), -c.latency_ms, c.index))
    if rule == "score" or not feasible:
        return by_score
    if rule == "knee":
        dist = dict(zip((c.index for c in feasible), knee_distance(feasible)))
        return sorted(feasible, key=lambda c: (-dist[c.index], -rule_score(c), c.index))
    if rule == "budget":
        if target_ms is None:
            raise SegnasError("nsga2.winner: the budget rule needs a latency target")
        band = [c for c in by_score if c.latency_ms >= min_budget_use * target_ms]
        return band or [max(feasible, key=lambda c: (c.latency_ms, rule_score(c), -c.index))]
    raise SegnasError(f"nsga2.winner: unknown rule {rule!r} (budget, knee or score)")
