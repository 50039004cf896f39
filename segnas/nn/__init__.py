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

__all__ = [
    "ConvBNReLU",
    "DepthwiseSeparableConv",
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
