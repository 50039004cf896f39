"""segnas: neural architecture search for real-time semantic segmentation."""

from segnas.errors import SegnasError

__version__ = "0.1.0"
__all__ = ["SegnasError", "__version__"]
