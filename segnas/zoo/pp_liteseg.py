"""PP-LiteSeg (Peng et al., arXiv 2204.02681, 2022, "PP-LiteSeg: A Superior Real-Time Semantic
Segmentation Model").

Encoder: the STDC backbone (STDC1 for PP-LiteSeg-T, STDC2 for -B; ``segnas.zoo.stdc.STDCNet``).
SPPM (Simple Pyramid Pooling Module) on the 1/32 feature: average pools to 1×1, 2×2, 4×4, each a
1×1 conv-BN-ReLU to 128 channels, upsampled and summed, then a 3×3 conv-BN-ReLU.
FLD (Flexible and Lightweight Decoder): from 1/32 up to 1/8, UAFMs fuse the upsampled deeper
feature with the backbone feature of each scale while the channels shrink (T: 128 → 64 → 32).
UAFM with spatial attention: the low-level feature goes through a 3×3 conv-BN-ReLU to the
high-level width; the channel-wise mean and max of both features (4 maps) go through 3×3
conv-BN-ReLU (4→2) and 3×3 conv-BN (2→1) and a sigmoid to a weight α;
``out = conv3×3(low·α + up(high)·(1−α))``. A seg head (3×3 conv-BN-ReLU, 1×1 conv) predicts
from the 1/8 output. Layer by layer this follows the official code, PaddlePaddle/PaddleSeg
``paddleseg/models/pp_liteseg.py`` (``PPLiteSeg``, ``PPContextModule``, ``SegHead``) and
``paddleseg/models/layers/tensor_fusion.py`` (``UAFM_SpAtten``), configured as in
``configs/pp_liteseg/pp_liteseg_stdc1_cityscapes_1024x512_scale0.5_160k.yml``
(``arm_out_chs: [32, 64, 128]``, ``seg_head_inter_chs: [32, 64, 64]``; -B uses the defaults
``[64, 96, 128]`` / ``[64, 64, 64]``). Two differences from Paddle that change no output:
Paddle's SPPM convs carry a bias before their BN (redundant; 512 parameters here left out), and
its UAFM computes ``1 − α`` as ``_scale − α`` with a frozen constant ``_scale = 1``.
The training-only heads (``self.aux_heads``) predict from the 1/16 and the 1/32 decoder outputs,
as PaddleSeg's ``seg_heads[1:]`` (trained with loss weights 1, 1, 1 in the configs).

Parameter count: neither the paper nor PaddleSeg publishes one for PP-LiteSeg (the paper's
tables give mIoU and FPS only; PaddleSeg's ``configs/pp_liteseg/README.md`` likewise; PaddleSeg
issue #3611 "What's the official flops?" is answered with "calculate it with paddle.flops").
The reference figure is therefore the count of the official implementation itself: PaddleSeg
2.8.0 (PyPI) ``PPLiteSeg(19, STDC1(), arm_out_chs=[32, 64, 128], seg_head_inter_chs=[32, 64,
64])`` built with paddlepaddle 2.6.2, inference path (``seg_heads[0]`` only), BN running
statistics left out: 8,028,323 (this module: 8,027,808, i.e. less the 512 SPPM biases and the 3
frozen ``_scale`` constants). With random weights copied across, this module's eval output
matched PaddleSeg's to 1e-4 relative (float32 noise; changing one pooling detail gives 28%).
Consistent with it: FastDeploy ``examples/vision/segmentation/paddleseg/sophgo/README_CN.md``
lists the exported PP-LiteSeg-T (STDC1) Cityscapes parameter file as 31MB (≈ 8M float32 values).
A third-party PyTorch port (zh320/realtime-semantic-segmentation-pytorch README: "n.a. / 6.33"
for PP-LiteSeg STDC1, paper figure not available) counts 6.33M; its decoder differs from
PaddleSeg's and is not matched. PP-LiteSeg-B (STDC2): 12,234,755 by the same count (here 12,234,240).
No pretrained weights are used here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segnas.errors import SegnasError
from segnas.nn import ConvBNReLU, SegmentationNet, adaptive_avg_pool2d, kaiming_init
from segnas.zoo.stdc import STDCNet

PUBLISHED_PARAMS = 8_028_323
PUBLISHED_PARAMS_SOURCE = (
    "no published figure (paper arXiv 2204.02681 and PaddleSeg configs/pp_liteseg/README.md give none); "
    "count of the official implementation, PaddleSeg 2.8.0 paddleseg/models/pp_liteseg.py "
    "PPLiteSeg(19, STDC1(), arm_out_chs=[32, 64, 128], seg_head_inter_chs=[32, 64, 64]) as in "
    "configs/pp_liteseg/pp_liteseg_stdc1_cityscapes_1024x512_scale0.5_160k.yml, inference path, "
    "BN running statistics excluded"
)

#: backbone, decoder widths at 1/8, 1/16, 1/32, seg-head widths at 1/8, 1/16, 1/32.
PPLITESEG_VARIANTS: dict[str, tuple[str, tuple[int, int, int], tuple[int, int, int]]] = {
    "t": ("stdc1", (32, 64, 128), (32, 64, 64)),
    "b": ("stdc2", (64, 96, 128), (64, 64, 64)),
}


class SPPM(nn.Module):
    """Simple Pyramid Pooling Module: pooled 1×1 convs summed (not concatenated), then 3×3 conv."""

    def __init__(self, cin: int, inter: int, cout: int, bins: tuple[int, ...] = (1, 2, 4)) -> None:
        super().__init__()
        self.bins = bins
        self.stages = nn.ModuleList(ConvBNReLU(cin, inter, 1) for _ in bins)
        self.conv_out = ConvBNReLU(inter, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        out = None
        for b, stage in zip(self.bins, self.stages):
            y = F.interpolate(stage(adaptive_avg_pool2d(x, b)), size=size, mode="bilinear", align_corners=False)
            out = y if out is None else out + y
        return self.conv_out(out)


class UAFM(nn.Module):
    """Unified Attention Fusion Module with spatial attention (``UAFM_SpAtten``)."""

    def __init__(self, low_ch: int, high_ch: int, cout: int) -> None:
        super().__init__()
        self.conv_low = ConvBNReLU(low_ch, high_ch, 3)
        self.attention = nn.Sequential(ConvBNReLU(4, 2, 3), ConvBNReLU(2, 1, 3, relu=False))
        self.conv_out = ConvBNReLU(high_ch, cout, 3)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        low = self.conv_low(low)
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        stats = torch.cat([low.mean(1, keepdim=True), low.amax(1, keepdim=True),
                           high.mean(1, keepdim=True), high.amax(1, keepdim=True)], 1)
        alpha = torch.sigmoid(self.attention(stats))
        return self.conv_out(low * alpha + high * (1 - alpha))


class PPLiteSegHead(nn.Sequential):
    """3×3 conv-BN-ReLU then a bias-free 1×1 conv to class logits."""

    def __init__(self, cin: int, mid: int, num_classes: int) -> None:
        super().__init__(ConvBNReLU(cin, mid, 3), nn.Conv2d(mid, num_classes, 1, bias=False))


class PPLiteSeg(SegmentationNet):
    stride_multiple = 32

    def __init__(self, num_classes: int, variant: str = "t", aux: bool = True) -> None:
        super().__init__(num_classes)
        if variant not in PPLITESEG_VARIANTS:
            raise SegnasError(f"model.options: variant: PP-LiteSeg has {', '.join(sorted(PPLITESEG_VARIANTS))}, "
                              f"got {variant!r}")
        backbone, widths, head_widths = PPLITESEG_VARIANTS[variant]
        self.backbone = STDCNet(backbone, count_include_pad=False)  # Paddle's AvgPool2D is exclusive
        c8, c16, c32 = STDCNet.channels[2:]
        self.sppm = SPPM(c32, 128, 128)
        self.uafm32 = UAFM(c32, 128, widths[2])
        self.uafm16 = UAFM(c16, widths[2], widths[1])
        self.uafm8 = UAFM(c8, widths[1], widths[0])
        self.head = PPLiteSegHead(widths[0], head_widths[0], num_classes)
        self.aux_heads = nn.ModuleList(
            PPLiteSegHead(w, m, num_classes) for w, m in zip(widths[1:], head_widths[1:])
        ) if aux else nn.ModuleList()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Paddle's default conv initialization (normal, std √(2 / fan-in)), BN 1 and 0. (PaddleSeg's
        STDC backbone draws its convs from N(0, 0.001²), a placeholder for the ImageNet weights it
        always loads; without them, the default is used here throughout.)"""
        kaiming_init(self, mode="fan_in")

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        _, _, f8, f16, f32 = self.backbone(x)
        d32 = self.uafm32(f32, self.sppm(f32))
        d16 = self.uafm16(f16, d32)
        d8 = self.uafm8(f8, d16)
        aux = [head(f) for head, f in zip(self.aux_heads, (d16, d32))] if self.training else []
        return self.head(d8), aux
