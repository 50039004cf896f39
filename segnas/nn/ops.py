"""Operators by name, and the latency key that identifies one operator instance.

Search spaces build their networks from these factories and report the ``OpKey`` of every op they
contain; the latency table measures ``key.build()`` on an input of ``key.input_shape``. Because
supernet, derived network and latency table all use these same factories, the costs that a
search optimizes are the costs of the network it exports.

FasterSeg's operators (official code, ``operations.py``): ``conv`` (3×3 conv-BN-ReLU, called
BasicResidual1x there, with no residual), ``conv_2x`` (two of them), the zoomed ``conv_downup``
(bilinear ½ → conv → BN → bilinear back → ReLU; no upsampling when strided) and ``conv_2x_downup``,
and ``skip`` (identity, or factorized reduce when the shape changes).

GAS's cell operators (``segnas.spaces.cells``) add ``sep_conv`` (depthwise-separable 3×3, dilated
when ``dilation`` > 1) and ``pool`` (3×3 average or max pooling); ``skip`` and ``conv`` are shared.

Besides the searchable cell operators, the fixed pieces around them are ops too, so that a whole
network's latency is the sum over its keys: ``conv_bn_relu`` (stems, 1×1 projections, refinement
convs), ``head`` (3×3 conv-BN-ReLU + 1×1 classifier) and ``upsample`` (bilinear ×factor).

The ``mobile`` space (Fast-SCNN / MobileNetV2 family, ``segnas.spaces.mobile``) adds
``inverted_residual`` (MobileNetV2 bottleneck with expansion, kernel and dilation), ``dw_conv``
(depthwise k×k conv-BN-ReLU), ``conv_bn`` (linear k×k conv-BN), ``pyramid_pooling`` (PSPNet
pooling, the ``segnas.nn.PyramidPooling`` block) and ``classifier`` (1×1 conv with bias).

The ``encdec`` space (auxiliary-cell RL search, ``segnas.spaces.encdec``) adds ``gap_conv`` (global
average pooling → 1×1 conv-BN-ReLU, broadcast back) and a ``kernel`` setting of ``sep_conv`` (5×5).

The cell operators are assembled from a *layer kit* (``layers=``): ``PLAIN`` (``nn.Conv2d``,
``nn.BatchNorm2d``) by default, or ``segnas.nn.slimmable.SlimmableLayers`` for the supernet, so the
plain and the slimmable version of each operator are one implementation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from segnas.errors import SegnasError
from segnas.nn.blocks import (ConvBNReLU, DepthwiseSeparableConv, GlobalPoolConv, InvertedResidual, PyramidPooling,
                               SegHead)

OpFactory = Callable[..., nn.Module]
OPS: dict[str, OpFactory] = {}


def register_op(name: str) -> Callable[[OpFactory], OpFactory]:
    """Decorator: ``factory(cin, cout, stride=1, dilation=1, **extra) -> nn.Module``."""

    def wrap(factory: OpFactory) -> OpFactory:
        OPS[name] = factory
        return factory

    return wrap


@dataclass(frozen=True)
class OpKey:
    """Everything an operator's latency depends on, besides the runtime and machine."""

    op: str
    cin: int
    cout: int
    h: int
    w: int
    stride: int = 1
    dilation: int = 1
    extra: tuple[tuple[str, Any], ...] = field(default=())

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.cin, self.h, self.w)

    def build(self) -> nn.Module:
        if self.op not in OPS:
            raise SegnasError(f"op: unknown operator {self.op!r}; known: {', '.join(sorted(OPS))}")
        return OPS[self.op](self.cin, self.cout, stride=self.stride, dilation=self.dilation, **dict(self.extra))

    def to_str(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.extra)
        return f"{self.op}|{self.cin}|{self.cout}|{self.h}x{self.w}|s{self.stride}|d{self.dilation}|{extra}"


def zoom_size(h: int, w: int) -> tuple[int, int]:
    """The half-resolution size used by zoomed convolutions: ceil(h/2) × ceil(w/2), the same as a
    stride-2 3×3 convolution gives, so every operator of a cell agrees on odd sizes."""
    return (h + 1) // 2, (w + 1) // 2


@runtime_checkable
class LayerKit(Protocol):
    """What operators are built from: convolutions, BatchNorms and conv-BN-ReLU units. Plain networks
    use ``PlainLayers``; FasterSeg's supernet ``segnas.nn.slimmable.SlimmableLayers``, whose layers
    change width at run time (``slimmable``: operators then never shortcut to identity)."""

    slimmable: bool

    def conv(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, dilation: int = 1) -> nn.Module: ...

    def bn(self, channels: int) -> nn.Module: ...

    def unit(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
             relu: bool = True) -> nn.Module: ...


class PlainLayers:
    """The layer kit (``LayerKit``) of plain networks."""

    #: True for kits whose layers change width at run time (operators then never shortcut to identity).
    slimmable = False

    def conv(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, dilation: int = 1) -> nn.Module:
        return nn.Conv2d(cin, cout, kernel, stride, dilation * (kernel - 1) // 2, dilation=dilation, bias=False)

    def bn(self, channels: int) -> nn.Module:
        return nn.BatchNorm2d(channels)

    def unit(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
             relu: bool = True) -> nn.Module:
        return ConvBNReLU(cin, cout, kernel, stride, dilation=dilation, relu=relu)


PLAIN = PlainLayers()


class ZoomedConv(nn.Module):
    """Bilinear downsample ×½ → ``body`` (conv-BN, ReLU last) → bilinear back to the input size when
    not strided. FasterSeg's "zoomed convolution": ~4× cheaper, larger receptive field."""

    def __init__(self, body: nn.Sequential, stride: int) -> None:
        super().__init__()
        self.body = body
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = F.interpolate(x, size=zoom_size(h, w), mode="bilinear", align_corners=True)
        out = self.body(out)
        if self.stride == 1:
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True)
        return F.relu(out)


class FactorizedReduce(nn.Module):
    """Shape-changing skip: 1×1 conv-BN-ReLU (stride 1), or two offset 1×1 stride-2 convs
    concatenated (stride 2), as in DARTS / FasterSeg."""

    def __init__(self, cin: int, cout: int, stride: int = 1, layers: LayerKit = PLAIN) -> None:
        super().__init__()
        self.stride = stride
        if stride == 1:
            self.conv = layers.conv(cin, cout, 1)
        else:
            self.conv1 = layers.conv(cin, cout // 2, 1, stride=2)
            self.conv2 = layers.conv(cin, cout - cout // 2, 1, stride=2)
        self.bn = layers.bn(cout)

    def set_channels(self, cin: int, cout: int) -> None:
        """Active widths when built from slimmable layers: the strided halves take ⌊cout/2⌋ and
        ⌈cout/2⌉ channels, as at construction."""
        if self.stride == 1:
            self.conv.set_channels(cin, cout)
        else:
            self.conv1.set_channels(cin, cout // 2)
            self.conv2.set_channels(cin, cout - cout // 2)
        self.bn.set_channels(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            out = self.conv(x)
        else:
            shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))  # keeps odd sizes aligned with conv1
            out = torch.cat([self.conv1(x), self.conv2(shifted)], dim=1)
        return F.relu(self.bn(out))


def _conv_stack(cin: int, cout: int, n: int, stride: int, dilation: int, relu_last: bool = True,
                layers: LayerKit = PLAIN) -> nn.Sequential:
    units = []
    for i in range(n):
        last = i == n - 1
        units.append(layers.unit(cin if i == 0 else cout, cout, 3, stride if i == 0 else 1,
                                 dilation=1 if stride == 2 else dilation, relu=relu_last or not last))
    return nn.Sequential(*units)


@register_op("skip")
def skip(cin: int, cout: int, stride: int = 1, dilation: int = 1, layers: LayerKit = PLAIN) -> nn.Module:
    """Identity when the shape is kept (plain kits only: a slimmable skip may change width, so it is
    always the factorized reduce, as in the official supernet)."""
    if stride == 1 and cin == cout and not layers.slimmable:
        return nn.Identity()
    return FactorizedReduce(cin, cout, stride, layers)


@register_op("conv")
def conv(cin: int, cout: int, stride: int = 1, dilation: int = 1, layers: LayerKit = PLAIN) -> nn.Module:
    return _conv_stack(cin, cout, 1, stride, dilation, layers=layers)


@register_op("conv_2x")
def conv_2x(cin: int, cout: int, stride: int = 1, dilation: int = 1, layers: LayerKit = PLAIN) -> nn.Module:
    return _conv_stack(cin, cout, 2, stride, dilation, layers=layers)


@register_op("conv_downup")
def conv_downup(cin: int, cout: int, stride: int = 1, dilation: int = 1, layers: LayerKit = PLAIN) -> nn.Module:
    # the body runs at half resolution already, so it is never strided itself
    return ZoomedConv(_conv_stack(cin, cout, 1, 1, dilation, relu_last=False, layers=layers), stride)


@register_op("conv_2x_downup")
def conv_2x_downup(cin: int, cout: int, stride: int = 1, dilation: int = 1,
                   layers: LayerKit = PLAIN) -> nn.Module:
    return ZoomedConv(_conv_stack(cin, cout, 2, 1, dilation, relu_last=False, layers=layers), stride)


@register_op("sep_conv")
def sep_conv(cin: int, cout: int, stride: int = 1, dilation: int = 1, kernel: int = 3) -> nn.Module:
    """Depthwise k×k (default 3×3) conv-BN-ReLU (strided, dilated) then pointwise 1×1 conv-BN-ReLU."""
    if kernel < 1 or kernel % 2 == 0:
        raise SegnasError(f"op sep_conv: kernel must be odd and >= 1 (got {kernel})")
    return DepthwiseSeparableConv(cin, cout, stride, dilation, kernel)


@register_op("gap_conv")
def gap_conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Module:
    """Global average pooling → 1×1 conv-BN-ReLU, broadcast to the input size (``segnas.nn.GlobalPoolConv``)."""
    if stride != 1 or dilation != 1:
        raise SegnasError(f"op gap_conv: needs stride 1 and dilation 1 (got stride={stride}, dilation={dilation})")
    return GlobalPoolConv(cin, cout)


@register_op("pool")
def pool(cin: int, cout: int, stride: int = 1, dilation: int = 1, kind: str = "avg") -> nn.Module:
    """3×3 pooling with padding 1 (the average excludes the padding), keeping the channels."""
    if cin != cout or dilation != 1 or kind not in ("avg", "max"):
        raise SegnasError(f"op pool: needs cin == cout, dilation 1 and kind avg or max "
                          f"(got cin={cin}, cout={cout}, dilation={dilation}, kind={kind!r})")
    if kind == "max":
        return nn.MaxPool2d(3, stride, 1)
    return nn.AvgPool2d(3, stride, 1, count_include_pad=False)


@register_op("conv_bn_relu")
def conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1, kernel: int = 3) -> nn.Module:
    return ConvBNReLU(cin, cout, kernel, stride, dilation=dilation)


class Upsample(nn.Module):
    """Bilinear upsampling by an integer factor (output size = factor × input size)."""

    def __init__(self, factor: int, align_corners: bool) -> None:
        super().__init__()
        self.factor = factor
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return F.interpolate(x, size=(h * self.factor, w * self.factor), mode="bilinear",
                             align_corners=self.align_corners)


@register_op("upsample")
def upsample(cin: int, cout: int, stride: int = 1, dilation: int = 1, factor: int = 2,
             align_corners: bool = False) -> nn.Module:
    if cin != cout or stride != 1 or factor < 1:
        raise SegnasError(f"op upsample: needs cin == cout, stride 1 and factor >= 1 "
                          f"(got cin={cin}, cout={cout}, stride={stride}, factor={factor})")
    return Upsample(factor, align_corners)


@register_op("head")
def head(cin: int, cout: int, stride: int = 1, dilation: int = 1, mid: int = 0) -> nn.Module:
    """Classifier head: 3×3 conv-BN-ReLU to ``mid`` channels (``cin`` when 0), then 1×1 conv with bias
    to ``cout`` classes; no dropout (FasterSeg's ``Head``)."""
    if stride != 1:
        raise SegnasError(f"op head: stride must be 1 (got {stride})")
    return SegHead(cin, cout, mid=mid or cin, dropout=0.0)


@register_op("inverted_residual")
def inverted_residual(cin: int, cout: int, stride: int = 1, dilation: int = 1, expansion: int = 6,
                      kernel: int = 3) -> nn.Module:
    """MobileNetV2 bottleneck (``segnas.nn.InvertedResidual``): residual when stride 1 and cin == cout."""
    if stride not in (1, 2) or (stride == 2 and dilation != 1) or expansion < 1 or kernel < 1 or kernel % 2 == 0:
        raise SegnasError(f"op inverted_residual: needs stride 1 or 2 (dilation 1 when strided), expansion >= 1 "
                          f"and an odd kernel (got stride={stride}, dilation={dilation}, expansion={expansion}, "
                          f"kernel={kernel})")
    return InvertedResidual(cin, cout, stride, expansion, kernel, dilation)


@register_op("dw_conv")
def dw_conv(cin: int, cout: int, stride: int = 1, dilation: int = 1, kernel: int = 3) -> nn.Module:
    """Depthwise k×k conv-BN-ReLU (one filter per channel)."""
    if cin != cout:
        raise SegnasError(f"op dw_conv: needs cin == cout (got cin={cin}, cout={cout})")
    return ConvBNReLU(cin, cin, kernel, stride, dilation=dilation, groups=cin)


@register_op("conv_bn")
def conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1, kernel: int = 1) -> nn.Module:
    """Linear k×k conv-BN (no activation): projections whose output is summed before a ReLU."""
    return ConvBNReLU(cin, cout, kernel, stride, dilation=dilation, relu=False)


@register_op("pyramid_pooling")
def pyramid_pooling(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Module:
    """PSPNet pyramid pooling over bins 1, 2, 3, 6 (``segnas.nn.PyramidPooling``)."""
    if stride != 1 or dilation != 1 or cin < 4:
        raise SegnasError(f"op pyramid_pooling: needs stride 1, dilation 1 and cin >= 4 "
                          f"(got stride={stride}, dilation={dilation}, cin={cin})")
    return PyramidPooling(cin, cout)


@register_op("classifier")
def classifier(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Module:
    """1×1 convolution with bias: features to class logits."""
    if stride != 1:
        raise SegnasError(f"op classifier: stride must be 1 (got {stride})")
    return nn.Conv2d(cin, cout, 1)
