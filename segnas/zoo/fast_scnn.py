"""Fast-SCNN (Poudel et al., BMVC 2019, "Fast-SCNN: Fast Semantic Segmentation Network").

Learning-to-downsample (conv s2, two depthwise-separable convs s2) → global feature extractor
(MobileNetV2 bottlenecks t=6: 64×3 s2, 96×3 s2, 128×3 s1, then pyramid pooling) → feature fusion
of the 1/8 and 1/32 paths → classifier (two DSConv + 1×1 conv). Table 1 of the paper.
Published size: 1.11M parameters (Cityscapes, 19 classes; paper Table 4).
An optional auxiliary head on the 1/8 features is used in training only.
"""

from __future__ import annotations

import torch
from torch import nn

from segnas.nn import (ConvBNReLU, DepthwiseSeparableConv, FeatureFusion, InvertedResidual, PyramidPooling, SegHead,
                       SegmentationNet)

PUBLISHED_PARAMS = 1_110_000
PUBLISHED_PARAMS_SOURCE = "Poudel et al., BMVC 2019, arXiv:1902.04502: '1.11 million parameters' (abstract and Table 4)"


class FastSCNN(SegmentationNet):
    stride_multiple = 32

    def __init__(self, num_classes: int, aux: bool = True, width: float = 1.0) -> None:
        super().__init__(num_classes)

        def c(ch: int) -> int:
            return max(8, int(round(ch * width / 8)) * 8)

        self.downsample = nn.Sequential(
            ConvBNReLU(3, c(32), 3, stride=2),
            DepthwiseSeparableConv(c(32), c(48), stride=2),
            DepthwiseSeparableConv(c(48), c(64), stride=2),
        )
        blocks: list[nn.Module] = []
        cin = c(64)
        for cout, n, stride in ((c(64), 3, 2), (c(96), 3, 2), (c(128), 3, 1)):
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expansion=6))
                cin = cout
        self.global_features = nn.Sequential(*blocks, PyramidPooling(cin, c(128)))
        self.fusion = FeatureFusion(c(64), c(128), c(128))
        self.classifier = nn.Sequential(
            DepthwiseSeparableConv(c(128), c(128)),
            DepthwiseSeparableConv(c(128), c(128)),
            nn.Dropout(0.1),
            nn.Conv2d(c(128), num_classes, 1),
        )
        self.aux_heads = nn.ModuleList([SegHead(c(64), num_classes, mid=c(32))]) if aux else nn.ModuleList()

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        high = self.downsample(x)
        low = self.global_features(high)
        out = self.classifier(self.fusion(high, low))
        aux = [head(high) for head in self.aux_heads] if self.training else []
        return out, aux
