"""ENet (Paszke, Chaurasia, Kim, Culurciello, 2016, "ENet: A Deep Neural Network Architecture for
Real-Time Semantic Segmentation", arXiv:1606.02147).

Layout of paper Table 1, with the layer details of the authors' Torch code (e-lab/ENet-training,
``train/models/encoder.lua`` and ``train/models/decoder.lua``):

* initial block: 3×3 conv stride 2 (13 filters) concatenated with a 2×2 max-pool of the image → 16 ch;
* stage 1: bottleneck 1.0 (downsampling, 64 ch) + 4 regular bottlenecks;
* stages 2 and 3 (128 ch): regular, dilated 2, asymmetric 5, dilated 4, regular, dilated 8,
  asymmetric 5, dilated 16 (stage 2 starts with the downsampling bottleneck 2.0);
* stage 4: upsampling bottleneck 4.0 (64 ch) + 2 regular; stage 5: upsampling 5.0 (16 ch) + 1 regular;
* full-resolution 2×2 stride-2 transposed convolution to the classes.

Bottlenecks: 1×1 projection to ``out/4`` channels (2×2 stride-2 conv when downsampling) → main conv
(3×3, dilated 3×3, or 5×1 then 1×5) → 1×1 expansion, BatchNorm (eps 1e-3) after each conv, PReLU in
the encoder and ReLU in the decoder (as in the authors' code), spatial dropout p=0.01 in the first
five bottlenecks (1.x) and p=0.1 in the rest of the encoder; the authors' decoder has no dropout.
Downsampling bottlenecks keep the max-pooling indices; the decoder's upsampling bottlenecks max-unpool
with them (shortcut: 1×1 conv + BN, then unpool; main branch: 3×3 transposed conv stride 2). The
unpooling is written with ONNX-exportable ops (``max_unpool2x2``): the TorchScript ONNX exporter has
no MaxUnpool symbolic.

The encoder downsamples by 8 (initial block, 1.0, 2.0) and the output is already at input resolution,
so ``stride_multiple`` is 8. With ``aux=True`` the encoder classifier of the authors' first training
stage (1×1 conv on the 1/8 encoder output) is kept as a training-only auxiliary head.

Published size: 0.37M parameters (paper Table 3, "Hardware requirements", ENet vs SegNet's 29.46M;
matches the abstract's "79× less parameters"). The class count of that figure is not stated; the
class count changes only the final transposed conv (16·C·4 + C parameters). This file: 364,311 for
19 classes (−1.5%).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segnas.nn import SegmentationNet

PUBLISHED_PARAMS = 370_000
PUBLISHED_PARAMS_SOURCE = (
    "Paszke et al. 2016, ENet (arXiv:1606.02147), Table 3 'Hardware requirements': 0.37M parameters"
)

_BN_EPS = 1e-3


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=_BN_EPS)


def _act(ch: int, relu: bool) -> nn.Module:
    return nn.ReLU(inplace=True) if relu else nn.PReLU(ch)


def max_unpool2x2(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``F.max_unpool2d(x, indices, 2, 2)`` for indices of a 2×2 stride-2 max-pool over an even-sized map,
    written with ops the ONNX exporter supports (it has no MaxUnpool symbolic): each value goes to the
    window position its index names, the other three positions get zero (exactly as max-unpooling)."""
    n, c, h, w = x.shape
    col = indices % 2  # the pooled map's width 2w is even, so index parity is column parity
    row = torch.div(indices, 2 * w, rounding_mode="floor") % 2
    parts = [x * ((row == a) & (col == b)).to(x.dtype) for a in (0, 1) for b in (0, 1)]
    return F.pixel_shuffle(torch.stack(parts, 2).reshape(n, 4 * c, h, w), 2)


class InitialBlock(nn.Module):
    """3×3 stride-2 conv (``cout - 3`` filters) ‖ 2×2 max-pool of the input, then BN + PReLU."""

    def __init__(self, cin: int = 3, cout: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout - cin, 3, stride=2, padding=1, bias=True)
        self.bn = _bn(cout)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(torch.cat([self.conv(x), F.max_pool2d(x, 2, 2)], 1)))


class Bottleneck(nn.Module):
    """Encoder bottleneck (regular, dilated, asymmetric, or downsampling with pooling indices)."""

    def __init__(self, cin: int, cout: int, dropout: float, downsample: bool = False, dilation: int = 1,
                 asymmetric: int = 0, relu: bool = False) -> None:
        super().__init__()
        mid = cout // 4
        self.downsample = downsample
        self.extra_ch = cout - cin
        k = 2 if downsample else 1
        if asymmetric:
            pad = (asymmetric - 1) // 2
            conv: nn.Module = nn.Sequential(
                nn.Conv2d(mid, mid, (asymmetric, 1), padding=(pad, 0), bias=False),
                nn.Conv2d(mid, mid, (1, asymmetric), padding=(0, pad), bias=True),
            )
        else:
            conv = nn.Conv2d(mid, mid, 3, padding=dilation, dilation=dilation, bias=True)
        self.branch = nn.Sequential(
            nn.Conv2d(cin, mid, k, stride=k, bias=False), _bn(mid), _act(mid, relu),
            conv, _bn(mid), _act(mid, relu),
            nn.Conv2d(mid, cout, 1, bias=False), _bn(cout),
            nn.Dropout2d(dropout),
        )
        self.out_act = _act(cout, relu)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        indices = None
        shortcut = x
        if self.downsample:
            shortcut, indices = F.max_pool2d(x, 2, 2, return_indices=True)
        if self.extra_ch:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_ch))
        return self.out_act(shortcut + self.branch(x)), indices


class UpsamplingBottleneck(nn.Module):
    """Decoder bottleneck: shortcut 1×1 conv + BN then max-unpool; main 1×1 → 3×3 transposed conv
    stride 2 → 1×1 (ReLU, as in the authors' decoder)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cout // 4
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), _bn(cout))
        self.branch = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), _bn(mid), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1, bias=True),
            _bn(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False), _bn(cout),
        )
        self.out_act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        main = self.branch(x)
        shortcut = max_unpool2x2(self.shortcut(x), indices)
        return self.out_act(shortcut + main)


class ENet(SegmentationNet):
    stride_multiple = 8

    def __init__(self, num_classes: int, aux: bool = False) -> None:
        super().__init__(num_classes)
        self.initial = InitialBlock(3, 16)
        # Stage 1 (the first five bottlenecks use dropout 0.01).
        self.down1 = Bottleneck(16, 64, 0.01, downsample=True)
        self.stage1 = nn.ModuleList(Bottleneck(64, 64, 0.01) for _ in range(4))
        # Stages 2 and 3.
        self.down2 = Bottleneck(64, 128, 0.1, downsample=True)
        pattern = (dict(), dict(dilation=2), dict(asymmetric=5), dict(dilation=4),
                   dict(), dict(dilation=8), dict(asymmetric=5), dict(dilation=16))
        self.stage23 = nn.ModuleList(Bottleneck(128, 128, 0.1, **kw) for _ in range(2) for kw in pattern)
        # Decoder: stages 4 and 5.
        self.up4 = UpsamplingBottleneck(128, 64)
        self.stage4 = nn.ModuleList(Bottleneck(64, 64, 0.0, relu=True) for _ in range(2))
        self.up5 = UpsamplingBottleneck(64, 16)
        self.stage5 = nn.ModuleList([Bottleneck(16, 16, 0.0, relu=True)])
        self.fullconv = nn.ConvTranspose2d(16, num_classes, 2, stride=2, bias=True)
        # Authors' stage-one training: a 1×1 classifier on the 1/8 encoder output.
        self.aux_heads = nn.ModuleList([nn.Conv2d(128, num_classes, 1)]) if aux else nn.ModuleList()

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.initial(x)
        x, idx1 = self.down1(x)
        for block in self.stage1:
            x = block(x)[0]
        x, idx2 = self.down2(x)
        for block in self.stage23:
            x = block(x)[0]
        encoded = x
        x = self.up4(x, idx2)
        for block in self.stage4:
            x = block(x)[0]
        x = self.up5(x, idx1)
        for block in self.stage5:
            x = block(x)[0]
        out = self.fullconv(x)
        aux = [head(encoded) for head in self.aux_heads] if self.training else []
        return out, aux
