"""Drawing predictions, plotting training curves, and writing run reports."""

from segnas.report.draw import colorize, overlay, save_png
from segnas.report.plots import plot_training_curve

__all__ = ["colorize", "overlay", "save_png", "plot_training_curve"]
