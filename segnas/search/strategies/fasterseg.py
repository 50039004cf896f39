"""FasterSeg: teacher–student co-search over the ``multires`` space with decoupled fine-grained
latency regularization.

Pipeline (docs/methods/fasterseg.md), on the one-shot engine: supernet pre-training with the sandwich rule →
first-order bilevel search (weights SGD on one half of the training set, architecture Adam on the
other) where the student's architecture loss is L_seg + λ·(w1·LAT(α|β,γ) + w2·LAT(β|α,γ) +
w3·LAT(γ|α,β)) and the teacher's is L_seg alone → after every search epoch both networks are
derived (``<run>/archs/``), the student's latency predicted, and λ halved (faster than the target
band) or doubled (slower) → the final teacher and student. The search job then trains the teacher,
and the student distilled from it.

Latency is always that of the user's backend and deployment resolution (``ctx.latency``), read
from an operator table measured on this machine, never a fixed table for 1024×2048 on TensorRT.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, ValidationInfo, model_validator

from segnas.config.base import NonNegative, Settings, refuse_idle
from segnas.engine.evaluate import iter_batches
from segnas.metrics import ConfusionMatrix
from segnas.search.base import FoundNetwork, SearchContext, SearchResult, strategy
from segnas.search.oneshot import OneShotEngine, OneShotSettings, OneShotStrategy, SearchSchedule
from segnas.spaces.base import save_arch
from segnas.spaces.multires import DEFAULT_WIDTH_RATIOS, MultiResArch, MultiResSpace
from segnas.spaces.multires.supernet import LATENCY_TERM_WEIGHTS, MultiResSupernet

TEACHER, STUDENT = 0, 1
NAMES = {TEACHER: "teacher", STUDENT: "student"}


class MultiResSpaceSettings(Settings):
    layers: int = Field(16, ge=2)
    base_width: int = Field(12, ge=1)
    width_ratios: tuple[float, ...] = tuple(DEFAULT_WIDTH_RATIOS)


class FasterSegSettings(OneShotSettings):
    """FasterSeg's section (``fasterseg:``): the space, the two phases, the latency regularization."""

    space: MultiResSpaceSettings = Field(default_factory=MultiResSpaceSettings)
    #: Validation images scored per search epoch to choose the branch pair (0: skip scoring).
    derive_val_images: int = Field(50, ge=0)
    #: λ, and FasterSeg's weights of the operator / path / width latency terms.
    lam: float = Field(0.01, ge=0)
    weights: tuple[NonNegative, NonNegative, NonNegative] = LATENCY_TERM_WEIGHTS
    #: "decoupled" (FasterSeg) or "coupled" (one latency term; the ablation).
    mode: Literal["decoupled", "coupled"] = "decoupled"
    #: λ is halved when the derived student is faster than target·(1 − tolerance), doubled when
    #: slower than target·(1 + tolerance).
    tolerance: float = Field(0.1, ge=0, lt=1)
    adapt: bool = True
    #: Random-width passes per pre-training step besides the widest and narrowest (official: 2).
    pretrain_random_widths: int = Field(2, ge=0)
    #: Each search step also trains the student at its widest and narrowest widths, weights and α/β
    #: alike (the official search step); off: the sampled widths only, a third of the work.
    search_extremes: bool = True

    @model_validator(mode="after")
    def _used(self, info: ValidationInfo) -> "FasterSegSettings":
        refuse_idle(self, info, {"tolerance": (not self.adapt, "the band of λ's adaptation, which adapt false "
                                                               "turns off")})
        return self


def adapt_lambda(lam: float, latency_ms: float, target_ms: float, tolerance: float) -> float:
    """FasterSeg's per-epoch λ rule: halve if faster than the band, double if slower."""
    if latency_ms < target_ms * (1 - tolerance):
        return lam / 2
    if latency_ms > target_ms * (1 + tolerance):
        return lam * 2
    return lam


@strategy("fasterseg")
class FasterSegSearch(OneShotStrategy):
    """Co-searches a teacher (no latency term, fixed widths) and a student under the target."""

    settings_class: ClassVar[type[Settings]] = FasterSegSettings
    hands_over_teacher = True  # the student is distilled from the teacher
    cli_options = {"pretrained": ("fasterseg.pretrained", str, "Skip pre-training: start from this search run's "
                                  "pre-trained supernet (run dir or pretrained.pt).")}

    def __init__(self) -> None:
        super().__init__()
        self.lam = 0.0
        #: per architecture, val mIoU of the two candidate branch pairs' heads (None: not scored)
        self.mious: dict[int, dict[str, float] | None] = {}

    # ------------------------------------------------------------------ hooks
    def build_supernet(self, ctx: SearchContext) -> MultiResSupernet:
        sc = ctx.section.space
        supernet = MultiResSpace(layers=sc.layers, base_width=sc.base_width,
                                 width_ratios=sc.width_ratios).supernet(ctx.num_classes, ctx.latency.size)
        # The space of the networks that must meet the target: the student's, with its stem and head
        # widths, so that the latency correction is calibrated on networks like it (a correction
        # fitted at full stem and head width mispredicts a student at 8/12 of it).
        stem, head = supernet.stem_head_widths[STUDENT]
        self.space = MultiResSpace(layers=sc.layers, base_width=sc.base_width, width_ratios=sc.width_ratios,
                                   stem_width=stem, head_width=head)
        self.lam = ctx.section.lam
        return supernet

    def val_images(self, ctx: SearchContext) -> int:
        return ctx.section.derive_val_images

    def schedule(self, ctx: SearchContext) -> SearchSchedule:
        schedule = super().schedule(ctx)
        schedule.aux_weight = 1.0  # the official search loss sums all five heads equally
        schedule.sandwich_random = ctx.section.pretrain_random_widths
        schedule.search_extremes = ctx.section.search_extremes
        return schedule

    def arch_losses(self, net: MultiResSupernet, arch_index: int) -> dict[str, torch.Tensor]:
        """None for the teacher; the decoupled (or, for the ablation, coupled) latency
        regularization for the student."""
        if arch_index == TEACHER or self.lam == 0:
            return {}
        sec, latency = self.ctx.section, self.ctx.latency
        w1, w2, w3 = sec.weights
        if sec.mode == "coupled":
            return {"latency": self.lam * (w1 + w2 + w3) * net.expected_latency(arch_index, latency)}
        lat_ops, lat_paths, lat_widths = net.latency_terms(arch_index, latency)
        return {"latency": self.lam * (w1 * lat_ops + w2 * lat_paths + w3 * lat_widths)}

    def on_epoch_end(self, engine: OneShotEngine, phase: str, epoch: int) -> dict[str, Any]:
        """Score the heads, derive both networks (``archs/<name>_epochNNN.json``), adapt λ."""
        if phase != "search":
            return {}
        for index in NAMES:
            self.mious[index] = self.head_mious(index)
        lat = {}
        for index, name in NAMES.items():
            arch = self.derive_arch(index)
            lat[name] = self.predict(arch)
            save_arch(self.ctx.run.path / "archs" / f"{name}_epoch{epoch:03d}.json", self.space, arch,
                      predicted_latency_ms=lat[name])
        lam, sec = self.lam, self.ctx.section
        if sec.adapt:
            self.lam = adapt_lambda(lam, lat["student"], self.ctx.latency.target_ms, sec.tolerance)
        return {"lambda": lam, "teacher_latency_ms": lat["teacher"], "student_latency_ms": lat["student"],
                **{f"arch{i}_miou_{h}": v for i, m in self.mious.items() if m for h, v in m.items()}}

    def derive(self, ctx: SearchContext) -> SearchResult:
        networks = []
        for index, name in NAMES.items():
            arch = self.derive_arch(index)
            ms = self.predict(arch)
            ctx.echo(f"derived {name}: predicted {ms:.2f} ms at {ctx.latency.size[0]}x{ctx.latency.size[1]} "
                     f"({ctx.latency.backend})")
            networks.append(FoundNetwork(name, self.space, arch, ms, role="found" if index == STUDENT else "teacher",
                                         distill_from=NAMES[TEACHER] if index == STUDENT else None))
        return SearchResult(networks, {"lambda": self.lam, "stopped": self.engine.stopped})

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"lambda": self.lam, "mious": self.mious}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lam = state["lambda"]
        self.mious = {int(k): v for k, v in state["mious"].items()}

    # ------------------------------------------------------------------ pieces
    def predict(self, arch: MultiResArch) -> float:
        return self.ctx.latency.predict(self.space, arch, self.ctx.num_classes)

    def derive_arch(self, index: int) -> MultiResArch:
        """Arch ``index``'s network: the branch pair with the better mIoU·(latency/target)^-0.07."""
        return self.supernet.derive(index, latency_fn=self.predict, target_ms=self.ctx.latency.target_ms,
                                    mious=self.mious.get(index))

    @torch.no_grad()
    def head_mious(self, index: int) -> dict[str, float] | None:
        """Validation mIoU of the two candidate branch pairs' heads ("02", "12") of one architecture,
        which the derivation weighs against latency (official ``train.py``)."""
        if self.val_set is None:
            return None
        net = self.supernet
        net.eval()
        previous_mode = net.width_mode
        net.set_width_mode("argmax")  # score the widths that derivation will keep
        matrices = {h: ConfusionMatrix(self.ctx.num_classes) for h in ("02", "12")}
        for images, masks in iter_batches(self.val_set, 4):
            preds = net.forward_all(self.engine.place.images(images), index)
            for h, cm in matrices.items():
                cm.update(preds[h].argmax(1), masks)
        net.set_width_mode(previous_mode)
        net.train()
        return {h: cm.compute().miou for h, cm in matrices.items()}
