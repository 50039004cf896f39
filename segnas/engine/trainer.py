"""The training loop: optimizer and schedule, losses, EMA or SWA, bf16, evaluation, checkpoints, resume.

A run is fully described by its run directory: ``fit()`` on a directory holding
``checkpoints/last.pt`` continues from it with model, optimizer, EMA, epoch, step, elapsed time
and every RNG state restored, so a resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from segnas.config.io import saved_form
from segnas.config.train import TrainConfig
from segnas.data.transforms import BatchCrop
from segnas.engine import distributed
from segnas.engine.checkpoint import keep_previous, load_latest_checkpoint, save_checkpoint
from segnas.engine.device import resolve_device
from segnas.engine.ema import ModelEMA
from segnas.engine.evaluate import evaluate
from segnas.engine.losses import SegmentationLoss
from segnas.engine.optim import build_optimizer, lr_factor, set_lr
from segnas.engine.rundir import RunDir
from segnas.engine.step import LoopState, Placement, optimizer_step, train_loader
from segnas.engine.swa import WeightAverage
from segnas.errors import SegnasError, TrainingDiverged
from segnas.metrics import SegMetrics
from segnas.progress import Echo, Progress, progress_bar


@dataclass
class TrainResult:
    """What a training returns (``segnas.api.train``), read from its run directory's files."""

    run_dir: str
    """The run directory (absolute from ``segnas.api.train``)."""
    best_miou: float
    """The best validation mIoU (a fraction): ``best.pt``'s weights."""
    best_epoch: int
    """The epoch ``best_miou`` was reached at."""
    final: dict[str, Any]
    """The last metrics record with a validation score (else the last record): ``epoch``, ``step``,
    ``train_loss``, ``lr``, ``val_miou``, ``val_iou`` (per class), ``val_pixel_acc``, ``finished``, ..."""
    epochs_done: int
    """Epochs trained."""
    train_seconds: float
    """Training time in seconds on the training's ``budget_clock``."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """Every metrics record (``metrics.jsonl``), one per epoch."""
    bf16: bool = False
    """Whether bf16 autocast was used (False where the CPU lacks native bf16)."""
    init: dict[str, Any] | None = None
    """What ``model.init`` loaded before training (weights file, tensors loaded / of the network), or None."""

    @property
    def epochs_wall_seconds(self) -> float:
        """Wall-clock seconds of the training epochs (evaluations aside): a GPU training's time, which
        ``train_seconds`` on the CPU clock does not measure."""
        return sum(r.get("epoch_s", 0.0) for r in self.history)

    def closing_line(self) -> str:
        """What the training ended with: its best val mIoU and epoch (or that it scored nothing)."""
        if self.best_miou < 0:
            return "no validation split: best.pt holds the last weights"
        return f"best val mIoU {100 * self.best_miou:.2f}% at epoch {self.best_epoch}"


def build_loss(cfg: TrainConfig) -> SegmentationLoss:
    """The training loss of ``cfg`` (``loss.class_weights`` must be numbers by now: a job resolves
    ``median_frequency`` from its training split, ``segnas.training.job``)."""
    lc = cfg.loss
    if isinstance(lc.class_weights, str):
        raise SegnasError(f"loss.class_weights: {lc.class_weights!r} is resolved from the training data by the "
                          "training job; give numbers to build the loss directly")
    return SegmentationLoss(lc.kind, lc.aux_weight, lc.ohem_thresh, lc.ohem_min_kept, lc.class_weights,
                            lc.kd_weight, lc.kd_temperature, lc.detail_weight, label_smoothing=lc.label_smoothing,
                            boundary_weight=lc.boundary_weight)


def use_channels_last(cfg: TrainConfig, model: nn.Module, bf16: bool | None = None) -> bool:
    """Whether to train in channels-last: as configured, unless bf16 is on (``bf16``, default
    ``cfg.bf16``) and the network is marked as failing with that combination
    (``SegmentationNet.bf16_channels_last_ok``)."""
    bf16 = cfg.bf16 if bf16 is None else bf16
    return cfg.channels_last and not (bf16 and not getattr(model, "bf16_channels_last_ok", True))


def check_placement(cfg: TrainConfig) -> None:
    """SegnasError, before any work, for a device this machine lacks (``cfg.device``) or a CPU-time
    budget of a training on a GPU."""
    device = resolve_device(distributed.device_name(cfg.device))
    if device.type == "cuda" and cfg.time_budget_min and cfg.budget_clock == "cpu":
        raise SegnasError("budget_clock: 'cpu' counts this process's CPU time, which does not measure "
                          "training on a GPU; use 'wall' (or a max_steps budget)")


#: About how many times a training scores its validation split by default (``eval_every`` None).
DEFAULT_EVALUATIONS = 100


def eval_interval(eval_every: int | None, planned_epochs: int | None) -> int:
    """Epochs between validation scores: ``eval_every`` as set; by default every epoch, or for a
    budget of more than ``DEFAULT_EVALUATIONS`` epochs (a small training split, where an epoch is a
    step or a few) every k-th, so that scoring takes no more of the training than on a large split."""
    if eval_every is not None:
        return eval_every
    return max(1, -(-planned_epochs // DEFAULT_EVALUATIONS)) if planned_epochs else 1


class Trainer:
    """Trains ``model`` on ``train_set`` and scores it on ``val_set`` each ``eval_every`` epochs.

    ``model_spec`` (how to rebuild the network) and ``classes`` are stored in every checkpoint so
    that `eval`, `predict` and `export` need only the checkpoint.

    Under ``torchrun`` it trains data-parallel (``segnas.engine.distributed``): ``data.batch_size``
    is the global batch, gradients are averaged, BatchNorm is synchronized when ``cfg.sync_bn``,
    rank 0 evaluates and writes the run directory.
    """

    def __init__(self, model: nn.Module, train_set: Dataset, val_set: Dataset | None, cfg: TrainConfig,
                 run: RunDir, model_spec: dict[str, Any], classes: dict[str, Any],
                 teacher: nn.Module | None = None, echo: Echo | None = None) -> None:
        self.cfg = cfg
        self.run = run
        self.dist = distributed.context()
        if cfg.sync_bn:
            model = distributed.convert_sync_batchnorm(model)
        self.model = model
        self.train_set = train_set
        self.val_set = val_set
        self.model_spec = model_spec
        self.classes = classes
        self.num_classes = len(classes["names"])
        self.teacher = teacher.eval() if teacher is not None else None
        self.echo = echo if echo is not None and self.dist.is_main else (lambda msg: None)
        check_placement(cfg)
        place = Placement.resolve(cfg.device, cfg.bf16, self.echo)
        channels_last = use_channels_last(cfg, model, place.bf16)
        if cfg.channels_last and not channels_last:
            self.echo(f"{type(model).__name__}: training in NCHW, not channels-last (bf16 + channels-last is known "
                      "to give NaN gradients on this network)")
        self.place = dataclasses.replace(place, channels_last=channels_last)
        self.place.module(self.model)
        distributed.broadcast_module(self.model)  # every rank starts from rank 0's weights
        if self.teacher is not None:
            self.place.module(self.teacher)
        self.criterion = build_loss(cfg).to(self.place.device)
        self.optimizer = build_optimizer(model, cfg.optim)
        self.ema = ModelEMA(model, cfg.ema_decay) if cfg.ema_decay else None
        self.swa = WeightAverage(model, cfg.swa_start, cfg.swa_bn_batches) if cfg.swa_start else None
        #: epoch, step, training time on ``cfg.budget_clock`` (which the time budget counts), data order
        self.loop = LoopState(cfg.seed, cfg.budget_clock)
        self.best_miou = -1.0
        self.best_epoch = 0
        self.finished = False

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "model_spec": self.model_spec,
            "classes": self.classes,
            "config": saved_form(self.cfg),  # file and folder settings absolute: read from any folder
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "swa": self.swa.state_dict() if self.swa else None,
            **self.loop.state_dict(),  # epoch, step, elapsed_s, rng
            "best_miou": self.best_miou,
            "best_epoch": self.best_epoch,
            "finished": self.finished,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        if self.swa and state.get("swa"):
            self.swa.load_state_dict(state["swa"])
        self.loop.load_state_dict(state)
        self.best_miou, self.best_epoch = state["best_miou"], state["best_epoch"]
        self.finished = state.get("finished", False)

    def resume_if_possible(self) -> bool:
        """Load ``last.pt`` (or, if unusable, ``last.prev.pt``) from the run directory if there is one;
        True if resumed. The metrics are cut back to the checkpoint's epoch (to none without one)."""
        state = distributed.main_first(lambda: load_latest_checkpoint(self.run.last_checkpoint, self._notice))
        if state is None:
            self.run.truncate_metrics(0)
            return False
        self.load_state_dict(state)
        loop = self.loop
        self.run.truncate_metrics(loop.epoch)
        self.run.log(f"resumed at epoch {loop.epoch}, step {loop.step}, {loop.elapsed:.1f}s trained")
        self.echo(f"{self.run.path}: already finished at epoch {loop.epoch}" if self.finished else
                  f"resuming {self.run.path} from epoch {loop.epoch}")
        return True

    def _notice(self, message: str) -> None:
        self.run.log(message)
        self.echo(message)

    # ----------------------------------------------------------------- loop
    @property
    def eval_model(self) -> nn.Module:
        """The network evaluated and saved as best.pt: the EMA, the SWA average once it holds
        weights (its BatchNorm statistics recomputed before: ``swa.ready``, on every rank), else the
        trained weights."""
        if self.ema:
            return self.ema.module
        if self.swa and self.swa.count:
            if not self.swa.bn_fresh:
                raise RuntimeError("the SWA average is evaluated before its BatchNorm statistics were recomputed")
            return self.swa.module
        return self.model

    @property
    def eval_weights(self) -> str:
        """Which weights ``eval_model`` holds: "EMA", "SWA" or "raw"."""
        return "EMA" if self.ema else "SWA" if self.swa and self.swa.count else "raw"

    def _loader(self, generator: torch.Generator | None = None) -> DataLoader:
        dc = self.cfg.data
        return train_loader(self.train_set, dc.batch_size, generator or self.loop.generator, dc.workers,
                            pin_memory=self.place.device.type == "cuda",
                            collate_fn=BatchCrop(dc.crop_fractions) if dc.crop_fractions != [1.0] else None)

    def _bn_batches(self) -> Iterator[torch.Tensor]:
        """Training image batches for SWA's BatchNorm statistics, in an order of their own."""
        for images, masks in self._loader(torch.Generator().manual_seed(self.cfg.seed + 7919)):
            yield self.place.batch(images, masks)[0]

    def steps_per_epoch(self, loader: DataLoader | None = None) -> int:
        """Optimizer steps in an epoch (``train_job`` checks that the accumulated batches fit one)."""
        return max(len(loader or self._loader()) // self.cfg.accumulate_batches, 1)

    def planned_steps(self, loader: DataLoader | None = None) -> int | None:
        """The optimizer steps the epoch and step budgets allow (the fewer); None: a time budget alone."""
        cfg, per_epoch = self.cfg, self.steps_per_epoch(loader)
        planned = [n for n in (cfg.epochs and cfg.epochs * per_epoch, cfg.max_steps) if n]
        return min(planned) if planned else None

    def _progress(self, steps_total: int) -> float:
        p = self.loop.step / max(steps_total, 1)
        if self.cfg.time_budget_min:
            p = max(p, self._clock_now() / (60.0 * self.cfg.time_budget_min))
        return p

    def _epoch_text(self, epoch: int) -> str:
        """``epoch``, out of the epochs where they end the training (with a step or time budget they
        are a cap: a comparison's training said "epoch 1/10000")."""
        ends = self.cfg.epochs and not (self.cfg.max_steps or self.cfg.time_budget_min)
        return f"{epoch}/{self.cfg.epochs}" if ends else str(epoch)

    def _budget_spent(self) -> bool:
        if self.cfg.max_steps and self.loop.step >= self.cfg.max_steps:
            return True
        # under torchrun the ranks' clocks differ: they stop together, on the slowest clock
        return bool(self.cfg.time_budget_min) and self._clock_now() >= 60.0 * self.cfg.time_budget_min

    def _clock_now(self) -> float:
        return distributed.max_over_ranks(self.loop.clock.now)

    def _lr(self, steps_total: int) -> float:
        """The learning rate of the next step: the schedule's, or SWA's constant rate once averaging."""
        cfg, progress = self.cfg, self._progress(steps_total)
        if cfg.swa_lr is not None and progress >= cfg.swa_start:
            return cfg.swa_lr
        return cfg.optim.lr * lr_factor(cfg.optim, progress, self.loop.step)

    def train_one_epoch(self, loader: DataLoader, steps_total: int, bar: Progress | None = None) -> dict[str, float]:
        cfg = self.cfg
        self.model.train()
        sums: dict[str, float] = {}
        n = 0
        loop = self.loop
        task = bar.add_task(f"epoch {self._epoch_text(loop.epoch + 1)}", total=len(loader), info="") if bar else None
        accumulate = cfg.accumulate_batches
        usable = len(loader) // accumulate * accumulate  # a last, incomplete group of batches is skipped
        for i, (images, masks) in enumerate(loader):
            if i >= usable:
                break
            if i % accumulate == 0:
                set_lr(self.optimizer, self._lr(steps_total))
                self.optimizer.zero_grad(set_to_none=True)
            images, masks = self.place.batch(images, masks)
            teacher_logits = None
            if self.teacher is not None:
                with torch.inference_mode(), self.place.autocast():
                    teacher_logits = self.teacher(images).float().clone()
            with self.place.autocast():
                output = self.model(images)
            loss, parts = self.criterion(output, masks, teacher_logits)
            loss_value = distributed.check_finite_loss(loss)  # averaged over ranks under torchrun
            if not math.isfinite(loss_value):
                diverged = TrainingDiverged(f"optim.lr: the loss became {loss_value} at step {loop.step}; lower the "
                                            f"learning rate (now {cfg.optim.lr}) or enable optim.clip_grad_norm")
                self.run.log(f"stopped: {diverged}")  # the run directory says why it ended
                raise diverged
            (loss / accumulate if accumulate > 1 else loss).backward()
            n += 1
            sums["loss"] = sums.get("loss", 0.0) + loss_value
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            if bar is not None:
                bar.update(task, advance=1, info=f"loss {sums['loss'] / n:.3f}")
            if (i + 1) % accumulate:
                continue
            distributed.average_gradients(self.model.parameters())
            optimizer_step(self.optimizer, cfg.optim.clip_grad_norm, self.model.parameters())
            if self.ema:
                self.ema.update(self.model)
            if self.swa:
                self.swa.update(self.model, self._progress(steps_total))
            loop.step += 1
            if self._budget_spent():
                break
        if bar is not None:
            bar.remove_task(task)
        return distributed.mean_over_ranks({k: v / max(n, 1) for k, v in sums.items()})

    def fit(self) -> TrainResult:
        cfg = self.cfg
        loader = self._loader()
        planned = self.planned_steps(loader)
        steps_total = planned or 2**62  # (a time-only budget drives the LR by time)
        every = eval_interval(cfg.eval_every, planned and -(-planned // self.steps_per_epoch(loader)))
        loop = self.loop
        with progress_bar(cfg.progress and self.dist.is_main) as bar:
            while not self.finished and (cfg.epochs is None or loop.epoch < cfg.epochs):
                wall_start = time.perf_counter()
                with loop.clock:
                    losses = self.train_one_epoch(loader, steps_total, bar)
                epoch_s = time.perf_counter() - wall_start
                loop.epoch += 1
                self.finished = (cfg.epochs is not None and loop.epoch >= cfg.epochs) or self._budget_spent()
                record: dict[str, Any] = {"epoch": loop.epoch, "step": loop.step, "finished": self.finished,
                                          "lr": self.optimizer.param_groups[0]["lr"],
                                          "epoch_s": round(epoch_s, 3), "train_s": round(loop.elapsed, 3),
                                          **{f"train_{k}": round(v, 5) for k, v in losses.items()}}
                distributed.average_buffers(self.model)  # BN statistics: the same network on every rank
                if self.ema:
                    distributed.average_buffers(self.ema.module)
                if self.swa and self.swa.count and (loop.epoch % every == 0 or self.finished):
                    # on every rank: under torchrun SyncBatchNorm gathers the statistics of each rank's batches
                    self.swa.ready(self._bn_batches)
                if self.val_set is not None and (loop.epoch % every == 0 or self.finished):
                    t0 = time.perf_counter()
                    metrics = distributed.broadcast_object(evaluate(
                        self.eval_model, self.val_set, self.num_classes, cfg.data.eval_batch_size, self.place.bf16,
                        self.place.channels_last) if self.dist.is_main else None)
                    record.update(val_miou=metrics.miou, val_pixel_acc=metrics.pixel_acc,
                                  val_mean_acc=metrics.mean_acc, val_fwiou=metrics.fwiou,
                                  val_iou=metrics.iou, eval_s=round(time.perf_counter() - t0, 3))
                    if metrics.miou > self.best_miou:
                        self.best_miou, self.best_epoch = metrics.miou, loop.epoch
                        self._save_best(metrics)
                self.run.write_metrics(record)
                state = self.state_dict()  # on every rank: it gathers each rank's RNG streams
                if self.dist.is_main:
                    keep_previous(self.run.last_checkpoint)
                    save_checkpoint(self.run.last_checkpoint, state)
                line = (f"epoch {self._epoch_text(loop.epoch)} loss {losses.get('loss', float('nan')):.4f} "
                        f"{epoch_s:.1f}s" + (f" val mIoU {100 * record['val_miou']:.2f}%" if "val_miou" in record else ""))
                self.run.log(line)
                self.echo(line)
        if self.swa and self.swa.count:  # on every rank (SyncBatchNorm); nothing to do when they are fresh
            self.swa.ready(self._bn_batches)
        if self.val_set is None and self.dist.is_main and not self.run.best_checkpoint.is_file():
            self._save_best(None)
        distributed.barrier()  # rank 0's metrics and checkpoints are written
        history = self.run.read_metrics()
        final = next((r for r in reversed(history) if "val_miou" in r), history[-1] if history else {})
        result = TrainResult(str(self.run.path), self.best_miou, self.best_epoch, final, loop.epoch,
                             loop.elapsed, history, self.place.bf16)
        self.run.log(f"finished: {result.closing_line()}")
        return result

    def _save_best(self, metrics: SegMetrics | None) -> None:
        if not self.dist.is_main:
            return
        save_checkpoint(self.run.best_checkpoint, {
            "model": self.eval_model.state_dict(),
            "model_spec": self.model_spec,
            "classes": self.classes,
            "config": saved_form(self.cfg),  # file and folder settings absolute: read from any folder
            "epoch": self.loop.epoch,
            "weights": self.eval_weights,
            "metrics": metrics.to_dict() if metrics else None,
        })
