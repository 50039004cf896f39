"""GAS: cell-independent search guided by a graph convolutional network, with a latency constraint.

Pipeline (docs/methods/gas.md; no public code exists: what the paper leaves open is decided here and
documented in docs/methods/gas.md), on the one-shot engine over the ``cells`` space:

- every cell has its own α (``segnas.spaces.cells.supernet``); with the GCN-guided module on
  (``ggm``), the supernet runs every cell from α'_k = α_k + γ·GCN(α_{k−1}, α_k)
  (``segnas.search.controllers.gcn``), whose parameters the architecture optimizer trains with α;
- supernet pre-training (weights only) → first-order bilevel search (weights SGD on one half of the
  training set; α and the GGM Adam on the other) with the architecture loss
  L_seg + λ·(LAT/target − 1)², LAT the latency of the network derivation would return (the latency
  model's operator table for the user's backend, threads and resolution, scaled by the model's
  correction of the last derived network) with the gradient of the supernet's differentiable
  expected latency (straight-through); or, with ``latency_loss: expected``, L_seg + λ·E[latency]/target;
- after every search epoch the network is derived (per cell, per node the ``node_inputs``
  strongest incoming edges by their largest non-zero operator weight, each with that operator;
  stem and decoder fixed), saved as ``archs/arch_epochNNN.json`` with its predicted latency, and
  λ adapted: doubled while the derived network is outside the target band (``expected``: FasterSeg's
  rule, halved when faster, doubled when slower). The expected latency of a supernet whose operator
  weights are still nearly even says little about the network derivation picks (the CamVid
  comparison's search at 15 ms: expected 14.5-14.7 ms while the derived networks were 7.7-11.9 ms),
  and a loss that only pushes latency down cannot lift a derived network that is too fast;
- the result: the last derived network whose predicted latency was within the band
  (``pick: last_on_target``, the default), else the final one.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator

from segnas.config.base import Settings
from segnas.errors import SegnasError
from segnas.search.base import FoundNetwork, SearchContext, SearchResult, strategy
from segnas.search.controllers.gcn import GCNGuide
from segnas.search.oneshot import OneShotEngine, OneShotSettings, OneShotStrategy, SearchSchedule
from segnas.search.strategies.fasterseg import adapt_lambda
from segnas.spaces.base import save_arch
from segnas.spaces.cells import CellsArch, CellsSpace
from segnas.spaces.cells.supernet import CellsSupernet


class GASSettings(OneShotSettings):
    """GAS's section (``gas:``): the space, the GGM, the latency loss and its adaptation, the pick."""

    #: Options of the ``cells`` space (``segnas.spaces.cells.CellsSpace``: layout, channels, nodes,
    #: node_inputs, ops, stem_channels, decoder_width, decoder_strides); {} gives its defaults.
    space: dict[str, Any] = Field(default_factory=dict)
    #: The GCN-guided module on or off (off: the plain cell-independent search, nothing of it runs).
    ggm: bool = True
    #: Embedding size D of the GGM, and γ of α'_k = α_k + γ·Δ_k.
    ggm_dim: int = Field(32, ge=1)
    ggm_gamma: float = Field(0.5, ge=0)
    #: The latency loss. ``target``: λ·(LAT/target − 1)², LAT the derived network's latency (table,
    #: times the latency model's correction of the last derived network) with the expected latency's
    #: gradient: it pulls the derived network onto the target from either side. ``expected``:
    #: λ·E(latency)/target, which can only push latency down (FasterSeg's form).
    latency_loss: Literal["target", "expected"] = "target"
    #: Weight λ of the latency loss (0: no latency term).
    latency_weight: float = Field(0.5, ge=0)
    #: Adapt λ after every search epoch on the derived network's predicted latency against
    #: target·(1 ± tolerance): ``target`` loss: doubled while outside the band, kept inside it;
    #: ``expected`` loss: FasterSeg's rule (halved when faster, doubled when slower).
    adapt: bool = True
    tolerance: float = Field(0.1, ge=0, lt=1)
    #: Which network the search returns: the final derived one ("last"), or the last one derived
    #: within the target band ("last_on_target"; the final one if none was).
    pick: Literal["last", "last_on_target"] = "last_on_target"
    pretrain_epochs: int = Field(10, ge=0)
    search_epochs: int = Field(20, ge=1)
    #: Adam on α and the GGM: 10× DARTS' 3e-4, as a CPU search epoch has tens of architecture
    #: steps, not hundreds; L2 decay 1e-3 (of α only, not of the GGM's weights) and betas
    #: (0.5, 0.999) as DARTS.
    arch_lr: float = Field(3e-3, gt=0)
    arch_weight_decay: float = Field(1e-3, ge=0)

    @field_validator("space")
    @classmethod
    def _space(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            CellsSpace(**v)
        except TypeError as exc:
            raise ValueError(f"unknown cells space option ({exc})") from None
        except SegnasError as exc:
            raise ValueError(str(exc)) from None
        return v


@strategy("gas")
class GASSearch(OneShotStrategy):
    """Searches one network of the ``cells`` space, every cell on its own, guided by the GGM."""

    settings_class: ClassVar[type[Settings]] = GASSettings
    #: (the GGM is switched off with ``--set gas.ggm=false``)
    cli_options = {"latency-weight": ("gas.latency_weight", float,
                                      "Starting weight λ of the latency loss (gas.latency_loss)."),
                   "pretrained": ("gas.pretrained", str, "Skip pre-training: start from this search run's "
                                  "pre-trained supernet (run dir or pretrained.pt).")}

    def __init__(self) -> None:
        super().__init__()
        self.guide: GCNGuide | None = None
        self.lam = 0.0
        #: the latency model's prediction over the table's for the last derived network (``target``
        #: loss; None: not yet derived in this process)
        self.correction: float | None = None
        #: the last network derived within the target band: {"epoch", "arch", "predicted_ms"}
        self.on_target: dict[str, Any] | None = None

    # ------------------------------------------------------------------ hooks
    def build_supernet(self, ctx: SearchContext) -> CellsSupernet:
        sec = ctx.section
        self.space = CellsSpace(**sec.space)
        net = self.space.supernet(ctx.num_classes, ctx.latency.size)
        if sec.ggm:
            self.guide = GCNGuide(len(self.space.ops), sec.ggm_dim, sec.ggm_gamma, seed=ctx.settings.seed)
            net.attach_guide(self.guide)
        self.lam = sec.latency_weight
        return net

    def schedule(self, ctx: SearchContext) -> SearchSchedule:
        schedule = super().schedule(ctx)
        schedule.arch_weight_decay = ctx.section.arch_weight_decay
        return schedule

    def arch_losses(self, net: CellsSupernet, arch_index: int) -> dict[str, torch.Tensor]:
        if not self.lam:
            return {}
        latency = self.ctx.latency
        if self.ctx.section.latency_loss == "expected":
            return {"latency": self.lam * net.expected_latency(arch_index, latency) / latency.target_ms}
        if self.correction is None:
            self.correction = self.correction_of(net.derive())
        ratio = self.correction * net.derived_latency(arch_index, latency) / latency.target_ms
        return {"latency": self.lam * (ratio - 1) ** 2}

    def on_epoch_end(self, engine: OneShotEngine, phase: str, epoch: int) -> dict[str, Any]:
        """Derive (``archs/arch_epochNNN.json``), note whether it is on target, adapt λ."""
        if phase != "search":
            return {}
        net, sec, target = self.supernet, self.ctx.section, self.ctx.latency.target_ms
        arch = net.derive()
        ms = self.predict(arch)
        save_arch(self.ctx.run.path / "archs" / f"arch_epoch{epoch:03d}.json", self.space, arch,
                  predicted_latency_ms=ms)
        with torch.no_grad():
            record = {"lambda": self.lam, "expected_latency_ms": float(net.expected_latency(0, self.ctx.latency)),
                      "derived_latency_ms": ms, "distinct_cells": arch.distinct_cells}
            if self.guide is not None:  # how far the GGM moves α (mean |α' − α| over cells 1..)
                shift = [(g - a).abs().mean() for g, a in zip(net.effective_alphas()[1:], list(net.alphas)[1:])]
                record["ggm_shift"] = float(torch.stack(shift).mean()) if shift else 0.0
        record["on_target"] = abs(ms / target - 1) <= sec.tolerance
        if record["on_target"]:
            self.on_target = {"epoch": epoch, "arch": arch.to_dict(), "predicted_ms": ms}
        self.correction = self.correction_of(arch, ms)
        if sec.adapt:
            self.lam = (adapt_lambda(self.lam, ms, target, sec.tolerance) if sec.latency_loss == "expected"
                        else self.lam if record["on_target"] else 2 * self.lam)
        return record

    def derive(self, ctx: SearchContext) -> SearchResult:
        arch, epoch = self.supernet.derive(), None
        ms = self.predict(arch)
        on = abs(ms / ctx.latency.target_ms - 1) <= ctx.section.tolerance
        if ctx.section.pick == "last_on_target" and not on and self.on_target is not None:
            arch, epoch = CellsArch.from_dict(self.on_target["arch"]), self.on_target["epoch"]
            ms = self.on_target["predicted_ms"]
        picked = "final" if epoch is None else f"search epoch {epoch}"
        ctx.echo(f"derived ({picked}): predicted {ms:.2f} ms at {ctx.latency.size[0]}x{ctx.latency.size[1]} "
                 f"({ctx.latency.backend}); {arch.distinct_cells} distinct cells of {len(arch.cells)}")
        info = {"ggm": ctx.section.ggm, "picked": picked, "distinct_cells": arch.distinct_cells,
                "cell_changes": arch.changes}
        return SearchResult([FoundNetwork("arch", self.space, arch, ms, info=info)],
                            {**info, "lambda": self.lam, "stopped": self.engine.stopped})

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"lambda": self.lam, "on_target": self.on_target, "correction": self.correction,
                "guide": self.guide.state_dict() if self.guide is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lam, self.on_target = state["lambda"], state["on_target"]
        self.correction = state.get("correction")  # None in checkpoints from before the target loss
        if self.guide is not None:
            self.guide.load_state_dict(state["guide"])

    def predict(self, arch: CellsArch) -> float:
        return self.ctx.latency.predict(self.space, arch, self.ctx.num_classes)

    def correction_of(self, arch: CellsArch, predicted_ms: float | None = None) -> float:
        """The latency model's prediction of ``arch`` over its table latency (1 without a correction)."""
        table_ms = self.ctx.latency.predict_table(self.space, arch, self.ctx.num_classes)
        ms = self.predict(arch) if predicted_ms is None else predicted_ms
        return ms / table_ms if table_ms > 0 else 1.0
