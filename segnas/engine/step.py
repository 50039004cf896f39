"""Step-level pieces every training loop shares (``Trainer`` and the one-shot search engine,
``segnas.search.oneshot.engine``): where a loop computes and how its batches get there
(``Placement``), the shuffled training loader (a worker's data error in one line), the optimizer
step with gradient clipping, the training clock, and the loop's position (``LoopState``) that a
checkpoint stores with every RNG stream so that a killed loop resumes exactly.
"""

from __future__ import annotations

import re
import time
import warnings
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Literal

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from segnas.engine import distributed
from segnas.engine.device import resolve_device
from segnas.engine.evaluate import autocast_context, usable_bf16
from segnas.engine.rng import restore_rng, rng_state
from segnas.errors import SegnasError, SegnasWarning
from segnas.progress import Echo


@dataclass(frozen=True)
class Placement:
    """Where a loop computes: the device, bf16 autocast (only where usable) and channels-last."""

    device: torch.device
    bf16: bool = False
    channels_last: bool = False

    @classmethod
    def resolve(cls, device: str = "cpu", bf16: bool = False,
                echo: Echo | None = None) -> "Placement":
        """The device a setting names (cpu, cuda, cuda:N, auto) and bf16 as requested where that
        device computes it natively (else fp32, with a notice through ``echo``). Under torchrun,
        ``cuda`` is this rank's GPU."""
        resolved = resolve_device(distributed.device_name(device))
        return cls(resolved, usable_bf16(bf16, echo, resolved.type))

    def module(self, module: nn.Module) -> nn.Module:
        """``module`` moved to the device (and to channels-last when set)."""
        module.to(self.device)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def batch(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        masks = masks.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, masks

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """Images alone on the device (evaluation batches; masks are scored on the CPU)."""
        return images.to(self.device, non_blocking=True)

    def autocast(self) -> AbstractContextManager:
        return autocast_context(self.bf16, self.device.type)


def train_loader(dataset: Dataset, batch_size: int, generator: torch.Generator, workers: int = 0,
                 pin_memory: bool = False, collate_fn: Callable | None = None) -> DataLoader:
    """Shuffled full batches (at most the dataset's size) in the order ``generator`` draws, stacked by
    ``collate_fn`` (default: the DataLoader's); a data
    error in a worker process reaches the caller as the same one line as without workers. Under
    torchrun ``batch_size`` is the global batch and each rank loads its share of it
    (``segnas.engine.distributed``)."""
    ctx = distributed.context()
    if not ctx.enabled:
        return OneLineErrorLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=True, drop_last=True,
                                  num_workers=workers, generator=generator, persistent_workers=False,
                                  pin_memory=pin_memory, collate_fn=collate_fn)
    # the same sampler and batch sampler DataLoader(shuffle=True) builds, each rank taking its slice
    batches = BatchSampler(RandomSampler(dataset, generator=generator),
                           distributed.global_batch(batch_size, len(dataset)), drop_last=True)
    return OneLineErrorLoader(dataset, batch_sampler=distributed.ShardedBatchSampler(batches, ctx.rank, ctx.world_size),
                              num_workers=workers, generator=generator, persistent_workers=False,
                              pin_memory=pin_memory, collate_fn=collate_fn)


class OneLineErrorLoader(DataLoader):
    """A DataLoader that re-raises a worker's SegnasError with the worker's one-line message: the
    DataLoader itself puts the worker's whole traceback into the message (``Caught SegnasError in
    DataLoader worker process 0. Original Traceback ...``), which the CLI would print."""

    def __iter__(self) -> Iterator[Any]:
        # the base iterator is made now, not at the first batch: making it draws from the loader's
        # generator, and two loaders zipped together must draw in the same order as plain ones
        return self._one_line(super().__iter__())

    @staticmethod
    def _one_line(batches: Iterator[Any]) -> Iterator[Any]:
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except SegnasError as exc:
                raise type(exc)(worker_error_line(str(exc))) from None
            yield batch


def worker_error_line(message: str) -> str:
    """The original one-line message of an error a DataLoader worker raised (the last line of the
    traceback it carries); ``message`` itself when it is not such a message."""
    if not message.startswith("Caught ") or "DataLoader worker" not in message.split("\n", 1)[0]:
        return message
    last = message.strip().splitlines()[-1]
    match = re.match(r"(?:\w+\.)*[A-Z]\w*: (.*)", last)  # (module.)Type: message
    return match.group(1) if match else last


def optimizer_step(optimizer: torch.optim.Optimizer, clip_norm: float | None = None,
                   params: Iterable[torch.Tensor] | None = None) -> None:
    """Clip the gradient norm of ``params`` (default: the optimizer's) to ``clip_norm`` when set, then
    step."""
    if clip_norm:
        if params is None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
        nn.utils.clip_grad_norm_(params, clip_norm)
    optimizer.step()


class TrainingClock:
    """Training time in seconds, counted inside ``with clock:`` spans on the wall clock, or on this
    process's CPU time divided by its threads (``"cpu"``: discounts waiting for the cores, not the CPU
    time that oversubscribed threads spin away)."""

    def __init__(self, kind: Literal["wall", "cpu"] = "wall") -> None:
        threads = max(torch.get_num_threads(), 1)
        self._read: Callable[[], float] = time.perf_counter if kind == "wall" else (
            lambda: time.process_time() / threads)
        self.elapsed = 0.0
        self._start: float | None = None

    def __enter__(self) -> "TrainingClock":
        self._start = self._read()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.elapsed += self._read() - self._start
        self._start = None

    @property
    def now(self) -> float:
        """Elapsed time including the span running now."""
        return self.elapsed + (self._read() - self._start if self._start is not None else 0.0)


class LoopState:
    """Where a loop is: epochs and optimizer steps done, training time, and the generator that draws
    the data order. ``state_dict`` adds every global RNG stream (``segnas.engine.rng``)."""

    def __init__(self, seed: int, clock: Literal["wall", "cpu"] = "wall") -> None:
        self.epoch = 0
        self.step = 0
        self.clock = TrainingClock(clock)
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def elapsed(self) -> float:
        return self.clock.elapsed

    def state_dict(self) -> dict[str, Any]:
        """Under torchrun every rank must call it (each rank's RNG streams are gathered, as
        ``rng_ranks``, so that each rank resumes its own)."""
        state = {"epoch": self.epoch, "step": self.step, "elapsed_s": self.clock.elapsed,
                 "rng": rng_state(self.generator)}
        if distributed.context().enabled:
            state["rng_ranks"] = distributed.gather_objects(state["rng"])
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.step, self.clock.elapsed = state["epoch"], state["step"], state["elapsed_s"]
        ctx = distributed.context()
        ranks = state.get("rng_ranks")
        then = len(ranks) if ranks is not None else 1
        if then != ctx.world_size and ctx.is_main:
            warnings.warn(f"this run was computed by {then} process(es) and continues with {ctx.world_size}: its "
                          f"result will differ from an uninterrupted run's (continue it with the launch it started "
                          f"with{f', {then} processes in all' if then > 1 else ', outside torchrun'})",
                          SegnasWarning, stacklevel=2)
        own = ranks[ctx.rank] if ctx.enabled and ranks is not None and then == ctx.world_size else state["rng"]
        restore_rng(own, self.generator)
