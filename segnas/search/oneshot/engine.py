"""The one-shot engine: first-order (DARTS-style) differentiable search on any supernet
(``segnas.spaces.Supernet``), on the step pieces every training loop shares (``segnas.engine.step``).

Phases: *pretrain* (weights only, sandwich rule over widths: max, min and random widths each step)
then *search* (alternating first-order bilevel updates: weights on one half of the training set,
architecture parameters on the other). A strategy plugs in through ``SearchHooks``:

- ``arch_losses(supernet, arch_index) -> {name: tensor}``: extra architecture losses added to the
  segmentation loss on the architecture half (FasterSeg's latency terms, SSR's regularizer, …);
- ``on_epoch_end(engine, phase, epoch) -> dict``: per-epoch work (λ adaptation, derivation,
  shrinking); what it returns is logged in ``metrics.jsonl``. ``engine.stop(reason)`` ends the
  search after that epoch;
- ``state_dict`` / ``load_state_dict``: the strategy's own state (λ, …), checkpointed with the engine.

The engine runs on ``schedule.device`` (bf16 autocast where usable), checkpoints atomically after
every epoch (a killed search resumes exactly from its run directory) and stops after the epoch
that exhausts ``schedule.minutes``; the stop is checkpointed, so a resumed search stays stopped.
Under ``torchrun`` it runs data-parallel (``segnas.engine.distributed``): each rank takes its share
of every global batch, gradients of weights and of architecture parameters are averaged before
each step (so the architecture parameters stay identical on every rank), BatchNorm is
synchronized when ``schedule.sync_bn``, and rank 0 writes the checkpoints and metrics.

The state at the end of pre-training is kept (``checkpoints/pretrained.pt``) so that further
searches (another target, an ablation) can start from the same pre-trained supernet
(``start_from_pretrained``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from segnas.config.train import OptimConfig
from segnas.engine import distributed
from segnas.engine.checkpoint import (keep_previous, load_checkpoint, load_latest_checkpoint, previous_path,
                                     save_checkpoint)
from segnas.engine.losses import SegmentationLoss, kd_loss
from segnas.engine.optim import lr_factor, parameter_groups, set_lr
from segnas.progress import Echo, Progress, progress_bar
from segnas.engine.rng import restore_rng, rng_state
from segnas.engine.rundir import RunDir
from segnas.engine.step import LoopState, Placement, optimizer_step, train_loader
from segnas.errors import SegnasError
from segnas.spaces.base import ArchModuleSupernet, Supernet

COSINE = OptimConfig(schedule="cosine")  # the weights' LR follows a cosine over both phases
PHASES = ("pretrain", "search")


@dataclass
class SearchSchedule:
    """How the engine trains: phases, optimizers, where it computes, its budget."""

    pretrain_epochs: int = 20
    search_epochs: int = 30
    batch_size: int = 8
    weight_lr: float = 0.02
    weight_momentum: float = 0.9
    weight_decay: float = 5e-4
    weight_clip_norm: float = 5.0
    arch_lr: float = 3e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 0.0
    sandwich_random: int = 1  # random-width passes per pretrain step besides max and min
    #: In each search step, the width-searching architectures also at their widest and narrowest
    #: widths, in the weights' loss and in the architecture's (FasterSeg's official search step).
    search_extremes: bool = False
    #: In-place distillation (BigNAS): in each pre-training step every member but the largest learns
    #: from the largest's predictions (detached) with this weight, the labels with 1 minus it (0: off).
    inplace_distill: float = 0.0
    aux_weight: float = 0.4
    device: str = "cpu"
    bf16: bool = False
    seed: int = 0
    workers: int = 0
    progress: bool = True
    #: Under torchrun: BatchNorm statistics over every rank's batch (no effect in one process).
    sync_bn: bool = False
    #: Wall-clock budget: the search stops after the epoch that exceeds it (None: no budget).
    minutes: float | None = None


class SearchHooks(Protocol):
    """What a one-shot strategy gives the engine (``segnas.search.oneshot.OneShotStrategy``)."""

    def arch_losses(self, net: nn.Module, arch_index: int) -> dict[str, torch.Tensor]: ...

    def on_epoch_end(self, engine: "OneShotEngine", phase: str, epoch: int) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class NoHooks:
    """Plain supernet training: no architecture losses, no per-epoch work, no state."""

    def arch_losses(self, net: nn.Module, arch_index: int) -> dict[str, torch.Tensor]:
        return {}

    def on_epoch_end(self, engine: "OneShotEngine", phase: str, epoch: int) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def split_halves(dataset: Dataset, seed: int) -> tuple[Subset, Subset]:
    """Two disjoint halves of a training set (weights / architecture), fixed by ``seed``."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    half = len(order) // 2
    return Subset(dataset, order[:half]), Subset(dataset, order[half:])


def arch_parameter_groups(supernet: Supernet, arch_index: int, weight_decay: float) -> list[dict[str, Any]]:
    """The architecture optimizer's parameter groups: the architecture logits with ``weight_decay``
    (DARTS's regularization of α), the weights of modules acting on them (``ArchModuleSupernet``,
    e.g. GAS's GGM) without it. Under Adam an L2 term on weights whose loss gradient is small
    normalizes to a step of about the learning rate towards zero: it erased the GGM's correction
    within a CamVid search (mean |α' − α| from 6e-4 to 1e-12)."""
    params = list(supernet.arch_parameters(arch_index))
    exempt = ({id(p) for p in supernet.arch_module_parameters(arch_index)}
              if isinstance(supernet, ArchModuleSupernet) else set())
    groups = [{"params": [p for p in params if id(p) not in exempt], "weight_decay": weight_decay}]
    if exempt:
        groups.append({"params": [p for p in params if id(p) in exempt], "weight_decay": 0.0})
    return groups


class OneShotEngine:
    """Trains ``supernet`` (moved to ``schedule.device``) on ``train_set`` in run directory ``run``."""

    def __init__(self, supernet: nn.Module, train_set: Dataset, schedule: SearchSchedule, run: RunDir,
                 hooks: SearchHooks | None = None, echo: Echo | None = None) -> None:
        self.s = schedule
        self.run = run
        self.hooks = hooks or NoHooks()
        self.dist = distributed.context()
        self.echo = echo if echo is not None and self.dist.is_main else (lambda m: None)
        self.place = Placement.resolve(schedule.device, schedule.bf16, self.echo)
        if schedule.sync_bn:
            supernet = distributed.convert_sync_batchnorm(supernet)
        self.net = self.place.module(supernet)
        distributed.broadcast_module(self.net)  # every rank starts from rank 0's supernet
        self.train_set = train_set
        self.weights_half, self.arch_half = split_halves(train_set, schedule.seed)
        self.criterion = SegmentationLoss("ce", aux_weight=schedule.aux_weight).to(self.place.device)
        self.weight_opt = torch.optim.SGD(parameter_groups(supernet, schedule.weight_decay),
                                          lr=schedule.weight_lr, momentum=schedule.weight_momentum)
        # parameter_groups walks every module: keep architecture tensors out of the weight optimizer
        arch_ids = {id(p) for i in range(supernet.num_archs) for p in supernet.arch_parameters(i)}
        for group in self.weight_opt.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in arch_ids]
        self.arch_opts = [torch.optim.Adam(arch_parameter_groups(supernet, i, schedule.arch_weight_decay),
                                           lr=schedule.arch_lr, betas=schedule.arch_betas)
                          for i in range(supernet.num_archs)]
        self.phase = PHASES[0]
        #: ``epoch``: epochs finished in the current phase; ``step``: weight steps over both phases
        self.loop = LoopState(schedule.seed)
        #: why the search ended early (the strategy's reason, or the time budget); None while running
        self.stopped: str | None = None

    # ------------------------------------------------------------------ state
    @property
    def epoch(self) -> int:
        return self.loop.epoch

    @property
    def step(self) -> int:
        return self.loop.step

    @property
    def epochs_done(self) -> int:
        return self.loop.epoch + (self.s.pretrain_epochs if self.phase == "search" else 0)

    def stop(self, reason: str) -> None:
        """End the search after the current epoch (checkpointed: a resumed search stays ended)."""
        self.stopped = reason

    def state_dict(self) -> dict[str, Any]:
        return {"supernet": self.net.state_dict(), "weight_opt": self.weight_opt.state_dict(),
                "arch_opts": [o.state_dict() for o in self.arch_opts], "phase": self.phase,
                **self.loop.state_dict(), "stopped": self.stopped, "strategy_state": self.hooks.state_dict(),
                "pretrain_epochs": self.s.pretrain_epochs,  # (a search from another's supernet adopted its count)
                # load_checkpoint() expects these two keys in every segnas checkpoint
                "model": {}, "model_spec": {"kind": "supernet"}}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.net.load_state_dict(st["supernet"])
        self.weight_opt.load_state_dict(st["weight_opt"])
        for o, s in zip(self.arch_opts, st["arch_opts"]):
            o.load_state_dict(s)
        self.phase, self.stopped = st["phase"], st["stopped"]
        self.loop.load_state_dict(st)
        self.hooks.load_state_dict(st["strategy_state"])
        self.s.pretrain_epochs = st.get("pretrain_epochs", self._pretrain_epochs_kept())

    def _pretrain_epochs_kept(self) -> int:
        """The pre-training epochs of a checkpoint from before they were kept in it: those of the
        run's own pretrained.pt (a search started from another run's adopted that run's count), else
        the settings'."""
        if self.pretrained_path.is_file():
            return int(load_checkpoint(self.pretrained_path)["pretrain_epochs"])
        return self.s.pretrain_epochs

    @property
    def checkpoint_path(self) -> Path:
        return self.run.path / "checkpoints" / "search_last.pt"

    @property
    def pretrained_path(self) -> Path:
        return self.run.path / "checkpoints" / "pretrained.pt"

    def resume_if_possible(self) -> bool:
        """Load the run directory's checkpoint (or the one before it) if there is one; True if resumed.
        The metrics are cut back to the checkpoint's epoch (to none without one)."""
        st = distributed.main_first(lambda: load_latest_checkpoint(self.checkpoint_path, self.echo))
        if st is None:
            self.run.truncate_metrics(0, key="epochs_done")
            return False
        self.load_state_dict(st)
        self.run.truncate_metrics(self.epochs_done, key="epochs_done")
        self.echo(f"resuming search at {self.phase} epoch {self.loop.epoch}")
        return True

    def start_from_pretrained(self, path: str | Path) -> int:
        """Begin the search phase from another run's ``pretrained.pt`` (weights, optimizer, step and
        RNG exactly as that run began its search); adopts that run's number of pre-training epochs,
        so the weights' LR schedule continues unchanged, and returns it. The time budget counts
        this run's time only."""
        st = load_checkpoint(path)
        if st.get("model_spec", {}).get("kind") != "supernet-pretrained":
            raise SegnasError(f"{path}: not a pre-trained supernet (checkpoints/pretrained.pt of a search run)")
        try:
            self.net.load_state_dict(st["supernet"])
        except RuntimeError as exc:
            raise SegnasError(f"{path}: pre-trained supernet does not match this search space "
                              f"({str(exc).splitlines()[0]})") from None
        self.weight_opt.load_state_dict(st["weight_opt"])
        self.loop.step = st["step"]
        restore_rng(st["rng"], self.loop.generator)
        self.phase, self.loop.epoch = "search", 0
        self.s.pretrain_epochs = st["pretrain_epochs"]
        self._save_pretrained()  # so that this run, too, can seed further searches
        return st["pretrain_epochs"]

    def _save_pretrained(self) -> None:
        distributed.average_buffers(self.net)
        if not self.dist.is_main:
            return
        save_checkpoint(self.pretrained_path, {
            "supernet": self.net.state_dict(), "weight_opt": self.weight_opt.state_dict(), "step": self.loop.step,
            "elapsed_s": self.loop.elapsed, "rng": rng_state(self.loop.generator),
            "pretrain_epochs": self.s.pretrain_epochs, "model": {}, "model_spec": {"kind": "supernet-pretrained"}})

    # ------------------------------------------------------------------ steps
    def _loader(self, subset: Dataset) -> DataLoader:
        return train_loader(subset, self.s.batch_size, self.loop.generator, self.s.workers,
                            pin_memory=self.place.device.type == "cuda")

    def _seg_loss(self, images: torch.Tensor, masks: torch.Tensor, arch_index: int,
                  teacher: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The segmentation loss of ``arch_index`` in the current mode, and its main logits; with
        ``teacher`` (logits), mixed with the distillation loss by ``inplace_distill``."""
        with self.place.autocast():
            out = self.net(images, arch_index)
        loss = self.criterion(out, masks)[0]
        main = out["out"] if isinstance(out, dict) else out
        if teacher is not None:
            w = self.s.inplace_distill
            loss = (1.0 - w) * loss + w * kd_loss(main, teacher, target=masks)
        return loss, main

    def _searches_width(self, arch_index: int) -> bool:
        flags = getattr(self.net, "width_search", None)
        return True if flags is None else bool(flags[arch_index])

    def _extremes(self) -> list[str]:
        """The extra width modes of a search step (``search_extremes``)."""
        return ["max", "min"] if self.s.search_extremes and self.phase == "search" else []

    def _weight_step(self, images: torch.Tensor, masks: torch.Tensor, modes: list[str]) -> float:
        self.weight_opt.zero_grad(set_to_none=True)
        total, passes = 0.0, 0
        for i in range(self.net.num_archs):
            if self._searches_width(i):
                teacher = None
                for mode in modes + self._extremes():
                    self.net.set_width_mode(mode)
                    loss, main = self._seg_loss(images, masks, i, teacher)
                    loss.backward()
                    total, passes = total + float(loss.detach()), passes + 1
                    if mode == "max" and self.s.inplace_distill > 0:
                        teacher = main.detach()
            else:  # every width mode gives the same network: one pass with the summed gradient
                self.net.set_width_mode(modes[0])
                loss, _ = self._seg_loss(images, masks, i)
                (loss * len(modes)).backward()
                total, passes = total + float(loss.detach()) * len(modes), passes + len(modes)
        distributed.average_gradients(p for g in self.weight_opt.param_groups for p in g["params"])
        optimizer_step(self.weight_opt, self.s.weight_clip_norm)
        return total / max(passes, 1)

    def _arch_step(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
        logs: dict[str, float] = {}
        self.net.set_width_mode("gumbel")
        for i, opt in enumerate(self.arch_opts):
            opt.zero_grad(set_to_none=True)
            parts = {"seg": self._seg_loss(images, masks, i)[0], **self.hooks.arch_losses(self.net, i)}
            if self._searches_width(i):
                for mode in self._extremes():  # α and β also learn from the widest and narrowest networks
                    self.net.set_width_mode(mode)
                    parts[f"seg_{mode}"] = self._seg_loss(images, masks, i)[0]
                self.net.set_width_mode("gumbel")
            sum(parts.values()).backward()
            distributed.average_gradients(p for g in opt.param_groups for p in g["params"])
            optimizer_step(opt)
            for k, v in parts.items():
                logs[f"arch{i}_{k}"] = logs.get(f"arch{i}_{k}", 0.0) + float(v.detach())
        self.weight_opt.zero_grad(set_to_none=True)  # arch losses also touched the weights' grads
        return logs

    def _phase_epochs(self) -> int:
        return self.s.pretrain_epochs if self.phase == "pretrain" else self.s.search_epochs

    def _set_weight_lr(self) -> None:
        total = self.s.pretrain_epochs + self.s.search_epochs
        set_lr(self.weight_opt, self.s.weight_lr * lr_factor(COSINE, self.epochs_done / max(total, 1), step=10**9))

    def run_epoch(self, bar: Progress | None = None) -> dict[str, float]:
        """One epoch of the current phase; returns its mean losses."""
        self.net.train()
        self._set_weight_lr()
        logs: dict[str, float] = {}
        n = 0
        if self.phase == "pretrain":
            modes = ["max", "min"] + ["random"] * self.s.sandwich_random
            pairs: Iterator = ((b, None) for b in self._loader(self.train_set))
        else:
            modes = ["gumbel"]
            pairs = zip(self._loader(self.weights_half), self._loader(self.arch_half))
        task = (bar.add_task(f"{self.phase} {self.loop.epoch + 1}/{self._phase_epochs()}", total=None, info="")
                if bar else None)
        for weight_batch, arch_batch in pairs:
            images, masks = self.place.batch(*weight_batch)
            logs["weight_loss"] = logs.get("weight_loss", 0.0) + self._weight_step(images, masks, modes)
            if arch_batch is not None:
                for k, v in self._arch_step(*self.place.batch(*arch_batch)).items():
                    logs[k] = logs.get(k, 0.0) + v
            n += 1
            self.loop.step += 1
            if bar is not None:
                bar.update(task, advance=1, info=f"loss {logs['weight_loss'] / n:.3f}")
        if bar is not None:
            bar.remove_task(task)
        return distributed.mean_over_ranks({k: v / max(n, 1) for k, v in logs.items()})

    def _budget_spent(self) -> bool:
        # under torchrun the ranks stop together, on the slowest clock
        return self.s.minutes is not None and distributed.max_over_ranks(self.loop.elapsed) >= 60.0 * self.s.minutes

    def fit(self) -> dict[str, Any]:
        """Run (or finish) both phases; returns the last epoch's record."""
        record: dict[str, Any] = {}
        loop = self.loop
        with progress_bar(self.s.progress and self.dist.is_main) as bar:
            for phase in PHASES:
                if self.stopped or (phase == "pretrain" and self.phase == "search"):
                    continue
                if self.phase != phase:
                    if phase == "search" and self.s.pretrain_epochs and not self.pretrained_path.is_file():
                        self._save_pretrained()
                    self.phase, loop.epoch = phase, 0
                while loop.epoch < self._phase_epochs() and not self.stopped:
                    t0 = time.perf_counter()
                    with loop.clock:
                        logs = self.run_epoch(bar)
                        distributed.average_buffers(self.net)  # BN statistics: one supernet on every rank
                        loop.epoch += 1
                        record = {"phase": phase, "epoch": loop.epoch, "epochs_done": self.epochs_done,
                                  "step": loop.step, "epoch_s": round(time.perf_counter() - t0, 2), **logs,
                                  **self.hooks.on_epoch_end(self, phase, loop.epoch)}
                    if not self.stopped and self._budget_spent():
                        self.stop(f"time budget of {self.s.minutes:g} min spent")
                    if self.stopped:
                        record["stopped"] = self.stopped
                    self.run.write_metrics(record)
                    state = self.state_dict()  # on every rank: it gathers each rank's RNG streams
                    if self.dist.is_main:
                        keep_previous(self.checkpoint_path)
                        save_checkpoint(self.checkpoint_path, state)
                    line = f"{phase} epoch {loop.epoch}/{self._phase_epochs()} " + " ".join(
                        f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float))
                    self.echo(line)  # the search job's echo writes the run's log too
                    if self.stopped:
                        self.echo(f"search ended: {self.stopped}")
            stopped_pretraining = self.stopped and self.phase == "pretrain" and self.s.pretrain_epochs
            if stopped_pretraining and not self.pretrained_path.is_file():
                self._save_pretrained()  # what there is, for the next phase or another search
        if self.dist.is_main:  # its last checkpoint is whole: the one it replaced is no longer a fallback
            previous_path(self.checkpoint_path).unlink(missing_ok=True)
        distributed.barrier()  # rank 0's checkpoints are written
        return record
