"""Settings of a training job (also used by `eval`, `predict` and `demo`)."""

from __future__ import annotations

from typing import Any, Literal, Mapping, Optional, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator

from segnas.config.base import PATH, Betas, JobName, NonNegative, Settings, refuse_idle, size_or_none
from segnas.config.io import build_config, new_settings

#: Epochs of a training given neither epochs nor a time or step budget.
DEFAULT_EPOCHS = 10


class DataConfig(Settings):
    #: The dataset: camvid, cityscapes, folder (your images and masks) or synthetic (street scenes
    #: generated in memory, no files); docs/datasets.md.
    name: str = "synthetic"
    #: The dataset's folder (every dataset but synthetic).
    root: Optional[str] = Field(None, json_schema_extra=PATH)
    #: The split trained on.
    train_split: str = "train"
    #: The split scored during training (``best.pt`` is the best on it); null or empty: none
    #: (nothing is scored, ``best.pt`` holds the last weights).
    val_split: Optional[str] = "val"
    #: Training crop (HxW); None trains on whole images (all must then share one size).
    crop_size: Optional[tuple[int, int]] = None
    #: Resize every image to this size before augmentation / evaluation; None keeps native size.
    base_size: Optional[tuple[int, int]] = None
    #: Random rescaling before the training crop: a factor drawn from [low, high], 0 < low <= high
    #: (needs ``crop_size``).
    scale: tuple[float, float] = (0.75, 1.5)
    #: Random crops at several sizes: each training batch is cropped to one of these fractions of
    #: ``crop_size``'s sides (drawn per batch; sides rounded down to a multiple of 32), each sample
    #: at its own random place (``segnas.data.transforms.BatchCrop``). [1.0]: every batch at crop_size.
    #: Trainings use it (``segnas train``, final trainings); a one-shot search's supernet does not.
    crop_fractions: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    #: Colour jitter: brightness, contrast and saturation factors drawn from [1 - jitter, 1 + jitter]; 0: off.
    jitter: float = Field(0.3, ge=0)
    #: Class-focused crops: classes (names or ids) that a training crop is placed on with
    #: probability ``focus_prob`` when the image holds any of them (thin or rare classes).
    focus_classes: list[Union[int, str]] = Field(default_factory=list)
    #: The share of training crops placed on one of ``focus_classes``.
    focus_prob: float = Field(0.0, ge=0, le=1)
    #: Photometric robustness to another camera: Gaussian blur (σ 0.3-1.5 px) with probability
    #: ``blur_prob``; additive pixel noise of a standard deviation up to ``noise_std`` (in [0, 1] units).
    blur_prob: float = Field(0.0, ge=0, le=1)
    #: The largest standard deviation of the additive pixel noise (0: none).
    noise_std: float = Field(0.0, ge=0, le=0.5)
    #: Training batch size (under torchrun: the global batch).
    batch_size: int = Field(8, ge=1)
    #: Batch size when scoring the validation split.
    eval_batch_size: int = Field(4, ge=1)
    #: Data-loading worker processes (0: load in the training process).
    workers: int = Field(0, ge=0)
    #: Keep decoded samples in memory: true, false, or None = when the split fits in 2 GB.
    cache: Optional[bool] = None
    #: Extra keyword arguments of the dataset class (e.g. classes/palette for `folder`, size for `synthetic`).
    options: dict[str, Any] = Field(default_factory=dict)

    _sizes = field_validator("crop_size", "base_size", mode="before")(classmethod(lambda cls, v: size_or_none(v)))

    @field_validator("crop_fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        bad = [f for f in v if not 0 < f <= 1]
        if bad:
            raise ValueError(f"each fraction of crop_size must lie in (0, 1], got {bad[0]}")
        return v

    @model_validator(mode="after")
    def _crop_settings_need_crops(self, info: ValidationInfo) -> "DataConfig":
        """Crop settings that would otherwise do nothing, silently, are refused."""
        if self.crop_fractions != [1.0] and self.crop_size is None:
            raise ValueError("crop_fractions: crops at several sizes need data.crop_size (the largest crop)")
        if bool(self.focus_classes) != (self.focus_prob > 0):
            raise ValueError("focus_classes, focus_prob: class-focused crops need both the classes and the share "
                             f"of crops placed on them (> 0); got {self.focus_classes} and {self.focus_prob:g}")
        if self.focus_classes and self.crop_size is None:
            raise ValueError("focus_classes: class-focused crops need data.crop_size (--size)")
        if new_settings(info) and not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale: a range [low, high] of scale factors with 0 < low <= high, got "
                             f"[{self.scale[0]:g}, {self.scale[1]:g}]")
        refuse_idle(self, info, {"scale": (self.crop_size is None, f"random scaling ({self.scale[0]:g}-"
                                                                   f"{self.scale[1]:g}) is applied before the training "
                                                                   "crop: it needs data.crop_size (--size)")})
        if self.root is not None and self.name == "synthetic" and new_settings(info):
            raise ValueError("root: the synthetic dataset (the default of data.name, --data) is generated in memory "
                             "and reads no folder: name your dataset in data.name (--data): camvid, cityscapes or "
                             "folder; or leave the folder out")
        return self


#: How the command line names a dataset and its folder (``options_data``'s default).
DATA_OPTIONS = {"name": "--data", "root": "--data-root"}


def options_data(name: str, root: str | None, names: Mapping[str, str] = DATA_OPTIONS,
                 options: Mapping[str, Any] | None = None) -> DataConfig:
    """The data section that a dataset's name, folder and ``options`` (``--data-option``) make (the
    first two given as ``names`` says: the command line's ``--data`` and ``--data-root``, or a
    caller's arguments), checked as a new run's (a folder given with the synthetic scenes is
    refused, not ignored)."""
    return build_config(DataConfig, {"name": name, "root": root, "options": dict(options or {})}, "options", names,
                        new=True)


class ModelConfig(Settings):
    #: Zoo network name, or None when `arch` gives an architecture file.
    name: Optional[str] = "fast_scnn"
    #: An architecture file (``arch.json``) of a search, instead of a zoo ``name``.
    arch: Optional[str] = Field(None, json_schema_extra=PATH)
    #: Keyword arguments of the zoo network (e.g. ``{width: 0.5}``).
    options: dict[str, Any] = Field(default_factory=dict)
    #: Weights to start from (a segnas checkpoint or a state-dict file): every tensor whose name and
    #: shape match is loaded into the built network before training; None: from scratch.
    init: Optional[str] = Field(None, json_schema_extra=PATH)

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo) -> "ModelConfig":
        if (self.name is None) == (self.arch is None):
            raise ValueError("give exactly one of model.name (zoo) or model.arch (arch.json)")
        refuse_idle(self, info, {"options": (self.arch is not None, "keyword arguments of a zoo network (model.name); "
                                                                   "an arch file's network is built from the file alone")})
        return self


class OptimConfig(Settings):
    #: The optimizer.
    name: Literal["sgd", "adamw"] = "sgd"
    #: Peak learning rate (after the warm-up).
    lr: float = Field(0.05, gt=0)
    #: SGD's momentum.
    momentum: float = Field(0.9, ge=0, lt=1)
    #: AdamW's betas.
    betas: Betas = (0.9, 0.999)
    #: Weight decay (decoupled with AdamW).
    weight_decay: float = Field(4e-5, ge=0)
    #: No weight decay on biases and normalization weights.
    no_decay_norm_bias: bool = True
    #: Learning-rate decay over the budget: poly, (1 - progress) ** power; cosine; or constant (none).
    schedule: Literal["poly", "cosine", "constant"] = "poly"
    #: The poly schedule's exponent.
    power: NonNegative = 0.9
    #: Linear warm-up of the learning rate over this many first steps.
    warmup_iters: int = Field(0, ge=0)
    #: The decayed learning rate's floor, as a fraction of ``lr``.
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    #: Clip the gradients' global norm to this value; None: no clipping.
    clip_grad_norm: Optional[float] = Field(None, gt=0)

    @model_validator(mode="after")
    def _settings_of_the_chosen(self, info: ValidationInfo) -> "OptimConfig":
        """A setting of an optimizer or schedule other than the chosen one would do nothing: refused."""
        refuse_idle(self, info, {"momentum": (self.name != "sgd", f"SGD's; the {self.name} optimizer uses betas"),
                                 "betas": (self.name != "adamw", f"AdamW's; the {self.name} optimizer uses momentum"),
                                 "power": (self.schedule != "poly", f"the poly schedule's exponent (schedule: "
                                                                    f"{self.schedule})"),
                                 "min_lr_ratio": (self.schedule == "constant", "the floor of a decaying learning "
                                                                               "rate; the constant schedule does not "
                                                                               "decay")})
        return self


class LossConfig(Settings):
    #: Cross-entropy over every pixel, or OHEM: over the hard pixels only.
    kind: Literal["ce", "ohem"] = "ce"
    #: OHEM's hard pixels: those whose true-class probability is below this.
    ohem_thresh: float = Field(0.7, gt=0, le=1)
    #: OHEM keeps at least this many hardest pixels per batch.
    ohem_min_kept: int = Field(100_000, ge=1)
    #: Weight of each auxiliary head's loss (networks with auxiliary heads).
    aux_weight: float = Field(0.4, ge=0)
    #: Per-class weights of the loss: a list (one per class), or ``median_frequency`` (computed from
    #: the training split's labels before training: median class frequency / the class's frequency,
    #: a frequency counted over the images the class appears in; Eigen & Fergus, 2015).
    class_weights: Optional[Union[list[NonNegative], Literal["median_frequency"]]] = None
    #: Label smoothing of the cross-entropy (main and auxiliary heads): the target puts 1 - ε on the
    #: true class and spreads ε over all classes. OHEM still judges hardness without it.
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    #: Knowledge distillation from a frozen teacher checkpoint (pixel-wise KL with temperature).
    teacher: Optional[str] = Field(None, json_schema_extra=PATH)
    #: Or a teacher network (zoo name or arch file) trained once with this run's data and recipe for
    #: ``teacher_steps`` optimizer steps, cached and reused by every run that asks for the same one
    #: (``segnas.training.cached``); the run's config.yaml then records its checkpoint as ``teacher``.
    teacher_model: Optional[str] = None
    #: Optimizer steps of the ``teacher_model``'s training.
    teacher_steps: int = Field(2000, ge=1)
    #: Weight of the distillation term (with a teacher).
    kd_weight: float = Field(1.0, ge=0)
    #: Softmax temperature of the distillation term.
    kd_temperature: float = Field(1.0, gt=0)
    #: Weight of STDC's detail-guidance loss (used only by networks that output "detail").
    detail_weight: float = Field(1.0, ge=0)
    #: Weight of a boundary term for any network: the main head's cross-entropy averaged over the
    #: pixels on a class boundary of the labels (``segnas.engine.losses.boundary_ce``); 0: off.
    boundary_weight: float = Field(0.0, ge=0)

    @field_validator("class_weights", mode="before")
    @classmethod
    def _weights_or_rule(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "median_frequency":
            raise ValueError("a list of numbers (one per class) or median_frequency")
        return value

    @model_validator(mode="after")
    def _one_teacher(self, info: ValidationInfo) -> "LossConfig":
        if self.teacher and self.teacher_model:
            raise ValueError("give loss.teacher (a checkpoint) or loss.teacher_model (trained once), not both")
        ohem = (self.kind != "ohem", f"OHEM's (loss.kind: {self.kind})")
        refuse_idle(self, info, {"ohem_thresh": ohem, "ohem_min_kept": ohem, **self.idle_distillation()})
        return self

    def idle_distillation(self) -> dict[str, tuple[bool, str]]:
        """The distillation settings, each with whether it is unused (no teacher) and whose it is. (A
        search's final overrides are checked against them by the search, which knows whether its
        method hands its final training a teacher: ``jobs.search.check_final_training``.)"""
        kd = (not (self.teacher or self.teacher_model), "a setting of distillation, which needs a teacher "
                                                        "(loss.teacher or loss.teacher_model)")
        return {"kd_weight": kd, "kd_temperature": kd,
                "teacher_steps": (kd[0], "the training of a loss.teacher_model, which is not given")}


class TrainConfig(Settings):
    #: The job's name: the run directory is ``out_dir/<date>-<time>-<job>``.
    job: JobName = "train"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    #: Number of epochs. None: until the time or step budget is spent, or DEFAULT_EPOCHS (10)
    #: when there is no budget. Given together with a budget, whichever ends first stops training.
    epochs: Optional[int] = Field(None, ge=1)
    #: Stop after this many minutes of training (evaluation excluded); the LR schedule then runs
    #: on whichever of iterations or time is further along. None: no time limit (0 is refused).
    time_budget_min: Optional[float] = Field(None, gt=0, json_schema_extra={"also_called": "minutes"})
    #: Stop after this many optimizer steps (a budget that means the same on every machine); the
    #: LR schedule then runs over them.
    max_steps: Optional[int] = Field(None, ge=1)
    #: How training time is counted: wall clock, or process CPU time / threads ("cpu"), which
    #: discounts a job that merely waits for its cores; threads that spin while oversubscribed
    #: still burn CPU time, so train one job per set of cores.
    budget_clock: Literal["wall", "cpu"] = "wall"
    #: Score the validation split every this many epochs (and at the end). None: every epoch, or
    #: for a budget of more than 100 epochs (a small training split) every k-th, about 100 times.
    eval_every: Optional[int] = Field(None, ge=1)
    #: Gradient accumulation: an optimizer step on the mean gradient of this many batches (about a
    #: ``accumulate_batches x data.batch_size`` batch in the memory of one: exactly for a network
    #: without batch statistics and a per-pixel mean loss); steps count optimizer steps, and an
    #: epoch's last incomplete group of batches is skipped.
    accumulate_batches: int = Field(1, ge=1)
    #: An exponential moving average of the weights, with this decay, is what is evaluated and saved;
    #: None: the raw weights.
    ema_decay: Optional[float] = Field(None, gt=0, lt=1)
    #: Stochastic weight averaging (Izmailov et al., 2018): from this fraction of the training
    #: budget on, the weights after every optimizer step enter an equal-weight average, which is
    #: what is evaluated and saved as best.pt, its BatchNorm statistics recomputed on
    #: ``swa_bn_batches`` training batches first (``segnas.engine.swa``). None: off. Not with
    #: ``ema_decay`` (one average of the weights).
    swa_start: Optional[float] = Field(None, gt=0, lt=1)
    #: Learning rate held constant from ``swa_start`` on (SWA's schedule); None: the schedule goes on.
    swa_lr: Optional[float] = Field(None, gt=0)
    #: Training batches that re-estimate the BatchNorm statistics of the SWA average.
    swa_bn_batches: int = Field(32, ge=1)
    #: bfloat16 autocast where the CPU or GPU supports it natively (else fp32).
    bf16: bool = False
    #: Channels-last memory layout (faster convolutions on most CPUs).
    channels_last: bool = False
    #: Under torchrun (data-parallel): BatchNorm statistics over the global batch of every process
    #: (SyncBatchNorm); no effect in one process.
    sync_bn: bool = False
    #: torch threads; None: OMP_NUM_THREADS where set, else the cores this process may use.
    threads: Optional[int] = Field(None, ge=1)
    #: Where to train: cpu, cuda, cuda:N, or auto (a CUDA GPU when torch sees one, else the CPU).
    device: str = Field("cpu", pattern=r"^(cpu|auto|cuda(:\d+)?)$")
    #: Seed of the weights' initialization, the data order and the augmentation.
    seed: int = Field(0, ge=0)
    #: The folder run directories are created in.
    out_dir: str = Field("runs", json_schema_extra=PATH)
    #: Progress bars on the terminal (the one-line summary of each epoch is printed either way).
    progress: bool = True

    @model_validator(mode="after")
    def _one_average(self) -> "TrainConfig":
        if self.swa_start is not None and self.ema_decay is not None:
            raise ValueError("swa_start: give ema_decay or swa_start (one average of the weights), not both; "
                             "set ema_decay to null to use SWA")
        if self.swa_lr is not None and self.swa_start is None:
            raise ValueError("swa_lr: the SWA learning rate needs swa_start")
        return self

    @model_validator(mode="after")
    def _swa_settings(self, info: ValidationInfo) -> "TrainConfig":
        refuse_idle(self, info, {"swa_bn_batches": (self.swa_start is None, "SWA's BatchNorm re-estimate, which "
                                                                            "needs swa_start"),
                                 "eval_every": (not self.data.val_split, "how often the validation split is scored, "
                                                                         "and data.val_split names none")})
        return self

    @model_validator(mode="after")
    def _default_epochs(self) -> "TrainConfig":
        if self.epochs is None and self.time_budget_min is None and self.max_steps is None:
            self.epochs = DEFAULT_EPOCHS
        return self
