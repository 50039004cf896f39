"""The training loop: optimizer and schedule, losses, EMA, bf16, evaluation, checkpoints, resume.

A run is fully described by its run directory: ``fit()`` on a directory holding
``checkpoints/last.pt`` continues from it with model, optimizer, EMA, epoch, step, elapsed time
and every RNG state restored, so a resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from segnas.config.train import TrainConfig
from segnas.engine.checkpoint import load_checkpoint, save_checkpoint
from segnas.engine.device import resolve_device
from segnas.engine.ema import ModelEMA
from segnas.engine.evaluate import autocast_context, evaluate, usable_bf16
from segnas.engine.losses import SegmentationLoss
from segnas.engine.optim import build_optimizer, lr_factor, set_lr
from segnas.engine.progress import progress_bar
from segnas.engine.rng import restore_rng, rng_state
from segnas.engine.rundir import RunDir
from segnas.errors import SegnasError
from segnas.metrics import SegMetrics


@dataclass
class TrainResult:
    run_dir: str
    best_miou: float
    best_epoch: int
    final: dict[str, Any]
    epochs_done: int
    train_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    bf16: bool = False  # whether bf16 autocast was used (False where the CPU lacks native bf16)


def build_loss(cfg: TrainConfig) -> SegmentationLoss:
    lc = cfg.loss
    return SegmentationLoss(lc.kind, lc.aux_weight, lc.ohem_thresh, lc.ohem_min_kept, lc.class_weights,
                            lc.kd_weight, lc.kd_temperature, lc.detail_weight)


def use_channels_last(cfg: TrainConfig, model: nn.Module, bf16: bool | None = None) -> bool:
    """Whether to train in channels-last: as configured, unless bf16 is on (``bf16``, default
    ``cfg.bf16``) and the network is marked as failing with that combination
    (``SegmentationNet.bf16_channels_last_ok``)."""
    bf16 = cfg.bf16 if bf16 is None else bf16
    return cfg.channels_last and not (bf16 and not getattr(model, "bf16_channels_last_ok", True))


class Trainer:
    """Trains ``model`` on ``train_set`` and scores it on ``val_set`` each ``eval_every`` epochs.

    ``model_spec`` (how to rebuild the network) and ``classes`` are stored in every checkpoint so
    that `eval`, `predict` and `export` need only the checkpoint.
    """

    def __init__(self, model: nn.Module, train_set: Dataset, val_set: Dataset | None, cfg: TrainConfig,
                 run: RunDir, model_spec: dict[str, Any], classes: dict[str, Any],
                 teacher: nn.Module | None = None, echo: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.run = run
        self.model = model
        self.train_set = train_set
        self.val_set = val_set
        self.model_spec = model_spec
        self.classes = classes
        self.num_classes = len(classes["names"])
        self.teacher = teacher.eval() if teacher is not None else None
        self.echo = echo or (lambda msg: None)
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and cfg.time_budget_min and cfg.budget_clock == "cpu":
            raise SegnasError("budget_clock: 'cpu' counts this process's CPU time, which does not measure "
                              "training on a GPU; use 'wall' (or a max_steps budget)")
        self.model.to(self.device)
        if self.teacher is not None:
            self.teacher.to(self.device)
        self.bf16 = usable_bf16(cfg.bf16, self.echo, self.device.type)
        self.channels_last = use_channels_last(cfg, model, self.bf16)
        if cfg.channels_last and not self.channels_last:
            self.echo(f"{type(model).__name__}: training in NCHW, not channels-last (bf16 + channels-last is known "
                      "to give NaN gradients on this network)")
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
            if self.teacher is not None:
                self.teacher.to(memory_format=torch.channels_last)
        self.criterion = build_loss(cfg).to(self.device)
        self.optimizer = build_optimizer(model, cfg.optim)
        self.ema = ModelEMA(model, cfg.ema_decay) if cfg.ema_decay else None
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.epoch = 0
        self.step = 0
        self.elapsed = 0.0
        self.best_miou = -1.0
        self.best_epoch = 0
        self.finished = False
        self._epoch_start: float | None = None
        threads = max(torch.get_num_threads(), 1)
        # The clock that training time (and the time budget) is counted on: wall time, or this
        # process's CPU time divided by its threads (discounts waiting for the cores, not the CPU
        # time that oversubscribed threads spin away).
        self._clock = time.perf_counter if cfg.budget_clock == "wall" else (lambda: time.process_time() / threads)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "model_spec": self.model_spec,
            "classes": self.classes,
            "config": self.cfg.model_dump(mode="json"),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "epoch": self.epoch,
            "step": self.step,
            "elapsed_s": self.elapsed,
            "best_miou": self.best_miou,
            "best_epoch": self.best_epoch,
            "finished": self.finished,
            "rng": rng_state(self.generator),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        self.epoch, self.step, self.elapsed = state["epoch"], state["step"], state["elapsed_s"]
        self.best_miou, self.best_epoch = state["best_miou"], state["best_epoch"]
        self.finished = state.get("finished", False)
        restore_rng(state["rng"], self.generator)

    def resume_if_possible(self) -> bool:
        """Load ``last.pt`` from the run directory if it exists; True if resumed."""
        if not self.run.last_checkpoint.is_file():
            return False
        self.load_state_dict(load_checkpoint(self.run.last_checkpoint))
        self.run.truncate_metrics(self.epoch)
        self.run.log(f"resumed at epoch {self.epoch}, step {self.step}, {self.elapsed:.1f}s trained")
        self.echo(f"resuming {self.run.path} from epoch {self.epoch}")
        return True

    # ----------------------------------------------------------------- loop
    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema else self.model

    def _loader(self) -> DataLoader:
        bs = min(self.cfg.data.batch_size, len(self.train_set))
        return DataLoader(self.train_set, batch_size=bs, shuffle=True, drop_last=True,
                          num_workers=self.cfg.data.workers, generator=self.generator,
                          persistent_workers=False, pin_memory=self.device.type == "cuda")

    def _progress(self, steps_total: int) -> float:
        p = self.step / max(steps_total, 1)
        if self.cfg.time_budget_min:
            p = max(p, self.elapsed_now / (60.0 * self.cfg.time_budget_min))
        return p

    def _budget_spent(self) -> bool:
        if self.cfg.max_steps and self.step >= self.cfg.max_steps:
            return True
        return bool(self.cfg.time_budget_min) and self.elapsed_now >= 60.0 * self.cfg.time_budget_min

    def train_one_epoch(self, loader: DataLoader, steps_total: int, bar=None) -> dict[str, float]:
        cfg = self.cfg
        self.model.train()
        sums: dict[str, float] = {}
        n = 0
        task = bar.add_task(f"epoch {self.epoch + 1}/{cfg.epochs}", total=len(loader), info="") if bar else None
        for images, masks in loader:
            set_lr(self.optimizer, cfg.optim.lr * lr_factor(cfg.optim, self._progress(steps_total), self.step))
            images = images.to(self.device, non_blocking=True)
            masks = masks.to(self.device, non_blocking=True)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            teacher_logits = None
            if self.teacher is not None:
                with torch.inference_mode(), autocast_context(self.bf16, self.device.type):
                    teacher_logits = self.teacher(images).float().clone()
            with autocast_context(self.bf16, self.device.type):
                output = self.model(images)
            loss, parts = self.criterion(output, masks, teacher_logits)
            if not torch.isfinite(loss):
                raise SegnasError(f"optim.lr: the loss became {loss.item()} at step {self.step}; "
                                  f"lower the learning rate (now {cfg.optim.lr}) or enable optim.clip_grad_norm")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.clip_grad_norm:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.clip_grad_norm)
            self.optimizer.step()
            if self.ema:
                self.ema.update(self.model)
            self.step += 1
            n += 1
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            if bar is not None:
                bar.update(task, advance=1, info=f"loss {sums['loss'] / n:.3f}")
            if self._budget_spent():
                break
        if bar is not None:
            bar.remove_task(task)
        return {k: v / max(n, 1) for k, v in sums.items()}

    def fit(self) -> TrainResult:
        cfg = self.cfg
        loader = self._loader()
        steps_total = cfg.epochs * len(loader)
        steps_total = min(steps_total, cfg.max_steps or steps_total)
        with progress_bar(cfg.progress) as bar:
            while not self.finished and self.epoch < cfg.epochs:
                wall_start = time.perf_counter()
                self._epoch_start = self._clock()
                losses = self.train_one_epoch(loader, steps_total, bar)
                self.elapsed += self._clock() - self._epoch_start
                self._epoch_start = None
                epoch_s = time.perf_counter() - wall_start
                self.epoch += 1
                self.finished = self.epoch >= cfg.epochs or self._budget_spent()
                record: dict[str, Any] = {"epoch": self.epoch, "step": self.step,
                                          "lr": self.optimizer.param_groups[0]["lr"],
                                          "epoch_s": round(epoch_s, 3), "train_s": round(self.elapsed, 3),
                                          **{f"train_{k}": round(v, 5) for k, v in losses.items()}}
                if self.val_set is not None and (self.epoch % cfg.eval_every == 0 or self.finished):
                    t0 = time.perf_counter()
                    metrics = evaluate(self.eval_model, self.val_set, self.num_classes,
                                       cfg.data.eval_batch_size, self.bf16, self.channels_last)
                    record.update(val_miou=metrics.miou, val_pixel_acc=metrics.pixel_acc,
                                  val_mean_acc=metrics.mean_acc, val_fwiou=metrics.fwiou,
                                  val_iou=metrics.iou, eval_s=round(time.perf_counter() - t0, 3))
                    if metrics.miou > self.best_miou:
                        self.best_miou, self.best_epoch = metrics.miou, self.epoch
                        self._save_best(metrics)
                self.run.write_metrics(record)
                save_checkpoint(self.run.last_checkpoint, self.state_dict())
                line = (f"epoch {self.epoch}/{cfg.epochs} loss {losses.get('loss', float('nan')):.4f} "
                        f"{epoch_s:.1f}s" + (f" val mIoU {record['val_miou']:.4f}" if "val_miou" in record else ""))
                self.run.log(line)
                self.echo(line)
        if self.val_set is None and not self.run.best_checkpoint.is_file():
            self._save_best(None)
        history = self.run.read_metrics()
        final = next((r for r in reversed(history) if "val_miou" in r), history[-1] if history else {})
        return TrainResult(str(self.run.path), self.best_miou, self.best_epoch, final, self.epoch,
                           self.elapsed, history, self.bf16)

    @property
    def elapsed_now(self) -> float:
        start = self._epoch_start
        return self.elapsed + (self._clock() - start if start is not None else 0.0)

    def _save_best(self, metrics: SegMetrics | None) -> None:
        save_checkpoint(self.run.best_checkpoint, {
            "model": self.eval_model.state_dict(),
            "model_spec": self.model_spec,
            "classes": self.classes,
            "config": self.cfg.model_dump(mode="json"),
            "epoch": self.epoch,
            "metrics": metrics.to_dict() if metrics else None,
        })
