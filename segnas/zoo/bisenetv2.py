"""BiSeNet V2 (Yu, Gao, Wang, Yu, Shen, Sang, IJCV 2021, "BiSeNet V2: Bilateral Network with Guided
Aggregation for Real-time Semantic Segmentation", arXiv:2004.02147).

Paper Table 1 and Figures 3–6. The authors released no code; where the paper is silent the layer
details follow PaddlePaddle/PaddleSeg ``paddleseg/models/bisenet.py``, which also keeps the paper's
choices where other reference code departs from them:

* detail branch: 3×3 conv-BN-ReLU stages S1 (64: s2, s1), S2 (64: s2, s1, s1), S3 (128: s2, s1, s1) → 1/8;
* semantic branch (λ = 1/4 of the detail widths in S1–S3): stem block (16 ch at 1/4: 3×3 conv s2, then
  [1×1 → 3×3 s2] ‖ 3×3 max-pool s2, concatenated, 3×3 fuse); gather-and-expansion (GE) layers with
  expansion 6 — S3: GE s2 + GE (32 ch), S4: GE s2 + GE (64), S5: GE s2 + 3× GE (128) → 1/32; context
  embedding (global average pool → BN → 1×1 conv-BN-ReLU, added to the input, then a plain 3×3 conv);
* bilateral guided aggregation at 1/8: detail (3×3 depthwise-BN + 1×1) × sigmoid(upsampled 3×3
  conv-BN(semantic)), plus the upsampled detail (3×3 s2 conv-BN + 3×3 avg-pool s2) × sigmoid(3×3
  depthwise-BN + 1×1 (semantic)), fused by a 3×3 conv-BN;
* seg head: 3×3 conv-BN-ReLU to C_t channels, dropout 0.1, 1×1 conv to the classes. C_t = 128 as in
  PaddleSeg (the paper leaves the main head's C_t open);
* booster training (paper §4.3): four auxiliary seg heads on the stem (1/4), S3 (1/8), S4 (1/16) and
  S5_4 (1/32, before context embedding) outputs, C_t = their input width as in PaddleSeg; used in
  training only and kept in ``self.aux_heads``.

Other reference code: open-mmlab/mmsegmentation ``mmseg/models/backbones/bisenetv2.py`` (config
``configs/_base_/models/bisenetv2.py``) and CoinCheung/BiSeNet ``lib/models/bisenetv2.py`` use a
1024-channel main head (``head_channels=1024`` here: 3.36M parameters for 19 classes) and add ReLUs the
paper does not draw (after the GE depthwise convs, after the context-embedding 3×3 conv and after the
aggregation conv). No public number of parameters was found for that variant.

Published size: the paper gives no parameter count. PaddleSeg publishes 2.33M parameters for its
Cityscapes (19-class) BiSeNetV2 (PaddlePaddle/PaddleSeg ``docs/model_zoo_overview.md``, "Summary
table", row "BiSeNetv2 | - | 73.19% | 16.14 | 2.33": mIoU, FLOPs (G), Params (M)). This network has
2.31M for 19 classes; PaddleSeg's convolutions also carry biases (Paddle's default), dropped here in
front of BatchNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segnas.nn import ConvBNReLU, SegHead, SegmentationNet

PUBLISHED_PARAMS = 2_330_000
PUBLISHED_PARAMS_SOURCE = (
    "PaddlePaddle/PaddleSeg docs/model_zoo_overview.md, Summary table, BiSeNetv2 (Cityscapes): "
    "Params(M) 2.33"
)


def _conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Convolution + BatchNorm, no activation."""
    return ConvBNReLU(cin, cout, kernel, stride, groups=groups, relu=False)


class StemBlock(nn.Module):
    """3×3 conv s2, then (1×1 → 3×3 s2) ‖ 3×3 max-pool s2, concatenated and fused by a 3×3 conv."""

    def __init__(self, cin: int = 3, cout: int = 16) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 3, stride=2)
        self.left = nn.Sequential(ConvBNReLU(cout, cout // 2, 1), ConvBNReLU(cout // 2, cout, 3, stride=2))
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.fuse = ConvBNReLU(2 * cout, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), self.pool(x)], 1))


class GatherExpansion(nn.Module):
    """Gather-and-expansion layer (paper Fig. 5 b/c): 3×3 conv-BN-ReLU, 3×3 depthwise conv expanding ×6
    (stride 2: then a second 3×3 depthwise conv), 1×1 projection-BN; identity shortcut, or for stride 2
    a 3×3 depthwise s2 + 1×1 conv shortcut; sum, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expansion: int = 6) -> None:
        super().__init__()
        mid = cin * expansion
        layers: list[nn.Module] = [ConvBNReLU(cin, cin, 3), _conv_bn(cin, mid, 3, stride=stride, groups=cin)]
        if stride == 1:
            self.shortcut: nn.Module = nn.Identity()
        else:
            layers.append(_conv_bn(mid, mid, 3, groups=mid))
            self.shortcut = nn.Sequential(_conv_bn(cin, cin, 3, stride=2, groups=cin), _conv_bn(cin, cout, 1))
        layers.append(_conv_bn(mid, cout, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class ContextEmbedding(nn.Module):
    """Global average pool → BN → 1×1 conv-BN-ReLU, broadcast-added to the input, then a 3×3 conv."""

    def __init__(self, ch: int = 128) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(ch)
        self.conv_gap = ConvBNReLU(ch, ch, 1)
        self.conv_last = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.conv_gap(self.bn(x.mean(dim=(2, 3), keepdim=True)))
        return self.conv_last(x + context)


class BilateralGuidedAggregation(nn.Module):
    """Fuses the 1/8 detail and the 1/32 semantic features, each branch gating the other (paper Fig. 6)."""

    def __init__(self, ch: int = 128) -> None:
        super().__init__()
        self.detail_keep = nn.Sequential(_conv_bn(ch, ch, 3, groups=ch), nn.Conv2d(ch, ch, 1))
        self.detail_down = nn.Sequential(_conv_bn(ch, ch, 3, stride=2), nn.AvgPool2d(3, stride=2, padding=1))
        self.semantic_keep = nn.Sequential(_conv_bn(ch, ch, 3, groups=ch), nn.Conv2d(ch, ch, 1))
        self.semantic_up = _conv_bn(ch, ch, 3)
        self.fuse = _conv_bn(ch, ch, 3)

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        size = detail.shape[-2:]
        gate = F.interpolate(self.semantic_up(semantic), size=size, mode="bilinear", align_corners=False)
        high = self.detail_keep(detail) * torch.sigmoid(gate)
        low = self.detail_down(detail) * torch.sigmoid(self.semantic_keep(semantic))
        low = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
        return self.fuse(high + low)


class BiSeNetV2(SegmentationNet):
    stride_multiple = 32

    def __init__(self, num_classes: int, aux: bool = True, head_channels: int = 128) -> None:
        super().__init__(num_classes)
        self.detail = nn.Sequential(
            ConvBNReLU(3, 64, 3, stride=2), ConvBNReLU(64, 64, 3),
            ConvBNReLU(64, 64, 3, stride=2), ConvBNReLU(64, 64, 3), ConvBNReLU(64, 64, 3),
            ConvBNReLU(64, 128, 3, stride=2), ConvBNReLU(128, 128, 3), ConvBNReLU(128, 128, 3),
        )
        self.stem = StemBlock(3, 16)
        self.s3 = nn.Sequential(GatherExpansion(16, 32, stride=2), GatherExpansion(32, 32))
        self.s4 = nn.Sequential(GatherExpansion(32, 64, stride=2), GatherExpansion(64, 64))
        self.s5 = nn.Sequential(GatherExpansion(64, 128, stride=2), *(GatherExpansion(128, 128) for _ in range(3)))
        self.context = ContextEmbedding(128)
        self.bga = BilateralGuidedAggregation(128)
        self.head = SegHead(128, num_classes, mid=head_channels, dropout=0.1)
        self.aux_heads = (
            nn.ModuleList(SegHead(ch, num_classes, mid=ch) for ch in (16, 32, 64, 128)) if aux else nn.ModuleList()
        )

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        detail = self.detail(x)
        s2 = self.stem(x)
        s3 = self.s3(s2)
        s4 = self.s4(s3)
        s5 = self.s5(s4)
        out = self.head(self.bga(detail, self.context(s5)))
        if not self.training or len(self.aux_heads) == 0:
            return out, []
        return out, [head(feat) for head, feat in zip(self.aux_heads, (s2, s3, s4, s5))]
