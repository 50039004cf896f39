"""DDRNet (Hong et al., arXiv 2101.06085, 2021; Pan et al., IEEE T-ITS 2022, "Deep Dual-resolution
Networks for Real-time and Accurate Semantic Segmentation of Road Scenes").

Stem (two 3×3 s2 conv-BN-ReLU) and ResNet basic blocks to 1/8, then two branches: a low-resolution
branch (basic blocks s2 to 1/16 and 1/32, then a bottleneck s2 to 1/64) and a high-resolution
branch kept at 1/8 (basic blocks, then a bottleneck). After the 1/16 and the 1/32 stage the
branches exchange information by bilateral fusion: high → low by strided 3×3 conv-BN, low → high
by 1×1 conv-BN and bilinear upsampling, both added. The 1/64 feature goes through DAPPM (Deep
Aggregation Pyramid Pooling Module: average pools 5/s2, 9/s4, 17/s8 and global, each BN-ReLU-1×1
conv, upsampled and aggregated hierarchically with BN-ReLU-3×3 convs, concatenated, compressed by
BN-ReLU-1×1 conv, plus a BN-ReLU-1×1 conv shortcut), is upsampled to 1/8 and added to the
high-resolution branch; the seg head (BN-ReLU-3×3 conv-BN-ReLU-1×1 conv) predicts at 1/8.
Layer by layer this follows the official code, github.com/ydhongHIT/DDRNet
``segmentation/DDRNet_23_slim.py`` (``DualResNet(BasicBlock, [2, 2, 2, 2], planes=32,
spp_planes=128, head_planes=64)``; DDRNet-23 is the same with ``planes=64, head_planes=128``).
The training-only auxiliary head (``self.aux_heads``, ``seghead_extra`` in the official code)
predicts from the high-resolution branch after the first bilateral fusion.

Published size: DDRNet-23-slim 5.7M parameters (Cityscapes, 19 classes), paper (arXiv
2101.06085), table comparing accuracy and speed with real-time methods on Cityscapes, row
DDRNet-23-Slim (36.3 GFLOPs, 5.7M parameters; DDRNet-23: 20.1M). This module: 5,695,923
(DDRNet-23: 20,148,819). Cross-check against code: PaddleSeg 2.8.0's port
(``paddleseg/models/ddrnet.py``, ``DualResNet(19, planes=32, spp_planes=128, head_planes=64)``)
has 5,695,987 without its auxiliary head (the 64 more are the stem's conv biases), and with
random weights copied across its logits equal this module's to 1e-6 relative once its two
deviations from the official code are mimicked (DAPPM pooling exclusive of padding; TF-"same"
padding of the stride-2 ``down3`` conv). No pretrained weights are used here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segnas.errors import SegnasError
from segnas.nn import ConvBNReLU, SegmentationNet, kaiming_init

PUBLISHED_PARAMS = 5_700_000
PUBLISHED_PARAMS_SOURCE = (
    "Hong et al., arXiv 2101.06085 (DDRNet), Cityscapes accuracy/speed comparison table, "
    "row DDRNet-23-Slim: 5.7M parameters, 36.3 GFLOPs"
)

#: (planes, head_planes) of each variant; DAPPM branch width is 128 for both.
DDRNET_VARIANTS: dict[str, tuple[int, int]] = {"23_slim": (32, 64), "23": (64, 128)}


class BasicBlock(nn.Module):
    """ResNet basic block; the last block of a stage skips the final ReLU (``no_relu``), because
    the bilateral fusion adds to its output first."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, last_relu: bool = True) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = ConvBNReLU(cin, planes, 3, stride)
        self.conv2 = ConvBNReLU(planes, cout, 3, relu=False)
        self.shortcut = ConvBNReLU(cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else None
        self.last_relu = last_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x)) + (x if self.shortcut is None else self.shortcut(x))
        return F.relu(out) if self.last_relu else out


class Bottleneck(nn.Module):
    """ResNet bottleneck with expansion 2 (1×1, 3×3 (stride), 1×1 to 2×planes), no final ReLU."""

    expansion = 2

    def __init__(self, cin: int, planes: int, stride: int = 1, last_relu: bool = False) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.body = nn.Sequential(
            ConvBNReLU(cin, planes, 1),
            ConvBNReLU(planes, planes, 3, stride),
            ConvBNReLU(planes, cout, 1, relu=False),
        )
        self.shortcut = ConvBNReLU(cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else None
        self.last_relu = last_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x) + (x if self.shortcut is None else self.shortcut(x))
        return F.relu(out) if self.last_relu else out


def make_stage(block: type[BasicBlock] | type[Bottleneck], cin: int, planes: int, n: int,
               stride: int = 1) -> nn.Sequential:
    """``n`` blocks; ReLU after every block but the last (``_make_layer`` of the official code;
    a single bottleneck ends without ReLU, a single basic block with one)."""
    layers = []
    for i in range(n):
        last = i == n - 1
        relu = block is BasicBlock if n == 1 else not last
        layers.append(block(cin if i == 0 else planes * block.expansion, planes, stride if i == 0 else 1, relu))
    return nn.Sequential(*layers)


def bn_relu_conv(cin: int, cout: int, kernel: int = 1) -> nn.Sequential:
    """Pre-activation unit of DAPPM and the seg head: BN → ReLU → conv (no bias)."""
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
                         nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False))


class DAPPM(nn.Module):
    """Deep Aggregation Pyramid Pooling Module."""

    def __init__(self, cin: int, branch: int, cout: int) -> None:
        super().__init__()
        self.pools = nn.ModuleList([
            nn.AvgPool2d(5, 2, 2), nn.AvgPool2d(9, 4, 4), nn.AvgPool2d(17, 8, 8), nn.AdaptiveAvgPool2d(1),
        ])
        self.scale0 = bn_relu_conv(cin, branch)
        self.scales = nn.ModuleList(bn_relu_conv(cin, branch) for _ in self.pools)
        self.process = nn.ModuleList(bn_relu_conv(branch, branch, 3) for _ in self.pools)
        self.compression = bn_relu_conv(branch * 5, cout)
        self.shortcut = bn_relu_conv(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        feats = [self.scale0(x)]
        for pool, scale, process in zip(self.pools, self.scales, self.process):
            up = F.interpolate(scale(pool(x)), size=size, mode="bilinear", align_corners=False)
            feats.append(process(up + feats[-1]))
        return self.compression(torch.cat(feats, 1)) + self.shortcut(x)


class DDRSegHead(nn.Sequential):
    """BN-ReLU-3×3 conv, BN-ReLU-1×1 conv (with bias) to class logits."""

    def __init__(self, cin: int, mid: int, num_classes: int) -> None:
        super().__init__(
            bn_relu_conv(cin, mid, 3),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, num_classes, 1),
        )


class DDRNet(SegmentationNet):
    stride_multiple = 64  # the low-resolution branch ends at 1/64 (DAPPM input)

    def __init__(self, num_classes: int, variant: str = "23_slim", aux: bool = True) -> None:
        super().__init__(num_classes)
        if variant not in DDRNET_VARIANTS:
            raise SegnasError(f"model.options: variant: DDRNet has {', '.join(sorted(DDRNET_VARIANTS))}, "
                              f"got {variant!r}")
        p, head = DDRNET_VARIANTS[variant]
        high = 2 * p  # channels of the high-resolution branch
        self.stem = nn.Sequential(ConvBNReLU(3, p, 3, 2), ConvBNReLU(p, p, 3, 2))
        self.layer1 = make_stage(BasicBlock, p, p, 2)  # 1/4
        self.layer2 = make_stage(BasicBlock, p, 2 * p, 2, stride=2)  # 1/8
        # low-resolution branch
        self.layer3 = make_stage(BasicBlock, 2 * p, 4 * p, 2, stride=2)  # 1/16
        self.layer4 = make_stage(BasicBlock, 4 * p, 8 * p, 2, stride=2)  # 1/32
        self.layer5 = make_stage(Bottleneck, 8 * p, 8 * p, 1, stride=2)  # 1/64, 16p channels
        # high-resolution branch (1/8)
        self.layer3_ = make_stage(BasicBlock, 2 * p, high, 2)
        self.layer4_ = make_stage(BasicBlock, high, high, 2)
        self.layer5_ = make_stage(Bottleneck, high, high, 1)  # 2·high channels
        # bilateral fusion
        self.compression3 = ConvBNReLU(4 * p, high, 1, relu=False)
        self.compression4 = ConvBNReLU(8 * p, high, 1, relu=False)
        self.down3 = ConvBNReLU(high, 4 * p, 3, 2, relu=False)
        self.down4 = nn.Sequential(ConvBNReLU(high, 4 * p, 3, 2), ConvBNReLU(4 * p, 8 * p, 3, 2, relu=False))
        self.spp = DAPPM(16 * p, 128, 4 * p)
        self.head = DDRSegHead(4 * p, head, num_classes)
        self.aux_heads = nn.ModuleList([DDRSegHead(high, head, num_classes)]) if aux else nn.ModuleList()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialization of the official code: convs Kaiming-normal (fan-out, ReLU), BN 1 and 0."""
        kaiming_init(self, mode="fan_out")

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.layer1(self.stem(x))
        x8 = self.layer2(F.relu(x))
        low = self.layer3(F.relu(x8))
        high = self.layer3_(F.relu(x8))
        size = high.shape[-2:]

        low, high = (low + self.down3(F.relu(high)),
                     high + F.interpolate(self.compression3(F.relu(low)), size=size, mode="bilinear",
                                          align_corners=False))
        aux_feat = high

        low = self.layer4(F.relu(low))
        high = self.layer4_(F.relu(high))
        low, high = (low + self.down4(F.relu(high)),
                     high + F.interpolate(self.compression4(F.relu(low)), size=size, mode="bilinear",
                                          align_corners=False))

        high = self.layer5_(F.relu(high))
        low = F.interpolate(self.spp(self.layer5(F.relu(low))), size=size, mode="bilinear", align_corners=False)
        out = self.head(low + high)
        aux = [head(aux_feat) for head in self.aux_heads] if self.training else []
        return out, aux
