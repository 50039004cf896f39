"""Drawing predictions and architectures, plotting curves, and writing run reports (the HTML report of
``segnas report``: ``html_report``; its page builder: ``html``; reading a run directory: ``runfiles``)."""

from segnas.report.draw import colorize, overlay, prediction_strip, save_png
from segnas.report.plots import plot_training_curve

__all__ = ["colorize", "overlay", "prediction_strip", "save_png", "plot_training_curve"]
