"""Settings of a comparison (``segnas compare``): search methods and zoo baselines on one dataset,
one latency target, one search budget, one final-training recipe, budget and set of seeds.

Each method's own settings are the settings of a ``segnas search METHOD`` run (its section under
its name, e.g. ``methods: {saswot: {saswot: {candidates: 500}}}``), less what the comparison fixes
for every method alike (``SHARED_SEARCH_FIELDS``); ``segnas.jobs.compare`` validates them.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, ValidationInfo, field_validator, model_validator

from segnas.config.base import JobName, NAME_OR_FILE, PATH, Settings, refuse_idle
from segnas.config.io import new_settings
from segnas.config.recipes import recipe_with
from segnas.config.search import LatencyTarget, deployment_size, refuse_idle_execution
from segnas.config.train import DataConfig
from segnas.errors import SegnasError

#: Search settings the comparison sets for every method (a method's own settings may not).
SHARED_SEARCH_FIELDS = ("method", "job", "data", "latency", "minutes", "final", "seed", "threads", "device",
                        "out_dir", "progress")
#: Optimizer steps of a final training given neither steps nor minutes.
DEFAULT_TRAIN_STEPS = 2000
#: How far from the target a measured latency may land and still count as on it: a found network
#: landing within it hit its target; a network measured at most this far over it runs within the
#: budget (sessions on a shared machine differ by 20-30%, a network's rounds within one by less).
TARGET_TOLERANCE = 0.15


class CompareTraining(Settings):
    """The final training of every network (found or zoo): one recipe, one budget, ``seeds`` seeds."""

    #: Budget in optimizer steps: the same training on every machine. None: 2000 (``DEFAULT_TRAIN_STEPS``)
    #: unless ``cpu_minutes`` is given.
    steps: Optional[int] = Field(None, ge=1)
    #: Budget in CPU-minutes per network instead of steps (segnas's CPU clock: the process's CPU time
    #: divided by its threads, a wall-clock minute on quiet cores). Not reproducible: another or a
    #: busy machine buys a different training with it. Give steps or cpu_minutes, not both.
    cpu_minutes: Optional[float] = Field(None, gt=0)
    #: Trainings per network, seeds ``seed``, ``seed + 1``, ...; mIoU is reported as mean ± std.
    seeds: int = Field(2, ge=1)
    #: Overrides of the training recipe (``TrainConfig`` fields: optim, loss, ema_decay, bf16, ...)
    #: over the ``cpu-short`` recipe (``segnas/recipes``; ``segnas.evaluate.short_train.GROUNDTRUTH_RECIPE``).
    recipe: dict[str, Any] = Field(default_factory=dict)

    @field_validator("recipe")
    @classmethod
    def _recipe_fields(cls, recipe: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        try:
            recipe_with("cpu-short", recipe, "train.recipe", new=new_settings(info))
        except SegnasError as exc:
            raise ValueError(str(exc).removeprefix("train.recipe: ")) from None
        return recipe

    @model_validator(mode="after")
    def _one_budget(self) -> "CompareTraining":
        if self.steps is not None and self.cpu_minutes is not None:
            raise ValueError("give train.steps or train.cpu_minutes, not both")
        if self.steps is None and self.cpu_minutes is None:
            self.steps = DEFAULT_TRAIN_STEPS
        return self


class CompareSettings(Settings):
    #: The job's name (the run directory's suffix).
    job: JobName = "compare"
    data: DataConfig = Field(default_factory=DataConfig)
    #: The test split scored when the dataset has it (None: never); else the column is left out.
    test_split: Optional[str] = "test"
    #: The target (latency.target_ms or target_fps), runtime, threads and size of every latency.
    latency: LatencyTarget = Field(default_factory=LatencyTarget)
    #: Methods by name, each with its own search settings (a ``segnas search`` settings mapping,
    #: its section under the method's name); a list of names takes every default. None: every
    #: registered method (random search, the baseline every method must beat, among them). Another
    #: label names its method with ``method:`` (one method in two spaces: ``saswot-mobile: {method:
    #: saswot, saswot: {space: mobile}}``).
    methods: Optional[dict[str, dict[str, Any]]] = None
    #: Zoo baselines by name. None: those measured within ``zoo_within`` times the target, and Fast-SCNN.
    zoo: Optional[list[str]] = None
    #: With ``zoo`` None: the zoo networks whose measured latency is within this factor of the target.
    zoo_within: float = Field(3.0, gt=0)
    #: Search budget of every method in CPU-minutes (a wall-clock minute of quiet cores, as training
    #: budgets count them), held as a wall-clock limit; the CPU time each search spent (all its threads
    #: and processes) is reported. None: each method's own end.
    search_cpu_minutes: Optional[float] = Field(None, gt=0)
    train: CompareTraining = Field(default_factory=CompareTraining)
    #: The interleaved latency session that times every network: runs per network at least.
    measure_min_runs: int = Field(20, ge=1)
    #: Seconds of timing per network at least, over the session's rounds.
    measure_min_time_s: float = Field(2.0, ge=0)
    #: Rounds of the latency session at least (each of measure_min_runs / measure_rounds runs and
    #: measure_min_time_s / measure_rounds seconds per network).
    measure_rounds: int = Field(5, ge=1)
    #: A zoo network timed before every block of the session to tell the host's state
    #: (``cost.latency.measure_latency_gated``): every figure is then taken in one state of the host
    #: (``cost.latency.reference_probe``).
    #: None: no probe, each network's quietest round's median (``LatencyResult.quietest_ms``).
    measure_probe: Optional[str] = Field("fast_scnn", json_schema_extra=NAME_OR_FILE)
    #: Jobs (searches, trainings) run at once.
    workers: int = Field(1, ge=1)
    #: inline (in this process), process (a local pool of processes) or ray (a Ray cluster).
    executor: Literal["inline", "process", "ray"] = "process"
    #: The Ray cluster to run on (``host:port`` of its head, or ``auto``); None: a local Ray.
    ray_address: Optional[str] = None
    #: torch threads of each job (and of latency timing without latency.threads); None: OMP_NUM_THREADS where set,
    #: else the cores this process may use.
    threads: Optional[int] = Field(None, ge=1)
    #: Where searches and trainings run: cpu, cuda, cuda:N, or auto.
    device: str = Field("cpu", pattern=r"^(cpu|auto|cuda(:\d+)?)$")
    #: The first training seed and every search's seed.
    seed: int = Field(0, ge=0)
    #: The folder run directories are created in.
    out_dir: str = Field("runs", json_schema_extra=PATH)
    #: Progress bars and per-job lines on the terminal.
    progress: bool = True
    #: Also write the HTML report (``segnas report``) of the comparison, where installed.
    report: bool = True

    @field_validator("methods", mode="before")
    @classmethod
    def _method_list(cls, v: Any) -> Any:
        """``[saswot, random]`` or ``"saswot,random"``: those methods with their default settings."""
        if isinstance(v, str):
            v = [m.strip() for m in v.split(",") if m.strip()]
        if isinstance(v, (list, tuple)):
            return {str(m): {} for m in v}
        if isinstance(v, dict):
            return {k: ({} if s is None else s) for k, s in v.items()}
        return v

    @model_validator(mode="after")
    def _checks(self, info: ValidationInfo) -> "CompareSettings":
        refuse_idle_execution(self, info, flags=False)  # (segnas compare sets them with --set)
        refuse_idle(self, info, {"zoo_within": (self.zoo is not None, "the latency window of the zoo baselines chosen "
                                                                      "by latency; zoo names them")})
        if self.latency.target is None:
            raise ValueError("latency.target_ms: a comparison needs a latency target (or latency.target_fps)")
        if self.methods is not None and not self.methods and not self.zoo:
            raise ValueError("methods: empty, and no zoo network either; nothing to compare")
        if (self.latency.size or self.data.crop_size or self.data.base_size) is None:
            raise ValueError("latency.size: give the deployment input size (HxW), e.g. 360x480, or data.crop_size")
        return self

    def deployment_size(self) -> tuple[int, int]:
        return deployment_size(self.latency, self.data)
