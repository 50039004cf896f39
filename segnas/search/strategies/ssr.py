"""SSR: joint-dimensional search with Solution Space Regularization and progressive shrinking.

Pipeline (docs/methods/ssr.md) on the ``joint`` space's supernet (``segnas.spaces.joint.supernet``), on
the one-shot engine: optional weight warm-up (sandwich rule over widths) → first-order bilevel
search where the architecture loss is L_seg + Σ_g w_g·SSR_g (operators, mid widths, out widths;
SSR = −KL(U‖p) over the active candidates) + w_r·(E[cost]/target − 1)², the cost being the
expected latency from the latency model (default) or GFLOPs → after every search epoch the
discretization gap is measured (val mIoU of the soft supernet vs its argmax network on the same
weights) and candidates with p/max(p) <= threshold are dropped, operators before widths → the
search stops by itself once the space is a single network (or after ``search_epochs``) → ``arch``.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, ClassVar, Literal, Optional

import torch
from pydantic import Field, ValidationInfo, model_validator
from torch.utils.data import DataLoader, Dataset

from segnas.config.base import Betas, NonNegative, Settings, refuse_idle
from segnas.config.search import SearchSettings
from segnas.cost.flops import count_flops
from segnas.engine.evaluate import evaluate
from segnas.engine.step import Placement
from segnas.evaluate.supernet import calibrate_bn
from segnas.nn.ops import OpKey
from segnas.search.base import FoundNetwork, SearchContext, SearchResult, strategy
from segnas.search.oneshot import OneShotEngine, OneShotSettings, OneShotStrategy, SearchSchedule
from segnas.spaces.base import save_arch
from segnas.spaces.joint import JointArch, JointSpace
from segnas.spaces.joint.supernet import JointSupernet

#: Training batches used to re-estimate BatchNorm statistics of the argmax network before scoring it.
BN_CALIBRATION_BATCHES = 10


class JointSpaceSettings(Settings):
    """The ``joint`` space (``segnas.spaces.joint``); the defaults follow SSR's released encoder."""

    channels: tuple[int, ...] = (64, 128)
    slots: tuple[int, ...] = (5, 8)
    stem_channels: int = Field(16, ge=4)
    decoder_width: int = Field(64, ge=1)
    ops: tuple[Literal["fact", "dwfact"], ...] = ("fact", "dwfact")
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16)
    resolutions: tuple[bool, ...] = (False, True)
    width_ratios: tuple[float, ...] = (1.0, 0.875, 0.75, 0.625, 0.5)


class SSRSettings(OneShotSettings):
    """SSR's section (``ssr:``): sigmoid-normalized weights, the SSR loss, progressive shrinking."""

    space: JointSpaceSettings = Field(default_factory=JointSpaceSettings)
    #: The resource term w·(E[cost]/target − 1)²: expected latency from the table (target in ms)
    #: or expected GFLOPs (target_gflops). The released code weighs it 1/100 of the segmentation
    #: loss; 0.1 here, my choice, so that it is not lost beside the SSR terms in short searches.
    resource: Literal["latency", "flops"] = "latency"
    target_gflops: Optional[float] = Field(None, gt=0)
    resource_weight: float = Field(0.1, ge=0)
    #: Weights of the SSR loss for the operator, mid-width and out-width decisions, relative to the
    #: segmentation loss (released code: 30, 15, 15 against 100·CE); all 0 switches SSR off.
    ssr_weights: tuple[NonNegative, NonNegative, NonNegative] = (0.3, 0.15, 0.15)
    #: After each search epoch, drop candidates whose p / max(p) is at most this.
    shrink_threshold: float = Field(0.1, ge=0, lt=1)
    #: Validation images for the per-epoch discretization gap (soft supernet vs its argmax network).
    gap_val_images: int = Field(50, ge=0)
    pretrain_epochs: int = Field(2, ge=0)
    search_epochs: int = Field(60, ge=1)
    arch_lr: float = Field(2e-3, gt=0)
    #: Adam's L2 decay of α. The released code uses 1e-3 on a loss scaled by 100 (100·CE + …);
    #: our losses are relative to CE = 1, so the same balance is 1e-5. (At 1e-3 the decay term
    #: outweighs the α-gradients of CE and SSR here, and p never leaves the uniform distribution.)
    arch_weight_decay: float = Field(1e-5, ge=0)
    #: Adam's betas for α (released code: PyTorch's defaults).
    arch_betas: Betas = (0.9, 0.999)

    @model_validator(mode="after")
    def _resource_target(self, info: ValidationInfo) -> "SSRSettings":
        if self.resource == "flops" and self.target_gflops is None:
            raise ValueError("resource 'flops' needs target_gflops")
        refuse_idle(self, info, {"target_gflops": (self.resource == "latency", "used only with resource 'flops' "
                                                   "(--resource flops); the latency resource's target is "
                                                   "latency.target_ms")})
        return self


def joint_space(settings: JointSpaceSettings) -> JointSpace:
    """The ``JointSpace`` a section's ``space`` describes."""
    return JointSpace(**settings.model_dump())


def supernet_miou(net: JointSupernet, dataset: Dataset, mode: str, num_classes: int) -> float:
    """Val mIoU of ``net`` in width mode ``mode`` (then back to the search's "gumbel" mode, training)."""
    net.set_width_mode(mode)
    miou = evaluate(net, dataset, num_classes).miou
    net.set_width_mode("gumbel")
    net.train()
    return miou


@strategy("ssr")
class SSRSearch(OneShotStrategy):
    """Searches one network of the ``joint`` space, shrinking the space until it is that network."""

    settings_class: ClassVar[type[Settings]] = SSRSettings
    cli_options = {"resource": ("ssr.resource", str, "Resource term: latency (default) or flops."),
                   "target-gflops": ("ssr.target_gflops", float, "GFLOPs target when --resource flops.")}

    def __init__(self) -> None:
        super().__init__()
        self._flops: dict[OpKey, float] = {}

    def target_required(self, settings: SearchSettings) -> bool:
        return getattr(settings, self.name).resource != "flops"

    # ------------------------------------------------------------------ costs
    def gflops(self, keys: list[OpKey]) -> list[float]:
        """GFLOPs of operators (the FLOPs resource), counted once each."""
        for k in keys:
            if k not in self._flops:
                self._flops[k] = count_flops(k.build().eval(), k.input_shape).gflops
        return [self._flops[k] for k in keys]

    def expected_resource(self, net: JointSupernet) -> torch.Tensor:
        if self.ctx.section.resource == "flops":
            return net.expected_cost(self.gflops)
        return net.expected_latency(0, self.ctx.latency)

    @property
    def resource_target(self) -> float:
        sec = self.ctx.section
        return sec.target_gflops if sec.resource == "flops" else self.ctx.latency.target_ms

    def predict(self, arch: JointArch) -> float:
        return self.ctx.latency.predict(self.space, arch, self.ctx.num_classes)

    # ------------------------------------------------------------------ hooks
    def build_supernet(self, ctx: SearchContext) -> JointSupernet:
        self.space = joint_space(ctx.section.space)
        return self.space.supernet(ctx.num_classes, ctx.latency.size)

    def val_images(self, ctx: SearchContext) -> int:
        return ctx.section.gap_val_images

    def schedule(self, ctx: SearchContext) -> SearchSchedule:
        schedule = super().schedule(ctx)
        schedule.arch_weight_decay, schedule.arch_betas = ctx.section.arch_weight_decay, ctx.section.arch_betas
        return schedule

    def arch_losses(self, net: JointSupernet, arch_index: int) -> dict[str, torch.Tensor]:
        sec = self.ctx.section
        losses: dict[str, torch.Tensor] = {}
        weights = dict(zip(("ops", "mid", "out"), sec.ssr_weights))
        if any(weights.values()):
            terms = net.ssr_terms()
            losses.update({f"ssr_{k}": w * terms[k] for k, w in weights.items() if w})
        if sec.resource_weight:
            ratio = self.expected_resource(net) / self.resource_target
            losses["resource"] = sec.resource_weight * (ratio - 1.0) ** 2
        return losses

    def discretization_gap(self, place: Placement) -> dict[str, float]:
        """Val mIoU of the soft supernet and of its argmax network on the same weights (BatchNorm
        statistics re-estimated for the argmax network on a few training batches)."""
        s, n = self.ctx.settings, self.ctx.num_classes
        soft = supernet_miou(self.supernet, self.val_set, "gumbel", n)
        discrete = copy.deepcopy(self.supernet)
        discrete.set_width_mode("argmax")
        loader = DataLoader(self.train_set, batch_size=s.data.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(s.seed))
        batches = itertools.islice(loader, BN_CALIBRATION_BATCHES)
        calibrate_bn(discrete, ((place.images(images), masks) for images, masks in batches))
        hard = supernet_miou(discrete, self.val_set, "argmax", n)
        return {"soft_miou": soft, "argmax_miou": hard, "gap": soft - hard}

    def on_epoch_end(self, engine: OneShotEngine, phase: str, epoch: int) -> dict[str, Any]:
        """Measure the gap, shrink, write ``archs/arch_epochNNN.json``; stop once one network is left."""
        if phase != "search":
            return {}
        net = self.supernet
        record: dict[str, Any] = {}
        if self.val_set is not None:
            record.update(self.discretization_gap(engine.place))
        with torch.no_grad():
            record["expected_cost"] = float(self.expected_resource(net))
        arch = net.derive()
        record["derived_latency_ms"] = self.predict(arch)
        record.update({f"dropped_{k}": v for k, v in net.shrink(self.ctx.section.shrink_threshold).items()})
        record.update({f"active_{k}": v for k, v in net.remaining().items()})
        record["single"] = net.is_single()
        save_arch(self.ctx.run.path / "archs" / f"arch_epoch{epoch:03d}.json", self.space, arch,
                  predicted_latency_ms=record["derived_latency_ms"])
        if record["single"]:
            engine.stop(f"search space shrunk to a single network after search epoch {epoch}")
        return record

    def derive(self, ctx: SearchContext) -> SearchResult:
        arch = self.supernet.derive()
        ms = self.predict(arch)
        converged = self.supernet.is_single()
        space = "shrunk to one network" if converged else "not fully shrunk: argmax"
        ctx.echo(f"derived: predicted {ms:.2f} ms at {ctx.latency.size[0]}x{ctx.latency.size[1]} "
                 f"({ctx.latency.backend}); space {space}")
        return SearchResult([FoundNetwork("arch", self.space, arch, ms, info={"converged": converged})],
                            {"converged": converged, "remaining": self.supernet.remaining(),
                             "stopped": self.engine.stopped})
