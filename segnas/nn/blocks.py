"""Convolutional building blocks shared by the zoo, the search spaces and the latency tables."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segnas.nn.segnet import exporting


def kaiming_init(model: nn.Module, mode: str = "fan_out") -> None:
    """Kaiming-normal (ReLU gain) convolution weights, BatchNorm weight 1 and bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ConvBNReLU(nn.Sequential):
    """k×k convolution → BatchNorm → ReLU (ReLU optional)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
                 groups: int = 1, relu: bool = True) -> None:
        padding = dilation * (kernel - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DepthwiseSeparableConv(nn.Sequential):
    """k×k (default 3×3) depthwise conv-BN-ReLU then 1×1 pointwise conv-BN-ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1, kernel: int = 3) -> None:
        super().__init__(
            ConvBNReLU(cin, cin, kernel, stride, dilation=dilation, groups=cin),
            ConvBNReLU(cin, cout, 1),
        )


class GlobalPoolConv(nn.Module):
    """Image pooling: global average → 1×1 conv-BN-ReLU → broadcast back to the input's H × W
    (DeepLabv3's image-level feature; the auxiliary-cell search's "global average pooling" op)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(x.mean((2, 3), keepdim=True))
        return pooled.expand(-1, -1, x.shape[-2], x.shape[-1])


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck: 1×1 expand to ``cin × expansion`` → k×k depthwise (stride, dilation)
    → 1×1 linear project, residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expansion: int = 6, kernel: int = 3,
                 dilation: int = 1) -> None:
        super().__init__()
        hidden = cin * expansion
        self.use_residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            ConvBNReLU(cin, hidden, 1),
            ConvBNReLU(hidden, hidden, kernel, stride, dilation=dilation, groups=hidden),
            ConvBNReLU(hidden, cout, 1, relu=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


def adaptive_avg_pool2d(x: torch.Tensor, size: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, size)``; under export, the same bins as two averaging matrices
    (ONNX has no adaptive pooling to sizes that do not divide the input), built from the input's
    shape with tensor ops so that a dynamic export pools every input size, not only the traced one."""
    if not exporting():
        return F.adaptive_avg_pool2d(x, size)

    def bins(n) -> torch.Tensor:  # size × n; row i averages [⌊i·n/size⌋, ⌈(i+1)·n/size⌉)
        i = torch.arange(size, device=x.device)
        start = torch.div(i * n, size, rounding_mode="floor")
        end = torch.div((i + 1) * n + size - 1, size, rounding_mode="floor")  # ceil, all terms >= 0
        j = torch.arange(n, device=x.device)
        inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
        return inside.to(x.dtype) / (end - start).to(x.dtype)[:, None]

    return bins(x.shape[-2]) @ x @ bins(x.shape[-1]).T


class PyramidPooling(nn.Module):
    """PSPNet pyramid pooling: average-pool to several grid sizes, 1×1 conv each, upsample, concat,
    fuse with a 1×1 conv."""

    def __init__(self, cin: int, cout: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        inter = cin // len(bins)
        self.bins = bins
        self.stages = nn.ModuleList(ConvBNReLU(cin, inter, 1) for _ in bins)
        self.project = ConvBNReLU(cin + inter * len(bins), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        feats = [x]
        for b, stage in zip(self.bins, self.stages):
            pooled = adaptive_avg_pool2d(x, b)
            feats.append(F.interpolate(stage(pooled), size=size, mode="bilinear", align_corners=False))
        return self.project(torch.cat(feats, 1))


class FeatureFusion(nn.Module):
    """Fast-SCNN's feature fusion: the high-resolution path through a linear 1×1 conv, plus the
    low-resolution path upsampled to it, through a depthwise 3×3 conv-BN-ReLU and a linear 1×1 conv;
    ReLU of the sum."""

    def __init__(self, high_ch: int, low_ch: int, out_ch: int) -> None:
        super().__init__()
        self.low_dw = ConvBNReLU(low_ch, low_ch, 3, groups=low_ch)
        self.low_proj = ConvBNReLU(low_ch, out_ch, 1, relu=False)
        self.high_proj = ConvBNReLU(high_ch, out_ch, 1, relu=False)

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = F.interpolate(low, size=high.shape[-2:], mode="bilinear", align_corners=False)
        return F.relu(self.high_proj(high) + self.low_proj(self.low_dw(low)))


class SegHead(nn.Sequential):
    """Classifier head: 3×3 conv-BN-ReLU, dropout, 1×1 conv to class logits."""

    def __init__(self, cin: int, num_classes: int, mid: int | None = None, dropout: float = 0.1) -> None:
        mid = mid or cin
        super().__init__(ConvBNReLU(cin, mid, 3), nn.Dropout(dropout), nn.Conv2d(mid, num_classes, 1))
