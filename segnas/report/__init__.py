"""Drawing predictions and architectures, plotting curves, and writing run reports (the HTML report of
``segnas report``: ``html_report``; its page builder: ``html``; reading a run directory: ``runfiles``).

The drawing helpers below are imported on first use: importing ``segnas.report.runfiles`` (as every
search does) does not load matplotlib."""

from importlib import import_module
from typing import Any

_HELPERS = {"colorize": "draw", "overlay": "draw", "prediction_strip": "draw", "save_png": "draw"}

__all__ = list(_HELPERS)


def __getattr__(name: str) -> Any:
    if name in _HELPERS:
        return getattr(import_module(f"segnas.report.{_HELPERS[name]}"), name)
    raise AttributeError(f"module 'segnas.report' has no attribute {name!r}")
