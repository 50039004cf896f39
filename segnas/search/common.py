"""Pieces every search job shares: its data, the latency table of its target, and the settings of
the final training of a derived network."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset, Subset

from segnas.config.search import LatencyTarget, SearchJobConfig
from segnas.config.train import TrainConfig
from segnas.cost import LatencyTable
from segnas.data import eval_transforms, open_split, train_transforms
from segnas.errors import SegnasError


def latency_size(cfg: SearchJobConfig) -> tuple[int, int]:
    """The deployment input size latencies are for: latency.size, else the training crop size."""
    size = cfg.latency.size or cfg.data.crop_size or cfg.data.base_size
    if size is None:
        raise SegnasError("latency.size: give the deployment input size (HxW), e.g. --size 360x480")
    return tuple(size)


def search_train_set(cfg: SearchJobConfig) -> Dataset:
    """The training split as the search sees it: whole images resized to search_size when set
    (searching at reduced resolution), else the data section's augmented crops."""
    dc = cfg.data
    tf = (train_transforms(None, jitter=dc.jitter, base_size=cfg.search_size) if cfg.search_size
          else train_transforms(dc.crop_size, tuple(dc.scale), dc.jitter, dc.base_size))
    return open_split(dc.name, dc.root, dc.train_split, tf, dc.cache, dc.options)


def search_val_subset(cfg: SearchJobConfig, images: int) -> Dataset | None:
    """The first ``images`` validation images at the search resolution (None when not wanted)."""
    dc = cfg.data
    if not dc.val_split or not images:
        return None
    val = open_split(dc.name, dc.root, dc.val_split, eval_transforms(cfg.search_size or dc.base_size),
                     dc.cache, dc.options)
    return Subset(val, range(min(len(val), images)))


def latency_table(target: LatencyTarget, threads: int | None) -> LatencyTable:
    return LatencyTable(target.backend, threads=target.threads or threads, min_runs=target.table_min_runs,
                        min_time_s=target.table_min_time_s)


def final_train_config(cfg: SearchJobConfig, run_path: Path, name: str, teacher_ckpt: Path | None = None
                       ) -> TrainConfig:
    """Training of ``<run>/<name>.json`` from scratch with OHEM (+ aux heads); with a teacher,
    pixel-wise KD from it too (KL + OHEM + 0.2·aux, FasterSeg's recipe)."""
    loss = {"kind": "ohem", "aux_weight": 0.2 if teacher_ckpt else 0.4}
    if teacher_ckpt:
        loss.update(teacher=str(teacher_ckpt), kd_weight=1.0)
    return TrainConfig.model_validate({
        "job": f"{cfg.job}-{name}", "data": cfg.data.model_dump(),
        "model": {"name": None, "arch": str(run_path / f"{name}.json")},
        "optim": cfg.final_optim.model_dump(), "loss": loss, "epochs": cfg.final_epochs,
        "time_budget_min": cfg.final_minutes, "budget_clock": cfg.final_budget_clock, "eval_every": 5,
        "ema_decay": cfg.final_ema_decay, "bf16": cfg.bf16, "channels_last": True, "threads": cfg.threads,
        "seed": cfg.seed, "out_dir": str(run_path / "train"), "progress": cfg.progress})


def search_schedule(cfg: SearchJobConfig, **extra):
    """The engine's schedule from a job's settings (``extra``: strategy-specific fields)."""
    from segnas.search.differentiable import SearchSchedule

    return SearchSchedule(pretrain_epochs=cfg.pretrain_epochs, search_epochs=cfg.search_epochs,
                          batch_size=cfg.data.batch_size, weight_lr=cfg.weight_lr, arch_lr=cfg.arch_lr,
                          bf16=cfg.bf16, seed=cfg.seed, workers=cfg.data.workers, progress=cfg.progress, **extra)


def resume_or_start(engine, cfg: SearchJobConfig, echo) -> None:
    """Continue the engine's own run if it has a checkpoint, else start from ``cfg.pretrained`` if set."""
    if not engine.resume_if_possible() and cfg.pretrained:
        n = engine.start_from_pretrained(pretrained_checkpoint(cfg.pretrained))
        echo(f"search starts from the supernet pre-trained for {n} epochs in {cfg.pretrained}")


def pretrained_checkpoint(path: str | Path) -> Path:
    """``checkpoints/pretrained.pt`` of a search run directory, or the file itself."""
    path = Path(path)
    return path / "checkpoints" / "pretrained.pt" if path.is_dir() else path
