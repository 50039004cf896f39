"""One-shot strategies: a supernet trained by the one engine, its architecture parameters steered
by the strategy's hooks, the result derived from it.

A subclass gives the supernet (``build_supernet``), its extra architecture losses
(``arch_losses``), its per-epoch work (``on_epoch_end``: λ adaptation, shrinking, per-epoch
architecture files) and the derivation (``derive``); ``run`` does the rest: data, the latency
table, the engine on the settings' device, resume from the run directory or a start from another
run's pre-trained supernet, the fit, the derivation.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, Optional

import torch
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset

from segnas.config.base import PATH, Settings
from segnas.config.search import CANDIDATE_EXECUTION, SearchSettings
from segnas.engine.device import resolve_device
from segnas.errors import SegnasError
from segnas.search.base import SearchContext, SearchResult, Strategy
from segnas.search.oneshot.data import pretrained_checkpoint, search_train_set, search_val_subset
from segnas.search.oneshot.engine import OneShotEngine, SearchSchedule
from segnas.search.rank0_latency import timed_on_rank0
from segnas.search.target import refuse_unreachable_target
from segnas.spaces.base import SearchSpace, TableCostedSupernet


class OneShotSettings(Settings):
    """What every one-shot strategy's section holds: the two phases and their learning rates."""

    pretrain_epochs: int = Field(20, ge=0)
    #: Start the search from another search run's pre-trained supernet (its run directory or its
    #: ``checkpoints/pretrained.pt``) instead of pre-training; pretrain_epochs is then taken from it.
    pretrained: Optional[str] = Field(None, json_schema_extra=PATH)
    search_epochs: int = Field(30, ge=1)
    weight_lr: float = Field(0.02, gt=0)
    arch_lr: float = Field(3e-4, gt=0)


class OneShotStrategy(Strategy):
    """A strategy over a supernet trained by ``OneShotEngine`` (it is the engine's ``SearchHooks``)."""

    family = "one-shot"
    settings_class: ClassVar[type[OneShotSettings]] = OneShotSettings
    section_fields: ClassVar[tuple[str, ...]] = tuple(OneShotSettings.model_fields)

    @classmethod
    def unused_settings(cls, settings: SearchSettings) -> dict[str, str]:
        why = ("a one-shot search trains one supernet and evaluates no candidates in parallel (it runs "
               "data-parallel under torchrun)")
        return dict.fromkeys(CANDIDATE_EXECUTION, why)

    def __init__(self) -> None:
        self.ctx: SearchContext | None = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.supernet: nn.Module | None = None
        self.engine: OneShotEngine | None = None
        #: the space of the derived networks (set by ``build_supernet``)
        self.space: SearchSpace | None = None

    # ------------------------------------------------------------------ hooks
    @abstractmethod
    def build_supernet(self, ctx: SearchContext) -> nn.Module:
        """The supernet, for ``ctx.num_classes`` classes and the deployment size ``ctx.latency.size``."""

    @abstractmethod
    def arch_losses(self, net: nn.Module, arch_index: int) -> dict[str, torch.Tensor]:
        """Architecture losses of ``arch_index`` added to its segmentation loss in each search step."""

    @abstractmethod
    def on_epoch_end(self, engine: OneShotEngine, phase: str, epoch: int) -> dict[str, Any]:
        """Work after each epoch; the returned figures are logged (``engine.stop(reason)`` ends the search)."""

    @abstractmethod
    def derive(self, ctx: SearchContext) -> SearchResult:
        """The networks found once the search has ended."""

    def latency_space(self, ctx: SearchContext) -> SearchSpace | None:
        return self.space

    def val_images(self, ctx: SearchContext) -> int:
        """Validation images the strategy scores the supernet on (``self.val_set``; 0: none)."""
        return 0

    def measure_latency(self, ctx: SearchContext) -> None:
        """Time every table entry the supernet's latency terms look up, before the search starts
        (a line says how many, with a progress bar when progress is on; the table caches them)."""
        supernet = self.supernet
        assert isinstance(supernet, TableCostedSupernet)  # (checked by ``prepare``)
        keys = [k for index in range(supernet.num_archs) for k in supernet.latency_keys(index)]
        missing = len(ctx.latency.table.missing(keys))
        if missing:
            ctx.echo(f"latency table: timing {missing} operators on {ctx.latency.describe()} (saved for later "
                     "searches on this machine unless other processes keep it busy)")
        ctx.latency.ensure(keys, progress=ctx.settings.progress)

    def schedule(self, ctx: SearchContext) -> SearchSchedule:
        """The engine's schedule from the common settings and the section (override to add to it)."""
        s, sec = ctx.settings, ctx.section
        return SearchSchedule(pretrain_epochs=sec.pretrain_epochs, search_epochs=sec.search_epochs,
                              batch_size=s.data.batch_size, weight_lr=sec.weight_lr, arch_lr=sec.arch_lr,
                              device=s.device, bf16=s.bf16, seed=s.seed, workers=s.data.workers,
                              progress=s.progress, minutes=s.minutes, sync_bn=s.sync_bn)

    # ------------------------------------------------------------------ state: the strategy's own (λ, …)
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    # ------------------------------------------------------------------ the search
    def prepare(self, ctx: SearchContext) -> None:
        self.ctx = ctx
        resolve_device(ctx.settings.device)  # a device this machine lacks is refused before the run exists
        pretrained = ctx.section.pretrained and pretrained_checkpoint(ctx.section.pretrained)
        if pretrained and not pretrained.is_file():
            raise SegnasError(f"{ctx.settings.method}.pretrained: {pretrained}: not found (give a search run "
                              "directory holding checkpoints/pretrained.pt, or that file)")
        self.train_set = search_train_set(ctx.settings)
        if len(self.train_set) < 2:
            raise SegnasError(f"data.train_split: a one-shot search needs at least 2 training images "
                              f"(weights and architecture halves), got {len(self.train_set)}")
        self.supernet = self.build_supernet(ctx)
        if not isinstance(self.supernet, TableCostedSupernet):
            raise TypeError(f"{type(self.supernet).__name__}: a one-shot search's supernet lists its latency table "
                            "entries (spaces.base.TableCostedSupernet)")
        # a target no network of the space can meet is refused before the supernet trains
        if self.space is not None:
            refuse_unreachable_target(self.space, ctx)
        self.val_set = search_val_subset(ctx.settings, self.val_images(ctx))

    def run(self, ctx: SearchContext) -> SearchResult:
        if self.supernet is None:
            self.prepare(ctx)
        self.ctx = ctx
        ctx.echo(f"latency table: {ctx.latency.describe()}")
        timed_on_rank0(ctx.latency, lambda: self.measure_latency(ctx))
        self.engine = OneShotEngine(self.supernet, self.train_set, self.schedule(ctx), ctx.run, self, ctx.echo)
        pretrained = ctx.section.pretrained
        if not self.engine.resume_if_possible() and pretrained:
            n = self.engine.start_from_pretrained(pretrained_checkpoint(pretrained))
            ctx.echo(f"search starts from the supernet pre-trained for {n} epoch{'s' if n != 1 else ''} in "
                     f"{pretrained}")
        self.engine.fit()
        return self.derive(ctx)
