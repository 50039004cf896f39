"""Trainings done once and reused: a network trained for a purpose other than the run at hand (the
teacher a student distils, the encoder RL children share), kept in segnas's cache by a key of
everything its weights depend on, resumed when a run was killed, read back when finished.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from segnas.config.train import TrainConfig
from segnas.training.job import train_job
from segnas.utils import atomic_write_text, cache_dir

#: Settings that change where or how fast a training runs, not its weights (left out of its key).
NOT_IN_KEY = ("job", "out_dir", "progress", "device", "threads")
#: The record a finished cached training leaves in its folder.
DONE_FILE = "trained.json"


def training_key(cfg: TrainConfig) -> str:
    """A stable key of everything the weights of training ``cfg`` depend on."""
    payload = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in NOT_IN_KEY}
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def trained_once(cfg: TrainConfig, folder: str | Path, what: str, echo: Callable[[str], None] | None = None,
                 device: str | None = None) -> Path:
    """The final checkpoint (``best.pt``: the last evaluation's weights) of training ``cfg`` in
    ``folder``: the finished one recorded there, else trained now (the newest killed run there
    continued). ``what`` names it in messages."""
    echo = echo or (lambda m: None)
    folder = Path(folder)
    done = folder / DONE_FILE
    if done.is_file():
        info: dict[str, Any] = json.loads(done.read_text())
        if Path(info["checkpoint"]).is_file():
            echo(f"{what}: reusing {info['checkpoint']}")
            return Path(info["checkpoint"])
    runs = sorted(p for p in folder.iterdir() if (p / "config.yaml").is_file()) if folder.is_dir() else []
    echo(f"{what}: training it once into {folder}" + (" (continuing a killed run)" if runs else ""))
    result = train_job(cfg.model_copy(update={"out_dir": str(folder)}), resume=runs[-1] if runs else None,
                       echo=echo, device=device)
    checkpoint = Path(result.run_dir) / "checkpoints" / "best.pt"
    atomic_write_text(done, json.dumps({"checkpoint": str(checkpoint), "key": training_key(cfg),
                                        "final": {k: v for k, v in result.final.items() if k != "val_iou"},
                                        "train_seconds": round(result.train_seconds, 1)}, indent=2))
    return checkpoint


def teacher_training(cfg: TrainConfig) -> TrainConfig:
    """The training of the teacher ``loss.teacher_model`` that student ``cfg`` distils: the student's
    data and recipe without distillation, for ``loss.teacher_steps`` optimizer steps, seed 0 (one
    teacher for every student seed), scored once at the end."""
    name = cfg.loss.teacher_model
    data = cfg.model_dump(mode="json")
    data.update(job=f"teacher-{Path(name).stem}", epochs=None, time_budget_min=None, max_steps=cfg.loss.teacher_steps,
                seed=0, eval_every=10**9,
                model={"name": None, "arch": name} if name.endswith(".json") else {"name": name},
                loss={**data["loss"], "teacher": None, "teacher_model": None})
    return TrainConfig.model_validate(data)


def with_teacher(cfg: TrainConfig, echo: Callable[[str], None] | None = None, device: str | None = None) -> TrainConfig:
    """``cfg`` with ``loss.teacher`` set to the checkpoint of its ``loss.teacher_model``, trained once
    (``teacher_training``) and cached in segnas's cache folder; ``cfg`` itself without a teacher model."""
    if not cfg.loss.teacher_model or cfg.loss.teacher:
        return cfg
    teacher = teacher_training(cfg)
    folder = cache_dir() / "teachers" / f"{Path(cfg.loss.teacher_model).stem}-{training_key(teacher)}"
    checkpoint = trained_once(teacher, folder, f"loss.teacher_model {cfg.loss.teacher_model}", echo, device)
    return cfg.model_copy(update={"loss": cfg.loss.model_copy(update={"teacher": str(checkpoint)})})
