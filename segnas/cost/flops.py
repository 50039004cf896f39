"""FLOPs and MACs of a network at a given input size, by PyTorch's own FlopCounterMode.

Counting rules (stated because papers differ):
- convolutions, matmuls, linear layers: FLOPs = 2 × MACs (PyTorch's formulas);
- bilinear / bicubic interpolation: 4 / 16 MACs per output element (a weighted sum of the
  neighbours); nearest: 0;
- average pooling and means: one add per window element of each output (counted as MACs);
  max pooling: one comparison per window element (counted as MACs);
- BatchNorm (folded into the convolution at deployment), activations and element-wise adds: 0.
``gmacs`` is what most segmentation papers call "GFLOPs"; ``gflops`` is 2 × that.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import prod

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def _macs_per_output(k: int):
    def formula(*args, out_shape=None, **kwargs) -> int:
        return 2 * k * prod(out_shape)  # returned as FLOPs = 2 × MACs, like PyTorch's own formulas

    return formula


def _window_formula(*args, out_shape=None, **kwargs) -> int:
    kernel = args[1]
    k = prod(kernel) if isinstance(kernel, (list, tuple)) and kernel else 1
    out = out_shape[0] if isinstance(out_shape, (list, tuple)) and isinstance(out_shape[0], (list, tuple, torch.Size)) else out_shape
    return 2 * k * prod(out)


def _input_sized_formula(*args, out_shape=None, **kwargs) -> int:
    return 2 * prod(args[0])


# Keyed by operator packet (all overloads), as FlopCounterMode looks them up.
EXTRA_FORMULAS = {
    aten.upsample_bilinear2d: _macs_per_output(4),
    aten._upsample_bilinear2d_aa: _macs_per_output(4),
    aten.upsample_bicubic2d: _macs_per_output(16),
    aten.avg_pool2d: _window_formula,
    aten.max_pool2d_with_indices: _window_formula,
    aten._adaptive_avg_pool2d: _input_sized_formula,
    aten.mean: _input_sized_formula,
}


@dataclass
class FlopsResult:
    input_shape: tuple[int, ...]
    gflops: float
    gmacs: float
    by_op: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: tuple[int, int, int, int]) -> FlopsResult:
    """FLOPs of one eval-mode forward pass on an ``input_shape`` batch (see the module's rules)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
    with counter:
        model(torch.zeros(*input_shape))
    model.train(was_training)
    total = counter.get_total_flops()
    by_op: dict[str, float] = {}
    for op, n in counter.get_flop_counts().get("Global", {}).items():
        name = str(op).removeprefix("aten.")
        by_op[name] = by_op.get(name, 0.0) + n / 1e9
    return FlopsResult(tuple(input_shape), total / 1e9, total / 2e9, by_op)
