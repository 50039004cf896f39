"""Settings of a search job: the part every method shares (``SearchSettings``), the latency target,
the final training of found networks, and the evaluator of sample-based methods.

Each method's own settings are a section named after it (``fasterseg:``, ``ssr:``, ``saswot:``,
``random:``, …), defined next to the strategy (``segnas.search.strategies``) and joined to
``SearchSettings`` by ``segnas.jobs.search.settings_class(method)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, ValidationInfo, field_validator, model_validator

from segnas.config.base import JobName, NAME_OR_FILE, PATH, Settings, refuse_idle, size_or_none
from segnas.config.io import SAVED_RUN, merged, new_settings
from segnas.config.recipes import load_recipe, recipe_path, recipe_with
from segnas.config.train import DataConfig, OptimConfig
from segnas.errors import SegnasError


class LatencyTarget(Settings):
    #: Target latency of the found network at the deployment size, in ms (or give target_fps).
    target_ms: Optional[float] = Field(None, gt=0)
    #: Target frame rate instead of ``target_ms``.
    target_fps: Optional[float] = Field(None, gt=0)
    #: Deployment input size (HxW) the latency is measured for; None: the training crop, else the base size.
    size: Optional[tuple[int, int]] = None
    #: The runtime latency is measured on: onnxruntime, openvino (the ``openvino`` extra), torchscript,
    #: eager or eager-cl (eager PyTorch, channels-last).
    backend: str = "onnxruntime"
    #: The runtime's threads; None: the search's ``threads``, else every core.
    threads: Optional[int] = Field(None, ge=1)
    #: Runs each latency-table entry (an operator at its input shape) is timed at least.
    table_min_runs: int = Field(20, ge=1)
    #: Seconds each table entry is timed at least.
    table_min_time_s: float = Field(0.3, ge=0)
    #: Random networks of the space measured whole to fit the learned correction of the table
    #: before the search (cached per space, size and machine): 0 (the table alone) or at least 8.
    calibration_networks: int = Field(32, ge=0)
    #: A network (zoo name or arch file) timed beside every table entry and calibration network to
    #: tell a host that changes speed by itself (a cloud VM) in its slow state: entries timed then are
    #: timed again, networks take their rounds in one state of the host (``cost.latency.reference_probe``).
    #: None: unprobed timing.
    probe: Optional[str] = Field(None, json_schema_extra=NAME_OR_FILE)
    #: Refuse, before the search, a target no network of the space is predicted to meet (the cheapest
    #: of 256 drawn over 1.5x the target) or one below the runtime's call overhead. False: a one-shot
    #: search runs anyway, its latency term pushing towards the space's fastest networks.
    check_target: bool = True

    _size = field_validator("size", mode="before")(classmethod(lambda cls, v: size_or_none(v)))

    @model_validator(mode="after")
    def _one_target(self) -> "LatencyTarget":
        if self.target_ms is not None and self.target_fps is not None:
            raise ValueError("give only one of latency.target_ms (--target-ms) or latency.target_fps (--target-fps)")
        if 0 < self.calibration_networks < 8:
            raise ValueError(f"latency.calibration_networks: 0 (no correction) or at least 8, got {self.calibration_networks}")
        return self

    @property
    def target(self) -> Optional[float]:
        """The target in ms (None when the search has none, e.g. a FLOPs-regularized one)."""
        if self.target_ms is not None:
            return self.target_ms
        return 1000.0 / self.target_fps if self.target_fps is not None else None


class FinalTraining(Settings):
    """Training of every found network once the search ends (0 epochs: none): from scratch, or from the
    weights a strategy names (``FoundNetwork.init``, e.g. the RL search's pre-trained encoder), with a
    named training recipe, the one ``segnas train --recipe`` and ``segnas compare`` use."""

    #: Epochs; None: until ``steps`` or ``minutes`` is spent, or 100 (``FINAL_EPOCHS``) without either;
    #: 0: no final training. Given together with a budget, whichever ends first stops training.
    epochs: Optional[int] = Field(None, ge=0)
    #: Optimizer-step budget (the same on every machine); the LR schedule runs over it.
    steps: Optional[int] = Field(None, ge=1)
    #: Time budget in minutes, counted on ``budget_clock`` (machine- and load-dependent).
    minutes: Optional[float] = Field(None, gt=0)
    #: How ``minutes`` is counted: wall clock, or process CPU time / threads.
    budget_clock: Literal["wall", "cpu"] = "wall"
    #: The training recipe: a shipped name (``segnas/recipes``) or a YAML file (``segnas.config.recipes``).
    recipe: str = Field("cpu-short", json_schema_extra=NAME_OR_FILE)
    #: Recipe settings on top of it (``TrainConfig`` fields, e.g. ``{ema_decay: null, swa_start: 0.75}``).
    overrides: dict[str, Any] = Field(default_factory=dict)
    #: Score the validation split every this many epochs (and at the end); None: as a training's
    #: ``eval_every`` None, every epoch, or about 100 times for a budget of more epochs.
    eval_every: Optional[int] = Field(None, ge=1)

    @field_validator("recipe")
    @classmethod
    def _known_recipe(cls, recipe: str) -> str:
        try:
            path = recipe_path(recipe)
        except SegnasError as exc:
            raise ValueError(str(exc).removeprefix("recipe: ")) from None
        return str(path.resolve()) if Path(recipe).suffix in (".yaml", ".yml") else recipe  # a file: from any folder

    @model_validator(mode="after")
    def _valid_training(self, info: ValidationInfo) -> "FinalTraining":
        refuse_idle(self, info, {name: (self.epochs == 0, "a setting of the final training, which epochs 0 turns "
                                                          "off") for name in type(self).model_fields if name != "epochs"})
        # whether a teacher comes is the method's: distillation settings are checked by the search
        # (``jobs.search.check_final_training``), here with a stand-in teacher
        try:
            overrides = self.overrides
            loss = merged(load_recipe(self.recipe), overrides).get("loss")
            if isinstance(loss, dict) and not (loss.get("teacher") or loss.get("teacher_model")):
                overrides = merged({"loss": {"teacher": "teacher.pt"}}, overrides)
            recipe_with(self.recipe, overrides, f"recipe {Path(self.recipe).name} with final.overrides",
                        new=new_settings(info))
        except SegnasError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def enabled(self) -> bool:
        return self.epochs != 0

    @property
    def epoch_limit(self) -> Optional[int]:
        """The epochs of a final training: as given, else none with a budget, else FINAL_EPOCHS."""
        if self.epochs is not None:
            return self.epochs
        return None if (self.steps or self.minutes) else FINAL_EPOCHS


#: Epochs of a final training given neither epochs nor a step or time budget.
FINAL_EPOCHS = 100


class ProxyEvaluatorSettings(Settings):
    """Scoring candidates with a zero-cost proxy on a few fixed training images (no training)."""

    #: A registered proxy name (listed on the SasWOT page), a rank aggregate (``az_nas``,
    #: ``rank_log(a,b)``, ``rank_mean(a,b)``) or a discovered proxy ``.json``.
    proxy: str = Field("nwot", json_schema_extra=NAME_OR_FILE)
    #: The split the proxy's images come from.
    split: str = "train"
    #: Images the proxy sees (None: a proxy file's own, else 8; swap needs 24 or more).
    images: Optional[int] = Field(None, ge=1)
    #: Images per batch: the proxies' statistical unit (each batch's BatchNorm statistics, NWOT's kernel,
    #: jacob_cov's correlations), which changes the scores; one pass over the whole batch
    #: sets its statistics, and the scoring passes then take at most 4 images at a time.
    batch_size: int = Field(8, ge=1)
    #: The images' size (HxW); None: a proxy file's own (the images' own size where it was
    #: discovered at theirs), else 128x160.
    size: Optional[tuple[int, int]] = None
    #: Score each candidate as the mean over this many weight initializations (None: a proxy file's, else 1).
    inits: Optional[int] = Field(None, ge=1)
    #: Seed of the proxy's own randomness (e.g. its random inputs).
    proxy_seed: int = Field(0, ge=0)

    _size = field_validator("size", mode="before")(classmethod(lambda cls, v: size_or_none(v)))


class TrainEvaluatorSettings(Settings):
    """Scoring candidates by a short training from scratch (val mIoU after a step budget)."""

    #: Optimizer steps of each candidate's training.
    steps: int = Field(300, ge=1)
    #: Overrides of the ground-truth training recipe (``TrainConfig`` fields).
    recipe: dict[str, Any] = Field(default_factory=dict)


class SupernetEvaluatorSettings(Settings):
    """Scoring candidates by their sub-network in a trained supernet (weight sharing)."""

    #: A one-shot search's run directory (its ``checkpoints/search_last.pt``, else ``pretrained.pt``)
    #: or a checkpoint file; its supernet must be of the searched space with the same options.
    checkpoint: Optional[str] = Field(None, json_schema_extra=PATH)
    #: Validation images each candidate is scored on (at most: the split's all when fewer).
    val_images: int = Field(50, ge=1)
    #: Training images that re-estimate each candidate's BatchNorm statistics first (at most, as ``val_images``).
    calibration_images: int = Field(80, ge=1)
    #: Images are resized to this HxW (None: the search size, else native).
    size: Optional[tuple[int, int]] = None

    _size = field_validator("size", mode="before")(classmethod(lambda cls, v: size_or_none(v)))


class EvaluatorSettings(Settings):
    """How a sample-based method scores a candidate."""

    #: proxy: a zero-cost proxy (no training); train: a short training from scratch; supernet: the
    #: candidate's sub-network in a trained supernet. Each has its section below.
    kind: Literal["proxy", "train", "supernet"] = "proxy"
    proxy: ProxyEvaluatorSettings = Field(default_factory=ProxyEvaluatorSettings)
    train: TrainEvaluatorSettings = Field(default_factory=TrainEvaluatorSettings)
    supernet: SupernetEvaluatorSettings = Field(default_factory=SupernetEvaluatorSettings)

    @model_validator(mode="after")
    def _settings_of_the_chosen_kind(self) -> "EvaluatorSettings":
        """Settings of another evaluator than ``kind``'s would do nothing: refused, named."""
        for other in ("proxy", "train", "supernet"):
            if other != self.kind and getattr(self, other) != type(getattr(self, other))():
                raise ValueError(f"{other}: settings of the {other} evaluator, which is not used (kind: {self.kind}); "
                                 f"set kind: {other}, or leave them out")
        return self


#: The settings of running a sample-based search's candidate evaluations in parallel.
CANDIDATE_EXECUTION = ("workers", "executor", "ray_address", "task_cpus", "task_gpus", "task_retries")
#: Execution settings only some executors use: setting -> those executors.
EXECUTOR_ONLY = {"ray_address": ("ray",), "task_cpus": ("ray",), "task_gpus": ("ray",),
                 "task_retries": ("process", "ray")}


#: Search settings that ``segnas search`` has a flag for (``--search-size`` for ``search_size``) among
#: those its errors name (a test checks them against the CLI).
FLAGGED = frozenset(CANDIDATE_EXECUTION) | {"search_size", "sync_bn"}


def named(field: str) -> str:
    """A search setting as an error names it: with its ``segnas search`` flag where it has one."""
    return f"{field} (--{field.replace('_', '-')})" if field in FLAGGED else field


def refuse_idle_execution(settings: Any, info: ValidationInfo, flags: bool = True) -> None:
    """A user's new settings whose executor would ignore some of them: Ray's settings without Ray,
    retries inline (named with their ``segnas search`` flag with ``flags``). (``workers`` > 1 inline
    is kept: evaluations run one at a time in batches of ``workers``, as the pool would run them,
    and the search's course is the pool's.)"""
    refuse_idle(settings, info, {name: (settings.executor not in executors, f"used only with executor "
                                           f"{' or '.join(executors)} (executor: {settings.executor})")
                                 for name, executors in EXECUTOR_ONLY.items() if name in type(settings).model_fields},
                named if flags else str)


#: What a job told no deployment input size hears (latency.size, nor a training crop or base size).
NO_LATENCY_SIZE = "latency.size: give the deployment input size (HxW), e.g. 360x480 (--size; or set data.crop_size)"


def deployment_size(latency: LatencyTarget, data: DataConfig) -> tuple[int, int]:
    """The size latency is for: ``latency.size``, else the training crop or base size (SegnasError
    when none is given)."""
    size = latency.size or data.crop_size or data.base_size
    if size is None:
        raise SegnasError(NO_LATENCY_SIZE)
    return tuple(size)


class SearchSettings(Settings):
    """What every search shares; the method's own section is the field named ``method``."""

    #: The search method (``segnas search METHOD``).
    method: str
    #: The job's name (the run directory's suffix); None: search-METHOD.
    job: Optional[JobName] = None
    data: DataConfig = Field(default_factory=DataConfig)
    #: Search on whole training images resized to this HxW (FasterSeg searched at half
    #: resolution); None searches on the data section's crops.
    search_size: Optional[tuple[int, int]] = None
    latency: LatencyTarget = Field(default_factory=LatencyTarget)
    #: Search budget in minutes (wall clock): sample-based methods stop proposing, one-shot
    #: methods stop after the epoch that exceeds it. None: the method's own end (0 is refused).
    minutes: Optional[float] = Field(None, gt=0)
    #: Candidate evaluations run at once (sample-based methods; one worker of the process executor runs
    #: in this process).
    workers: int = Field(1, ge=1)
    #: inline (in this process), process (a local pool of processes) or ray (a Ray cluster).
    executor: Literal["inline", "process", "ray"] = "process"
    #: The Ray cluster to run on (``host:port`` of its head, or ``auto``); None: a local Ray.
    ray_address: Optional[str] = None
    #: CPUs one evaluation reserves on Ray (also its torch threads).
    task_cpus: float = Field(1.0, gt=0)
    #: GPUs one evaluation reserves on Ray (a fraction or more).
    task_gpus: float = Field(0.0, ge=0)
    #: Times an evaluation is run again when its worker dies (then it is recorded as failed).
    task_retries: int = Field(2, ge=0)
    #: Where supernets and final trainings run: cpu, cuda, cuda:N, or auto.
    device: str = Field("cpu", pattern=r"^(cpu|auto|cuda(:\d+)?)$")
    #: bfloat16 autocast in supernet training where supported (final trainings follow their recipe).
    bf16: bool = False
    #: One-shot searches under torchrun: BatchNorm statistics over every process's batch.
    sync_bn: bool = False
    #: torch threads; None: OMP_NUM_THREADS where set, else the cores this process may use.
    threads: Optional[int] = Field(None, ge=1)
    #: Seed of the search (sampling, initialization, data order) and of the final training.
    seed: int = Field(0, ge=0)
    #: The folder run directories are created in.
    out_dir: str = Field("runs", json_schema_extra=PATH)
    #: Progress bars on the terminal (the one-line summary of each epoch is printed either way).
    progress: bool = True
    final: FinalTraining = Field(default_factory=FinalTraining)

    _sizes = field_validator("search_size", mode="before")(classmethod(lambda cls, v: size_or_none(v)))

    @model_validator(mode="before")
    @classmethod
    def _earlier_final(cls, data: Any, info: ValidationInfo) -> Any:
        """Runs of segnas before named recipes kept ``final.optim`` and ``final.ema_decay`` and trained
        in the search's ``bf16``: a saved run's are read as overrides of the recipe where they differ
        from it; a user's settings name the place they go."""
        final = data.get("final") if isinstance(data, dict) else None
        if not isinstance(final, dict) or not ("optim" in final or "ema_decay" in final):
            return data
        if not (info.context or {}).get(SAVED_RUN):
            key = "optim" if "optim" in final else "ema_decay"
            raise ValueError(f"final.{key}: a final training's settings go under final.overrides "
                             f"(final.overrides.{key}), on top of its recipe (final.recipe)")
        final = dict(final)
        earlier = {k: final.pop(k) for k in ("optim", "ema_decay") if k in final}
        earlier["bf16"] = bool(data.get("bf16", False))
        try:
            recipe = load_recipe(final.get("recipe", "cpu-short"))
        except SegnasError:
            recipe = {}  # the recipe's own check names it
        if "optim" in earlier and OptimConfig.model_validate(earlier["optim"]) == OptimConfig.model_validate(
                recipe.get("optim", {})):
            del earlier["optim"]
        for key in ("ema_decay", "bf16"):
            if key in earlier and earlier[key] == recipe.get(key):
                del earlier[key]
        if earlier:
            final["overrides"] = {**earlier, **(final.get("overrides") or {})}
        return {**data, "final": final}

    @model_validator(mode="after")
    def _execution(self, info: ValidationInfo) -> "SearchSettings":
        refuse_idle_execution(self, info)
        return self

    @model_validator(mode="after")
    def _job_name(self) -> "SearchSettings":
        if self.job is None:
            self.job = f"search-{self.method}"
        return self

    @property
    def job_name(self) -> str:
        return self.job or f"search-{self.method}"

    def deployment_size(self) -> tuple[int, int]:
        return deployment_size(self.latency, self.data)
