"""Random search: the baseline every method must beat, and the smallest complete strategy.

Draws architectures uniformly from the space's sampler; the loop (``segnas.search.asktell``)
rejects those slower than the target and evaluates the rest with the chosen evaluator (a
zero-cost proxy, or a short training); the best evaluated one wins.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from segnas.config.base import Settings
from segnas.config.search import EvaluatorSettings
from segnas.evaluate.base import Evaluator
from segnas.search.asktell import AskTellStrategy
from segnas.search.base import SearchContext, strategy
from segnas.search.evaluation import build_evaluator, check_evaluator
from segnas.spaces.base import Architecture


class RandomSettings(Settings):
    space: str = "multires"
    #: Settings of the space (its constructor's arguments), e.g. ``{layers: 10}``.
    space_options: dict = Field(default_factory=dict)
    candidates: int = Field(100, ge=1)
    evaluator: EvaluatorSettings = Field(default_factory=EvaluatorSettings)
    #: Sample with the space's ``spread`` option (samples span its latency range).
    spread: bool = True
    top_k: int = Field(10, ge=1)


@strategy("random")
class RandomSearch(AskTellStrategy):
    settings_class: ClassVar[type[Settings]] = RandomSettings
    cli_options = {"space": ("random.space", str, "Search space."),
                   "candidates": ("random.candidates", int, "Candidates to evaluate."),
                   "proxy": ("random.evaluator.proxy.proxy", str, "Proxy that scores candidates.")}

    def prepare(self, ctx: SearchContext) -> None:
        check_evaluator(ctx.section.evaluator, "random.evaluator", self.search_space(ctx), ctx)
        super().prepare(ctx)

    def make_evaluator(self, ctx: SearchContext) -> Evaluator:
        return build_evaluator(ctx.section.evaluator, self.space, ctx, ctx.section.space_options)

    def ask(self) -> Architecture:
        return self.space.sample(self.rng, spread=self.settings.spread)
