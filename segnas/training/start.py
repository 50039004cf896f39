"""Start-up shared by every job: settings from a resumed run, threads, seeds, the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import torch

from segnas.config.io import load_config, save_config
from segnas.engine.rundir import RunDir
from segnas.utils import seed_everything

C = TypeVar("C")


def start_job(cls: type[C], cfg: C | None, resume: str | Path | None) -> tuple[C, RunDir | None]:
    """The job's settings (a resumed run's own config.yaml wins) with threads and seeds applied;
    the existing run directory when resuming, else None (see ``open_run``)."""
    run = None
    if resume is not None:
        run = RunDir.existing(resume)
        cfg = load_config(cls, run.path / "config.yaml")
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
