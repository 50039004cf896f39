"""segnas: neural architecture search for real-time semantic segmentation."""

from segnas.errors import SegnasError

__version__ = "0.1.0"
__all__ = ["SegnasError", "__version__", "api"]


def __getattr__(name: str) -> object:
    """``segnas.api`` on first use (``import segnas`` alone stays light: no torch)."""
    if name == "api":
        import importlib

        return importlib.import_module("segnas.api")
    raise AttributeError(f"module 'segnas' has no attribute {name!r}")
