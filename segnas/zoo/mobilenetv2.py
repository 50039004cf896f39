"""MobileNetV2 as a segmentation encoder, and Mobile DeepLabv3 (Sandler et al., CVPR 2018,
"MobileNetV2: Inverted Residuals and Linear Bottlenecks", §6.3 and Table 7).

``MobileNetV2Encoder``: the stem (3×3 stride-2 conv-BN-ReLU, 32 channels) and the seven bottleneck
stages of the paper's Table 2 (expansion t, channels c, repeats n, stride s), channels scaled by
``width`` and rounded to multiples of 8; the final 1×1 conv to 1280 channels and the classifier are
left out ("MNet V2*": the second-to-last feature map feeds the head). It returns the outputs of
stages 1, 2, 4 and 6 — 24, 32, 96 and 320 channels at 1/4, 1/8, 1/16 and 1/32 — the four maps the
auxiliary-cell search's decoder reads (Nekrasov et al., official code: ``return_layers=[1, 2, 4, 6]``).
Differences from the paper: ReLU instead of ReLU6 (``segnas.nn.InvertedResidual``), and the first
bottleneck (t = 1) keeps its 1×1 expansion conv (32 → 32), +1.1K parameters.

``MobileDeepLabV3`` (zoo name ``mobilenetv2_deeplabv3``): that encoder and DeepLabv3's head without
ASPP — a 1×1 conv-BN-ReLU branch and an image-pooling branch (global average → 1×1 conv-BN-ReLU),
256 channels each, concatenated, projected by a 1×1 conv-BN-ReLU to 256 and classified by a 1×1
conv. It runs at output stride 32 (the paper's row uses stride 16 with atrous convolution; the
parameters are the same). It is the segmenter that pre-trains the encoder of the ``encdec`` space
(``segnas.spaces.encdec``): its ``encoder.*`` weights load into that space's networks.
Published size: 2.11M parameters (21 classes).
"""

from __future__ import annotations

import torch
from torch import nn

from segnas.errors import SegnasError
from segnas.nn import SegmentationNet
from segnas.nn.ops import OpKey

PUBLISHED_PARAMS = 2_110_000
PUBLISHED_PARAMS_SOURCE = ("Sandler et al., CVPR 2018, arXiv:1801.04381, Table 7: 'MNet V2*', OS 16, no ASPP, "
                           "no MF: 2.11M parameters, 2.75B MAdds (PASCAL VOC)")

#: Bottleneck stages of MobileNetV2 (paper Table 2): (expansion t, channels c, repeats n, stride s).
STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
#: Stages whose outputs the encoder returns (output strides 4, 8, 16, 32).
TAPS: tuple[int, ...] = (1, 2, 4, 6)
STEM_CHANNELS = 32


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: the nearest multiple of ``divisor``, never below ``divisor`` nor
    under 90% of ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def encoder_layers(width: float = 1.0) -> list[tuple[str, OpKey, int]]:
    """Every layer of the encoder in order: (module name, ``OpKey`` without a resolution, level of its
    input = log2 of the stride it reads at). The encoder builds each module from its key, so the
    latency table measures exactly these layers."""
    cin = make_divisible(STEM_CHANNELS * width)
    layers = [("stem", OpKey("conv_bn_relu", 3, cin, 0, 0, 2), 0)]
    level = 1
    for s, (t, c, n, stride) in enumerate(STAGES):
        cout = make_divisible(c * width)
        for i in range(n):
            st = stride if i == 0 else 1
            layers.append((f"stages.{s}.{i}", OpKey("inverted_residual", cin, cout, 0, 0, st, 1,
                                                    (("expansion", t),)), level))
            level += st == 2
            cin = cout
    return layers


def encoder_channels(width: float = 1.0) -> tuple[int, ...]:
    """Channels of the four returned maps."""
    return tuple(make_divisible(STAGES[s][1] * width) for s in TAPS)


class MobileNetV2Encoder(nn.Module):
    """Image → [1/4, 1/8, 1/16, 1/32 feature maps] (see the module docstring)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        if not width > 0:
            raise SegnasError(f"encoder width: must be > 0, got {width}")
        self.width = float(width)
        self.out_channels = encoder_channels(width)
        layers = encoder_layers(width)
        self.stem = layers[0][1].build()
        stages: list[list[nn.Module]] = [[] for _ in STAGES]
        for name, key, _ in layers[1:]:
            stages[int(name.split(".")[1])].append(key.build())
        self.stages = nn.ModuleList(nn.Sequential(*blocks) for blocks in stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for s, stage in enumerate(self.stages):
            x = stage(x)
            if s in TAPS:
                outs.append(x)
        return outs


class DeepLabV3Head(nn.Module):
    """DeepLabv3's head without ASPP: 1×1 conv-BN-ReLU and image pooling, concatenated, projected by
    a 1×1 conv-BN-ReLU, classified by a 1×1 conv."""

    def __init__(self, cin: int, num_classes: int, channels: int = 256) -> None:
        super().__init__()
        self.branch = OpKey("conv_bn_relu", cin, channels, 0, 0, extra=(("kernel", 1),)).build()
        self.pool = OpKey("gap_conv", cin, channels, 0, 0).build()
        self.project = OpKey("conv_bn_relu", 2 * channels, channels, 0, 0, extra=(("kernel", 1),)).build()
        self.classifier = OpKey("classifier", channels, num_classes, 0, 0).build()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.project(torch.cat([self.branch(x), self.pool(x)], 1)))


class MobileDeepLabV3(SegmentationNet):
    """MobileNetV2 encoder + DeepLabv3 head without ASPP, at output stride 32 (module docstring).
    ``width`` scales the encoder, ``head_channels`` the head."""

    stride_multiple = 32

    def __init__(self, num_classes: int, width: float = 1.0, head_channels: int = 256) -> None:
        super().__init__(num_classes)
        self.encoder = MobileNetV2Encoder(width)
        self.head = DeepLabV3Head(self.encoder.out_channels[-1], num_classes, head_channels)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.head(self.encoder(x)[-1]), []
