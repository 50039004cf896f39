"""Slimmable layers: one set of weights run at several widths (FasterSeg's supernet channels).

A ``SlimmableConv2d`` holds the weights of its widest form and runs on the first ``cin`` input and
``cout`` output channels of them (weight slicing); a ``SwitchableBatchNorm2d`` keeps one BatchNorm
per width, because the statistics of a channel depend on which other channels feed it (slimmable
networks, Yu et al. 2019; FasterSeg's ``USConv2d`` / ``USBatchNorm2d``). ``SlimmableLayers`` is a
layer kit for the operator factories of ``segnas.nn.ops``, so the supernet's operators are the
same code as the derived network's; ``SlimmableOp`` wraps one such operator and sets the active
widths of every layer in it from the operator's input and output channel counts.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segnas.errors import SegnasError


def ratio_channels(max_channels: int, ratio: float) -> int:
    """Channels of a width ``ratio`` of ``max_channels`` (rounded, at least 1)."""
    return max(1, int(round(max_channels * ratio)))


class SlimmableConv2d(nn.Conv2d):
    """A convolution that runs on the first ``cin`` input / ``cout`` output channels of its weights
    (``set_channels``); at full width it is exactly an ``nn.Conv2d``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, bias: bool = False) -> None:
        super().__init__(cin, cout, kernel, stride, padding, dilation=dilation, bias=bias)
        self.active = (cin, cout)

    def set_channels(self, cin: int, cout: int) -> None:
        if not (1 <= cin <= self.in_channels and 1 <= cout <= self.out_channels):
            raise SegnasError(f"slimmable conv: channels ({cin}, {cout}) outside 1..({self.in_channels}, "
                              f"{self.out_channels})")
        self.active = (cin, cout)

    def set_ratio(self, ratio: tuple[float, float]) -> None:
        self.set_channels(ratio_channels(self.in_channels, ratio[0]), ratio_channels(self.out_channels, ratio[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin, cout = self.active
        if x.shape[1] != cin:
            raise SegnasError(f"slimmable conv: input has {x.shape[1]} channels, the active width is {cin}")
        bias = self.bias[:cout] if self.bias is not None else None
        return F.conv2d(x, self.weight[:cout, :cin], bias, self.stride, self.padding, self.dilation)


class SwitchableBatchNorm2d(nn.Module):
    """One ``nn.BatchNorm2d`` per possible channel count; ``set_channels`` picks the active one."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        self.widths = tuple(sorted({int(c) for c in channels}))
        if not self.widths or self.widths[0] < 1:
            raise SegnasError(f"switchable BatchNorm: needs channel counts >= 1, got {list(channels)}")
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in self.widths)
        self._index = {c: i for i, c in enumerate(self.widths)}
        self.active = self.widths[-1]

    def set_channels(self, cin: int, cout: int) -> None:
        if cin != cout or cout not in self._index:
            raise SegnasError(f"switchable BatchNorm: no BatchNorm for {cin} -> {cout} channels "
                              f"(has {list(self.widths)})")
        self.active = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bns[self._index[self.active]](x)


class SlimmableConvBNReLU(nn.Sequential):
    """Slimmable k×k convolution → switchable BatchNorm (one per output width) → ReLU (optional);
    the slimmable form of ``segnas.nn.blocks.ConvBNReLU``, with the same module layout."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
                 relu: bool = True, out_widths: Sequence[int] | None = None) -> None:
        layers: list[nn.Module] = [
            SlimmableConv2d(cin, cout, kernel, stride, dilation * (kernel - 1) // 2, dilation=dilation),
            SwitchableBatchNorm2d(out_widths or [cout]),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)

    def set_channels(self, cin: int, cout: int) -> None:
        self[0].set_channels(cin, cout)
        self[1].set_channels(cout, cout)

    def set_ratio(self, ratio: tuple[float, float]) -> None:
        """Active widths as ratios of the full input / output channels."""
        self.set_channels(ratio_channels(self[0].in_channels, ratio[0]), ratio_channels(self[0].out_channels, ratio[1]))


class SlimmableLayers:
    """Layer kit (``segnas.nn.ops.LayerKit``) of slimmable layers whose output widths are the
    given ratios of each layer's full output channels (one BatchNorm per ratio)."""

    slimmable = True

    def __init__(self, out_ratios: Sequence[float]) -> None:
        self.out_ratios = tuple(float(r) for r in out_ratios)
        if not self.out_ratios or min(self.out_ratios) <= 0 or max(self.out_ratios) > 1:
            raise SegnasError(f"slimmable layers: width ratios must be in (0, 1], got {list(out_ratios)}")

    def widths(self, channels: int) -> list[int]:
        return [ratio_channels(channels, r) for r in self.out_ratios]

    def conv(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, dilation: int = 1) -> nn.Module:
        return SlimmableConv2d(cin, cout, kernel, stride, dilation * (kernel - 1) // 2, dilation=dilation)

    def bn(self, channels: int) -> nn.Module:
        return SwitchableBatchNorm2d(self.widths(channels))

    def unit(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
             relu: bool = True) -> nn.Module:
        return SlimmableConvBNReLU(cin, cout, kernel, stride, dilation, relu, out_widths=self.widths(cout))


def _width_plan(module: nn.Module, reads_input: bool, out: list[tuple[nn.Module, bool]]) -> bool:
    """Collect the modules ``set_channels`` must reach, each with whether it reads the operator's
    input. A module with its own ``set_channels`` takes both widths; in any other container the
    first slimmable child reads the container's input and the later ones its output (a chain)."""
    if hasattr(module, "set_channels"):
        out.append((module, reads_input))
        return True
    found = False
    for child in module.children():
        if _width_plan(child, reads_input and not found, out):
            found = True
    return found


class SlimmableOp(nn.Module):
    """An operator built from ``SlimmableLayers``; ``set_channels(cin, cout)`` sets the active
    widths of all its layers (the operator maps ``cin`` to ``cout`` channels)."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.op = op
        self._plan: list[tuple[nn.Module, bool]] = []
        _width_plan(op, True, self._plan)
        self.active: tuple[int, int] | None = None

    def set_channels(self, cin: int, cout: int) -> None:
        if self.active == (cin, cout):
            return
        for module, reads_input in self._plan:
            module.set_channels(cin if reads_input else cout, cout)
        self.active = (cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def sliced_bn(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn`` on the first ``x.shape[1]`` of its channels (weights and running statistics sliced; in
    training the slices of the running statistics update in place); at full width exactly ``bn(x)``."""
    c = x.shape[1]
    if c == bn.num_features:
        return bn(x)
    if c > bn.num_features:
        raise SegnasError(f"sliced BatchNorm: input has {c} channels, more than its {bn.num_features}")
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked += 1
    momentum = 0.0 if bn.momentum is None else bn.momentum  # None: a cumulative average (see nn.BatchNorm2d)
    if bn.momentum is None and bn.training:
        momentum = 1.0 / float(bn.num_batches_tracked)
    # slices of the buffers are views: the running statistics of the first c channels update in place
    return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                        bn.training, momentum, bn.eps)


def sliced_conv_weight(conv: nn.Conv2d, cout: int, cin: int, kernel: int | None = None,
                       in_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight (and bias) of ``conv`` for ``cin`` inputs and ``cout`` outputs: the leading channels
    (or the input channels ``in_index``), the centre ``kernel``×``kernel`` of its kernel (the
    weight sharing of elastic kernels: a 3×3 filter is the centre of the 5×5 one). A depthwise
    ``conv`` takes ``cin`` channels to as many."""
    weight = conv.weight
    if conv.groups == 1:
        weight = weight[:cout] if in_index is None else weight[:cout].index_select(1, in_index)
        weight = weight[:, :cin]
    elif conv.groups == conv.in_channels == conv.out_channels:
        weight, cout = weight[:cin], cin
    else:
        raise SegnasError(f"sliced conv: groups {conv.groups} neither 1 nor depthwise")
    big = conv.kernel_size[0]
    k = kernel or big
    if k > big or (big - k) % 2:
        raise SegnasError(f"sliced conv: kernel {k} does not fit centred in {big}")
    if k < big:
        off = (big - k) // 2
        weight = weight[:, :, off:off + k, off:off + k]
    return weight, conv.bias[:cout] if conv.bias is not None else None


def sliced_conv(conv: nn.Conv2d, x: torch.Tensor, cout: int | None = None, kernel: int | None = None,
                dilation: int | None = None, in_index: torch.Tensor | None = None) -> torch.Tensor:
    """``conv`` run on ``x``'s channels to ``cout`` outputs (``sliced_conv_weight``), with ``kernel``
    and ``dilation`` instead of its own where given (padding keeps the size, as built)."""
    cin = x.shape[1]
    weight, bias = sliced_conv_weight(conv, cout or conv.out_channels, cin, kernel, in_index)
    k, d = weight.shape[-1], dilation or conv.dilation[0]
    groups = cin if conv.groups > 1 else 1
    return F.conv2d(x, weight, bias, conv.stride, d * (k - 1) // 2, d, groups)


class SlicedBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm over the widest channel count that normalizes whatever number of leading
    channels it is given (SSR's single BatchNorm under channel masks, sliced to the widest width
    still searched); at full width it is exactly an ``nn.BatchNorm2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == self.num_features:
            return super().forward(x)
        return sliced_bn(self, x)
