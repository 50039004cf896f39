"""Settings of the search jobs: the common part, FasterSeg (`segnas search fasterseg`) and SSR
(`segnas search ssr`)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from segnas.config.train import DataConfig, OptimConfig, Settings
from segnas.utils import parse_size


class MultiResSpaceConfig(Settings):
    layers: int = Field(16, ge=2)
    base_width: int = Field(12, ge=1)
    width_ratios: tuple[float, ...] = (4 / 12, 6 / 12, 8 / 12, 10 / 12, 1.0)


class LatencyTarget(Settings):
    #: Target latency of the found network at the deployment size, in ms (or give target_fps).
    target_ms: Optional[float] = Field(None, gt=0)
    target_fps: Optional[float] = Field(None, gt=0)
    #: Deployment input size (HxW) the latency is measured for; defaults to the search crop size.
    size: Optional[tuple[int, int]] = None
    backend: str = "onnxruntime"
    threads: Optional[int] = Field(None, ge=1)
    #: How long each operator is timed when the latency table is built (runs, then seconds).
    table_min_runs: int = Field(20, ge=1)
    table_min_time_s: float = Field(0.3, ge=0)

    _size = field_validator("size", mode="before")(classmethod(lambda cls, v: None if v is None else parse_size(v)))

    @model_validator(mode="after")
    def _one_target(self) -> "LatencyTarget":
        if (self.target_ms is None) == (self.target_fps is None):
            raise ValueError("give exactly one of latency.target_ms or latency.target_fps")
        return self

    @property
    def target(self) -> float:
        return self.target_ms if self.target_ms is not None else 1000.0 / self.target_fps


class LatencyConfig(LatencyTarget):
    """FasterSeg's latency regularization on top of the target."""
    #: λ, and FasterSeg's weights of the operator / path / width latency terms.
    lam: float = Field(0.01, ge=0)
    weights: tuple[float, float, float] = (1 / 500, 497 / 500, 2 / 500)
    #: "decoupled" (FasterSeg) or "coupled" (one latency term; the ablation).
    mode: Literal["decoupled", "coupled"] = "decoupled"
    #: λ is halved when the derived student is faster than target·(1 − tolerance), doubled when
    #: slower than target·(1 + tolerance).
    tolerance: float = Field(0.1, ge=0, lt=1)
    adapt: bool = True


class SearchJobConfig(Settings):
    """What every differentiable search job shares: data, the two search phases, final training."""

    _sizes = field_validator("search_size", mode="before")(classmethod(lambda cls, v: None if v is None else parse_size(v)))

    job: str = "search"
    data: DataConfig = Field(default_factory=DataConfig)
    #: Search on whole training images resized to this HxW (FasterSeg searched at half
    #: resolution); None searches on the data section's crops.
    search_size: Optional[tuple[int, int]] = None
    pretrain_epochs: int = Field(20, ge=0)
    #: Start the search from another search run's pre-trained supernet (its run directory or its
    #: ``checkpoints/pretrained.pt``) instead of pre-training; pretrain_epochs is then taken from it.
    pretrained: Optional[str] = None
    search_epochs: int = Field(30, ge=1)
    weight_lr: float = Field(0.02, gt=0)
    arch_lr: float = Field(3e-4, gt=0)
    bf16: bool = False
    threads: Optional[int] = Field(None, ge=1)
    seed: int = 0
    out_dir: str = "runs"
    progress: bool = True
    #: Final training of the derived network(s) through the engine; 0 epochs stops after derivation.
    final_epochs: int = Field(100, ge=0)
    final_minutes: Optional[float] = Field(None, gt=0)
    #: How final_minutes is counted (see TrainConfig.budget_clock).
    final_budget_clock: Literal["wall", "cpu"] = "wall"
    final_optim: OptimConfig = Field(default_factory=lambda: OptimConfig(name="sgd", lr=0.08, weight_decay=1e-4,
                                                                          warmup_iters=100))
    final_ema_decay: Optional[float] = 0.998


class SearchConfig(SearchJobConfig):
    """FasterSeg: teacher–student co-search on the ``multires`` space; the final training is the
    teacher, then the student distilled from it (KL + OHEM + 0.2·aux)."""

    job: str = "search-fasterseg"
    space: MultiResSpaceConfig = Field(default_factory=MultiResSpaceConfig)
    latency: LatencyConfig
    #: Validation images scored per search epoch to choose the branch pair (0: skip scoring).
    derive_val_images: int = Field(50, ge=0)


class JointSpaceConfig(Settings):
    """The ``joint`` space (``segnas.spaces.joint``); the defaults follow SSR's released encoder."""

    channels: tuple[int, ...] = (64, 128)
    slots: tuple[int, ...] = (5, 8)
    stem_channels: int = Field(16, ge=4)
    decoder_width: int = Field(64, ge=1)
    ops: tuple[Literal["fact", "dwfact"], ...] = ("fact", "dwfact")
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16)
    resolutions: tuple[bool, ...] = (False, True)
    width_ratios: tuple[float, ...] = (1.0, 0.875, 0.75, 0.625, 0.5)


class SSRConfig(SearchJobConfig):
    """SSR: joint search with sigmoid-normalized weights, the SSR loss and progressive shrinking."""

    job: str = "search-ssr"
    space: JointSpaceConfig = Field(default_factory=JointSpaceConfig)
    latency: LatencyTarget
    #: The resource term w·(E[cost]/target − 1)²: expected latency from the table (target in ms)
    #: or expected GFLOPs (target_gflops). The released code weighs it 1/100 of the segmentation
    #: loss; 0.1 here, my choice, so that it is not lost beside the SSR terms in short searches.
    resource: Literal["latency", "flops"] = "latency"
    target_gflops: Optional[float] = Field(None, gt=0)
    resource_weight: float = Field(0.1, ge=0)
    #: Weights of the SSR loss for the operator, mid-width and out-width decisions, relative to the
    #: segmentation loss (released code: 30, 15, 15 against 100·CE); all 0 switches SSR off.
    ssr_weights: tuple[float, float, float] = (0.3, 0.15, 0.15)
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
    arch_betas: tuple[float, float] = (0.9, 0.999)

    @model_validator(mode="after")
    def _resource_target(self) -> "SSRConfig":
        if self.resource == "flops" and self.target_gflops is None:
            raise ValueError("resource 'flops' needs target_gflops")
        return self
