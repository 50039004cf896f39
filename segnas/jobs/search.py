"""The one search job: any registered strategy → its found networks as arch files → measured →
trained (teachers first, then the networks distilled from them) → ``search_result.json``.

Every search writes the same run directory: ``config.yaml`` (the common settings and the method's
section), ``log.txt``, ``metrics.jsonl``, ``arch.json`` (the network measured against the target;
other found networks as ``<name>.json``), ``search_result.json`` (schema below) and ``train/``;
``--resume RUN_DIR`` continues a killed job at any stage.

``search_result.json``: ``method``, ``space``, ``target_ms``, ``size``, ``backend``, ``threads``,
``machine`` (the CPU, cores and fingerprint the latency figures hold for: ``cost.machine.machine_record``),
``search_wall_seconds``, ``search_cpu_seconds`` (this process and its workers, summed over every
process of a resumed search), ``resumed``,
``networks`` (per name: ``role``, ``predicted_ms``, ``measured_ms`` (the quietest of 5 timing rounds'
medians, ``LatencyResult.quietest_ms``; ``measured_median_ms``: over every run), ``latency_vs_target``,
``measured_other_cores`` (cores other processes kept busy around that measurement),
``params``, ``gflops``, ``training``) and ``details`` (the method's own figures).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from pydantic import ValidationInfo, create_model, model_validator

from segnas.config.base import first_idle, refuse_idle
from segnas.config.io import build_config, merged, read_yaml
from segnas.config.recipes import recipe_data, recipe_with
from segnas.config.search import SearchSettings, named
from segnas.config.train import TrainConfig
from segnas.cost import LatencyModel, count_flops, count_parameters
from segnas.cost.backends import check_backend
from segnas.cost.calibration import HeldCorrections
from segnas.cost.latency import LatencyResult, measure_latency_interleaved
from segnas.cost.machine import busiest, machine_record, other_processes_cores
from segnas.cost.memory import check_inference_size
from segnas.data import dataset_classes, validate_dataset
from segnas.engine import distributed
from segnas.engine.device import resolve_device
from segnas.engine.rundir import RunDir, best_checkpoint, run_kind
from segnas.parallel import TaskResources, check_ray
from segnas.progress import Echo, NotesOnce, SaidBeforeRun
from segnas.report.runfiles import training_folder
from segnas.errors import SegnasError
from segnas.search.base import FoundNetwork, SearchContext, SearchResult, Strategy, get_strategy
from segnas.search.rank0_latency import timed_on_rank0
from segnas.spaces.base import save_arch
from segnas.training import open_run, resolve_model, start_job, train_job
from segnas.training.cached import resumable_training
from segnas.training.job import check_classes
from segnas.training.start import check_resumed_classes, keep_classes, refuse_other_run
from segnas.utils import atomic_write_text, cpu_seconds, read_record

_CLASSES: dict[str, type[SearchSettings]] = {}


def settings_class(method: str) -> type[SearchSettings]:
    """``SearchSettings`` with the section of ``method`` (a field of that name, all defaults); new
    settings that set a shared setting the method does not use are refused, named."""
    if method not in _CLASSES:
        cls = get_strategy(method)
        section = cls.settings_class

        def used(settings: SearchSettings, info: ValidationInfo) -> SearchSettings:
            refuse_idle(settings, info, {name: (True, f"not used by segnas search {method}: {why}")
                                         for name, why in cls.unused_settings(settings).items()}, named)
            return settings

        _CLASSES[method] = create_model(f"{section.__name__}Search", __base__=SearchSettings,
                                        __validators__={"_used_settings": model_validator(mode="after")(used)},
                                        **{method: (section, section())})
    return _CLASSES[method]


def make_settings(method: str, data: dict[str, Any], source: str = "options", new: bool = False) -> SearchSettings:
    """Validated settings of a ``method`` search from a nested mapping (``method`` filled in);
    ``new``: a user's settings for a new search (``config.io.NEW_SETTINGS``)."""
    return build_config(settings_class(method), {**data, "method": method}, source, new=new)


def check_method_of_file(config: str | Path | None, method: str) -> None:
    """A settings file for a new search may name its method (``method:``) only if it is ``method``:
    one naming another is refused rather than run as ``method``."""
    path = Path(config) if config is not None else None
    data = (read_yaml(path) or {}) if path is not None and path.is_file() else {}
    if isinstance(data, dict) and data.get("method", method) != method:
        raise SegnasError(f"{path}: method: {data['method']}, but this is a {method} search; search with "
                          f"{data['method']}, or drop the file's method")


def logged(echo: Echo, run: RunDir) -> Echo:
    """``echo`` that also writes each line to ``run``'s log."""
    def both(message: str) -> None:
        run.log(message)
        echo(message)
    return both


def run_method(run_dir: str | Path) -> str:
    """The method a search run directory was started with (read from its config.yaml)."""
    RunDir.check_existing(run_dir)
    path = Path(run_dir) / "config.yaml"
    refuse_other_run(run_dir, run_kind(run_dir), "search")
    saved = read_yaml(path)
    if not isinstance(saved, dict) or not isinstance(saved.get("method"), str):
        raise SegnasError(f"{path}: no 'method' setting; not the config.yaml of a search run")
    return saved["method"]


#: Seconds between two saves of a running search's clock (a killed search loses at most this much).
CLOCK_PERIOD_S = 5.0


class SearchClock:
    """Wall and CPU seconds a search has spent, over every process that worked on it, but those
    ``latency`` spent timing table entries it met for the first time (what an earlier job left in
    the cache would change them): the totals are saved in the run directory every
    ``CLOCK_PERIOD_S`` seconds, and a resumed search starts from them (a killed process loses at
    most one period)."""

    FILE = "search_clock.partial.json"

    def __init__(self, run: RunDir, latency: LatencyModel | None = None, period_s: float = CLOCK_PERIOD_S) -> None:
        self.path = run.path / self.FILE
        prior = read_record(self.path, "the search's time so far is not counted") or {}
        self.prior = (float(prior.get("search_wall_seconds", 0.0)), float(prior.get("search_cpu_seconds", 0.0)))
        self.timing = latency.timing_seconds if latency is not None else [0.0, 0.0]
        self.timed0 = tuple(self.timing)
        self.wall0, self.cpu0 = time.perf_counter(), cpu_seconds()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._save_every, args=(period_s,), daemon=True)
        self._thread.start()

    def totals(self) -> dict[str, float]:
        timed_wall, timed_cpu = (now - then for now, then in zip(self.timing, self.timed0))
        return {"search_wall_seconds": round(self.prior[0] + time.perf_counter() - self.wall0 - timed_wall, 3),
                "search_cpu_seconds": round(self.prior[1] + cpu_seconds() - self.cpu0 - timed_cpu, 3)}

    def _save_every(self, period_s: float) -> None:
        while not self._stop.wait(period_s):
            atomic_write_text(self.path, json.dumps(self.totals()))

    def stop(self) -> dict[str, float]:
        """The totals, saved; no more saves."""
        self._stop.set()
        self._thread.join()
        totals = self.totals()
        atomic_write_text(self.path, json.dumps(totals))
        return totals


def latency_probe(source: str | None, num_classes: int, field: str = "latency.probe") -> torch.nn.Module | None:
    """The probe network the setting ``field`` names (a zoo name or an arch file), or None; errors
    name the setting."""
    if not source:
        return None
    try:
        return resolve_model(source, num_classes)[0].eval()
    except SegnasError as exc:
        raise SegnasError(f"{field}: {exc}") from None


def search_latency_model(cfg: SearchSettings, num_classes: int) -> LatencyModel:
    """The latency model a search's settings describe (its table on this machine, its probe)."""
    return LatencyModel.from_settings(cfg.latency, cfg.deployment_size(), cfg.threads,
                                      probe=latency_probe(cfg.latency.probe, num_classes))


def prepare_search(cfg: SearchSettings, strategy: Strategy, echo: Echo, latency: LatencyModel | None = None,
                   new: bool = True, check_data: bool = True, calibrate: bool = True,
                   held: HeldCorrections | None = None) -> SearchContext:
    """Everything a search does before its run directory exists: each check that can fail on user
    input (device, backend, target, data, final training, the strategy's ``prepare``, Ray), then the
    latency correction (``calibrate``). ``new``: the settings of a new search; ``check_data=False``:
    the data was checked by the caller (a comparison checks it once for every method); ``held``:
    corrections fitted for the caller alone (a comparison's, on a busy host), used where they fit."""
    if distributed.context().enabled and strategy.family != "one-shot":
        raise SegnasError(f"segnas search {cfg.method}: a sample-based search runs its candidates in parallel with "
                          "--workers (executor process or ray), not under torchrun (which runs the one-shot searches "
                          "fasterseg, ssr and gas data-parallel)")
    resolve_device(cfg.device)  # where the supernet and the final training run: here, or refused now
    distributed.check_batch_split(cfg.data.batch_size)  # (the supernet's batch, under torchrun)
    check_backend(cfg.latency.backend, "latency.backend (--backend)")
    if strategy.target_required(cfg) and cfg.latency.target is None:
        raise SegnasError("latency.target_ms: give the latency target (or latency.target_fps; --target-ms or "
                          "--target-fps)")
    names = dataset_classes(cfg.data).names
    num_classes = len(names)
    size = latency.size if latency is not None else cfg.deployment_size()
    check_inference_size(size, num_classes, "latency.size (--size)")
    if check_data:
        validate_dataset(cfg.data, cfg.progress, echo)
    check_final_training(cfg, names, strategy.hands_over_teacher, new=new)
    if latency is None:
        latency = search_latency_model(cfg, num_classes)
    if held is not None:
        held.lend(latency.corrections)
    ctx = SearchContext(cfg, None, latency, num_classes, echo)

    def prepare() -> None:
        strategy.prepare(ctx)
        if getattr(cfg, "executor", "inline") == "ray":
            check_ray(cfg.workers, cfg.ray_address, TaskResources.from_settings(cfg))
        space = strategy.latency_space(ctx)
        if calibrate and space is not None and cfg.latency.calibration_networks:
            latency.calibrate(space, num_classes, cfg.latency.calibration_networks, cfg.progress, echo)

    timed_on_rank0(latency, prepare)
    return ctx


#: A finished search's summary, in its run directory (the schema: the module's docstring).
RESULT_FILE = "search_result.json"


def finished_search(run_path: Path) -> dict[str, Any] | None:
    """A finished search's summary plus its ``run_dir``; None while the search has not finished."""
    path = run_path / RESULT_FILE
    summary = read_record(path, "the search's end runs again")
    return {**summary, "run_dir": str(run_path)} if summary is not None else None


def search_job(settings: SearchSettings | None, resume: str | Path | None = None, echo: Echo | None = None,
               latency: LatencyModel | None = None, changes: Mapping[str, Any] | None = None,
               held: HeldCorrections | None = None) -> dict[str, Any]:
    """Run (or, with ``resume``, continue) a search; returns the summary written to
    ``search_result.json`` plus ``run_dir``. ``latency`` replaces the latency model the settings
    describe (a calibrated or precomputed table; tests use a deterministic one). ``changes``: the
    ``training.start.RESUMABLE`` settings a resumed search takes anew; ``held``: as ``prepare_search``."""
    notes, told = NotesOnce(), echo or (lambda m: None)
    said = SaidBeforeRun(told)  # (its run's log.txt keeps what the search says before the run exists)
    echo = notes.wrap(said)
    cls = settings_class(run_method(resume) if resume is not None else settings.method)
    cfg, run = start_job(cls, settings, resume, "search", changes)
    if run is not None and (finished := finished_search(run.path)) is not None:  # nothing left: not timed again
        echo(f"{run.path}: this search has finished; its result: {run.path / RESULT_FILE}")
        return finished
    strategy = get_strategy(cfg.method)()
    names = dataset_classes(cfg.data).names
    if run is not None:
        check_resumed_classes(run.path, names, cfg.data.root)
    ctx = prepare_search(cfg, strategy, echo, latency, new=resume is None, held=held)
    latency = ctx.latency
    ctx.run = open_run(cfg, run)
    if run is None:  # (a resumed search from before the record was checked against nothing: none written)
        keep_classes(ctx.run, names)
    said.log_into(ctx.run.log)
    echo = ctx.echo = notes.wrap(logged(told, ctx.run))  # what the search prints, its log.txt keeps too
    done = ctx.run.path / RESULT_FILE
    echo(f"{cfg.method}: latency {latency.describe()}, run {ctx.run.path}")
    clock = SearchClock(ctx.run, latency)
    try:
        result = strategy.run(ctx)
    finally:
        spent = clock.stop()
    clock = distributed.broadcast_object(_search_clock(ctx.run, {**spent, "resumed": resume is not None})
                                         if distributed.is_main() else None)
    summary = {"method": cfg.method, "space": result.found.space.name, "target_ms": latency.target_ms,
               "size": list(latency.size), "backend": latency.backend, "threads": latency.threads,
               "machine": machine_record(latency.table.device), **clock,
               "networks": {}, "details": result.details}
    # timed by rank 0 alone (ranks timing at once would share the cores), its figures sent to the others
    summary["networks"] = distributed.broadcast_object(
        {net.name: measure_found(net, ctx) for net in result.networks} if distributed.is_main() else None)
    found = summary["networks"][result.found.name]
    if latency.target_ms:
        echo(f"found network: {found['measured_ms']:.2f} ms measured vs target {latency.target_ms:.2f} ms "
             f"({100 * found['latency_vs_target']:+.1f}%)")
    if cfg.final.enabled:
        train_found(result, ctx, summary, echo)  # data-parallel under torchrun
    if distributed.is_main():
        atomic_write_text(done, json.dumps(summary, indent=2))
    return {**summary, "run_dir": str(ctx.run.path)}


def _search_clock(run: RunDir, clock: dict[str, Any]) -> dict[str, Any]:
    """The search's time, kept from the first completion (a job resumed only to train reports the
    time its search took then)."""
    path = run.path / "search_clock.json"
    kept = read_record(path, "the search's time is taken from this process's count")
    if kept is not None:
        clock = kept
    else:
        atomic_write_text(path, json.dumps(clock))
    (run.path / SearchClock.FILE).unlink(missing_ok=True)  # the running totals, superseded
    return clock


def arch_file(run: RunDir, net: FoundNetwork) -> Path:
    return run.path / ("arch.json" if net.role == "found" and net.name == "arch" else f"{net.name}.json")


def time_found(model: torch.nn.Module, shape: tuple[int, ...], backend: str, threads: int, min_runs: int = 20,
               min_time_s: float = 3.0, rounds: int = 5) -> LatencyResult:
    """A found network timed whole at the end of its search: ``rounds`` blocks of runs, its
    ``quietest_ms`` the figure (a busy host slows some rounds, never speeds one up)."""
    return measure_latency_interleaved({"found": model}, shape, backend, threads, min_runs=min_runs,
                                       min_time_s=min_time_s, rounds=rounds)["found"]


def measure_found(net: FoundNetwork, ctx: SearchContext) -> dict[str, Any]:
    """Write ``net``'s arch file; its predicted latency (corrected, and the table's alone) and measured
    latency (vs the target), params, GFLOPs."""
    latency = ctx.latency
    path = arch_file(ctx.run, net)
    predicted = net.predicted_ms if net.predicted_ms is not None else latency.predict(net.space, net.arch,
                                                                                      ctx.num_classes)
    extra = {"num_classes": ctx.num_classes, "predicted_latency_ms": predicted, "target_ms": latency.target_ms,
             "backend": latency.backend, "size": list(latency.size), "method": ctx.settings.method, **net.info}
    save_arch(path, net.space, net.arch, **extra)
    if net.role == "found" and not (ctx.run.path / "arch.json").is_file():
        save_arch(ctx.run.path / "arch.json", net.space, net.arch, **extra)
    model = net.space.build(net.arch, ctx.num_classes).eval()
    row: dict[str, Any] = {"role": net.role, "arch_file": path.name, "predicted_ms": predicted,
                           "predicted_table_ms": latency.predict_table(net.space, net.arch, ctx.num_classes),
                           "correction": latency.correction(net.space, ctx.num_classes) is not None,
                           "params": count_parameters(model), "gflops": count_flops(model, latency.input_shape).gflops}
    if net.role == "found":
        before = other_processes_cores()
        measured = time_found(model, latency.input_shape, latency.backend, latency.threads)
        others = busiest(before, other_processes_cores())
        row["measured_ms"] = measured.quietest_ms
        row["measured_median_ms"] = measured.median_ms
        row["latency_vs_target"] = measured.quietest_ms / latency.target_ms - 1.0 if latency.target_ms else None
        row["measured_other_cores"] = None if others is None else round(others, 2)
    return row


def check_final_training(s: SearchSettings, names: Sequence[str], with_teacher: bool = False,
                         new: bool = True) -> None:
    """The final training's recipe and overrides with the search's data settings: valid together
    (``with_teacher``: also for a network distilled from a found teacher), and the classes they name
    among the dataset's (``names``); checked before the search, not after it."""
    f = s.final
    if f.epochs == 0:
        return
    for teacher in ([None, Path("teacher.pt")] if with_teacher else [None]):
        recipe = recipe_with(f.recipe, merged(distillation(teacher), f.overrides), "final.overrides")
        cfg = build_config(TrainConfig, {**recipe, "data": recipe_data(recipe, s.data)}, "final")
        check_classes(cfg, names, "final.overrides: ")
        distributed.check_batch_split(cfg.data.batch_size, "final: the training's data.batch_size")
        idle = None if with_teacher or not new else first_idle(cfg.loss, cfg.loss.idle_distillation())
        if idle:
            raise SegnasError(f"final.overrides: loss.{idle[0]}: {idle[1]}, and segnas search {s.method} hands its "
                              "final training none; leave it out")


def distillation(teacher_ckpt: Path | None) -> dict[str, Any]:
    """The loss settings of a final training distilled from a found teacher (pixel-wise KD, weight 1,
    auxiliary heads 0.2: FasterSeg's recipe), defaults under the user's ``final.overrides``."""
    return {"loss": {"teacher": str(teacher_ckpt), "kd_weight": 1.0, "aux_weight": 0.2}} if teacher_ckpt else {}


def final_train_config(ctx: SearchContext, net: FoundNetwork, teacher_ckpt: Path | None) -> TrainConfig:
    """Training of a found network from scratch (from ``net.init`` when the strategy gives one) with
    the recipe ``final.recipe`` (and ``final.overrides``, bf16 included); the search's data settings
    that differ from the defaults sit on the recipe's augmentation; with a teacher, pixel-wise KD
    from it too (weight 1, auxiliary heads 0.2: FasterSeg's recipe)."""
    s, f = ctx.settings, ctx.settings.final
    recipe = recipe_with(f.recipe, merged(distillation(teacher_ckpt), f.overrides), "final.overrides")
    return build_config(TrainConfig, {
        **recipe, "job": f"{s.job_name}-{net.name}",
        "data": recipe_data(recipe, s.data),
        "model": {"name": None, "arch": str(arch_file(ctx.run, net)), "init": net.init},
        "epochs": f.epoch_limit, "max_steps": f.steps, "time_budget_min": f.minutes, "budget_clock": f.budget_clock,
        "eval_every": f.eval_every, "threads": s.threads,
        "seed": s.seed, "device": s.device, "out_dir": str(ctx.run.path / "train"), "progress": s.progress},
        "final")


def train_found(result: SearchResult, ctx: SearchContext, summary: dict[str, Any], echo: Echo) -> None:
    """Train the teachers, then every found network (distilled from its teacher when it names one)."""
    checkpoints: dict[str, Path] = {}
    for net in sorted(result.networks, key=lambda n: n.role != "teacher"):
        teacher = checkpoints.get(net.distill_from) if net.distill_from else None
        trained = train_stage(ctx.run.path, net.name, final_train_config(ctx, net, teacher), echo)
        summary["networks"][net.name]["training"] = trained
        folder = training_folder(ctx.run.path, trained["run_dir"]) or ctx.run.path / trained["run_dir"]
        checkpoints[net.name] = best_checkpoint(folder)


def train_stage(run_path: Path, name: str, train_cfg: TrainConfig, echo: Echo) -> dict[str, Any]:
    """Train one found network; skipped when its summary exists, resumed when its run directory does."""
    done = run_path / f"{name}_train.json"
    recorded = read_record(done, "the training is continued from its folder")
    if recorded is not None:
        return recorded
    r = train_job(train_cfg, resume=resumable_training(run_path / "train", train_cfg, train_cfg.job, echo), echo=echo)
    # the training's folder relative to the search's run directory: found again when that is moved
    result = {"run_dir": os.path.relpath(Path(r.run_dir).resolve(), run_path.resolve()),
              "best_val_miou": r.best_miou, "final": r.final, "steps": r.final.get("step"),
              "epochs": r.epochs_done, "train_seconds": round(r.train_seconds, 1), "init": r.init}
    atomic_write_text(done, json.dumps(result, indent=2))
    return result
