"""STDC-Seg (Fan et al., CVPR 2021, "Rethinking BiSeNet For Real-time Semantic Segmentation").

STDC backbone (Short-Term Dense Concatenate network): ConvX 3×3 s2 (32),
ConvX 3×3 s2 (64), then three stages of STDC modules (4 blocks each: 1×1 to C/2, 3×3 to C/4, 3×3
to C/8, 3×3 to C/8; the block outputs are concatenated; a stride-2 module downsamples with a 3×3
depthwise conv after the first block and an avg-pooled skip of the first block). STDC1 has
2/2/2 modules in stages 3/4/5 (256/512/1024 channels), STDC2 4/5/3.
Decoder (BiSeNet-style): global-average context + attention refinement modules
(ARM) on the 1/32 and 1/16 features, nearest upsampling with 3×3 conv heads, a feature fusion
module (FFM) of the 1/8 backbone feature and the 1/8 context feature, and a 3×3 seg head.
Layer by layer this follows the official code: github.com/MichaelFan01/STDC-Seg,
``nets/stdcnet.py`` (``STDCNet813`` = STDC1, ``CatBottleneck``) and ``models/model_stages.py``
(``BiSeNet``, ``ContextPath``, ``AttentionRefinementModule``, ``FeatureFusionModule``).
The backbone's ImageNet classifier (``conv_last``/``fc``/``linear``, unused by the seg model) is left out.

Training-only heads (``self.aux_heads``, left out of deployed parameter counts):
  [0] seg head on the 1/8 context feature (``conv_out16`` in the official code),
  [1] seg head on the 1/16 context feature (``conv_out32``),
  [2] the detail-guidance head on the 1/8 backbone feature (``conv_out_sp8``, 1 channel).
The two seg heads' logits are the ``aux`` outputs in train mode. The detail head predicts a
binary boundary map, not classes: it is the ``"detail"`` output in train mode, trained by the
engine's detail-guidance loss (BCE + dice against Laplacian boundary targets,
``segnas.engine.losses.detail_loss``).

Published size: STDC1-Seg 8.29M parameters (19 Cityscapes classes), PaddleSeg
``docs/model_zoo_overview.md``, "Summary table", row ``STDC1-Seg50 | STDC1 | 74.74% | 24.83 |
8.29`` (Params(M) column; STDC2-Seg50: 12.33M). The paper gives parameter counts only for the
ImageNet backbones (with their classifier). This module: 8,275,104 (STDC2: 12,305,568).
Cross-check against code: PaddleSeg 2.8.0 (PyPI) ``paddleseg/models/stdcseg.py``
``STDCSeg(19, STDC1())`` has 8,276,851 parameters on its inference path (BN running statistics
excluded; it keeps conv biases before BN that this module leaves out), and with random weights
copied across, its 1/8-resolution logits equal this module's to 2e-6 relative (skip pooling set
exclusive like Paddle's for that comparison). No pretrained weights are used here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segnas.errors import SegnasError
from segnas.nn import ConvBNReLU, SegmentationNet

PUBLISHED_PARAMS = 8_290_000
PUBLISHED_PARAMS_SOURCE = (
    "PaddleSeg docs/model_zoo_overview.md, Summary table, row 'STDC1-Seg50 | STDC1 | 74.74% | 24.83 | 8.29' "
    "(Params(M), Cityscapes, 19 classes)"
)

#: Modules per stage (stages 3, 4, 5) of each STDC backbone.
STDC_VARIANTS: dict[str, tuple[int, int, int]] = {"stdc1": (2, 2, 2), "stdc2": (4, 5, 3)}


class STDCModule(nn.Module):
    """STDC module (``CatBottleneck``, 4 blocks): 1×1 to C/2, then 3×3 convs to C/4, C/8, C/8;
    the four outputs are concatenated to C channels. With stride 2, a 3×3 depthwise conv-BN
    downsamples the first block's output before the second block, and a 3×3 average pool
    downsamples it for the concatenation."""

    def __init__(self, cin: int, cout: int, stride: int = 1, count_include_pad: bool = True) -> None:
        super().__init__()
        half = cout // 2
        self.stride = stride
        self.convs = nn.ModuleList([
            ConvBNReLU(cin, half, 1),
            ConvBNReLU(half, cout // 4, 3),
            ConvBNReLU(cout // 4, cout // 8, 3),
            ConvBNReLU(cout // 8, cout // 8, 3),
        ])
        if stride == 2:
            self.downsample = ConvBNReLU(half, half, 3, stride=2, groups=half, relu=False)
            self.skip = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=count_include_pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.convs[0](x)
        out = self.downsample(first) if self.stride == 2 else first
        outs = []
        for conv in self.convs[1:]:
            out = conv(out)
            outs.append(out)
        if self.stride == 2:
            first = self.skip(first)
        return torch.cat([first, *outs], 1)


class STDCNet(nn.Module):
    """STDC backbone; returns the features at strides 2, 4, 8, 16, 32
    (channels 32, 64, 256, 512, 1024). ``count_include_pad`` of the skip pooling: True as in the
    official PyTorch STDC-Seg, False as in PaddleSeg (Paddle's ``AvgPool2D`` is ``exclusive``)."""

    channels = (32, 64, 256, 512, 1024)

    def __init__(self, variant: str = "stdc1", count_include_pad: bool = True) -> None:
        super().__init__()
        if variant not in STDC_VARIANTS:
            raise SegnasError(f"model.options: variant: STDC has {', '.join(sorted(STDC_VARIANTS))}, got {variant!r}")
        self.x2 = ConvBNReLU(3, self.channels[0], 3, stride=2)
        self.x4 = ConvBNReLU(self.channels[0], self.channels[1], 3, stride=2)
        stages = []
        cin = self.channels[1]
        for cout, n in zip(self.channels[2:], STDC_VARIANTS[variant]):
            stages.append(nn.Sequential(*(STDCModule(cin if j == 0 else cout, cout, 2 if j == 0 else 1,
                                                     count_include_pad) for j in range(n))))
            cin = cout
        self.x8, self.x16, self.x32 = stages

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f2 = self.x2(x)
        f4 = self.x4(f2)
        f8 = self.x8(f4)
        f16 = self.x16(f8)
        f32 = self.x32(f16)
        return f2, f4, f8, f16, f32


class AttentionRefinementModule(nn.Module):
    """3×3 conv-BN-ReLU, then channel attention: global average → 1×1 conv-BN → sigmoid."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 3)
        self.attention = ConvBNReLU(cout, cout, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.attention(feat.mean((2, 3), keepdim=True)))


class FeatureFusionModule(nn.Module):
    """Concatenate, 1×1 conv-BN-ReLU, then SE-style attention (global average → 1×1 → ReLU → 1×1 →
    sigmoid) applied as ``feat + feat * attention``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 1)
        self.attention = nn.Sequential(
            nn.Conv2d(cout, cout // 4, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout // 4, cout, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.conv(torch.cat([spatial, context], 1))
        return feat + feat * self.attention(feat.mean((2, 3), keepdim=True))


class BiSeNetOutput(nn.Sequential):
    """3×3 conv-BN-ReLU then a 1×1 conv to ``num_classes`` (no bias, no dropout, as in STDC-Seg)."""

    def __init__(self, cin: int, mid: int, num_classes: int) -> None:
        super().__init__(ConvBNReLU(cin, mid, 3), nn.Conv2d(mid, num_classes, 1, bias=False))


class STDCSeg(SegmentationNet):
    stride_multiple = 32

    def __init__(self, num_classes: int, variant: str = "stdc1", aux: bool = True) -> None:
        super().__init__(num_classes)
        self.backbone = STDCNet(variant)
        c8, c16, c32 = STDCNet.channels[2:]
        self.conv_avg = ConvBNReLU(c32, 128, 1)
        self.arm32 = AttentionRefinementModule(c32, 128)
        self.arm16 = AttentionRefinementModule(c16, 128)
        self.conv_head32 = ConvBNReLU(128, 128, 3)
        self.conv_head16 = ConvBNReLU(128, 128, 3)
        self.ffm = FeatureFusionModule(c8 + 128, 256)
        self.head = BiSeNetOutput(256, 256, num_classes)
        self.aux_heads = nn.ModuleList([
            BiSeNetOutput(128, 64, num_classes),  # on the 1/8 context feature
            BiSeNetOutput(128, 64, num_classes),  # on the 1/16 context feature
            BiSeNetOutput(c8, 64, 1),  # detail guidance (boundary logits) on the 1/8 backbone feature
        ]) if aux else nn.ModuleList()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialization of the official code: backbone convs Kaiming-normal (fan-out), decoder
        and head convs Kaiming-normal with a=1 (fan-in, gain 1), zero conv biases, BN 1 and 0."""
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d):
                if name.startswith("backbone."):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out")
                else:
                    nn.init.kaiming_normal_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        _, _, f8, f16, f32 = self.backbone(x)
        context = self.arm32(f32) + self.conv_avg(f32.mean((2, 3), keepdim=True))
        cp16 = self.conv_head32(F.interpolate(context, size=f16.shape[-2:], mode="nearest"))
        cp8 = self.conv_head16(F.interpolate(self.arm16(f16) + cp16, size=f8.shape[-2:], mode="nearest"))
        out = self.head(self.ffm(f8, cp8))
        if self.training and len(self.aux_heads):
            return out, [self.aux_heads[0](cp8), self.aux_heads[1](cp16)], {"detail": self.aux_heads[2](f8)}
        return out, []
