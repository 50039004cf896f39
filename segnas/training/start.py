"""Start-up shared by every job: settings from a resumed run, threads, seeds, the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, TypeVar

import torch

from segnas.config.io import load_config, read_yaml, save_config
from segnas.engine.rundir import RunDir
from segnas.errors import SegnasError
from segnas.utils import seed_everything

C = TypeVar("C")


#: The command that continues each kind of run.
CONTINUE = {"search": "segnas search METHOD --resume", "comparison": "segnas compare --resume",
            "training": "segnas train --resume"}


#: Settings a resumed run may take anew (``--resume RUN --set KEY=VALUE``, or the option that sets
#: one): where and how it computes, never what it computes (a moved dataset, another device).
RESUMABLE = ("data.root", "data.workers", "data.cache", "threads", "device", "executor", "ray_address",
             "task_cpus", "task_gpus", "task_retries", "progress")


def check_resumable(changes: Mapping[str, Any], resume: str | Path,
                    flags: Optional[Mapping[str, str]] = None) -> None:
    """SegnasError naming the settings among ``changes`` (dotted keys; ``flags``: the option that
    gave each) that a resumed run cannot take: those outside ``RESUMABLE``."""
    refused = sorted({(flags or {}).get(k, k) for k in changes if k not in RESUMABLE})
    if refused:
        raise SegnasError(f"--resume continues {resume} with its own config.yaml; drop {', '.join(refused)} "
                          f"(a resumed run takes anew only {', '.join(RESUMABLE)})")


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


def run_kind(run_dir: str | Path) -> str:
    """What a run directory holds, by its config.yaml: a search (``method``), a comparison
    (``methods``) or a training. SegnasError when its config.yaml is not valid YAML."""
    data = read_yaml(Path(run_dir) / "config.yaml")
    if isinstance(data, dict) and "methods" in data:
        return "comparison"
    if isinstance(data, dict) and "method" in data:
        return "search"
    return "training"


def refuse_other_run(run_dir: str | Path, found: str, wanted: str) -> None:
    """SegnasError when a ``found`` run is given to continue a ``wanted`` one."""
    if found != wanted:
        raise SegnasError(f"{run_dir}: a {found} run, not a {wanted} run; continue it with "
                          f"{CONTINUE[found].replace('METHOD', 'its method')} {run_dir}")


def start_job(cls: type[C], cfg: C | None, resume: str | Path | None, kind: str,
              changes: Optional[Mapping[str, Any]] = None) -> tuple[C, RunDir | None]:
    """The job's settings (a resumed run's own config.yaml wins) with threads and seeds applied;
    the existing run directory when resuming (which must be a ``kind`` run: "search",
    "comparison" or "training"), else None (see ``open_run``). ``changes``: ``RESUMABLE`` settings
    (dotted keys) the resumed run takes anew, kept in its config.yaml for the next resume."""
    run = None
    if resume is not None:
        run = RunDir.existing(resume)
        refuse_other_run(resume, run_kind(run.path), kind)
        check_resumable(changes or {}, resume)
        cfg = load_config(cls, run.path / "config.yaml", dict(changes or {}), saved=True)
        if changes:
            save_config(cfg, run.path / "config.yaml")
    else:
        RunDir.check_parent(cfg.out_dir)  # before any work: the run directory goes there at the end
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    return cfg, run


def open_run(cfg, run: RunDir | None) -> RunDir:
    """The run directory: the resumed one, or a new one holding the settings. Call it only once
    everything that can fail on user input has been built, so no empty run is left behind."""
    if run is not None:
        return run
    run = RunDir.create(cfg.out_dir, cfg.job)
    save_config(cfg, run.path / "config.yaml")
    return run
