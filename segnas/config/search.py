"""Settings of a FasterSeg search job (`segnas search fasterseg`)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from segnas.config.train import DataConfig, OptimConfig, Settings
from segnas.utils import parse_size


class MultiResSpaceConfig(Settings):
    layers: int = Field(16, ge=2)
    base_width: int = Field(12, ge=1)
    width_ratios: tuple[float, ...] = (4 / 12, 6 / 12, 8 / 12, 10 / 12, 1.0)


class LatencyConfig(Settings):
    #: Target latency of the student at the deployment size, in ms (or give target_fps).
    target_ms: Optional[float] = Field(None, gt=0)
    target_fps: Optional[float] = Field(None, gt=0)
    #: Deployment input size (HxW) the latency is measured for; defaults to the search crop size.
    size: Optional[tuple[int, int]] = None
    backend: str = "onnxruntime"
    threads: Optional[int] = Field(None, ge=1)
    #: λ, and FasterSeg's weights of the operator / path / width latency terms.
    lam: float = Field(0.01, ge=0)
    weights: tuple[float, float, float] = (1 / 500, 497 / 500, 2 / 500)
    #: "decoupled" (FasterSeg) or "coupled" (one latency term; the ablation).
    mode: Literal["decoupled", "coupled"] = "decoupled"
    #: λ is halved when the derived student is faster than target·(1 − tolerance), doubled when
    #: slower than target·(1 + tolerance).
    tolerance: float = Field(0.1, ge=0, lt=1)
    adapt: bool = True
    #: How long each operator is timed when the latency table is built (runs, then seconds).
    table_min_runs: int = Field(20, ge=1)
    table_min_time_s: float = Field(0.3, ge=0)

    _size = field_validator("size", mode="before")(classmethod(lambda cls, v: None if v is None else parse_size(v)))

    @model_validator(mode="after")
    def _one_target(self) -> "LatencyConfig":
        if (self.target_ms is None) == (self.target_fps is None):
            raise ValueError("give exactly one of latency.target_ms or latency.target_fps")
        return self

    @property
    def target(self) -> float:
        return self.target_ms if self.target_ms is not None else 1000.0 / self.target_fps


class SearchConfig(Settings):
    _sizes = field_validator("search_size", mode="before")(classmethod(lambda cls, v: None if v is None else parse_size(v)))

    job: str = "search-fasterseg"
    data: DataConfig = Field(default_factory=DataConfig)
    space: MultiResSpaceConfig = Field(default_factory=MultiResSpaceConfig)
    latency: LatencyConfig
    #: Search on whole training images resized to this HxW (FasterSeg searched at half
    #: resolution); None searches on the data section's crops.
    search_size: Optional[tuple[int, int]] = None
    #: Validation images scored per search epoch to choose the branch pair (0: skip scoring).
    derive_val_images: int = Field(50, ge=0)
    pretrain_epochs: int = Field(20, ge=0)
    search_epochs: int = Field(30, ge=1)
    weight_lr: float = Field(0.02, gt=0)
    arch_lr: float = Field(3e-4, gt=0)
    bf16: bool = False
    threads: Optional[int] = Field(None, ge=1)
    seed: int = 0
    out_dir: str = "runs"
    progress: bool = True
    #: Final training of the derived networks: teacher first, then the student distilled from it
    #: (KL + OHEM + 0.2·aux, as FasterSeg). 0 epochs stops after derivation.
    final_epochs: int = Field(100, ge=0)
    final_minutes: Optional[float] = Field(None, gt=0)
    final_optim: OptimConfig = Field(default_factory=lambda: OptimConfig(name="sgd", lr=0.08, weight_decay=1e-4,
                                                                          warmup_iters=100))
    final_ema_decay: Optional[float] = 0.998
