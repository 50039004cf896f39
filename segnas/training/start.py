"""Start-up shared by every job: settings from a resumed run, threads, seeds, the run directory."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, TypeVar

import torch

from segnas.config.base import Settings
from segnas.config.compare import CompareSettings
from segnas.config.io import flatten, has_setting, load_config, read_settings, read_yaml, save_config, saved_form
from segnas.config.train import options_data
from segnas.cost.latency import default_threads, job_threads
from segnas.data.base import check_same_classes
from segnas.engine import distributed
from segnas.engine.rundir import RunDir, RunKind, held_runs, run_kind
from segnas.errors import SegnasError, SegnasWarning
from segnas.utils import atomic_write_text, read_record, seed_everything

C = TypeVar("C")


#: What continues each kind of run: the command, and the Python call.
CONTINUE = {"search": ("segnas search {method} --resume", "search"),
            "comparison": ("segnas compare --resume", "compare"), "training": ("segnas train --resume", "train")}


#: Settings a resumed run may take anew (``--resume RUN --set KEY=VALUE``, or the option that sets
#: one): where and how it computes, never what it computes (a moved dataset, another device).
RESUMABLE = ("data.root", "data.workers", "data.cache", "threads", "device", "executor", "ray_address",
             "task_cpus", "task_gpus", "task_retries", "progress")


#: A copy of a run's config.yaml as the run started (``open_run``): a resume refuses a config.yaml
#: edited since in any setting but the ``RESUMABLE`` ones (``check_unedited``).
STARTED_FILE = ".started.yaml"


def check_unedited(run_dir: str | Path) -> None:
    """SegnasError when a run's config.yaml was edited, since the run started, in a setting that a
    resume cannot take anew (what it computes: its checkpoints and results were made with the old
    value, which the resumed job would mix with the new). A run without ``STARTED_FILE`` (removed
    with the hidden files, or made before it existed) is not checked, and says so."""
    path = Path(run_dir)
    if not (path / STARTED_FILE).is_file():
        if distributed.env_rank() == 0:  # (every rank checks; one says it)
            warnings.warn(f"{path / STARTED_FILE}: missing (the settings the run started with): a config.yaml edited "
                          "since cannot be told; the resume continues with config.yaml as it is", SegnasWarning,
                          stacklevel=2)
        return
    kept = set(RESUMABLE) | {"latency.threads"}  # (latency.threads: pinned by a resume that changes threads)
    started, now = ({k: v for k, v in flatten(read_settings(path / name)).items() if k not in kept}
                    for name in (STARTED_FILE, "config.yaml"))
    edited = sorted(k for k in started.keys() | now.keys() if started.get(k, KeyError) != now.get(k, KeyError))
    if edited:
        key = edited[0]
        was, is_now = (repr(d[key]) if key in d else "not set" for d in (started, now))
        raise SegnasError(f"{path / 'config.yaml'}: {key} was {was} when the run started and is {is_now} now; a "
                          "resumed run continues what it started computing: put it back, or start a new run with "
                          f"the edited file as its settings (--config; config= from Python)"
                          f"{f' ({len(edited)} settings edited)' if len(edited) > 1 else ''}")


def check_resumable(cls: type, changes: Mapping[str, Any], resume: str | Path,
                    flags: Optional[Mapping[str, str]] = None, resume_name: str = "--resume",
                    sources: Sequence[str] = ()) -> None:
    """SegnasError naming the settings among ``changes`` (dotted keys; ``flags``: the option that
    gave each) that a resumed run of settings class ``cls`` cannot take: those outside ``RESUMABLE``
    or not among its settings; and ``sources`` given (a settings file, a recipe: named as the caller
    names them). ``resume_name``: how the caller's resume argument is named."""
    allowed = [k for k in RESUMABLE if has_setting(cls, k)]
    refused = [*sources, *sorted({(flags or {}).get(k, k) for k in changes if k not in allowed})]
    if refused:
        jobs = ("; how many jobs run at once is compare's --workers option (workers= from Python)"
                if cls is CompareSettings and "workers" in changes else "")
        raise SegnasError(f"{resume_name} continues {resume} with its own config.yaml; drop {', '.join(refused)} "
                          f"(a resumed run takes anew only {', '.join(allowed)}){jobs}")


def resumable_values(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``RESUMABLE`` settings (dotted keys) that the dumped ``settings`` hold, with their values."""
    out = {}
    for key in RESUMABLE:
        node: Any = settings
        for part in key.split("."):
            node = node.get(part, KeyError) if isinstance(node, Mapping) else KeyError
        if node is not KeyError:
            out[key] = node
    return out


def refuse_other_run(run_dir: str | Path, found: RunKind, wanted: RunKind) -> None:
    """SegnasError when a ``found`` run is given to continue a ``wanted`` one."""
    if found != wanted:
        raise SegnasError(f"{run_dir}: a {found} run, not a {wanted} run; continue it with "
                          f"{continue_command(run_dir, found)} ({CONTINUE[found][1]}(resume=...) from Python)")


def continue_command(run_dir: str | Path, kind: RunKind | None = None) -> str:
    """The command that continues the run in ``run_dir`` (of kind ``kind``, else read from it)."""
    kind = kind or run_kind(run_dir)
    command = CONTINUE[kind][0]
    if kind == "search":
        command = command.format(method=read_yaml(Path(run_dir) / "config.yaml")["method"])
    world = distributed.env_world_size()
    if world <= 1:
        return f"{command} {run_dir}"
    # under torchrun: the same launch (another number of processes continues it otherwise)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    nodes = world // local if local else 1
    if nodes <= 1:
        return f"torchrun --standalone --nproc-per-node {local} -m {command} {run_dir}"
    return (f"torchrun --nnodes {nodes} --nproc-per-node {local} -m {command} {run_dir} (with the rendezvous "
            "options it started with)")


def start_job(cls: type[C], cfg: C | None, resume: str | Path | None, kind: str,
              changes: Optional[Mapping[str, Any]] = None) -> tuple[C, RunDir | None]:
    """The job's settings with threads and seeds applied, and the existing run directory when
    resuming (which must be a ``kind`` run: "search", "comparison" or "training"), else None (see
    ``open_run``).

    A resumed run's own config.yaml wins, except for the ``RESUMABLE`` settings given as ``changes``
    (dotted keys; any other is refused) or held by ``cfg`` (a caller continuing its own job where
    it computes now): those apply, and ``open_run`` keeps them in config.yaml once the job's
    checks have passed. A new ``threads`` leaves the latency measurements at the threads they had.
    Threads left unset: ``job_threads``, but a job run inside another of this process (a search's
    candidate training) keeps the process's."""
    nested = bool(held_runs())  # (before this job's own folder is held)
    run = None
    if resume is not None:
        RunDir.check_existing(resume)
        refuse_other_run(resume, run_kind(resume), kind)  # before the folder is touched
        check_unedited(resume)
        check_resumable(cls, changes or {}, resume)
        path = Path(resume) / "config.yaml"
        given = {**(resumable_values(saved_form(cfg)) if cfg is not None else {}), **(changes or {})}
        given = with_latency_threads_kept(read_yaml(path), given)
        cfg = load_config(cls, path, given, saved=True)
        if (changes or {}).get("data.root") is not None:  # (a folder given with the synthetic scenes refused)
            options_data(cfg.data.name, changes["data.root"],
                         {"name": "data.name (--data)", "root": "data.root (--data-root)"})
        run = RunDir.existing(resume)  # (its folder touched only once the settings are good)
        run.changed_settings = cfg if given else None
    else:
        RunDir.check_parent(cfg.out_dir)  # before any work: the run directory goes there at the end
    if cfg.threads or not nested:
        torch.set_num_threads(job_threads(cfg.threads))
    seed_everything(cfg.seed)
    return cfg, run


def with_latency_threads_kept(saved: Any, changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` plus, when they change ``threads`` of a run whose latency measurements take
    their threads from it (``latency.threads`` unset), ``latency.threads`` pinned to the old
    value: the candidates measured or predicted after a resume compare with those before."""
    latency = saved.get("latency") if isinstance(saved, dict) else None
    if ("threads" not in changes or not isinstance(latency, dict) or latency.get("threads") is not None
            or changes["threads"] == saved.get("threads")):
        return changes
    return {**changes, "latency.threads": saved.get("threads") or default_threads()}


def open_run(cfg: Settings, run: RunDir | None) -> RunDir:
    """The run directory: the resumed one, or a new one holding the settings ``cfg`` (a job's
    settings: ``out_dir`` and ``job`` name its folder). Call it only once everything that can fail
    on user input has been built, so no empty run is left behind."""
    if run is not None:
        path = run.path / "config.yaml"
        now = saved_form(run.changed_settings) if run.changed_settings is not None else None
        before = read_yaml(path)
        if now is not None and now != before:  # (the settings checked unedited by start_job: the same as started)
            save_settings(run.changed_settings, run.path)
            old = resumable_values(before)
            moved = {k: v for k, v in resumable_values(now).items() if old.get(k) != v}
            run.log(f"resumed with {', '.join(f'{k}={v}' for k, v in moved.items()) or 'its settings rewritten'}")
        return run
    run = RunDir.create(cfg.out_dir, cfg.job)
    save_settings(cfg, run.path)
    return run


#: The classes a run started with (their names in the network's channel order), which a resume checks.
CLASSES_FILE = "classes.json"


def keep_classes(run: RunDir, names: Sequence[str]) -> None:
    """Record the classes a run starts with (rank 0, once: a resume keeps the first record)."""
    path = run.path / CLASSES_FILE
    if run.main and not path.is_file():
        atomic_write_text(path, json.dumps({"names": list(names)}))


def check_resumed_classes(run_path: Path, names: Sequence[str], root: Any,
                          started: Optional[Sequence[str]] = None) -> None:
    """Refuse, before any work, to resume a run on other classes than it started with (``CLASSES_FILE``,
    else ``started``: a run from before it was kept): another count, order or name would load
    weights that do not fit, or give a class the outputs another learned."""
    kept = read_record(run_path / CLASSES_FILE, "the dataset's classes are not checked against the run's")
    kept = kept.get("names") if kept is not None else started
    if kept is not None:
        check_same_classes([str(name) for name in kept], names, f"{run_path}:", f"the dataset (data.root {root})",
                           "a resumed run keeps the classes it started with, in their order; give the dataset as "
                           "it was, or start a new run")


def save_settings(cfg: Settings, run_path: Path) -> None:
    """A run's config.yaml, and the copy a resume checks it against (``STARTED_FILE``); under
    torchrun by rank 0 alone (another rank's temporary file could be taken for a killed write's by
    rank 0, which removes those as it opens the folder)."""
    if not distributed.is_main():
        return
    save_config(cfg, run_path / STARTED_FILE)  # (first: a run with a config.yaml has its started copy)
    atomic_write_text(run_path / "config.yaml", (run_path / STARTED_FILE).read_text(encoding="utf-8"))
