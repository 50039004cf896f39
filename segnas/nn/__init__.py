"""The one copy of every building block: convolution units, heads, and the segmentation-net base."""

from segnas.nn.blocks import (
    ConvBNReLU,
    DepthwiseSeparableConv,
    FeatureFusion,
    GlobalPoolConv,
    InvertedResidual,
    PyramidPooling,
    SegHead,
    adaptive_avg_pool2d,
    kaiming_init,
)
from segnas.nn.segnet import SegmentationNet, pad_to_multiple
from segnas.nn.factorized import ErfDownsampler, FactorizedResidual  # (and registers its operators in OPS)

__all__ = [
    "ConvBNReLU",
    "DepthwiseSeparableConv",
    "ErfDownsampler",
    "FactorizedResidual",
    "FeatureFusion",
    "GlobalPoolConv",
    "InvertedResidual",
    "PyramidPooling",
    "SegHead",
    "adaptive_avg_pool2d",
    "kaiming_init",
    "SegmentationNet",
    "pad_to_multiple",
]
