"""The ReLU outputs of a forward pass, as they are produced: the activations NASWOT, SWAP and AZ-NAS read.

A ``TorchFunctionMode`` sees every ReLU of ``RELUS`` — ``nn.ReLU`` modules and the functional
forms (``F.relu``, ``torch.relu``, ``Tensor.relu``, in place or not, ReLU6 (``nn.ReLU6`` is a hardtanh
from 0), LeakyReLU, PReLU as ENet uses) — so networks
that apply ReLU functionally (most of ``segnas.nn``) are read as fully as module-based ones. A ReLU
called inside another function's handling is not seen twice (the mode is off while it handles a call).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

#: The ReLU family as torch functions (``nn.ReLU`` modules call ``F.relu``).
RELUS = {F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.relu6, F.leaky_relu,
         F.leaky_relu_, F.prelu, torch.prelu}
#: Clamps that are a ReLU when their lower bound is 0 (``nn.ReLU6`` calls ``F.hardtanh(x, 0, 6)``).
CLAMPS = {F.hardtanh, F.hardtanh_}


def is_relu(func: Callable[..., Any], args: tuple, kwargs: dict) -> bool:
    """Whether a torch function call is of the ReLU family."""
    if func in RELUS:
        return True
    if func in CLAMPS:
        low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        return low == 0
    return False


class ReluTap(TorchFunctionMode):
    """While active, calls ``on_output(out)`` for every ReLU-family output with at least ``min_dim``
    dimensions (4: N×C×H×W feature maps), in call order, right when it is produced (before any later
    in-place operation changes it). The output stays part of the autograd graph."""

    def __init__(self, on_output: Callable[[torch.Tensor], None], min_dim: int = 4) -> None:
        super().__init__()
        self.on_output = on_output
        self.min_dim = min_dim

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.dim() >= self.min_dim and is_relu(func, args, kwargs):
            self.on_output(out)
        return out
