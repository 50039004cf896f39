"""Where a job computes: the CPU, or a CUDA GPU when one is present and asked for."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from segnas.errors import SegnasError


def resolve_device(name: str = "cpu") -> torch.device:
    """The torch device for a setting: ``cpu``, ``cuda``, ``cuda:N``, or ``auto`` (a GPU if present).

    On a GPU, float32 stays true float32 (TF32 off), so that a network trained in fp32 on a GPU is
    trained in the same arithmetic as on a CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SegnasError(f"device: {name!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if device.type not in ("cpu", "cuda"):
        raise SegnasError(f"device: {name!r} is not supported; use cpu, cuda, cuda:N or auto")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SegnasError(f"device: {name!r} asked for, but torch sees no CUDA GPU here (use cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SegnasError(f"device: {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


@contextmanager
def exact_fp32() -> Iterator[None]:
    """Inside the block float32 on a GPU is true float32 (TF32 off, as ``resolve_device`` leaves a
    job); after it the TF32 switches are as the caller had them."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for one with neither)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def describe_device(name: str = "cpu") -> str:
    """``cpu``, or ``cuda (<GPU name>)`` for the GPU a device setting resolves to (for records)."""
    device = resolve_device(name)
    return "cpu" if device.type == "cpu" else f"cuda ({torch.cuda.get_device_name(device)})"
