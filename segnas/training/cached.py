"""Trainings done once and reused: a network trained for a purpose other than the run at hand (the
teacher a student distils, the encoder RL children share), kept in segnas's cache by a key of
everything its weights depend on, resumed when a run was killed, read back when finished.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from segnas.config.io import load_config, saved_form
from segnas.config.train import LossConfig, TrainConfig
from segnas.engine.rundir import best_checkpoint, latest_run
from segnas.errors import SegnasError
from segnas.progress import Echo
from segnas.training.job import train_job
from segnas.utils import atomic_write_text, cache_dir, read_record
from segnas.zoo import zoo_name

#: Settings that change where or how fast a training runs, or what it reports, not its weights
#: (left out of its key): top-level fields, and fields of its data section.
NOT_IN_KEY = ("job", "out_dir", "progress", "device", "threads", "eval_every")
DATA_NOT_IN_KEY = ("workers", "cache", "eval_batch_size", "val_split")
#: The record a finished cached training leaves in its folder.
DONE_FILE = "trained.json"


#: The form of ``training_key``; bump it when a changed default changes what a training learns
#: (keys leave out settings at their defaults, so that a setting added with a default that keeps
#: the old behaviour keeps every cached training valid; a test pins the defaults).
KEY_FORMAT = 2


def training_key(cfg: TrainConfig) -> str:
    """A stable key of everything the weights of training ``cfg`` depend on: its settings that
    differ from the defaults (an architecture file by its content, not its path)."""
    payload = {k: v for k, v in cfg.model_dump(mode="json", exclude_defaults=True).items() if k not in NOT_IN_KEY}
    payload["data"] = {k: v for k, v in payload.get("data", {}).items() if k not in DATA_NOT_IN_KEY}
    if cfg.model.arch:
        arch = Path(cfg.model.arch)
        if not arch.is_file():
            raise SegnasError(f"model.arch: {arch}: file not found")
        payload["model"]["arch"] = hashlib.sha1(arch.read_bytes()).hexdigest()
    payload["key_format"] = KEY_FORMAT
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock: one process at a time trains (or reads) a cached training."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def trained_once(cfg: TrainConfig, folder: str | Path, what: str, echo: Echo | None = None) -> Path:
    """The final checkpoint (``best.pt``: the last evaluation's weights) of training ``cfg`` in
    ``folder``: the finished one recorded there, else trained now (the newest killed run there
    continued). ``what`` names it in messages. Processes asking for the same folder at once wait
    for the one that trains it. A killed run continues on ``cfg``'s device."""
    echo = echo or (lambda m: None)
    folder = Path(folder)
    with _exclusive(folder):
        done = folder / DONE_FILE
        info: dict[str, Any] | None = read_record(done, "the network is trained (or its training continued)")
        if info is not None and isinstance(info.get("checkpoint"), str):
            if Path(info["checkpoint"]).is_file():
                echo(f"{what}: reusing {info['checkpoint']}")
                return Path(info["checkpoint"])
        killed = latest_run(folder)
        echo(f"{what}: training it once into {folder}" + (" (continuing a killed run)" if killed else ""))
        result = train_job(cfg.model_copy(update={"out_dir": str(folder)}), resume=killed, echo=echo)
        checkpoint = best_checkpoint(result.run_dir)
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
    plain = LossConfig().model_dump(mode="json")  # no distillation of its own
    data.update(job=f"teacher-{Path(name).stem}", epochs=None, time_budget_min=None, max_steps=cfg.loss.teacher_steps,
                seed=0, eval_every=10**9,
                model={"name": None, "arch": name} if name.endswith(".json") else {"name": name},
                loss={**data["loss"], **{k: plain[k] for k in TEACHER_FIELDS}})
    return TrainConfig.model_validate(data)


def teacher_folder(cfg: TrainConfig) -> Path:
    """Where the teacher ``loss.teacher_model`` of student ``cfg`` is trained once and kept."""
    return cache_dir() / "teachers" / f"{Path(cfg.loss.teacher_model).stem}-{training_key(teacher_training(cfg))}"


def same_training(run: TrainConfig, cfg: TrainConfig) -> bool:
    """Whether the run whose settings are ``run`` (read back from its config.yaml) trains what ``cfg``
    would: the same ``training_key``, paths made absolute as a run keeps them, the dataset's place
    (``data.root``) aside: a run continues with its data moved; a ``cfg`` naming a
    ``loss.teacher_model`` matches a run that distils that teacher's cached checkpoint."""
    def key(c: TrainConfig, teacher: str | None) -> str:
        c = TrainConfig.model_validate(saved_form(c))
        return training_key(c.model_copy(update={"data": c.data.model_copy(update={"root": None}),
                                                 "loss": c.loss.model_copy(update={"teacher": teacher,
                                                                                  "teacher_model": None})}))

    if cfg.loss.teacher_model:
        folder = teacher_folder(cfg)
        if not run.loss.teacher or not Path(run.loss.teacher).resolve().is_relative_to(folder.resolve()):
            return False
        return key(run, None) == key(cfg, None)
    return key(run, run.loss.teacher) == key(cfg, cfg.loss.teacher)


def resumable_training(folder: str | Path, cfg: TrainConfig, job: str | None = None,
                       echo: Echo | None = None) -> Path | None:
    """The newest run directory in ``folder`` (of ``job``, when given) to continue or read back for
    training ``cfg``: None when there is none, or when it trains something else (``same_training``:
    a changed recipe, or segnas updated between two sessions of a study): that run is left as it is,
    said through ``echo``, and ``cfg`` trains afresh."""
    run = latest_run(folder, job)
    if run is None:
        return None
    if same_training(load_config(TrainConfig, run / "config.yaml", saved=True), cfg):
        return run
    (echo or (lambda m: None))(f"{run}: trained with other settings than this job's; training afresh")
    return None


#: The loss settings of distillation itself (a teacher trains without them).
TEACHER_FIELDS = ("teacher", "teacher_model", "teacher_steps", "kd_weight", "kd_temperature")


def with_teacher(cfg: TrainConfig, echo: Echo | None = None) -> TrainConfig:
    """``cfg`` distilling the checkpoint of its ``loss.teacher_model``, trained once
    (``teacher_training``) and cached in segnas's cache folder: ``loss.teacher`` set to it and
    ``teacher_model`` cleared (a resumed run reads the checkpoint); ``cfg`` itself without one."""
    name = cfg.loss.teacher_model
    if not name:
        return cfg
    if name.endswith(".json") and not Path(name).is_file():
        raise SegnasError(f"loss.teacher_model: {name}: file not found")
    if not name.endswith(".json"):  # (one cached teacher for "Fast-SCNN" and "fast_scnn")
        cfg = cfg.model_copy(update={"loss": cfg.loss.model_copy(update={"teacher_model": zoo_name(
            name, "loss.teacher_model")})})
    checkpoint = trained_once(teacher_training(cfg), teacher_folder(cfg), f"loss.teacher_model {name}", echo)
    return cfg.model_copy(update={"loss": cfg.loss.model_copy(update={"teacher": str(checkpoint), "teacher_model": None})})
