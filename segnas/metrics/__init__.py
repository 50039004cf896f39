"""Segmentation metrics from a confusion matrix."""

from segnas.metrics.confusion import ConfusionMatrix, SegMetrics

__all__ = ["ConfusionMatrix", "SegMetrics"]
