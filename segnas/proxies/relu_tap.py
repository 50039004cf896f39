"""The ReLU outputs of a forward pass, as they are produced: the activations NASWOT, SWAP and AZ-NAS read.

A ``TorchFunctionMode`` sees every ReLU of ``RELUS`` — ``nn.ReLU`` modules and the functional
forms (``F.relu``, ``torch.relu``, ``Tensor.relu``, in place or not, ReLU6, LeakyReLU) — so networks
that apply ReLU functionally (most of ``segnas.nn``) are read as fully as module-based ones. A ReLU
called inside another function's handling is not seen twice (the mode is off while it handles a call).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

#: The ReLU family as torch functions (``nn.ReLU`` modules call ``F.relu``).
RELUS = {F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.relu6, F.leaky_relu,
         F.leaky_relu_}


class ReluTap(TorchFunctionMode):
    """While active, calls ``on_output(out)`` for every ReLU-family output with at least ``min_dim``
    dimensions (4: N×C×H×W feature maps), in call order, right when it is produced (before any later
    in-place operation changes it). The output stays part of the autograd graph."""

    def __init__(self, on_output: Callable[[torch.Tensor], None], min_dim: int = 4) -> None:
        super().__init__()
        self.on_output = on_output
        self.min_dim = min_dim

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in RELUS and isinstance(out, torch.Tensor) and out.dim() >= self.min_dim:
            self.on_output(out)
        return out
