"""`segnas compare`: search methods and zoo baselines compared on one dataset for one latency target.

Every chosen method searches (``segnas.jobs.search.search_job``, its final training off) under one
budget; the network each found and the zoo baselines are then trained with one recipe, one budget
and the same seeds, scored on the validation split (and the test split when the dataset has one),
and measured in one interleaved latency session (``measure_latency_interleaved``) so that their
latency ratios are fair.

Every search and every training is a job run through ``segnas.parallel.run_all`` (in this process,
a process pool or Ray) with its result appended to ``jobs.jsonl`` in the run directory; each job
works in its own folder (``search/<method>/``, ``train/<network>-seed<k>/``), so a killed
comparison resumed with ``--resume RUN_DIR`` reuses every finished job and continues a killed one
from its last checkpoint. A method that fails on its input (a target its space cannot meet) is
reported as failed and the others go on.

Run directory: ``config.yaml``, ``jobs.jsonl``, ``zoo_selection.json`` (when the zoo is chosen by
latency), ``latency.json`` (the interleaved session), ``compare.json`` (every figure, every seed),
``compare.md`` (the table and per-class IoU) and ``pareto.png``.
"""

from __future__ import annotations

import copy
import glob
import inspect
import json
import re
import shutil
import statistics
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from segnas.config.compare import SHARED_SEARCH_FIELDS, TARGET_TOLERANCE, CompareSettings
from segnas.config.io import absolute_paths, build_config, load_config
from segnas.config.recipes import recipe_data, recipe_with
from segnas.config.search import SearchSettings
from segnas.config.train import TrainConfig
from segnas.cost import count_flops, count_parameters
from segnas.cost.backends import check_backend
from segnas.cost.calibration import HeldCorrections
from segnas.cost.latency import (LatencyResult, default_threads, job_threads, measure_latency_gated,
                                 measure_latency_interleaved, reference_probe, steady_median)
from segnas.cost.machine import is_busy, machine_record
from segnas.data import build_dataset, dataset_classes, has_split, validate_dataset, validate_split
from segnas.engine.device import describe_device, resolve_device
from segnas.engine.rundir import RunDir, best_checkpoint, latest_run, run_kind
from segnas.errors import CannotWrite, SegnasError, TargetOutOfReach, TrainingDiverged
from segnas.jobs.evaluate import eval_job
from segnas.jobs.report import report_job
from segnas.jobs.search import (finished_search, latency_probe, make_settings, prepare_search, search_job,
                                search_latency_model)
from segnas.parallel import TaskResources, check_ray, run_all
from segnas.parallel.runner import failure_message
from segnas.parallel.store import forget, read_store
from segnas.progress import Echo
from segnas.registry import plugin_hint
from segnas.report.compare_md import compare_table
from segnas.report.format import pct
from segnas.report.pareto import plot_pareto
from segnas.report.runfiles import NOTE_PREFIX, found_network, log_notes
from segnas.search.base import get_strategy, list_strategies
from segnas.spaces.base import arch_key, read_arch_file
from segnas.training import open_run, resolve_model, start_job, train_job
from segnas.training.cached import resumable_training
from segnas.training.start import check_resumed_classes, keep_classes
from segnas.utils import atomic_write_text, cpu_seconds, json_float, read_json, read_jsonl, read_record
from segnas.zoo import MODELS, zoo_name

#: The zoo network every comparison trains (the reference of real-time segmentation on CPU).
REFERENCE_ZOO = "fast_scnn"
#: Results of finished jobs, one JSON line each, in the run directory.
JOBS_FILE = "jobs.jsonl"
#: A found network's figures at its search and in the session further apart than this are noted.
SEARCH_SESSION_GAP = 0.25


# ---------------------------------------------------------------------------------- the plan
def latency_threads(cfg: CompareSettings) -> int:
    """Threads of every latency measurement: latency.threads, else the jobs' threads, else all cores."""
    return cfg.latency.threads or cfg.threads or default_threads()


def latency_description(cfg: CompareSettings) -> str:
    h, w = cfg.deployment_size()
    threads = latency_threads(cfg)
    return f"{cfg.latency.backend}, {threads} thread{'s' * (threads != 1)}, {h}x{w}"


def chosen_methods(cfg: CompareSettings) -> dict[str, dict[str, Any]]:
    """The compared entries by label, each with its own settings; every registered method when none
    are named. A label other than a method's name says which method it runs with ``method:`` (e.g.
    ``saswot-mobile: {method: saswot, saswot: {space: mobile}}``: one method, two spaces)."""
    known = list_strategies()
    methods = cfg.methods if cfg.methods is not None else {name: {} for name in known}
    for label, own in methods.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", label) or label in MODELS:
            raise SegnasError(f"methods.{label}: a label names folders and jobs: letters, digits, '_', '.', '-', "
                              f"and not a zoo network's name")
        method = method_of(label, own)
        if method not in known:
            raise SegnasError(f"methods.{label}: unknown method {method!r} (known: {', '.join(known)}; "
                              f"another label names its method with 'method:'; {plugin_hint()})")
    return methods


def method_of(label: str, own: dict[str, Any]) -> str:
    """The registered method an entry of ``methods`` runs: its ``method:`` field, else its label."""
    return str(own.get("method", label))


#: The comparison's name of a search setting it fixes for every method, where the two differ.
TOP_LEVEL_NAMES = {"minutes": "search_cpu_minutes", "final": "train"}


def search_settings(cfg: CompareSettings, label: str, own: dict[str, Any], folder: Path,
                    new: bool = False) -> SearchSettings:
    """The settings of entry ``label``'s search: its own settings with what the comparison fixes for
    all (data, latency, budget, seed, threads, device; no final training: the comparison trains);
    ``new``: checked as a user's settings for a new search (a comparison that starts)."""
    method = method_of(label, own)
    own = {k: v for k, v in own.items() if k != "method"}
    shared = sorted(set(own) & set(SHARED_SEARCH_FIELDS))
    if shared:
        top = TOP_LEVEL_NAMES.get(shared[0], shared[0])
        raise SegnasError(f"methods.{label}.{shared[0]}: set by the comparison for every method alike (set the "
                          f"top-level {top!r}, not per method)")
    latency = {**cfg.latency.model_dump(mode="json"), "size": list(cfg.deployment_size()),
               "threads": latency_threads(cfg)}
    common = {"job": f"search-{label}", "data": cfg.data.model_dump(mode="json"), "latency": latency,
              "minutes": cfg.search_cpu_minutes, "final": {"epochs": 0}, "seed": cfg.seed, "threads": cfg.threads,
              "device": cfg.device, "out_dir": str(folder), "progress": False}
    settings = make_settings(method, {**own, **common}, f"methods.{label}", new=new)
    if new and getattr(getattr(settings, method), "inherit_weights", False):
        raise SegnasError(f"methods.{label}.{method}.inherit_weights: a comparison trains every network from scratch "
                          "for the same steps; leave it out")
    return settings


#: What a comparison's checks spent on latency before its searches, and the corrections they fitted
#: for it alone (on a busy host: not cached), which every search job holds (``LatencySetup``).
LATENCY_SETUP_FILE = "latency_setup.json"


@dataclass(frozen=True)
class LatencySetup:
    """The CPU seconds a comparison's checks spent before its searches (timing the latency table,
    fitting each space's correction) and the corrections fitted for this comparison alone."""

    cpu_seconds: float
    held: HeldCorrections

    def save(self, run_path: Path) -> None:
        atomic_write_text(run_path / LATENCY_SETUP_FILE, json.dumps({"cpu_seconds": round(self.cpu_seconds, 3),
                                                                     **self.held.to_dict()}, indent=1))

    @classmethod
    def read(cls, run_path: Path) -> "LatencySetup | None":
        """The comparison's setup (None for one an earlier segnas started, which wrote none)."""
        path = run_path / LATENCY_SETUP_FILE
        if not path.is_file():
            return None
        data = read_json(path)
        return cls(float(data["cpu_seconds"]), HeldCorrections.from_dict(data))


def check_searches(searches: dict[str, SearchSettings], echo: Echo,
                   held: HeldCorrections | None = None) -> LatencySetup:
    """Every method's search (its settings by label) checked as it will run (``prepare_search``:
    its space, proxy, evaluator, supernet, Ray) before any of them starts, so that one failing on
    its input is refused now, named, not after the others have searched. A target a method's space
    cannot meet is not refused: that method's row will say so, and the others go on. Each space's
    latency correction is calibrated here, once for every method, before parallel jobs load the
    cores: the jobs read it from the cache or, fitted on a busy host, from the setup returned.
    ``held``: corrections the caller fitted in this process (the demo's, for its target)."""
    cpu0 = cpu_seconds()
    if not searches:
        return LatencySetup(0.0, HeldCorrections({}, {}))
    first = next(iter(searches.values()))
    latency = search_latency_model(first, dataset_classes(first.data).num_classes)  # every method's alike
    if held is not None:
        held.lend(latency.corrections)
    for label, settings in searches.items():
        try:
            prepare_search(settings, get_strategy(settings.method)(), lambda line, at=label: echo(f"{at}: {line}"),
                           latency, check_data=False)
        except TargetOutOfReach as exc:
            echo(f"{label}: {exc.in_comparison()} (its row will say so; the other methods go on)")
        except CannotWrite:  # (the machine's, not the method's)
            raise
        except SegnasError as exc:
            raise SegnasError(method_error(label, str(exc))) from None
        except Exception as exc:  # a defect in the method: named in one line, as a job that breaks is
            raise SegnasError(f"methods.{label}: its search failed its checks: {type(exc).__name__}: {exc}") from exc
    return LatencySetup(cpu_seconds() - cpu0, HeldCorrections.of(latency.corrections))


def method_error(label: str, message: str) -> str:
    """``message``, an error of entry ``label``'s search, as the comparison's: one about a setting
    the comparison fixes for every method (``data.*``, ``latency.*``, ...) names the top-level
    setting and the method it failed for; any other is the method's own (``methods.LABEL: ...``)."""
    first = message.split(":", 1)[0].split(" ")[0].split(".")[0]
    if first not in SHARED_SEARCH_FIELDS:
        return f"methods.{label}: {message}"
    top = TOP_LEVEL_NAMES.get(first, first)
    rest = re.sub(r" \(--[^)]*\)", "", message[len(first):])  # (a search's options, which compare does not have)
    return f"{top}{rest} (the comparison's setting, for methods.{label})"


def same_network_notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """A note for each network that several methods found (their ``arch``: the same space and
    architecture): their latencies differ by measurement alone, their scores by training alone."""
    by_network: dict[str, list[str]] = {}
    for row in rows:
        if row.get("arch"):
            key = json.dumps({"space": row["arch"].get("space"), "arch": row["arch"].get("arch")}, sort_keys=True)
            by_network.setdefault(key, []).append(row["name"])
    return [f"{', '.join(names[:-1])} and {names[-1]} found the same network: their latencies differ by "
            "measurement alone, their scores by training alone" for names in by_network.values() if len(names) > 1]


def training_notes(path: Path, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The notes and warnings of the final trainings' logs (a budget that ends in the warm-up, a
    class no mask holds, ...), each once, with the trainings that gave it."""
    by_note: dict[str, list[str]] = {}
    for row in rows:
        for seed in row["seeds"]:
            if seed.get("run_dir"):
                for note in log_notes(path / seed["run_dir"] / "log.txt"):
                    by_note.setdefault(NOTE_PREFIX.sub("", note), []).append(f"{row['name']} seed {seed['seed']}")
    total = sum(len(row["seeds"]) for row in rows)
    return [f"{'every final training' if len(names) == total else ', '.join(names)}: {note}"
            for note, names in by_note.items()]


def zoo_names(cfg: CompareSettings) -> list[str] | None:
    """The zoo networks named in the settings (checked), or None when they are chosen by latency."""
    if cfg.zoo is None:
        return None
    return list(dict.fromkeys(zoo_name(name, "zoo") for name in cfg.zoo))


def test_split(cfg: CompareSettings, echo: Echo, new: bool = True) -> str | None:
    """The test split scored, when the dataset has one: without the default one the column is left
    out (said once); a split named otherwise that the dataset lacks is refused before a ``new``
    comparison starts (a resumed one leaves the column out, as it always did)."""
    if cfg.test_split is None:
        return None
    if not has_split(cfg.data, cfg.test_split):
        if cfg.test_split == CompareSettings.model_fields["test_split"].default or not new:
            echo(f"data: {cfg.data.name} has no {cfg.test_split!r} split; the test mIoU column is left out")
            return None
        try:  # the dataset's own reason, where it has one (CamVid's holdout split needs its option)
            build_dataset(cfg.data.name, cfg.data.root, cfg.test_split, None, cache=False, **cfg.data.options)
            why = ""
        except SegnasError as exc:
            why = f" ({exc})"
        raise SegnasError(f"test_split: {cfg.data.name} has no {cfg.test_split!r} split{why}; name one it has, or "
                          "test_split: null for none")
    validate_split(cfg.data.name, cfg.data.root, cfg.test_split, cfg.data.options, cfg.progress,
                   echo).note_unscored_classes(echo)
    return cfg.test_split


def train_config(cfg: CompareSettings, name: str, model: dict[str, Any], seed: int, folder: Path) -> TrainConfig:
    """The one final training of every network: the recipe with the comparison's overrides, the
    step (or CPU-time) budget, evaluated once at the end, timed on the CPU clock."""
    recipe = recipe_with("cpu-short", cfg.train.recipe, "train.recipe")
    fields = {k: v for k, v in recipe.items() if k != "data"}
    # the recipe's augmentation (cpu-short's with train.recipe's) under the comparison's data settings
    fields.update({"job": f"{name}-seed{seed}", "data": recipe_data(recipe, cfg.data), "model": model,
                   "epochs": 10000, "max_steps": cfg.train.steps,
                   "time_budget_min": cfg.train.cpu_minutes, "budget_clock": "cpu", "eval_every": 10**9,
                   "threads": cfg.threads, "seed": seed, "device": cfg.device, "out_dir": str(folder),
                   "progress": False})
    return build_config(TrainConfig, fields, "train.recipe")


# ---------------------------------------------------------------------------------- the jobs
def relative(path: str | Path, root: str | Path) -> str:
    """``path`` relative to the comparison's run directory ``root`` (results stay valid when it moves)."""
    return str(Path(path).resolve().relative_to(Path(root).resolve()))


def run_job(item: dict[str, Any]) -> dict[str, Any]:
    """One job of a comparison, in whatever executor runs it: a search or a training."""
    return run_search(item) if item["kind"] == "search" else run_training(item)


def run_search(item: dict[str, Any]) -> dict[str, Any]:
    """``item["method"]``'s search in its folder (continued when a killed one is there); the
    network it found. A user-input failure (e.g. a target its space cannot meet) is a result, and so
    is an error raised by the method's code (a plugin's, say: the other methods go on; its traceback
    is kept in the folder's ``error.txt``); a failure of the machine (memory, disk) stops the
    comparison, which a resume retries."""
    folder = Path(item["folder"])
    run = latest_run(folder)
    try:
        summary = finished_search(run) if run is not None else None
        if summary is None:
            # a search continued takes the comparison's settings of where it computes (data.root, device, ...)
            setup = LatencySetup.read(Path(item["root"]))
            summary = search_job(make_settings(item["method"], item["settings"]), resume=run,
                                 held=setup.held if setup is not None else None)
    except CannotWrite:  # (the machine's failure, as below)
        raise
    except TargetOutOfReach as exc:
        return {"status": f"failed: {exc.in_comparison()}"}
    except SegnasError as exc:
        return {"status": f"failed: {exc}"}
    except (OSError, MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as exc:
        kept = folder / "error.txt"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(kept, traceback.format_exc())
        first = str(exc).splitlines()[0] if str(exc) else ""
        return {"status": f"failed: {type(exc).__name__}: {first} (raised while the method ran; traceback in "
                          f"{relative(kept, item['root'])})"}
    found = found_network(summary)[1]
    run_dir = relative(summary["run_dir"], item["root"])
    return {"status": "ok", "method": item["method"], "run_dir": run_dir, "space": summary["space"],
            "arch_file": str(Path(run_dir) / found["arch_file"]), "predicted_ms": found["predicted_ms"],
            "predicted_table_ms": found.get("predicted_table_ms"), "measured_ms": found.get("measured_ms"),
            "measured_other_cores": found.get("measured_other_cores"), "machine": summary.get("machine"),
            "search_cpu_seconds": summary["search_cpu_seconds"], "search_wall_seconds": summary["search_wall_seconds"],
            "resumed": summary["resumed"], "stopped": summary["details"].get("stopped"),
            "candidates_scored": summary["details"].get("candidates_scored")}


def with_search_measurement(result: dict[str, Any], root: Path) -> dict[str, Any]:
    """A search's result with its found network's latency measured at the end of the search
    (``measured_ms``, ``measured_other_cores``) and the machine it searched on (``machine``); results
    written before these were recorded read what is missing from ``search_result.json``."""
    missing = [k for k in ("measured_ms", "measured_other_cores", "machine") if k not in result]
    if result.get("status") != "ok" or not missing:
        return result
    path = root / result["run_dir"] / "search_result.json"
    saved = read_json(path, missing_ok=True) or {}
    found = (found_network(saved) or ("", {}))[1]
    recorded = {"measured_ms": found.get("measured_ms"), "measured_other_cores": found.get("measured_other_cores"),
                "machine": saved.get("machine")}
    return {**result, **{k: recorded[k] for k in missing}}


def run_training(item: dict[str, Any]) -> dict[str, Any]:
    """Train one network with one seed in its folder (continued when a killed run is there); its
    val mIoU and per-class IoU, its test mIoU when ``item["test_split"]``, its CPU time and steps."""
    cfg = TrainConfig.model_validate(item["config"])
    seed = cfg.seed
    try:
        result = train_job(cfg, resume=resumable_training(cfg.out_dir, cfg))  # continued where cfg computes
        threads = cfg.threads or torch.get_num_threads()  # the CPU clock counts CPU time / threads
        on_gpu = resolve_device(cfg.device).type == "cuda"
        final = result.final
        if "val_miou" not in final:
            raise SegnasError(f"{result.run_dir}: the training ended without a validation score")
        names = list(dataset_classes(cfg.data).names)
        out: dict[str, Any] = {"status": "ok", "seed": seed, "val_miou": json_float(final["val_miou"]),
                               "test_miou": None,
                               "per_class_iou": {c: json_float(v) for c, v in zip(names, final["val_iou"])},
                               "device": describe_device(cfg.device),
                               "train_cpu_seconds": None if on_gpu else round(result.train_seconds * threads, 3),
                               "train_gpu_seconds": round(result.epochs_wall_seconds, 3) if on_gpu else None,
                               "steps": int(final.get("step", 0)), "epochs": int(result.epochs_done),
                               "run_dir": relative(result.run_dir, item["root"])}
        if item.get("test_split"):
            metrics, test_names = eval_job(best_checkpoint(result.run_dir), cfg.data.name,
                                           cfg.data.root, item["test_split"], batch_size=cfg.data.eval_batch_size,
                                           bf16=cfg.bf16, options=cfg.data.options, progress=False)
            out["test_miou"] = json_float(metrics.miou)
            out["test_per_class_iou"] = {c: json_float(v) for c, v in zip(test_names, metrics.iou)}
    except CannotWrite:  # (a full disk: the comparison stops, and a resume continues the training)
        raise
    except TrainingDiverged as exc:  # its fix is a setting of the comparison's recipe, fixed once it started
        return {"status": f"failed: train.recipe.{exc} (a comparison keeps its train settings once started: "
                          "start a new one with the recipe changed)", "seed": seed}
    except SegnasError as exc:
        return {"status": f"failed: {exc}", "seed": seed}
    return out


def job_ended(key: str, result: dict[str, Any]) -> str:
    """The line that tells a finished job: its score, or why it failed."""
    status = result.get("status", "ok")
    if status != "ok":
        return f"{key}: {status}"
    if key.startswith("train:") and isinstance(result.get("val_miou"), (int, float)):
        return f"{key}: done, val mIoU {pct(result['val_miou'])}%"
    return f"{key}: done"


def job_resources(cfg: CompareSettings) -> TaskResources:
    """What one job reserves on Ray: its ``threads`` CPUs (1 when unset) and, on a GPU, a
    ``1/workers`` share of one."""
    return TaskResources(cpus=float(cfg.threads or 1),
                         gpus=1.0 / cfg.workers if resolve_device(cfg.device).type == "cuda" else 0.0)


def run_jobs(cfg: CompareSettings, run_path: Path, items: list[dict[str, Any]],
             tell: Echo | None = None, label: str = "comparison jobs") -> dict[str, dict[str, Any]]:
    """Results of ``items`` by key: finished ones read from ``jobs.jsonl``, the others run, each
    told to ``tell`` when it ends (``job_ended``; also a job that raised or whose worker died). On
    Ray each job reserves its ``threads`` CPUs (1 when unset) and, on a GPU, a ``1/workers`` share
    of one, as the jobs of a process pool share the machine's GPU."""
    if not items:
        return {}
    executor = "inline" if cfg.workers == 1 and cfg.executor == "process" else cfg.executor
    tell = tell or (lambda m: None)
    resources = job_resources(cfg)
    results = run_all(run_job, items, executor=executor, workers=cfg.workers, results_path=run_path / JOBS_FILE,
                      key=lambda item: item["key"], progress=cfg.progress, threads_per_worker=cfg.threads,
                      ray_address=cfg.ray_address, resources=resources if executor == "ray" else None,
                      label=label, on_result=lambda key, result: tell(job_ended(key, result)),
                      on_failure=lambda key, exc: tell(f"{key}: failed: {failure_message(exc)}"))
    return {item["key"]: result for item, result in zip(items, results)}


def training_order(cfg: CompareSettings, methods: list[str], zoo: list[str],
                   beside_searches: bool) -> list[tuple[str, int]]:
    """(network, seed) of every final training in the order the comparison runs them: every
    network's first seed before any second one, found networks before the zoo (a comparison stopped
    early has scored every network once); the zoo first when it trains beside searches still to run
    (``beside_searches``: several workers)."""
    seeds = range(cfg.seed, cfg.seed + cfg.train.seeds)
    if beside_searches:
        return [(name, seed) for name in [*zoo, *methods] for seed in seeds]
    return [(name, seed) for seed in seeds for name in [*methods, *zoo]]


def zoo_beside_searches(cfg: CompareSettings, methods: list[str], ended: dict[str, Any]) -> bool:
    """Whether the zoo trains beside searches: several workers, and a search (not in ``ended``,
    the finished jobs by key) still to run."""
    return cfg.workers > 1 and any(f"search:{m}" not in ended for m in methods)


def training_items(cfg: CompareSettings, run_path: Path, name: str, model: dict[str, Any],
                   test: str | None) -> list[dict[str, Any]]:
    """The trainings of network ``name`` (``model``: a zoo name or an arch file), one per seed."""
    return [{"kind": "train", "key": f"train:{name}:seed{seed}", "name": name, "test_split": test,
             "root": str(run_path),
             "config": train_config(cfg, name, model, seed, run_path / "train" / f"{name}-seed{seed}")
             .model_dump(mode="json")}
            for seed in range(cfg.seed, cfg.seed + cfg.train.seeds)]


#: What a comparison writes from its ended jobs; a job run again makes them stale.
RESULT_FILES = ("compare.json", "compare.md", "pareto.png", "report.html")


def check_rerun(names: Sequence[str], methods: Sequence[str], zoo: Sequence[str]) -> None:
    """SegnasError naming what ``--rerun`` names that is no network of the comparison."""
    unknown = [n for n in names if n not in methods and n not in zoo]
    if unknown:
        raise SegnasError(f"--rerun (rerun): {', '.join(unknown)}: not a network of this comparison (methods: "
                          f"{', '.join(methods) or 'none'}; zoo: {', '.join(zoo) or 'none (or not selected yet)'})")


def chosen_zoo(cfg: CompareSettings, run_path: Path) -> list[str] | None:
    """The zoo baselines of a comparison as far as known without measuring: as named, else the
    selection it kept; None before the selection is made."""
    named = zoo_names(cfg)
    if named is not None:
        return named
    kept = run_path / "zoo_selection.json"
    return list(read_json(kept)["selected"]) if kept.is_file() else None


def forget_jobs(run_path: Path, names: list[str], methods: list[str], zoo: list[str], echo: Echo) -> None:
    """Make this resume run again the jobs of ``names``: a method's search and its trainings, a zoo
    network's trainings. Their records leave ``jobs.jsonl`` (which is copied as it was, with their
    folders and the results written from them, to ``discarded/<stamp>/``: nothing is deleted). Not
    while the comparison runs."""
    check_rerun(names, methods, zoo)
    ended, failed = read_store(run_path / JOBS_FILE)  # keys: search:<name>, train:<name>:seed<N>
    away = run_path / "discarded" / time.strftime("%Y%m%d-%H%M%S")
    keys = {k for k in [*ended, *failed] if k.split(":")[1] in names}
    if keys:  # (their records as they were)
        away.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run_path / JOBS_FILE, away / JOBS_FILE)
    forgotten = forget(run_path / JOBS_FILE, keys)
    folders = [run_path / "search" / n for n in names if n in methods]
    folders += [f for n in names for f in sorted((run_path / "train").glob(f"{glob.escape(n)}-seed*"))]
    for item in [f for f in folders if f.exists()] + [run_path / f for f in RESULT_FILES if (run_path / f).exists()]:
        (away / item.parent.relative_to(run_path)).mkdir(parents=True, exist_ok=True)
        item.rename(away / item.relative_to(run_path))
    echo(f"run again: {', '.join(forgotten) or 'no ended job'} of {', '.join(names)}"
         + (f" (earlier folders and results in {away})" if away.exists() else ""))


# ---------------------------------------------------------------------------------- latency
def select_zoo(cfg: CompareSettings, run_path: Path, num_classes: int, echo: Echo) -> list[str]:
    """The zoo baselines: as named, else those measured within ``zoo_within`` times the target
    (one interleaved session, kept in ``zoo_selection.json``) and Fast-SCNN."""
    known = chosen_zoo(cfg, run_path)
    if known is not None:
        return known
    path = run_path / "zoo_selection.json"
    target = cfg.latency.target
    echo(f"measuring the zoo ({', '.join(MODELS)}) to keep those within {cfg.zoo_within:g}x the target")
    models = {name: resolve_model(name, num_classes)[0] for name in MODELS}
    measured = measure_latency_interleaved(models, (1, 3, *cfg.deployment_size()), cfg.latency.backend,
                                           latency_threads(cfg), min_runs=5, min_time_s=0.5)
    selected = [n for n in MODELS if n == REFERENCE_ZOO or measured[n].median_ms <= cfg.zoo_within * target]
    atomic_write_text(path, json.dumps({"target_ms": target, "within": cfg.zoo_within,
                                        "latency_ms": {n: r.median_ms for n, r in measured.items()},
                                        "selected": selected}, indent=2))
    echo(f"zoo baselines: {', '.join(selected)}")
    return selected


def check_deployment_machine(found: dict[str, dict[str, Any]], target_ms: float, any_machine: bool) -> None:
    """Refuse a latency session on another machine than the one the searches predicted latency on
    (their ``machine``, recorded since searches record it): the target was met or missed there."""
    here = machine_record()
    away = {m: r["machine"] for m, r in found.items()
            if r.get("status") == "ok" and r.get("machine") and r["machine"]["fingerprint"] != here["fingerprint"]}
    if away and not any_machine:
        name, there = next(iter(away.items()))
        raise SegnasError(f"{name} searched for {target_ms:g} ms on {there['cpu']} ({there['cores']} cores); this "
                          f"machine is {here['cpu']} ({here['cores']} cores): run the latency session on the "
                          f"machine searched for, or pass --any-machine (any_machine=True from Python) to measure here")


def measure_latency_session(cfg: CompareSettings, run_path: Path, sources: dict[str, str], num_classes: int,
                            echo: Echo, found: dict[str, dict[str, Any]], any_machine: bool = False,
                            again: bool = False) -> dict[str, dict[str, Any]]:
    """Latency (one interleaved session), parameters and GFLOPs of every network (``sources``:
    name -> arch file or zoo name); kept with the machine in ``latency.json`` so that a resumed job
    reports the same. A new session runs only on the machine the searches (``found``) targeted.
    ``again``: one more session; of the same networks, machine and settings it adds up with the
    saved ones (``add_session``), for a host whose slow spells outlast a session."""
    path = run_path / "latency.json"
    saved = read_record(path, "the networks are measured again")
    identities = network_identities(sources)
    if saved is not None and saved.get("identities") == identities and not again:
        return saved["networks"]
    check_deployment_machine(found, cfg.latency.target, any_machine)
    models = {name: resolve_model(source, num_classes)[0] for name, source in sources.items()}
    shape = (1, 3, *cfg.deployment_size())
    echo(f"measuring {len(models)} network{'s' * (len(models) != 1)} in one interleaved session "
         f"({latency_description(cfg)})")
    if cfg.measure_probe:
        # the first measure_rounds rounds time at least measure_min_runs runs and measure_min_time_s
        # seconds of every network, as an unprobed session does; later rounds as many blocks again
        measured = measure_latency_gated(models, shape, resolve_model(cfg.measure_probe, num_classes)[0],
                                         cfg.latency.backend, latency_threads(cfg), min_rounds=cfg.measure_rounds,
                                         block_runs=-(-cfg.measure_min_runs // cfg.measure_rounds),
                                         block_time_s=cfg.measure_min_time_s / cfg.measure_rounds)
    else:
        measured = measure_latency_interleaved(models, shape, cfg.latency.backend, latency_threads(cfg),
                                               min_runs=cfg.measure_min_runs, min_time_s=cfg.measure_min_time_s,
                                               rounds=cfg.measure_rounds)
    networks = {name: {"latency": measured[name].to_dict(), "params": count_parameters(model),
                       "gflops": count_flops(model, shape).gflops} for name, model in models.items()}
    sessions = 1
    if again and saved is not None:
        if same_session_setting(saved, cfg, identities):
            sessions = saved.get("sessions", 1) + 1
            latencies = add_session({n: saved["networks"][n]["latency"] for n in networks},
                                    {n: net["latency"] for n, net in networks.items()})
            networks = {n: {**net, "latency": latencies[n]} for n, net in networks.items()}
        else:
            echo("the earlier latency session in latency.json was of other networks, another machine or other "
                 "latency settings: this session replaces it")
    atomic_write_text(path, json.dumps({"latency": latency_description(cfg), "machine": machine_record(),
                                        "sessions": sessions, "identities": identities, "networks": networks},
                                       indent=2))
    return networks


def network_identities(sources: dict[str, str]) -> dict[str, str]:
    """What each network of a session is, whatever folder its run lives in: a found network's
    architecture (``arch_key`` of its arch file), a zoo network's name. A saved session is reused
    only for the same networks: a search run again finds another one under the same name."""
    return {name: arch_key(read_arch_file(source)) if Path(source).suffix == ".json" else source
            for name, source in sorted(sources.items())}


def same_session_setting(saved: dict[str, Any], cfg: CompareSettings, identities: dict[str, str]) -> bool:
    """Whether a saved ``latency.json`` measured these networks (``identities``) on this machine with
    these latency settings (its rounds then add up with a new session's)."""
    return (saved.get("identities") == identities and saved.get("latency") == latency_description(cfg)
            and (saved.get("machine") or {}).get("fingerprint") == machine_record()["fingerprint"])


def add_session(earlier: dict[str, dict[str, Any]], latest: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every network's latency (by name) over the saved sessions and the latest one: every round's
    median kept, each session's figure kept (``session_latency_ms``), and the figure taken over all
    rounds: in probed sessions the steady rounds of the reference probe over every network and
    session (one state of the host for all, as within a session), else the quietest round. The latest
    session's own median, IQR and runs stay as measured."""
    merged: dict[str, dict[str, Any]] = {}
    for name, last in latest.items():
        before = earlier[name]
        rounds = list(before.get("round_medians_ms") or [before["median_ms"]]) + list(last["round_medians_ms"])
        per_session = list(before.get("session_latency_ms") or [session_ms(before)]) + [session_ms(last)]
        probes = list(before.get("round_probe_ms") or []) + list(last.get("round_probe_ms") or [])
        merged[name] = {**last, "round_medians_ms": rounds, "quietest_ms": min(rounds),
                        "session_latency_ms": per_session, "round_probe_ms": probes}
    if all(len(m["round_probe_ms"]) == len(m["round_medians_ms"]) > 0 for m in merged.values()):
        state = reference_probe(p for m in merged.values() for p in m["round_probe_ms"])
        for m in merged.values():
            m["steady_ms"] = steady_median(m["round_medians_ms"], m["round_probe_ms"], state)
    else:  # a session without the probe: no common state to gate on
        for m in merged.values():
            m.update(round_probe_ms=[], steady_ms=None)
    return merged


#: A network whose session figures differ by more than this (max / min − 1) was measured on a host
#: that changed speed: a note says the networks' ratios may mix its states.
SESSION_SPREAD = 0.15


def latency_notes(latency: dict[str, Any]) -> list[str]:
    """What a network's session figures need said: a noisy session, sessions that disagree."""
    return [w for w in (latency_warning(latency), session_spread_warning(latency)) if w]


def session_spread_warning(latency: dict[str, Any]) -> str | None:
    """A note when a network's sessions disagree (``add_session``'s per-session figures)."""
    per_session = latency.get("session_latency_ms") or []
    if len(per_session) > 1 and max(per_session) / min(per_session) - 1 > SESSION_SPREAD:
        return (f"its latency differed by {100 * (max(per_session) / min(per_session) - 1):.0f}% between "
                f"{len(per_session)} latency sessions ({', '.join(f'{x:.2f}' for x in per_session)} ms): the host "
                f"changed speed, and networks measured in different states compare unfairly; "
                f"measure again (--measure-now; measure_now=True from Python) when it is steady")
    return None


def network_sources(path: Path, found: dict[str, dict[str, Any]], zoo: list[str]) -> dict[str, str]:
    """What ``resolve_model`` builds each network of the comparison from: the arch file of every
    search that found one, the zoo baselines by name."""
    sources = {m: str(path / r["arch_file"]) for m, r in found.items() if r["status"] == "ok"}
    sources.update({name: name for name in zoo})
    return sources


def measure_before_trainings(cfg: CompareSettings, path: Path, methods: list[str], zoo: list[str],
                             num_classes: int, echo: Echo, any_machine: bool = False) -> dict[str, Any]:
    """The latency session once every search has ended, whatever the trainings' state
    (``--measure-now``): the deployment machine measures while the trainings run elsewhere or wait.
    Kept in ``latency.json``, which the resume that writes the results reuses when every network
    has a training that ended well (else it measures the networks that have one again). Run again,
    it adds a session (``add_session``)."""
    ended = read_store(path / JOBS_FILE)[0]
    waiting = [m for m in methods if f"search:{m}" not in ended]
    if waiting:
        raise SegnasError(f"--measure-now (measure_now): the search of {', '.join(waiting)} has not ended in {path}; "
                          f"measure once every search has ended")
    found = {m: ended[f"search:{m}"] for m in methods}
    found = {m: with_search_measurement(r, path) for m, r in found.items()}
    networks = measure_latency_session(cfg, path, network_sources(path, found, zoo), num_classes, echo, found,
                                       any_machine, again=True)
    for name, m in networks.items():
        for warning in latency_notes(m["latency"]):
            echo(f"warning: {name}: {warning}")
    echo("\n".join(f"{name}: {session_ms(m['latency']):.2f} ms" for name, m in networks.items()))
    echo(f"kept in {path / 'latency.json'}; compare.json, compare.md and the report take it when the comparison "
         f"next resumes with every training ended: segnas compare --resume {path} (compare(resume=...) from Python)")
    return {"run_dir": str(path), "measured": False, "latency_measured": True}


def session_ms(latency: dict[str, Any]) -> float:
    """A network's latency in the session: the median of its rounds in the reference state of the host
    (``steady_ms``, a probed session), else its quietest round's median (``quietest_ms``; sessions
    saved before it was recorded: the lowest round median they kept, else their median)."""
    return (latency.get("steady_ms") or latency.get("quietest_ms")
            or min(latency.get("round_medians_ms") or [latency["median_ms"]]))


def latency_warning(latency: LatencyResult | dict[str, Any]) -> str | None:
    """A warning when a latency measurement is too noisy to report: its inter-quartile range is
    larger than its median (typically another job on the same cores)."""
    iqr, median = (latency["iqr_ms"], latency["median_ms"]) if isinstance(latency, dict) else (latency.iqr_ms,
                                                                                              latency.median_ms)
    if iqr > median:
        return (f"the latency measurement is unreliable: its IQR ({iqr:.2f} ms) is larger than its "
                f"median ({median:.2f} ms); the machine was probably busy, measure again when it is idle")
    return None


# ---------------------------------------------------------------------------------- the summary
def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def search_measurement_notes(row: dict[str, Any]) -> list[str]:
    """What a reader should know of a found network's measurement at the end of its search: taken
    while other processes kept the cores busy (judged in the session instead), or far from its
    figure in the session (the host's speed changed in between)."""
    at_search, session = row.get("search_measured_ms"), row.get("latency_ms")
    if is_busy(row.get("search_measured_other_cores")):
        return [f"{row['name']}: measured at the end of its search while other processes kept "
                f"{row['search_measured_other_cores']:.1f} cores busy; on target or not is judged on the session"]
    if at_search and session and abs(at_search / session - 1) > SEARCH_SESSION_GAP:
        return [f"{row['name']}: measured at the end of its search at {at_search:.2f} ms, "
                f"{100 * (at_search / session - 1):+.0f}% from the session's {session:.2f} ms (the host's speed "
                "changed in between); on target or not is judged at the search"]
    return []


def make_row(name: str, kind: str, searched: dict[str, Any] | None, seeds: list[dict[str, Any]],
             measured: dict[str, Any] | None, target_ms: float) -> dict[str, Any]:
    """One row of ``compare.json``: a network's figures over its seeds, latency and costs."""
    ok = [s for s in seeds if s["status"] == "ok"]
    failed = next((s for s in seeds if s["status"] != "ok"), None)
    val = [s["val_miou"] for s in ok if s["val_miou"] is not None]
    test = [s["test_miou"] for s in ok if s.get("test_miou") is not None]
    classes = list(ok[0]["per_class_iou"]) if ok else []

    def class_means(key: str) -> dict[str, Any]:
        scored = [s[key] for s in ok if s.get(key)]
        return {c: json_float(_mean([x[c] for x in scored if x.get(c) is not None])) for c in classes} if scored else {}

    per_class, test_per_class = class_means("per_class_iou"), class_means("test_per_class_iou")
    latency = session_ms(measured["latency"]) if measured else None
    at_search = searched.get("measured_ms") if searched else None
    busy = (searched or {}).get("measured_other_cores")
    row: dict[str, Any] = {
        "name": name, "kind": kind, "method": (searched or {}).get("method", name) if kind == "method" else None,
        "arch_file": searched.get("arch_file") if searched else None, "status": "ok",
        "seeds": [{k: s.get(k) for k in ("seed", "status", "val_miou", "test_miou", "per_class_iou",
                                         "test_per_class_iou", "device", "train_cpu_seconds", "train_gpu_seconds",
                                         "steps", "epochs", "run_dir")}
                  for s in seeds],
        "val_miou_mean": _mean(val), "val_miou_std": _std(val),
        "test_miou_mean": _mean(test), "test_miou_std": _std(test), "per_class_iou": per_class,
        "test_per_class_iou": test_per_class,
        "latency_ms": latency, "latency_iqr_ms": measured["latency"]["iqr_ms"] if measured else None,
        "latency_vs_target": latency / target_ms - 1.0 if latency is not None else None,
        "search_measured_ms": at_search,
        "search_vs_target": at_search / target_ms - 1.0 if at_search is not None else None,
        "search_measured_other_cores": busy,
        "predicted_ms": searched.get("predicted_ms") if searched else None,
        "predicted_table_ms": searched.get("predicted_table_ms") if searched else None,
        "params": measured["params"] if measured else None, "gflops": measured["gflops"] if measured else None,
        "search_cpu_seconds": searched.get("search_cpu_seconds") if searched else None,
        "train_cpu_seconds": _total(ok, "train_cpu_seconds"), "train_gpu_seconds": _total(ok, "train_gpu_seconds"),
        "train_devices": sorted({s.get("device") or "cpu" for s in ok}),
    }
    # A found network lands on target when measured on the machine its search's table was measured
    # on (at the end of its search; sessions on a shared machine differ by 20-30%), else (not
    # measured there, or while other processes kept the cores busy) in the session.
    trusted = row["search_vs_target"] is not None and not is_busy(busy)
    landing = row["search_vs_target"] if trusted else row["latency_vs_target"]
    row["on_target"] = abs(landing) <= TARGET_TOLERANCE if kind == "method" and landing is not None else None
    if searched and searched["status"] != "ok":
        row["status"] = searched["status"]
    elif failed is not None:
        row["status"] = f"failed: seed {failed['seed']}: {failed['status'].removeprefix('failed: ')}"
    elif row["on_target"] is False:
        row["status"] = f"{'over' if landing > 0 else 'under'} target ({100 * landing:+.0f}%)"
    return row


def failed_rows(summary: dict[str, Any]) -> list[str]:
    """The networks of a comparison (``compare_job``'s summary) without a result: their search or a
    training failed."""
    if "failed" in summary:  # (stopped before the latency session: no table yet)
        return list(summary["failed"])
    return [r["name"] for r in summary.get("rows", []) if str(r["status"]).startswith("failed")]


def _total(seeds: list[dict[str, Any]], key: str) -> float | None:
    """``key`` summed over the seeds that have it (trainings on a GPU have no CPU time and vice versa)."""
    values = [s[key] for s in seeds if s.get(key) is not None]
    return round(sum(values), 1) if values else None


def write_outputs(run_path: Path, summary: dict[str, Any]) -> None:
    """compare.md and pareto.png, then compare.json: its presence says the results are complete."""
    atomic_write_text(run_path / "compare.md", compare_table(summary))
    plot_pareto(summary["rows"], summary["target_ms"], run_path / "pareto.png",
                title=f"{summary['settings']['data']['name']}: {summary['train_budget']}",
                latency_label=f"measured latency (ms; {summary['latency']})")
    atomic_write_text(run_path / "compare.json", json.dumps(summary, indent=2))


# ---------------------------------------------------------------------------------- status
def _last_record(folder: Path) -> dict[str, Any] | None:
    """The last metrics record of the newest run in ``folder`` (a job under way), if any."""
    run = latest_run(folder)
    if run is None:
        return None
    if (run / "candidates.jsonl").is_file():  # a sample-based search: no epochs
        return {"candidates scored": len(read_store(run / "candidates.jsonl")[0])}
    records = read_jsonl(run / "metrics.jsonl")  # (a line being written is left out)
    return records[-1] if records else {}


def compare_status(run_dir: str | Path) -> dict[str, Any]:
    """Every job a comparison plans (``jobs``, in the order they run) with its state: ``done`` (and
    its figures), ``failed`` (and why), ``skipped`` (its search failed), ``started`` (a run directory
    with its progress: running now, or waiting for ``--resume``) or ``pending``; and the scored
    ``test_split``; whether a process runs it now (``running``). Reads the run directory only: safe
    beside the comparison writing it."""
    path = Path(run_dir)
    if not (path / "config.yaml").is_file():
        raise SegnasError(f"{run_dir}: not a comparison run directory (no config.yaml)")
    if (kind := run_kind(path)) != "comparison":
        raise SegnasError(f"{run_dir}: a {kind} run, not a comparison run (segnas report {run_dir} shows it)")
    cfg = load_config(CompareSettings, path / "config.yaml", saved=True)
    results, failures = read_store(path / JOBS_FILE)
    methods = list(chosen_methods(cfg))
    zoo = zoo_names(cfg)
    if zoo is None:
        selection = path / "zoo_selection.json"
        zoo = read_json(selection)["selected"] if selection.is_file() else []
    plan = [("search", label, None) for label in methods]
    beside = zoo_beside_searches(cfg, methods, results)
    plan += [("train", name, seed) for name, seed in training_order(cfg, methods, zoo, beside)]
    rows = []
    for kind, name, seed in plan:
        key = f"search:{name}" if kind == "search" else f"train:{name}:seed{seed}"
        folder = path / "search" / name if kind == "search" else path / "train" / f"{name}-seed{seed}"
        row: dict[str, Any] = {"job": key, "kind": kind, "name": name, "seed": seed}
        search = results.get(f"search:{name}") if kind == "train" and name in methods else None
        if key in results:
            result = results[key]
            ok = result.get("status") == "ok"
            row["state"] = "done" if ok else "failed"
            if not ok:
                row["why"] = result.get("status")
            elif kind == "search":
                measured = with_search_measurement(result, path).get("measured_ms")
                row.update(predicted_ms=result.get("predicted_ms"), measured_ms=measured,
                           cpu_seconds=result.get("search_cpu_seconds"))
            else:
                row.update(val_miou=result.get("val_miou"), test_miou=result.get("test_miou"),
                           steps=result.get("steps"), cpu_seconds=result.get("train_cpu_seconds"),
                           gpu_seconds=result.get("train_gpu_seconds"))
        elif key in failures:  # its worker died: --resume tries it again
            row.update(state="failed", why=f"{failures[key]} (--resume runs it again)", retried=True)
        elif search is not None and search.get("status") != "ok":
            row.update(state="skipped", why=f"its search {search.get('status')}")
        elif (record := _last_record(folder)) is not None:
            row["state"] = "started"
            of = {"step": cfg.train.steps} if kind == "train" and cfg.train.steps else {}  # (a step budget)
            row["progress"] = ", ".join(f"{k} {record[k]}" + (f" of {of[k]}" if k in of else "")
                                        for k in ("phase", "epoch", "step", "candidates scored") if k in record)
        else:
            row["state"] = "pending"
        rows.append(row)
    return {"run_dir": str(run_dir), "test_split": cfg.test_split, "jobs": rows,
            "remaining": remaining_time(rows, results, cfg), "results_written": (path / "compare.json").is_file(),
            "running": RunDir.in_use(path)}


def remaining_time(rows: list[dict[str, Any]], results: dict[str, Any], cfg: CompareSettings) -> dict[str, Any]:
    """Hours left at the pace so far: each unfinished search or training costs the mean of the
    finished ones of its kind (a training's wall time: its GPU's, or on a CPU ~ its CPU time /
    threads on quiet cores)."""
    threads = job_threads(cfg.threads)

    def train_wall(r: dict[str, Any]) -> float | None:
        return r.get("train_gpu_seconds") or (r["train_cpu_seconds"] / threads if r.get("train_cpu_seconds") else None)

    spent = {"search": [r["search_wall_seconds"] for k, r in results.items()
                        if k.startswith("search:") and r.get("status") == "ok" and r.get("search_wall_seconds")],
             "train": [w for k, r in results.items()
                       if k.startswith("train:") and r.get("status") == "ok" and (w := train_wall(r))]}
    left = {kind: sum(r["state"] in ("pending", "started") for r in rows if r["kind"] == kind) for kind in spent}
    hours = {kind: (left[kind] * statistics.mean(spent[kind]) / 3600 if spent[kind] else None) for kind in spent}
    return {"jobs_left": left, "hours": hours}


# ---------------------------------------------------------------------------------- the job
def with_execution(cfg: CompareSettings, device: str | None, workers: int | None) -> CompareSettings:
    """``cfg`` with where its remaining jobs compute (``device``) and how many run at once
    (``workers``) replaced: settings that change no figure's definition, so a resumed comparison may
    continue on another machine (train on a GPU machine, measure on the deployment one). The run's
    config.yaml is left as it is; every training records its own device."""
    update = {k: v for k, v in (("device", device), ("workers", workers)) if v is not None}
    if not update:
        return cfg
    return build_config(CompareSettings, {**cfg.model_dump(mode="json"), **update}, "options",
                        {"device": "--device", "workers": "--workers"})


def compare_job(settings: CompareSettings | None, resume: str | Path | None = None,
                echo: Echo | None = None, *, device: str | None = None, workers: int | None = None,
                measure: bool = True, measure_now: bool = False, any_machine: bool = False,
                rerun: Sequence[str] = (), changes: Mapping[str, Any] | None = None,
                held: HeldCorrections | None = None) -> dict[str, Any]:
    """Run (or, with ``resume``, continue) a comparison; returns ``compare.json``'s content plus ``run_dir``.

    ``device``/``workers`` override where and how many jobs run at once (``with_execution``);
    ``measure=False`` stops once every job has ended, before the latency session (which belongs on
    the deployment machine: a later ``resume`` there measures and writes the results); it then
    returns ``{"run_dir": ..., "measured": False}``. ``measure_now`` runs only the latency session,
    once every search has ended and before the trainings end (``measure_before_trainings``). The
    latency session runs on the machine the searches targeted unless ``any_machine``. ``rerun``
    (with ``resume``): networks whose ended jobs run again (``forget_jobs``). ``changes``: the
    ``training.start.RESUMABLE`` settings a resumed comparison takes anew (its searches and
    trainings under way continue with them too). ``held``: latency corrections fitted in this
    process for this comparison (``check_searches``)."""
    echo = echo or (lambda m: None)
    if measure_now and not measure:
        raise SegnasError("--measure-now (measure_now) runs the latency session, which --no-latency (measure=False) "
                          "leaves out: give one of them")
    if rerun and resume is None:
        raise SegnasError("--rerun (rerun) runs jobs of an existing comparison again: give its run directory with "
                          "--resume (resume)")
    if measure_now and resume is None:
        raise SegnasError("--measure-now (measure_now) measures the networks of a comparison whose searches have "
                          "ended: give its run directory with --resume (resume)")
    cfg, run = start_job(CompareSettings, settings, resume, "comparison", changes)
    cfg = with_execution(cfg, device, workers)
    # everything that can fail on user input, before the run directory exists
    methods = chosen_methods(cfg)
    zoo_names(cfg)
    check_backend(cfg.latency.backend, "latency.backend")
    if not cfg.data.val_split:
        raise SegnasError("data.val_split: a comparison scores every network on the validation split; name it")
    validate_dataset(cfg.data, cfg.progress, echo)
    train_config(cfg, REFERENCE_ZOO, {"name": REFERENCE_ZOO}, cfg.seed, Path(cfg.out_dir))
    checked = {m: search_settings(cfg, m, own, Path(cfg.out_dir), new=resume is None) for m, own in methods.items()}
    test = test_split(cfg, echo, new=resume is None)
    classes = dataset_classes(cfg.data)
    num_classes = classes.num_classes
    if run is not None:  # (its searches and trainings would each refuse it, after the comparison had begun)
        check_resumed_classes(run.path, classes.names, cfg.data.root)
    if resolve_device(cfg.device).type == "cuda" and cfg.train.cpu_minutes:
        raise SegnasError(f"train.cpu_minutes: a CPU-time budget does not measure training on a GPU (device "
                          f"{cfg.device}); give the trainings a step budget, train.steps")
    latency_probe(cfg.latency.probe, num_classes)  # the probes, named now rather than after the trainings
    latency_probe(cfg.measure_probe, num_classes, "measure_probe")
    if cfg.executor == "ray":
        check_ray(cfg.workers, cfg.ray_address, job_resources(cfg))
    setup = None
    if resume is None:
        setup = check_searches(checked, echo, held)
        if cfg.methods is not None:  # their files absolute, as the comparison's own: a resume works from any folder
            methods = {label: absolute_paths(checked[label], copy.deepcopy(own)) for label, own in methods.items()}
            cfg = cfg.model_copy(update={"methods": methods})
    if cfg.train.cpu_minutes:
        echo(f"note: a final-training budget of {cfg.train.cpu_minutes:g} CPU-minutes is not reproducible: another "
             "or a busy machine trains each network for a different number of steps (train.steps is)")
    if rerun:  # (before the run is opened and its banner said)
        check_rerun(list(rerun), list(methods), chosen_zoo(cfg, Path(resume)) or [])
    run = open_run(cfg, run)
    path = run.path
    if setup is not None:
        setup.save(path)
    if resume is None:  # (a comparison from before the record is checked against nothing: none written)
        keep_classes(run, classes.names)

    def tell(line: str) -> None:  # its course (a job's end, ...), on the terminal and in the comparison's log.txt
        run.log(line)
        echo(line)

    tell(f"compare: {', '.join(methods) or 'no method'} for {cfg.latency.target:g} ms "
         f"({latency_description(cfg)}); run {path}")
    zoo = select_zoo(cfg, path, num_classes, echo)
    if rerun:
        forget_jobs(path, list(rerun), list(methods), zoo, echo)
    if measure_now:
        return measure_before_trainings(cfg, path, list(methods), zoo, num_classes, echo, any_machine)

    searches = [{"kind": "search", "key": f"search:{m}", "method": method_of(m, own),
                 "settings": search_settings(cfg, m, own, path / "search" / m).model_dump(mode="json"),
                 "folder": str(path / "search" / m), "root": str(path)} for m, own in methods.items()]
    zoo_items = [it for name in zoo for it in training_items(cfg, path, name, {"name": name}, test)]
    # one job at a time: the searches, then the trainings (training_order); in parallel the zoo
    # trains beside the searches still to run, else with the other trainings
    ended_before = read_store(path / JOBS_FILE)[0]
    beside = zoo_beside_searches(cfg, list(methods), ended_before)
    done = run_jobs(cfg, path, searches + (zoo_items if beside else []), tell,
                    "searches and the zoo's trainings" if beside and zoo_items else "searches")
    found = {m: with_search_measurement(done[f"search:{m}"], path) for m in methods}
    for m, r in found.items():
        if r["status"] != "ok":
            if f"search:{m}" in ended_before:  # (a search that ended now was told as it ended)
                echo(f"{m}: {r['status']}")
            continue
        cpu = r["search_cpu_seconds"]
        echo(f"{m}: found a network predicted at {r['predicted_ms']:.2f} ms in {cpu:.{'3g' if cpu < 100 else '0f'}} "
             "CPU-s")
    method_items = [it for m, r in found.items() if r["status"] == "ok"
                    for it in training_items(cfg, path, m, {"name": None, "arch": str(path / r["arch_file"])}, test)]
    trainings = {it["key"]: it for it in (method_items if beside else method_items + zoo_items)}
    ordered = [trainings[key] for name, seed in training_order(cfg, list(methods), zoo, beside)
               if (key := f"train:{name}:seed{seed}") in trainings]
    done.update(run_jobs(cfg, path, ordered, tell, "final trainings"))

    seeds = {it["name"]: [] for it in zoo_items + method_items}
    for it in zoo_items + method_items:
        seeds[it["name"]].append(done[it["key"]])
    sources = {n: s for n, s in network_sources(path, found, zoo).items() if any(x["status"] == "ok" for x in seeds[n])}
    if not measure:
        echo(f"every job has ended; measure and write the results on the deployment machine: "
             f"segnas compare --resume {path} (compare(resume=...) from Python)")
        failed = [m for m in methods if found[m]["status"] != "ok"]
        failed += [n for n, ss in seeds.items() if n not in failed and any(s["status"] != "ok" for s in ss)]
        return {"run_dir": str(path), "measured": False, "failed": failed}
    measured = measure_latency_session(cfg, path, sources, num_classes, tell, found, any_machine) if sources else {}

    target = cfg.latency.target
    rows = [make_row(m, "method", found[m], seeds.get(m, []), measured.get(m), target) for m in methods]
    rows += [make_row(name, "zoo", None, seeds[name], measured.get(name), target) for name in zoo]
    for row in rows:  # the found networks themselves: compare.json stays reproducible without the run folders
        if row["arch_file"]:
            row["arch"] = read_arch_file(path / row["arch_file"])
    notes = [f"{name}: {w}" for name, m in measured.items() for w in latency_notes(m["latency"])]
    notes += [note for r in rows for note in search_measurement_notes(r)]
    notes += same_network_notes(rows)
    notes += training_notes(path, rows)
    # (a sample-based search's stop reason is "time"; a one-shot one's "time budget of N min spent")
    notes += [f"{m}: its search reached the time limit (search_cpu_minutes {cfg.search_cpu_minutes:g})"
              + (f" after {r['candidates_scored']} candidates" if r.get("candidates_scored") is not None else "")
              + ": what it found depends on the machine's speed and load (size its candidates or epochs to the "
              "budget to compare reproducibly)"
              for m, r in found.items() if str(r.get("stopped") or "").startswith("time")]
    cpu = sum((r["search_cpu_seconds"] or 0.0) + (r["train_cpu_seconds"] or 0.0) for r in rows)
    setup = LatencySetup.read(path)
    budget = (f"{cfg.train.steps} optimizer steps" if cfg.train.steps
              else f"{cfg.train.cpu_minutes:g} CPU-minutes (not reproducible)")
    session = read_json(path / "latency.json", missing_ok=True) or {}
    rounds = {len(m["latency"].get("round_medians_ms") or [0]) for m in session.get("networks", {}).values()}
    summary = {"settings": cfg.model_dump(mode="json"), "target_ms": target, "latency": latency_description(cfg),
               "latency_machine": session.get("machine"),
               "latency_sessions": session.get("sessions", 1) if session else 0,
               "latency_rounds": max(rounds, default=None),
               "test_split": test, "train_budget": budget,
               "search_budget": f"{cfg.search_cpu_minutes:g} CPU-minutes" if cfg.search_cpu_minutes
               else "each method's own end", "notes": notes, "rows": rows,
               "total_cpu_hours": round(cpu / 3600, 4),
               "latency_setup_cpu_hours": round(setup.cpu_seconds / 3600, 4) if setup is not None else None,
               "train_devices": sorted({d for r in rows for d in r["train_devices"]}),
               "total_gpu_hours": round(sum(r["train_gpu_seconds"] or 0.0 for r in rows) / 3600, 4)}
    write_outputs(path, summary)
    for note in notes:
        tell(f"warning: {note}")
    echo(compare_table(summary).split("\n\n## ")[0])
    try:
        html = report_job(path) if cfg.report else None
    except SegnasError as exc:
        html = None
        echo(f"warning: the HTML report was not written: {exc}")
    if html:
        echo(f"report: {html}")
    return {**summary, "run_dir": str(path)}


#: ``compare_job``'s options (its keyword-only arguments, but the resumed settings ``changes`` and
#: the corrections ``held`` a caller in segnas fitted): what ``segnas.api.compare`` passes on.
COMPARE_OPTIONS = frozenset(name for name, p in inspect.signature(compare_job).parameters.items()
                            if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in ("changes", "held"))
