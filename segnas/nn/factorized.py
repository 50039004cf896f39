"""ERFNet-style factorized residual blocks and downsampler (SSR's operators).

``FactorizedResidual`` is ERFNet's non-bottleneck-1D block — 3×1 and 1×3 convolutions, then the
same pair dilated — searched by SSR jointly over dilation, resolution (``half``: 2×2 average pool →
block → bilinear back up, ~4× cheaper and twice the receptive field) and two widths: ``mid`` (the
inner channels) and ``out`` (how many of the block's output channels its branch writes; the other
channels pass the input through, so the residual shape never changes). ``depthwise`` gives the
cheaper alternative: depthwise 3×1/1×3 (dilated) then pointwise 1×1 to ``mid`` and back to ``out``.

The same class is the derived network's block (plain widths, ``nn.Conv2d``) and the SSR supernet's
candidate (built at full width with ``slimmable=True``): the supernet calls ``set_widths`` to run
on the first channels of its weights and passes channel masks to ``forward``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segnas.errors import SegnasError
from segnas.nn.ops import register_op
from segnas.nn.slimmable import SlicedBatchNorm2d, SlimmableConv2d


def _conv(cin: int, cout: int, kernel: tuple[int, int], dilation: int, groups: int, slimmable: bool) -> nn.Conv2d:
    dil = (dilation if kernel[0] > 1 else 1, dilation if kernel[1] > 1 else 1)
    pad = (dil[0] * (kernel[0] // 2), dil[1] * (kernel[1] // 2))
    if slimmable and groups == 1:
        return SlimmableConv2d(cin, cout, kernel, 1, pad, dilation=dil, bias=False)
    return nn.Conv2d(cin, cout, kernel, 1, pad, dilation=dil, groups=groups, bias=False)


class FactorizedResidual(nn.Module):
    """x → x + branch(x) on the first ``out`` channels, then ReLU (see the module docstring)."""

    def __init__(self, channels: int, mid: int, out: int, dilation: int = 1, half: bool = False,
                 depthwise: bool = False, slimmable: bool = False) -> None:
        super().__init__()
        if not (1 <= mid <= channels and 1 <= out <= channels) or dilation < 1:
            raise SegnasError(f"factorized residual: need 1 <= mid, out <= channels ({channels}) and dilation >= 1, "
                              f"got mid={mid}, out={out}, dilation={dilation}")
        self.channels, self.mid, self.out = channels, mid, out
        self.half, self.depthwise, self.slimmable = half, depthwise, slimmable
        bn = SlicedBatchNorm2d if slimmable else nn.BatchNorm2d
        if depthwise:
            self.convs = nn.ModuleList([_conv(channels, channels, (3, 1), dilation, channels, slimmable),
                                        _conv(channels, channels, (1, 3), dilation, channels, slimmable),
                                        _conv(channels, mid, (1, 1), 1, 1, slimmable),
                                        _conv(mid, out, (1, 1), 1, 1, slimmable)])
            self.bns = nn.ModuleList([bn(channels), bn(mid), bn(out)])
        else:
            self.convs = nn.ModuleList([_conv(channels, mid, (3, 1), 1, 1, slimmable),
                                        _conv(mid, mid, (1, 3), 1, 1, slimmable),
                                        _conv(mid, mid, (3, 1), dilation, 1, slimmable),
                                        _conv(mid, out, (1, 3), dilation, 1, slimmable)])
            self.bns = nn.ModuleList([bn(mid), bn(out)])
        self.active = (mid, out)

    def set_widths(self, mid: int, out: int) -> None:
        """Run on the first ``mid`` / ``out`` channels of the weights (slimmable blocks only)."""
        if not self.slimmable and (mid, out) != (self.mid, self.out):
            raise SegnasError("factorized residual: set_widths needs a block built with slimmable=True")
        if not (1 <= mid <= self.mid and 1 <= out <= self.out):
            raise SegnasError(f"factorized residual: widths ({mid}, {out}) outside 1..({self.mid}, {self.out})")
        c = self.channels
        pairs = ([(c, c), (c, c), (c, mid), (mid, out)] if self.depthwise
                 else [(c, mid), (mid, mid), (mid, mid), (mid, out)])
        for conv, (i, o) in zip(self.convs, pairs):
            if isinstance(conv, SlimmableConv2d):
                conv.set_channels(i, o)
        self.active = (mid, out)

    def branch(self, x: torch.Tensor, mid_mask: torch.Tensor | None = None,
               out_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The residual branch; masks (one value per active channel) scale the inner / output channels."""
        def masked(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
            return t if mask is None else t * mask.view(1, -1, 1, 1).to(t.dtype)

        c1, c2, c3, c4 = self.convs
        if self.depthwise:
            y = F.relu(self.bns[0](c2(c1(x))))
            y = masked(F.relu(self.bns[1](c3(y))), mid_mask)
            return masked(self.bns[2](c4(y)), out_mask)
        y = masked(F.relu(self.bns[0](c2(F.relu(c1(x))))), mid_mask)
        y = masked(F.relu(c3(y)), mid_mask)
        return masked(self.bns[1](c4(y)), out_mask)

    def forward(self, x: torch.Tensor, mid_mask: torch.Tensor | None = None,
                out_mask: torch.Tensor | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.half:
            y = self.branch(F.avg_pool2d(x, 2, ceil_mode=True), mid_mask, out_mask)
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        else:
            y = self.branch(x, mid_mask, out_mask)
        out = self.active[1]
        if out == x.shape[1]:
            return F.relu(x + y)
        return F.relu(torch.cat([x[:, :out] + y, x[:, out:]], dim=1))


class ErfDownsampler(nn.Module):
    """ERFNet's downsampler: concat(3×3 stride-2 conv to cout − cin channels, 2×2 max pool) → BN → ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        if cout <= cin:
            raise SegnasError(f"downsampler: output channels ({cout}) must exceed input channels ({cin})")
        self.conv = nn.Conv2d(cin, cout - cin, 3, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(torch.cat([self.conv(x), F.max_pool2d(x, 2, ceil_mode=True)], dim=1)))


@register_op("fact_res")
def fact_res(cin: int, cout: int, stride: int = 1, dilation: int = 1, mid: int = 0, half: bool = False) -> nn.Module:
    """Non-bottleneck-1D block on ``cin`` channels whose branch writes ``cout`` of them."""
    if stride != 1:
        raise SegnasError(f"op fact_res: stride must be 1 (got {stride})")
    return FactorizedResidual(cin, mid or cin, cout, dilation, half)


@register_op("dw_fact_res")
def dw_fact_res(cin: int, cout: int, stride: int = 1, dilation: int = 1, mid: int = 0,
                half: bool = False) -> nn.Module:
    """Depthwise-factorized residual block (the cheaper alternative to ``fact_res``)."""
    if stride != 1:
        raise SegnasError(f"op dw_fact_res: stride must be 1 (got {stride})")
    return FactorizedResidual(cin, mid or cin, cout, dilation, half, depthwise=True)


@register_op("erf_down")
def erf_down(cin: int, cout: int, stride: int = 2, dilation: int = 1) -> nn.Module:
    if stride != 2:
        raise SegnasError(f"op erf_down: stride must be 2 (got {stride})")
    return ErfDownsampler(cin, cout)
