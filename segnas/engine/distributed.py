"""Data-parallel training under ``torchrun``: the one place that knows about ``torch.distributed``.

``Trainer`` and the one-shot engine (``segnas.search.oneshot.engine``) call these functions; in a
plain process (no ``WORLD_SIZE`` > 1 in the environment) every one of them is a no-op, so a
single-process run computes exactly what it computed before.

Under ``torchrun --nproc-per-node N`` (gloo on the CPU, NCCL for CUDA tensors):

- the process group starts on first use (``context()``), from torchrun's environment;
- ``data.batch_size`` stays the *global* batch: each rank loads its share of the same shuffled
  global batch (``ShardedBatchSampler``), so N processes train the same steps as one process;
- gradients are averaged over ranks before each optimizer step (``average_gradients``: one
  flattened all-reduce; a gradient missing on every rank stays missing), so weights and
  architecture parameters stay identical on every rank; ``broadcast_module`` makes the start
  identical too;
- BatchNorm becomes ``SyncBatchNorm2d`` where the settings ask (``sync_bn``): batch statistics over
  the global batch, on the CPU as on a GPU; otherwise BN statistics are averaged over ranks
  (``average_buffers``) before each evaluation and checkpoint;
- logged figures are averaged over ranks (``mean_over_ranks``); decisions that could differ
  between ranks (a time budget, a non-finite loss) are taken together (``max_over_ranks``,
  ``check_finite_loss``);
- rank 0 alone writes checkpoints, metrics and logs (``is_main``); ``main_first`` lets it repair
  a damaged checkpoint before the other ranks read it.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, Sampler

from segnas.errors import SegnasError

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel job (rank 0 of 1 outside ``torchrun``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_SINGLE = DistContext()


def env_rank() -> int:
    """RANK as torchrun sets it (0 outside torchrun): known before the process group starts."""
    return int(os.environ.get("RANK", "0"))


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 outside torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise SegnasError(f"WORLD_SIZE: expected a number of processes, got {os.environ['WORLD_SIZE']!r}") from None


def context() -> DistContext:
    """This process's ``DistContext``; under torchrun (WORLD_SIZE > 1) the process group is started
    on first call: gloo for CPU tensors, plus NCCL for CUDA tensors where torch sees a GPU."""
    import torch.distributed as dist

    if env_world_size() <= 1 or not dist.is_available():
        return _SINGLE
    if not dist.is_initialized():
        for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise SegnasError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {name} is not set: "
                                  "start data-parallel jobs with torchrun")
        backend = "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
            backend = "cpu:gloo,cuda:nccl"
        # a long timeout: the other ranks wait while rank 0 alone times latency (``segnas.search.rank0_latency``)
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=4))
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def end_rank(code: int) -> None:
    """Under torchrun (a process group started): end this rank's process now with exit status
    ``code``, its output and logs flushed; a no-op otherwise. Left to the interpreter's exit, the
    teardown of torch's process-group threads aborted a rank after its job had ended ("terminate
    called without an active exception", exit status -6) in about 1 run in 20 here."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def is_main() -> bool:
    """True outside torchrun and on rank 0 (the rank that writes files and prints)."""
    return context().is_main


def device_name(name: str) -> str:
    """The device a rank computes on: under torchrun ``cuda`` (or ``auto`` with a GPU) is this
    rank's GPU, ``cuda:<LOCAL_RANK>``; anything else unchanged."""
    ctx = context()
    if not ctx.enabled or not torch.cuda.is_available():
        return name
    if name in ("cuda", "auto"):
        return f"cuda:{ctx.local_rank % torch.cuda.device_count()}"
    return name


def _comm_device(tensors: Iterable[torch.Tensor]) -> torch.device:
    for t in tensors:
        return t.device
    return torch.device("cpu")


def barrier() -> None:
    if context().enabled:
        import torch.distributed as dist

        dist.barrier()


def main_first(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, then (after it) on the other ranks: for a step that may repair files
    the others then read (``load_latest_checkpoint`` restoring ``last.prev.pt``)."""
    ctx = context()
    if not ctx.enabled:
        return fn()
    result = fn() if ctx.is_main else None
    barrier()
    if not ctx.is_main:
        result = fn()
    barrier()
    return result  # type: ignore[return-value]


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (picklable objects: paths, metrics)."""
    ctx = context()
    if not ctx.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_module(module: nn.Module) -> None:
    """Every parameter and buffer of ``module`` set to rank 0's values (an identical start)."""
    ctx = context()
    if not ctx.enabled:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Average the gradients of ``params`` over ranks (one all-reduce of a flattened buffer).

    A parameter without a gradient on some ranks counts as zero there; one without a gradient on
    every rank keeps ``grad`` None (so optimizers skip it as they would in one process)."""
    ctx = context()
    if not ctx.enabled:
        return
    import torch.distributed as dist

    params = [p for p in params if p.requires_grad]
    if not params:
        return
    device = _comm_device(params)
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                      for p in params] + [has])
    dist.all_reduce(flat)
    n = flat.numel() - len(params)
    any_grad = flat[n:] > 0
    flat = flat[:n] / ctx.world_size
    offset = 0
    for p, present in zip(params, any_grad.tolist()):
        size = p.numel()
        if present:
            grad = flat[offset:offset + size].view_as(p).to(p.dtype)
            if p.grad is None:
                p.grad = grad.clone()
            else:
                p.grad.copy_(grad)
        offset += size


def average_buffers(module: nn.Module) -> None:
    """Floating-point buffers (BatchNorm running statistics) averaged over ranks, so that every rank
    evaluates and checkpoints the same network."""
    ctx = context()
    if not ctx.enabled:
        return
    import torch.distributed as dist

    bufs = [b for b in module.buffers() if b.dtype.is_floating_point]
    if not bufs:
        return
    flat = torch.cat([b.detach().reshape(-1).float() for b in bufs])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    with torch.no_grad():
        for b in bufs:
            b.copy_(flat[offset:offset + b.numel()].view_as(b).to(b.dtype))
            offset += b.numel()


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over ranks (the same keys on every rank)."""
    ctx = context()
    if not ctx.enabled or not values:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / ctx.world_size for k, v in zip(keys, t.tolist())}


def max_over_ranks(value: float) -> float:
    """The largest of every rank's ``value`` (``value`` itself in one process)."""
    ctx = context()
    if not ctx.enabled:
        return value
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def gather_objects(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    ctx = context()
    if not ctx.enabled:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def check_finite_loss(loss: torch.Tensor) -> float:
    """The step's loss averaged over ranks (the value to log and to check for NaN), or the loss
    itself in one process: every rank sees the same number and fails together."""
    ctx = context()
    value = loss.detach()
    if not ctx.enabled:
        return float(value)
    import torch.distributed as dist

    t = value.reshape(1).float().clone()
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


# --------------------------------------------------------------------------- data
class ShardedBatchSampler(Sampler[list[int]]):
    """Rank ``rank``'s share of every global batch ``batches`` yields: the ``rank``-th of
    ``world_size`` equal slices, so the ranks together see exactly the global batches that one
    process would see, in the same order."""

    def __init__(self, batches: BatchSampler, rank: int, world_size: int) -> None:
        if batches.batch_size % world_size:
            raise SegnasError(f"data.batch_size: {batches.batch_size} is not divisible by the {world_size} "
                              "data-parallel processes")
        self.batches, self.rank, self.world_size = batches, rank, world_size
        self.share = batches.batch_size // world_size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield batch[self.rank * self.share:(self.rank + 1) * self.share]

    def __len__(self) -> int:
        return len(self.batches)


def check_batch_split(batch_size: int, setting: str = "data.batch_size", world: int | None = None) -> None:
    """SegnasError naming ``setting`` when the global batch ``batch_size`` cannot be split evenly
    over ``world`` processes (default: torchrun's; a job checks it before its run directory exists)."""
    world = env_world_size() if world is None else world
    if world > 1 and batch_size % world:
        raise SegnasError(f"{setting}: {batch_size} is not divisible by the {world} data-parallel processes (it is "
                          "the global batch, split over them)")


def global_batch(batch_size: int, dataset_size: int) -> int:
    """The global batch a loader uses: at most the dataset's size, a multiple of the world size."""
    world = context().world_size
    size = min(batch_size, dataset_size)
    if world > 1:
        check_batch_split(batch_size, world=world)
        size -= size % world
        if size == 0:
            raise SegnasError(f"data: {dataset_size} training images cannot be split over {world} processes")
    return size


# --------------------------------------------------------------------------- BatchNorm
class SyncBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm whose training statistics are computed over the global batch of every rank (a
    differentiable all-reduce of per-channel sums), on the CPU (gloo) as on a GPU. Like
    ``segnas.nn.slimmable.SlicedBatchNorm2d`` it normalizes any number of leading channels; in one
    process, or in eval mode, it is exactly the BatchNorm it replaced."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c > self.num_features:
            raise SegnasError(f"BatchNorm: input has {c} channels, more than its {self.num_features}")
        ctx = context()
        if not (self.training and ctx.enabled):
            if c == self.num_features:
                return super().forward(x)
            return self._local(x, c)
        if self.track_running_stats:
            self.num_batches_tracked += 1
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        xf = x.float()
        count = torch.tensor([float(x.numel() // c)], device=x.device)
        stats = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count])
        stats = _AllReduceSum.apply(stats)
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean[:c].mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var[:c].mul_(1 - momentum).add_(unbiased.detach(), alpha=momentum)
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[:c, None, None] + self.bias[:c, None, None]
        return y.to(x.dtype)

    def _local(self, x: torch.Tensor, c: int) -> torch.Tensor:
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.momentum is None and self.training:
            momentum = 1.0 / float(self.num_batches_tracked)
        use_batch = self.training or self.running_mean is None
        return F.batch_norm(x, self.running_mean[:c] if self.running_mean is not None else None,
                            self.running_var[:c] if self.running_var is not None else None,
                            self.weight[:c] if self.affine else None, self.bias[:c] if self.affine else None,
                            use_batch, momentum, self.eps)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable: the gradient of each rank's input is the sum of every
    rank's output gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        import torch.distributed as dist

        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm2d`` (sliced ones included) replaced by ``SyncBatchNorm2d``
    sharing its parameters and buffers (state dicts keep their keys). No-op outside torchrun."""
    if not context().enabled:
        return module
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, SyncBatchNorm2d):
        new = SyncBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        new_child = _convert(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module
