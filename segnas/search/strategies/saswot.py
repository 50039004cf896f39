"""SasWOT's search stage: regularized evolution over a space that maximizes a zero-cost proxy under a
latency target, training nothing (PAPERS.md §5; the proxy itself is discovered by
``segnas proxy discover``).

Regularized evolution (Real et al., 2019): the first ``population`` proposals are random
(``sample(spread=True)``); after that each proposal draws ``sample_size`` members of the population
at random and mutates the best of them; every evaluated child joins the population and the oldest
member leaves (aging). With ``workers`` > 1 that many children are proposed from the same
population and scored together (the result depends on seed and workers, not on the executor).
With ``final_inits`` above the proxy's initializations, the ``top_k`` best are scored again over
``final_inits`` initializations (the search's own among them) and the best by that wins: the search
explores at the cost of few initializations, the pick is less a lucky draw of weights.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, ClassVar, Optional

from pydantic import Field

from segnas.config.search import ProxyEvaluatorSettings
from segnas.config.train import Settings
from segnas.evaluate.base import Evaluator, fitness
from segnas.evaluate.proxy import ProxyEvaluator, proxy_scored_on
from segnas.parallel import TaskResources, WorkerPool
from segnas.errors import SegnasError
from segnas.search.asktell import AskTellLoop, AskTellStrategy, Candidate
from segnas.search.base import SearchContext, strategy
from segnas.search.evaluation import proxy_evaluator
from segnas.spaces.base import Architecture, resolve_space


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


class RegularizedEvolution(AskTellStrategy):
    """Aging evolution; settings ``population`` and ``sample_size``."""

    def begin(self, space, seed, settings) -> None:
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

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "evaluated": self.evaluated,
                "population": [[a.to_dict(), s, i] for a, s, i in self.population]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.evaluated = state["evaluated"]
        self.population = deque((self.space.arch_from_dict(a), s, i) for a, s, i in state["population"])


@strategy("saswot")
class SasWOT(RegularizedEvolution):
    settings_class: ClassVar[type[Settings]] = SasWOTSettings
    cli_options = {"space": ("saswot.space", str, "Search space."),
                   "proxy": ("saswot.scoring.proxy", str, "Proxy name or a discovered proxy .json."),
                   "candidates": ("saswot.candidates", int, "Candidates to score."),
                   "inits": ("saswot.scoring.inits", int, "Weight initializations each score is averaged over."),
                   "final-inits": ("saswot.final_inits", int, "Rescore the best over this many initializations.")}

    def make_evaluator(self, ctx: SearchContext) -> Evaluator:
        self.evaluator = proxy_evaluator(ctx.section.scoring, self.space, ctx)
        seen = proxy_scored_on(self.evaluator.proxy).get("inits") or 0
        wanted = seen if self.settings.final_inits is None else self.settings.final_inits
        #: initializations the finalists are scored again over (0: not rescored)
        self.final_inits = wanted if wanted > self.evaluator.inits else 0
        self.final_seconds = 0.0
        return self.evaluator

    def choose(self, top: list[Candidate], ctx: SearchContext) -> list[Candidate]:
        start = time.perf_counter()
        top = rescore_finalists(top, self.evaluator, self.final_inits, ctx.echo, ctx.settings.workers,
                                ctx.settings.executor, ctx.settings.ray_address,
                                TaskResources.from_settings(ctx.settings))
        self.final_seconds = time.perf_counter() - start
        return top

    def describe(self) -> dict[str, Any]:
        ev = self.evaluator
        proxy = ev.proxy if isinstance(ev.proxy, str) else getattr(ev.proxy, "__name__", repr(ev.proxy))
        return {"scoring": {"proxy": proxy, "split": ev.split, "images": ev.images, "batch_size": ev.batch_size,
                            "size": list(ev.size) if ev.size else None, "inits": ev.inits, "data_seed": ev.data_seed,
                            "proxy_seed": ev.proxy_seed, "init_seed": ev.init_seed},
                "final_inits": self.final_inits, "final_seconds": round(self.final_seconds, 3)}


def rescore_finalists(top: list[Candidate], evaluator: ProxyEvaluator, final_inits: int, echo=None,
                      workers: int = 1, executor: str = "inline", ray_address: str | None = None,
                      resources: TaskResources | None = None) -> list[Candidate]:
    """``top`` ordered by their score over ``final_inits`` initializations (the evaluator's own
    ``inits`` reused, the rest scored now); unchanged when ``final_inits`` is 0."""
    if not final_inits:
        return top
    inits = evaluator.inits
    extra = evaluator.with_inits(evaluator.init_seed + inits, evaluator.proxy_seed + inits, final_inits - inits)
    search_rank = {c.index: rank for rank, c in enumerate(top, 1)}
    with WorkerPool(executor if workers > 1 else "inline", workers, 1, ray_address, resources=resources) as pool:
        records = pool.map(extra, [c.arch.to_dict() for c in top])
    for c, record in zip(top, records):
        more = record["score"] if record["score"] is not None else float("nan")
        c.final_score = (inits * fitness_or_nan(c.score) + (final_inits - inits) * more) / final_inits
    top = sorted(top, key=lambda c: (-fitness(c.final_score), c.index))
    if echo:
        echo(f"{len(top)} finalists scored again over {final_inits} initializations; the winner ranked "
             f"#{search_rank[top[0].index]} by the search's score")
    return top


def fitness_or_nan(score: float | None) -> float:
    return float("nan") if score is None else float(score)


class TrainingFreeResult:
    """Outcome of ``training_free_search``: the winner, the finalists and how the loop went."""

    def __init__(self, outcome, top: list[Candidate], target_ms: float, final_inits: int) -> None:
        self.top, self.best = top, top[0]
        self.target_ms, self.final_inits = target_ms, final_inits
        self.candidates_scored, self.seconds = outcome.evaluated, outcome.seconds
        self.rejected, self.duplicates = outcome.rejected, outcome.duplicates
        self.stopped, self.history = outcome.stopped, outcome.history

    best_arch = property(lambda self: self.best.arch)
    best_score = property(lambda self: self.best.score)
    best_latency_ms = property(lambda self: self.best.latency_ms)

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best.to_dict(), "target_ms": self.target_ms, "candidates_scored": self.candidates_scored,
                "seconds": round(self.seconds, 3), "rejected_infeasible": self.rejected, "duplicates": self.duplicates,
                "stopped": self.stopped, "final_inits": self.final_inits, "top": [t.to_dict() for t in self.top],
                "history": self.history}


def training_free_search(space: Any, proxy: Any, latency_fn, target_ms: float, *, candidates: int = 1000,
                         population: int = 50, sample_size: int = 10, seed: int = 0,
                         time_limit_s: float | None = None, batches=None, num_classes: int | None = None,
                         proxy_seed: int = 0, inits: int = 1, final_inits: int = 0, top_k: int = 10,
                         executor: str = "inline", workers: int = 1, ray_address: str | None = None,
                         resources: TaskResources | None = None, max_draws: int | None = None,
                         run_dir=None, progress: bool = False, echo=None) -> TrainingFreeResult:
    """SasWOT's evolution as a library call, without a search job: maximize ``proxy`` (a proxy name
    or file scored on ``batches``, or any ``Evaluator``) subject to ``latency_fn(arch) <= target_ms``.
    ``segnas search saswot`` runs the same loop inside a run directory."""
    if final_inits < 0:
        raise SegnasError(f"final_inits: expected 0 or a number of initializations, got {final_inits}")
    space = resolve_space(space)
    evaluator = proxy if isinstance(proxy, Evaluator) else ProxyEvaluator(
        space, proxy, batches=batches, num_classes=num_classes, proxy_seed=proxy_seed, init_seed=seed, inits=inits)
    search = SasWOT()
    search.begin(space, seed, SasWOTSettings(candidates=candidates, population=population, sample_size=sample_size))
    outcome = AskTellLoop(search, evaluator, latency_fn, target_ms, candidates=candidates, time_limit_s=time_limit_s,
                          workers=workers, executor=executor, ray_address=ray_address, resources=resources,
                          run_dir=run_dir, max_draws=max_draws, top_k=top_k,
                          progress=progress, echo=echo).run()
    final = final_inits if isinstance(evaluator, ProxyEvaluator) and final_inits > evaluator.inits else 0
    top = (rescore_finalists(outcome.top, evaluator, final, echo, workers, executor, ray_address, resources)
           if final else outcome.top)
    return TrainingFreeResult(outcome, top, float(target_ms), final)
