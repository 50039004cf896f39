"""Memory one training batch needs, estimated before anything of that size is allocated, so that a
size the machine cannot hold (``--size 100000x100000``) is refused with the estimate instead of
dying out of memory.

The estimate, for a batch of B samples of H×W pixels:

* input: ``2 · B·H·W · (3·4 + 8)`` bytes: the float32 image and int64 mask of every sample, held
  twice while the loader collates the samples into the batch;
* activations: ``a · B·H·W``, where ``a`` is what autograd keeps for the backward pass per input
  pixel, measured by one training-mode forward of a copy of the network on a 2×3×64×64 batch (saved
  tensors, the network's own parameters and buffers excluded) and scaled linearly with the pixels
  (convolutional networks' activations grow with the input area);
* weights, gradients and optimizer state: ``4 ×`` the parameters' bytes.

It is compared with the memory available (``MemAvailable``; the free GPU memory for the network's
part when training on a GPU).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from segnas.cost.machine import available_memory_bytes
from segnas.errors import SegnasError

PROBE_SIZES = ((64, 64), (128, 128))
PROBE_BATCH = 2
INPUT_BYTES_PER_PIXEL = 2 * (3 * 4 + 8)
PARAMETER_COPIES = 4


@dataclass(frozen=True)
class MemoryEstimate:
    batch: int
    size: tuple[int, int]
    input_bytes: int
    activation_bytes: int | None  # None: the network could not be probed
    parameter_bytes: int

    @property
    def network_bytes(self) -> int:
        return (self.activation_bytes or 0) + self.parameter_bytes

    @property
    def total_bytes(self) -> int:
        return self.input_bytes + self.network_bytes


def activation_bytes_per_pixel(model: nn.Module) -> float | None:
    """Bytes autograd saves for the backward pass per input pixel of one sample (see the module
    doc); None when no probe size runs through the network. ``model`` itself is not touched (a copy
    is probed, with the RNG streams forked, so that training stays reproducible)."""
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    probe = copy.deepcopy(model).train()
    own |= {t.untyped_storage().data_ptr() for t in [*probe.parameters(), *probe.buffers()]}
    for h, w in PROBE_SIZES:
        saved: dict[int, int] = {}
        alive: list[torch.Tensor] = []  # (held until the pass ends: no storage is freed and reused meanwhile)

        def pack(t: torch.Tensor) -> None:
            storage = t.untyped_storage()
            if storage.data_ptr() not in own:
                saved[storage.data_ptr()] = storage.nbytes()
            alive.append(t)
            # (the graph keeps nothing: it would hold its own outputs, a cycle the garbage collector
            # cannot see, and every probe's copy of the network with them)

        try:
            with torch.random.fork_rng(devices=[]), torch.enable_grad(), \
                    torch.autograd.graph.saved_tensors_hooks(pack, lambda nothing: nothing):
                probe(torch.zeros(PROBE_BATCH, 3, h, w))
        except Exception:  # a network that needs a larger input: try the next size
            continue
        finally:
            alive.clear()
        return sum(saved.values()) / (PROBE_BATCH * h * w)
    return None


def training_memory(model: nn.Module, batch: int, size: tuple[int, int]) -> MemoryEstimate:
    """The estimate of the module doc for ``batch`` samples of ``size`` (H, W)."""
    pixels = batch * size[0] * size[1]
    per_pixel = activation_bytes_per_pixel(model)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return MemoryEstimate(batch, (int(size[0]), int(size[1])), INPUT_BYTES_PER_PIXEL * pixels,
                          int(per_pixel * pixels) if per_pixel is not None else None, PARAMETER_COPIES * params)


def check_training_memory(model: nn.Module, batch: int, size: tuple[int, int] | None, field: str = "data.crop_size",
                          device: str = "cpu") -> MemoryEstimate | None:
    """Refuse, in one line naming ``field`` (the setting that decides ``size``) and the estimate, a
    training batch that does not fit in the memory available; the estimate otherwise (None when
    ``size`` is unknown)."""
    if size is None:
        return None
    est = training_memory(model, batch, size)
    ram = available_memory_bytes()
    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    gpu = torch.cuda.mem_get_info()[0] if on_gpu and torch.cuda.is_available() else None
    need_ram = est.input_bytes + (0 if gpu is not None else est.network_bytes)
    short = []
    if ram is not None and need_ram > ram:
        short.append(f"{_human(ram)} of memory available")
    if gpu is not None and est.network_bytes > gpu:
        short.append(f"{_human(gpu)} free on the GPU")
    if short:
        act = (f"{_human(est.activation_bytes)} activations" if est.activation_bytes is not None
               else "activations not estimated")
        raise SegnasError(
            f"{field}: training on batches of {est.batch} × {est.size[0]}x{est.size[1]} needs about "
            f"{_human(est.total_bytes)} ({_human(est.input_bytes)} input batch, {act}, "
            f"{_human(est.parameter_bytes)} weights and optimizer state), more than the {' and '.join(short)}; "
            f"use a smaller size or data.batch_size")
    return est


def check_inference_size(size: tuple[int, int] | None, num_classes: int, field: str = "--size",
                         batch: int = 1) -> None:
    """Refuse, in one line naming ``field``, an input size whose forward pass cannot fit in the memory
    available: a lower bound, the float32 input and logits (``(3 + num_classes)`` values per pixel)
    and one feature map of the same size, so that only sizes that surely fail are refused."""
    if size is None:
        return
    need = 2 * batch * int(size[0]) * int(size[1]) * (3 + num_classes) * 4
    ram = available_memory_bytes()
    if ram is not None and need > ram:
        raise SegnasError(f"{field}: a forward pass of {batch} × {size[0]}x{size[1]} needs more than {_human(need)} "
                          f"for its input, output and one feature map alone, more than the {_human(ram)} of memory "
                          "available; use a smaller size")


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"
