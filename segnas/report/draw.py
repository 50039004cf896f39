"""Colourized masks and overlays as uint8 RGB arrays, saved as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

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


def save_png(path: str | Path, pixels: np.ndarray, palette: np.ndarray | None = None) -> None:
    """An RGB image (HxWx3 uint8) as a PNG; with ``palette`` (one RGB row per value) an HxW uint8
    array of indices as a palette-mode PNG."""
    if palette is None:
        image = Image.fromarray(pixels)
    else:
        image = Image.fromarray(pixels.astype(np.uint8), mode="P")
        image.putpalette(palette.astype(np.uint8).reshape(-1).tolist())
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def prediction_strip(image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray | Sequence[np.ndarray],
                     palette: np.ndarray, gap: int = 4) -> np.ndarray:
    """image | ground truth (colourized; left out when None) | prediction(s) (colourized: one, or one
    per network compared), side by side with white gaps, as one uint8 RGB array."""
    preds = [pred] if isinstance(pred, np.ndarray) else list(pred)
    parts = [image] + ([colorize(truth, palette)] if truth is not None else []) + [colorize(p, palette) for p in preds]
    spacer = np.full((image.shape[0], gap, 3), 255, np.uint8)
    out = [parts[0]]
    for p in parts[1:]:
        out += [spacer, p.astype(np.uint8)]
    return np.concatenate(out, axis=1)
