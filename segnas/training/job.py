"""The training job: datasets and network from settings, a run directory, the engine's Trainer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from segnas.config.io import saved_form
from segnas.config.train import TrainConfig
from segnas.cost.memory import check_training_memory
from segnas.data import SegmentationDataset, eval_transforms, open_data, train_transforms, validate_dataset
from segnas.data.base import check_same_classes
from segnas.data.statistics import median_frequency_weights
from segnas.engine import distributed
from segnas.engine.checkpoint import load_checkpoint, load_latest_checkpoint, previous_path
from segnas.engine.rng import kept_rng
from segnas.engine.rundir import RunDir
from segnas.engine.trainer import Trainer, TrainResult, check_placement
from segnas.errors import SegnasError
from segnas.progress import Echo, SaidBeforeRun
from segnas.training.start import CLASSES_FILE, check_resumed_classes, keep_classes, open_run, start_job
from segnas.training.models import build_network, load_init_weights, load_trained, model_spec_from_config
from segnas.utils import atomic_write_text, read_record


def make_datasets(cfg: TrainConfig) -> tuple[SegmentationDataset, SegmentationDataset | None]:
    """(train set with augmentation, val set at native or base size) from the data settings."""
    dc = cfg.data
    train = open_data(dc, dc.train_split)
    focus = class_ids(dc.focus_classes, train.classes.names, "data.focus_classes")
    train.transform = train_transforms(dc.crop_size, tuple(dc.scale), dc.jitter, dc.base_size, focus, dc.focus_prob,
                                       dc.blur_prob, dc.noise_std)
    val = open_data(dc, dc.val_split, eval_transforms(dc.base_size)) if dc.val_split else None
    return train, val


def class_ids(classes: Sequence[int | str], names: Sequence[str], setting: str) -> list[int]:
    """Class ids of ``classes`` given as ids or names (case-insensitive) of the dataset's ``names``."""
    lookup = {n.lower(): i for i, n in enumerate(names)}
    ids = []
    for c in classes:
        i = lookup.get(c.lower()) if isinstance(c, str) else c
        if i is None or not 0 <= i < len(names):
            raise SegnasError(f"{setting}: {c!r} is not a class of the dataset (its classes: {', '.join(names)})")
        ids.append(int(i))
    return ids


def check_classes(cfg: TrainConfig, names: Sequence[str], where: str = "") -> None:
    """The settings that name the dataset's classes (``names``), checked before any work: known focus
    classes, one class weight per class; errors name the setting under ``where`` (e.g. ``final: ``)."""
    class_ids(cfg.data.focus_classes, names, f"{where}data.focus_classes")
    given = cfg.loss.class_weights
    if isinstance(given, (list, tuple)) and len(given) != len(names):
        raise SegnasError(f"{where}loss.class_weights: {len(given)} weights for the dataset's {len(names)} "
                          f"classes ({', '.join(names)})")


def train_job(cfg: TrainConfig, resume: str | Path | None = None,
              echo: Echo | None = None,
              changes: Mapping[str, Any] | None = None) -> TrainResult:
    """Train as ``cfg`` says in a new run directory, or continue the run at ``resume``.

    When resuming, the run's own config.yaml is authoritative, except for the settings of where it
    computes (``training.start.RESUMABLE``: device, data.root, threads, ...) that ``cfg`` holds or
    ``changes`` give (``start_job``): a run may move between a GPU and the CPU.
    """
    cfg, run = start_job(TrainConfig, cfg, resume, "training", changes)
    said = SaidBeforeRun(echo)  # (its run's log.txt keeps what the training says before the run exists)

    # Everything that can fail on user input is built before a new run directory is created.
    distributed.check_batch_split(cfg.data.batch_size)
    check_placement(cfg)
    data = validate_dataset(cfg.data, cfg.progress, said)
    data.check_whole_image_batches(cfg.data)
    train_set, val_set = make_datasets(cfg)
    check_classes(cfg, train_set.classes.names)
    if run is not None:
        check_resumed_classes(run.path, train_set.classes.names, cfg.data.root, _checkpoint_classes(run))
    spec = model_spec_from_config(cfg.model) if resume is None else _spec_of_run(run, cfg, echo)
    model = build_network(spec, train_set.num_classes)
    init = _init_weights(model, cfg, run, echo)
    batch, (sample_size, size_setting) = min(cfg.data.batch_size, len(train_set)), data.train_sample_size(cfg.data)
    check_training_memory(model, batch, sample_size, size_setting, cfg.device)
    check_batch_statistics(model, batch, sample_size, len(train_set))
    weights = class_weights(cfg, train_set)
    check_accumulation(cfg, len(train_set))
    data.note_padded_crops(cfg.data, said)  # (once the sizes have passed their checks)
    teacher_model = cfg.loss.teacher_model if run is None else None
    if teacher_model:  # after every check of the student's own settings
        from segnas.training.cached import with_teacher  # it trains through this module

        with kept_rng():  # training the teacher reseeds: the student draws as with a cached one
            cfg = with_teacher(cfg, echo)
    teacher = load_teacher(cfg.loss.teacher, train_set.classes.names) if cfg.loss.teacher else None
    run = open_run(cfg, run)  # its config.yaml keeps the rule (median_frequency), not the numbers
    keep_classes(run, train_set.classes.names)
    said.log_into(run.log)
    if echo and run.main:
        echo(f"training: run {run.path}")
    if teacher_model and run.main:
        run.log(f"loss.teacher_model {teacher_model}: distilling {cfg.loss.teacher} (trained once, cached)")
    if init is not None and run.main and not (run.path / INIT_RECORD).is_file():
        atomic_write_text(run.path / INIT_RECORD, json.dumps(init))
        run.log(f"model.init: loaded {init['loaded']} of {init['of']} tensors from {init['weights']}")
    classes = {"names": list(train_set.classes.names), "colors": [list(c) for c in train_set.classes.colors]}

    def tell(message: str) -> None:  # in the run's log (rank 0: ``RunDir.log``) and on the terminal
        run.log(message)
        if echo:
            echo(message)

    if weights is not None:
        tell("loss.class_weights (median frequency): " + ", ".join(
            f"{name} {w:.3g}" for name, w in zip(train_set.classes.names, weights)))
        cfg = cfg.model_copy(update={"loss": cfg.loss.model_copy(update={"class_weights": weights})})
    trainer = Trainer(model, train_set, val_set, cfg, run, spec, classes, teacher, echo)
    steps = trainer.planned_steps()
    if steps is not None and cfg.optim.warmup_iters >= steps:
        tell(f"note: the {steps}-step budget ends within the learning rate's {cfg.optim.warmup_iters}-step "
             "warm-up (optim.warmup_iters): the rate never reaches optim.lr; train longer or shorten the warm-up")
    if not trainer.resume_if_possible():
        if resume is not None and echo is not None:
            echo(f"{resume}: no checkpoint yet (the run was stopped before its first one): training from the start")
        run.log(f"start: {json.dumps(saved_form(cfg))}")
    result = trainer.fit()
    result.init = init
    return result


def _checkpoint_classes(run: RunDir) -> list[str] | None:
    """The class names in a resumed run's last checkpoint (a run from before ``CLASSES_FILE`` was
    kept), None where it has none or cannot be read (the resume then says why)."""
    if (run.path / CLASSES_FILE).is_file() or not run.last_checkpoint.is_file():
        return None
    try:
        return list(load_checkpoint(run.last_checkpoint)["classes"]["names"])
    except (SegnasError, KeyError, TypeError):
        return None


def check_batch_statistics(model: nn.Module, batch: int, size: tuple[int, int] | None, train_images: int) -> None:
    """Refuse (before any work) training batches of one sample for a network with a BatchNorm layer
    that then sees a single value per channel (after global pooling, or a feature map of 1x1): its
    batch statistics do not exist and the first training step would fail."""
    if batch >= 2:
        return
    single: list[str] = []

    def record(name: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple) -> None:
            x = inputs[0]
            if x.dim() >= 2 and x.numel() == x.shape[0] * x.shape[1]:
                single.append(name)
        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in model.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not hooks:
        return
    h, w = size or (64, 64)
    training = model.training
    try:
        model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model(torch.zeros(1, 3, h, w))
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    if single:
        why = f"the training split holds {train_images} image" if train_images < 2 else "data.batch_size is 1"
        raise SegnasError(f"data.batch_size: training batches of one image ({why}) cannot train the network's "
                          f"BatchNorm layer {single[0]!r}, which sees one value per channel; use batches of at "
                          "least 2 images")


def check_accumulation(cfg: TrainConfig, train_images: int) -> None:
    """``accumulate_batches`` must fit an epoch's full batches (checked before any work)."""
    batches = train_images // max(min(cfg.data.batch_size, train_images), 1)
    if cfg.accumulate_batches > batches:
        raise SegnasError(f"accumulate_batches: {cfg.accumulate_batches} exceeds the {batches} batches of an epoch of "
                          f"{cfg.data.train_split!r} ({train_images} images at batch {cfg.data.batch_size})")


def class_weights(cfg: TrainConfig, train_set: SegmentationDataset) -> list[float] | None:
    """The weights ``loss.class_weights: median_frequency`` stands for, from the training split's
    labels as stored (no augmentation); None for any other setting."""
    if cfg.loss.class_weights != "median_frequency":
        return None
    return [round(w, 6) for w in median_frequency_weights(train_set, train_set.num_classes)]


#: The run directory's record of what ``model.init`` loaded (read back when the run resumes).
INIT_RECORD = "init.json"


def _init_weights(model, cfg: TrainConfig, run: RunDir | None, echo: Echo | None) -> dict | None:
    """Load ``model.init`` into ``model`` (a new run, or a resumed one without a checkpoint yet);
    a resumed run with a checkpoint gets its weights from there and reports its earlier load."""
    if cfg.model.init is None:
        return None
    if run is not None and (run.last_checkpoint.is_file() or previous_path(run.last_checkpoint).is_file()):
        record = run.path / INIT_RECORD
        return read_record(record, "the run's report leaves out what model.init loaded")
    init = load_init_weights(model, cfg.model.init)
    if echo:
        echo(f"model.init: loaded {init['loaded']} of {init['of']} tensors from {init['weights']}"
             + (f" ({init['shape_mismatch']} of the same name but another shape left as initialized)"
                if init["shape_mismatch"] else ""))
    return init


def load_teacher(checkpoint: str, names: Sequence[str]) -> nn.Module:
    """A frozen, eval-mode teacher network for distillation, of the dataset's classes ``names``."""
    try:
        teacher, classes, _, _ = load_trained(checkpoint)  # the weights its training scored
    except SegnasError as exc:
        raise SegnasError(f"loss.teacher (--teacher): {exc}") from None
    check_same_classes(classes.names, names, f"loss.teacher: {checkpoint}", "the dataset",
                       "it would teach other classes")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _spec_of_run(run: RunDir, cfg: TrainConfig, echo: Echo | None = None) -> dict:
    """A resumed run rebuilds the network from its checkpoint's spec (the arch file may have moved);
    an unusable ``last.pt`` is replaced by the one before it here, with a notice."""
    state = load_latest_checkpoint(run.last_checkpoint, lambda m: (run.log(m), echo and echo(m)))
    return state["model_spec"] if state is not None else model_spec_from_config(cfg.model)
