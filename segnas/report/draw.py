"""Colourized masks and overlays as uint8 RGB arrays, saved as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from segnas.utils import atomic_write


def colorize(mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """H×W class ids (255 = ignore) → H×W×3 colours; ``palette`` is (C+1)×3 with ignore last."""
    ids = np.where(mask == 255, len(palette) - 1, mask).clip(0, len(palette) - 1)
    return palette[ids]


def overlay(image: np.ndarray, colors: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a colourized mask over a uint8 RGB image."""
    return (image.astype(np.float32) * (1 - alpha) + colors.astype(np.float32) * alpha).round().astype(np.uint8)


def save_png(path: str | Path, rgb: np.ndarray) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"))
