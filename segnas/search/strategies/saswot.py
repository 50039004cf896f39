"""SasWOT's search stage: regularized evolution over a space that maximizes a zero-cost proxy under a
latency target, training nothing (docs/methods/saswot.md; the proxy itself is discovered by
``segnas proxy discover``).

Regularized evolution (Real et al., 2019): the first ``population`` proposals are random
(``sample(spread=True)``); after that each proposal draws ``sample_size`` members of the population
at random and mutates the best of them; every evaluated child joins the population and the oldest
member leaves (aging). With ``workers`` > 1 that many children are proposed from the same
population and scored together (the result depends on seed and workers, not on the executor).
With ``final_inits`` above the proxy's initializations, the ``top_k`` best are scored again over
``final_inits`` initializations (the search's own among them) and the best by that wins: the search
explores at the cost of few initializations, the pick is less a lucky draw of weights.

With ``mode: nsga2`` the search is NSGA-II over (proxy score, predicted latency within the target),
both maximized (``segnas.search.strategies.nsga2`` argues the objectives): a proxy that prefers small
networks no longer leaves most of the budget unused. The Pareto front of every scored candidate is
kept; ``nsga2.winner`` picks the winner from it (default ``budget``: the best proxy score among
members predicted at >= ``nsga2.min_budget_use`` = 80% of the target; ``knee``; ``score``). The rule's
first ``top_k`` members are its finalists: scored again over ``final_inits`` initializations as in
the evolution (the rule applied again to their finer scores), then, with ``nsga2.train_top``, that
many of them trained briefly by the ground-truth evaluator (``segnas.evaluate.short_train``) and the
best val mIoU wins. Both modes report the winner's ``budget_use``: predicted ms / target.
"""

from __future__ import annotations

import math
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Optional, Sequence

from pydantic import Field, ValidationInfo, model_validator

from segnas.config.base import Settings, refuse_idle
from segnas.config.search import ProxyEvaluatorSettings
from segnas.evaluate.base import Evaluator, fitness
from segnas.evaluate.proxy import ProxyEvaluator, proxy_scored_on
from segnas.errors import SegnasError
from segnas.parallel import TaskResources, WorkerPool
from segnas.progress import Echo
from segnas.proxies.common import Batch
from segnas.search.asktell import AskTellLoop, AskTellStrategy, Candidate, DelegatingStrategy, LoopOutcome
from segnas.search.base import SearchContext, strategy
from segnas.search.evaluation import check_proxy_settings, proxy_evaluator, train_evaluator
from segnas.search.strategies.nsga2 import NSGA2, NSGA2Settings, rank_front
from segnas.spaces.base import Architecture, SearchSpace, resolve_space
from segnas.utils import json_float


class SasWOTSettings(Settings):
    space: str = "multires"
    #: Settings of the space (its constructor's arguments), e.g. ``{layers: 10}``.
    space_options: dict = Field(default_factory=dict)
    scoring: ProxyEvaluatorSettings = Field(default_factory=ProxyEvaluatorSettings)
    candidates: int = Field(1000, ge=1)
    population: int = Field(50, ge=1)
    sample_size: int = Field(10, ge=1)
    #: Score the ``top_k`` best again over this many initializations and pick by that (None: a
    #: proxy file's number of initializations when the search scores fewer; 0: off).
    final_inits: Optional[int] = Field(None, ge=0)
    top_k: int = Field(10, ge=1)
    #: ``evolution``: regularized evolution maximizing the proxy; ``nsga2``: NSGA-II over proxy
    #: score and latency within the target, the winner picked from the front by ``nsga2.winner``.
    mode: Literal["evolution", "nsga2"] = "evolution"
    nsga2: NSGA2Settings = Field(default_factory=NSGA2Settings)

    @model_validator(mode="after")
    def _settings_of_the_mode(self, info: ValidationInfo) -> "SasWOTSettings":
        """Settings of the search mode not chosen would do nothing: refused, named."""
        refuse_idle(self, info, {"nsga2": (self.mode != "nsga2", f"NSGA-II's (mode: {self.mode})"),
                                 "sample_size": (self.mode != "evolution", "regularized evolution's tournament "
                                                                           f"(mode: {self.mode})")})
        return self


class ProxyScored(AskTellStrategy):
    """A search scored by its section's zero-cost proxy (``scoring``)."""

    def make_evaluator(self, ctx: SearchContext) -> ProxyEvaluator:
        return proxy_evaluator(ctx.section.scoring, self.space, ctx)


class RegularizedEvolution(ProxyScored):
    """Aging evolution; settings ``population`` and ``sample_size``."""

    def begin(self, space: SearchSpace, seed: int, settings: Any) -> None:
        super().begin(space, seed, settings)
        self.population: deque[tuple[Any, float | None, int]] = deque()  # (arch, score, index)
        self.evaluated = 0

    def ask(self) -> Architecture:
        if self.evaluated < self.settings.population or not self.population:
            return self.space.sample(self.rng, spread=True)
        members = list(self.population)
        picks = self.rng.choice(len(members), size=min(self.settings.sample_size, len(members)), replace=False)
        parent = max((members[int(i)] for i in picks), key=lambda m: (fitness(m[1]), -m[2]))
        return self.space.mutate(parent[0], self.rng)

    def tell(self, candidates: list[Candidate]) -> None:
        for c in candidates:
            self.evaluated += 1
            self.population.append((c.arch, c.score, c.index))
            if len(self.population) > self.settings.population:
                self.population.popleft()

    def rescored(self, scored: Sequence[Candidate]) -> None:
        score = {c.index: c.score for c in scored}
        self.population = deque((a, score.get(i, s), i) for a, s, i in self.population)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "evaluated": self.evaluated,
                "population": [[a.to_dict(), s, i] for a, s, i in self.population]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.evaluated = state["evaluated"]
        self.population = deque((self.space.arch_from_dict(a), s, i) for a, s, i in state["population"])


class ProxyNSGA2(NSGA2, ProxyScored):
    """NSGA-II over (proxy score, latency) (``segnas.search.strategies.nsga2``)."""


#: The search of each ``saswot.mode``.
SEARCHES: dict[str, type[ProxyScored]] = {"evolution": RegularizedEvolution, "nsga2": ProxyNSGA2}


@strategy("saswot")
class SasWOT(DelegatingStrategy):
    """The search of ``settings.mode`` (``SEARCHES``), its evaluator and how the winner is chosen."""

    settings_class: ClassVar[type[Settings]] = SasWOTSettings
    cli_options = {"space": ("saswot.space", str, "Search space."),
                   "proxy": ("saswot.scoring.proxy", str, "Proxy name or a discovered proxy .json."),
                   "candidates": ("saswot.candidates", int, "Candidates to score."),
                   "inits": ("saswot.scoring.inits", int, "Weight initializations each score is averaged over."),
                   "final-inits": ("saswot.final_inits", int, "Rescore the best over this many initializations."),
                   "mode": ("saswot.mode", str, "evolution (maximize the proxy) or nsga2 (proxy and latency).")}

    def prepare(self, ctx: SearchContext) -> None:
        check_proxy_settings(ctx.section.scoring, "saswot.scoring", ctx)
        super().prepare(ctx)

    def make_search(self, settings: SasWOTSettings) -> ProxyScored:
        return SEARCHES[settings.mode]()

    def begin(self, space: SearchSpace, seed: int, settings: SasWOTSettings) -> None:
        super().begin(space, seed, settings)
        self.target_ms: float | None = None
        self.trained: list[dict[str, Any]] = []

    def make_evaluator(self, ctx: SearchContext) -> Evaluator:
        self.evaluator = self.search.make_evaluator(ctx)
        self.target_ms = ctx.latency.target_ms
        seen = proxy_scored_on(self.evaluator.proxy).get("inits") or 0
        wanted = seen if self.settings.final_inits is None else self.settings.final_inits
        #: initializations the finalists are scored again over (0: not rescored)
        self.final_inits = wanted if wanted > self.evaluator.inits else 0
        self.final_seconds = 0.0
        return self.evaluator

    def choose(self, top: list[Candidate], ctx: SearchContext) -> list[Candidate]:
        start = time.perf_counter()
        s = ctx.settings
        pool = dict(echo=ctx.echo, workers=s.workers, executor=s.executor, ray_address=s.ray_address,
                    resources=TaskResources.from_settings(s))
        if isinstance(self.search, NSGA2):
            ns = self.settings.nsga2
            trainer = train_evaluator(self.space, ctx, ns.train.steps, ns.train.recipe) if ns.train_top else None
            top, self.trained = pick_from_front(self.search.front, self.target_ms, ns, self.settings.top_k,
                                                self.evaluator, self.final_inits, trainer, fallback=top, **pool)
        else:
            top = rescore_finalists(top, self.evaluator, self.final_inits, **pool)
        self.final_seconds = time.perf_counter() - start
        self.winner = top[0]
        return top

    def describe(self) -> dict[str, Any]:
        ev = self.evaluator
        proxy = ev.proxy if isinstance(ev.proxy, str) else getattr(ev.proxy, "__name__", repr(ev.proxy))
        out = {"scoring": {"proxy": proxy, "split": ev.split, "images": ev.images, "batch_size": ev.batch_size,
                           "size": list(ev.size) if ev.size else None, "inits": ev.inits, "data_seed": ev.data_seed,
                           "proxy_seed": ev.proxy_seed, "init_seed": ev.init_seed},
               "final_inits": self.final_inits, "final_seconds": round(self.final_seconds, 3),
               "mode": self.settings.mode, "budget_use": budget_use(self.winner, self.target_ms)}
        if isinstance(self.search, NSGA2):
            out.update(front_details(self.search, self.settings.nsga2, self.target_ms, self.trained))
        return out


def budget_use(winner: Candidate, target_ms: float | None) -> float | None:
    """How much of the latency target ``winner`` is predicted to use (None without a target)."""
    return float(f"{winner.latency_ms / target_ms:.4g}") if target_ms else None  # 4 significant digits


def front_details(search: NSGA2, ns: NSGA2Settings, target_ms: float | None,
                  trained: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``search_result.json`` records of an NSGA-II search: its front (fastest first, each
    member's budget use), the winner rule, generations, crossovers and the trained finalists."""
    return {"winner_rule": {"rule": ns.winner, "min_budget_use": ns.min_budget_use},
            "front": [{**c.to_dict(), "budget_use": budget_use(c, target_ms)} for c in search.front],
            "generations": search.generations, "crossovers": search.crossovers, "trained": trained}


def pick_from_front(front: list[Candidate], target_ms: float | None, ns: NSGA2Settings, top_k: int,
                    evaluator: Evaluator | None = None, final_inits: int = 0, trainer: Evaluator | None = None,
                    fallback: list[Candidate] | None = None, echo: Echo | None = None,
                    workers: int = 1, executor: str = "inline", ray_address: str | None = None,
                    resources: TaskResources | None = None) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """The finalists of ``front``, the winner first, and the records of those trained.

    Finalists: the first ``top_k`` members by the rule ``ns.winner`` (``rank_front``); with
    ``final_inits`` they are scored again by ``evaluator`` (``rescore_finalists``) and ranked by the
    rule on those scores; with a ``trainer`` (the short-training evaluator) and ``ns.train_top``, that
    many first finalists are trained and ordered by val mIoU (ties keep the rule's order).
    ``fallback`` (the loop's best by score) when no candidate had a finite score."""
    if not front:
        return list(fallback or []), []
    finalists = rank_front(front, ns.winner, target_ms, ns.min_budget_use)[:top_k]
    if final_inits and evaluator is not None:
        finalists = rescore_finalists(finalists, evaluator, final_inits, echo, workers, executor, ray_address, resources)
        finalists = rank_front(finalists, ns.winner, target_ms, ns.min_budget_use)
    if trainer is None or not ns.train_top:
        return finalists, []
    chosen = finalists[:ns.train_top]
    with WorkerPool(executor, workers, 1, ray_address, resources=resources) as pool:
        records = pool.map(trainer, [c.arch.to_dict() for c in chosen])
    miou = {c.index: fitness(r["score"]) for c, r in zip(chosen, records)}
    if not any(math.isfinite(v) for v in miou.values()):
        raise SegnasError(f"nsga2.train: the short training of every one of the {len(chosen)} finalists failed "
                          f"({records[0].get('diverged', 'no score')}); change nsga2.train.recipe")
    ranked = sorted(chosen, key=lambda c: -miou[c.index])
    if echo:
        failed = [i + 1 for i, c in enumerate(chosen) if not math.isfinite(miou[c.index])]
        echo(f"{len(chosen)} front member{'s' if len(chosen) != 1 else ''} trained briefly; the winner was "
             f"#{chosen.index(ranked[0]) + 1} by the {ns.winner} rule"
             + (f"; #{', #'.join(map(str, failed))} did not train (diverged)" if failed else ""))
    trained = [{"index": c.index, "arch": c.arch.to_dict(), "score": json_float(c.score),
                "latency_ms": c.latency_ms, "val_miou": json_float(r["score"]), "steps": r.get("steps"),
                **({"diverged": r["diverged"]} if "diverged" in r else {})}
               for c, r in zip(chosen, records)]
    return ranked + finalists[ns.train_top:], trained


def rescore_finalists(top: list[Candidate], evaluator: ProxyEvaluator, final_inits: int,
                      echo: Echo | None = None,
                      workers: int = 1, executor: str = "inline", ray_address: str | None = None,
                      resources: TaskResources | None = None) -> list[Candidate]:
    """``top`` ordered by their score over ``final_inits`` initializations (the evaluator's own
    ``inits`` reused, the rest scored now); unchanged when ``final_inits`` is 0. With a rank
    aggregate the finalists' component scores are averaged over all initializations and ranked
    among the finalists."""
    if not final_inits:
        return top
    inits = evaluator.inits
    extra = evaluator.with_inits(evaluator.init_seed + inits, evaluator.proxy_seed + inits, final_inits - inits)
    search_rank = {c.index: rank for rank, c in enumerate(top, 1)}
    with WorkerPool(executor, workers, 1, ray_address, resources=resources) as pool:
        records = pool.map(extra, [c.arch.to_dict() for c in top])
    if evaluator.aggregate is not None:  # components averaged over all inits, ranked among the finalists
        merged = [{"components": {k: _weighted(c.record["components"][k], r["components"][k], inits, final_inits)
                                  for k in r["components"]}} for c, r in zip(top, records)]
        for c, value in zip(top, evaluator.population_scores(merged)):
            c.final_score = value
    else:
        for c, record in zip(top, records):
            c.final_score = _weighted(c.score, record["score"], inits, final_inits)
    top = sorted(top, key=lambda c: (-fitness(c.final_score), c.index))
    if echo:
        echo(f"{len(top)} finalists scored again over {final_inits} initializations; the winner ranked "
             f"#{search_rank[top[0].index]} by the search's score")
    return top


def fitness_or_nan(score: float | None) -> float:
    return float("nan") if score is None else float(score)


def _weighted(first: float | None, more: float | None, inits: int, final_inits: int) -> float:
    """The mean over ``final_inits`` initializations of a value whose first ``inits`` have mean
    ``first`` and the rest mean ``more`` (None: failed, NaN)."""
    return (inits * fitness_or_nan(first) + (final_inits - inits) * fitness_or_nan(more)) / final_inits


class TrainingFreeResult:
    """Outcome of ``training_free_search``: the winner, the finalists and how the loop went; in
    ``nsga2`` mode also the Pareto front (``front``), the winner rule and the trained finalists."""

    def __init__(self, outcome: LoopOutcome, top: list[Candidate], target_ms: float, final_inits: int,
                 mode: str = "evolution", nsga2: dict[str, Any] | None = None) -> None:
        self.top, self.best = top, top[0]
        self.target_ms, self.final_inits, self.mode = target_ms, final_inits, mode
        self.candidates_scored, self.seconds = outcome.evaluated, outcome.seconds
        self.rejected, self.duplicates = outcome.rejected, outcome.duplicates
        self.stopped, self.history = outcome.stopped, outcome.history
        #: ``front_details`` of an NSGA-II search (empty for the evolution)
        self.nsga2 = nsga2 or {}

    best_arch = property(lambda self: self.best.arch)
    best_score = property(lambda self: self.best.score)
    best_latency_ms = property(lambda self: self.best.latency_ms)
    #: The winner's predicted latency / the target.
    budget_use = property(lambda self: budget_use(self.best, self.target_ms))

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best.to_dict(), "target_ms": self.target_ms, "candidates_scored": self.candidates_scored,
                "seconds": round(self.seconds, 3), "rejected_infeasible": self.rejected, "duplicates": self.duplicates,
                "stopped": self.stopped, "final_inits": self.final_inits, "mode": self.mode,
                "budget_use": self.budget_use, **self.nsga2, "top": [t.to_dict() for t in self.top],
                "history": self.history}


def training_free_search(space: str | SearchSpace, proxy: Any, latency_fn: Callable[[Architecture], float],
                         target_ms: float, *,
                         candidates: int = 1000, population: int = 50, sample_size: int = 10, seed: int = 0,
                         time_limit_s: float | None = None, batches: Sequence[Batch] | None = None,
                         num_classes: int | None = None,
                         proxy_seed: int = 0, inits: int = 1, final_inits: int = 0, top_k: int = 10,
                         executor: str = "inline", workers: int = 1, ray_address: str | None = None,
                         resources: TaskResources | None = None, max_draws: int | None = None,
                         run_dir: str | Path | None = None, progress: bool = False,
                         echo: Echo | None = None, mode: str = "evolution",
                         nsga2: NSGA2Settings | dict[str, Any] | None = None,
                         trainer: Evaluator | None = None) -> TrainingFreeResult:
    """SasWOT's search as a library call, without a search job: maximize ``proxy`` (a proxy name
    or file scored on ``batches``, or any ``Evaluator``) subject to ``latency_fn(arch) <= target_ms``.
    ``mode="nsga2"`` runs NSGA-II over (score, latency) with ``nsga2`` (``NSGA2Settings``) and picks
    from its front; ``trainer`` scores the ``nsga2.train_top`` finalists (a ``TrainEvaluator``).
    ``segnas search saswot`` runs the same loop inside a run directory."""
    if final_inits < 0:
        raise SegnasError(f"final_inits: expected 0 or a number of initializations, got {final_inits}")
    space = resolve_space(space)
    evaluator = proxy if isinstance(proxy, Evaluator) else ProxyEvaluator(
        space, proxy, batches=batches, num_classes=num_classes, proxy_seed=proxy_seed, init_seed=seed, inits=inits)
    own = {"sample_size": sample_size} if mode == "evolution" else {"nsga2": nsga2 or {}}  # (the other mode's: none)
    settings = SasWOTSettings(candidates=candidates, population=population, mode=mode, top_k=top_k, **own)
    if settings.nsga2.train_top and trainer is None:
        raise SegnasError("nsga2.train_top: give the short-training evaluator (trainer=) that scores the finalists")
    search = SasWOT()
    search.begin(space, seed, settings)
    outcome = AskTellLoop(search, evaluator, latency_fn, target_ms, candidates=candidates, time_limit_s=time_limit_s,
                          workers=workers, executor=executor, ray_address=ray_address, resources=resources,
                          run_dir=run_dir, max_draws=max_draws, top_k=top_k,
                          progress=progress, echo=echo).run()
    final = final_inits if isinstance(evaluator, ProxyEvaluator) and final_inits > evaluator.inits else 0
    pool = dict(echo=echo, workers=workers, executor=executor, ray_address=ray_address, resources=resources)
    if isinstance(search.search, NSGA2):
        top, trained = pick_from_front(search.search.front, target_ms, settings.nsga2, top_k, evaluator, final,
                                       trainer, fallback=outcome.top, **pool)
        details = front_details(search.search, settings.nsga2, target_ms, trained)
        return TrainingFreeResult(outcome, top, float(target_ms), final, mode, details)
    top = rescore_finalists(outcome.top, evaluator, final, **pool) if final else outcome.top
    return TrainingFreeResult(outcome, top, float(target_ms), final)
