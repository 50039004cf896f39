"""The network of a ``mobile`` architecture: its pieces (``OpKey`` templates at resolution levels) and
``MobileNet``, the plain network built from them.

Module names follow ``segnas.zoo.fast_scnn.FastSCNN`` (``downsample``, ``global_features``,
``fusion``, ``classifier``, ``aux_heads``), so that Fast-SCNN's weights load into the space's
Fast-SCNN without a key mapping. ``downsample`` holds the stem and the 1/8 blocks (its output is the
high-resolution branch), ``global_features`` the deeper blocks and the context module (its output
is the low-resolution branch).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from segnas.nn.blocks import FeatureFusion, SegHead
from segnas.nn.segnet import SegmentationNet
from segnas.spaces.mobile.arch import HIGH_STRIDE, STEM_OPS, MobileArch
from segnas.spaces.pieces import Piece, op_template

HIGH_LEVEL = HIGH_STRIDE.bit_length() - 1
#: Dropout before the classifier's 1×1 conv (training only), as in Fast-SCNN.
HEAD_DROPOUT = 0.1


def plan_network(arch: MobileArch, num_classes: int) -> list[Piece]:
    """Every eval-mode piece of the network, in execution order; piece names start with the module
    that runs them (``fusion.*`` pieces are the parts of ``FeatureFusion``)."""
    pieces = [Piece(f"downsample.{i}", op_template(STEM_OPS[layer.op], cin, layer.width, 2), i)
              for i, (layer, cin) in enumerate(zip(arch.stem, (3, *(l.width for l in arch.stem))))]
    deep = 0
    for p in arch.block_plans():
        b = p.block
        template = op_template("inverted_residual", p.cin, p.cout, p.stride, b.dilation, expansion=b.expansion,
                               kernel=b.kernel)
        if p.level == HIGH_LEVEL and p.stride == 1:
            pieces.append(Piece(f"downsample.{len(pieces)}", template, p.level))
        else:
            pieces.append(Piece(f"global_features.{deep}", template, p.level))
            deep += 1
    low, low_level, high, fused = arch.low_width, arch.stride.bit_length() - 1, arch.high_width, arch.fusion_width
    if arch.context == "ppm":
        pieces.append(Piece(f"global_features.{deep}", op_template("pyramid_pooling", low, low), low_level))
    pieces += [Piece("fusion.up", op_template("upsample", low, low, factor=arch.stride // HIGH_STRIDE,
                                              align_corners=False), low_level),
               Piece("fusion.low_dw", op_template("dw_conv", low, low, kernel=3), HIGH_LEVEL),
               Piece("fusion.low_proj", op_template("conv_bn", low, fused, kernel=1), HIGH_LEVEL),
               Piece("fusion.high_proj", op_template("conv_bn", high, fused, kernel=1), HIGH_LEVEL)]
    pieces += [Piece(f"classifier.{i}", op_template("sep_conv", fused, fused), HIGH_LEVEL)
               for i in range(arch.head_depth)]
    return pieces + [Piece(f"classifier.{arch.head_depth + 1}", op_template("classifier", fused, num_classes),
                           HIGH_LEVEL),
                     Piece("out", op_template("upsample", num_classes, num_classes, factor=HIGH_STRIDE,
                                              align_corners=False), HIGH_LEVEL)]


class MobileNet(SegmentationNet):
    """The plain network of a ``MobileArch``: learning to downsample (→ 1/8, the high-resolution
    branch) → inverted-residual stages and the context module (the low-resolution branch) → fusion
    of the two at 1/8 → classifier (``head_depth`` DSConvs, 1×1 conv) → logits upsampled ×8. With
    ``aux``, a training-only head (3×3 conv-BN-ReLU to half the channels, 1×1 conv) on the 1/8
    branch, as Fast-SCNN's."""

    def __init__(self, arch: MobileArch, num_classes: int, aux: bool = True) -> None:
        super().__init__(num_classes)
        self.stride_multiple = arch.stride
        pieces = plan_network(arch, num_classes)

        def built(module: str) -> list[nn.Module]:
            return [p.build() for p in pieces if p.name.split(".")[0] == module]

        self.downsample = nn.Sequential(*built("downsample"))
        self.global_features = nn.Sequential(*built("global_features"))
        self.fusion = FeatureFusion(arch.high_width, arch.low_width, arch.fusion_width)
        head = built("classifier")
        self.classifier = nn.Sequential(*head[:-1], nn.Dropout(HEAD_DROPOUT), head[-1])
        self.out = built("out")[0]
        high = arch.high_width
        self.aux_heads = nn.ModuleList([SegHead(high, num_classes, mid=max(1, high // 2))] if aux else [])

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        high = self.downsample(x)
        low = self.global_features(high)
        out = self.classifier(self.fusion(high, low))
        aux = [head(high) for head in self.aux_heads] if self.training else []
        return out, aux

    def upsample_logits(self, main: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return self.out(main)  # the registered ×8 ``upsample`` op: a latency-table piece
