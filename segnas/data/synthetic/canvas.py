"""Raster primitives: the canvas (image, labels, camera) and coverage/inside masks."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from segnas.data.synthetic.classes import VOID


def line_cover(d: np.ndarray, width: float, footprint: np.ndarray) -> np.ndarray:
    """Box-filtered coverage of a line of ``width`` whose centre is ``d`` away, for pixels that
    cover ``footprint`` (all in metres); thin far lines fade instead of aliasing."""
    return np.minimum(np.clip((0.5 * (width + footprint) - d) / footprint, 0.0, 1.0), width / footprint)


def stripe(coord: np.ndarray, period: float, width: float, footprint: np.ndarray,
           phase: float = 0.0) -> np.ndarray:
    """Coverage of lines of ``width`` every ``period`` (all in the same units)."""
    t = (coord - phase) / period
    d = np.abs(t - np.floor(t + 0.5)) * period
    return line_cover(d, width, footprint)


class Canvas:
    """Image, label map and camera of one render; helpers paint masks in sprite-local metres."""

    def __init__(self, s: dict, h: int, w: int, tex: np.ndarray) -> None:
        self.s, self.h, self.w = s, h, w
        self.f, self.yh, self.xv, self.hc = s["f"], s["yh"], s["xv"], s["hc"]
        self.img = np.empty((3, h, w), np.float32)     # channels first: fast full-frame maths
        self.lab = np.empty((h, w), np.uint8)
        self.tex = tex

    def light(self, x: float) -> float:
        """Brightness factor of a spot on the ground at lateral position ``x``."""
        s = self.s
        if s["overcast"]:
            return 1.0
        shaded = x < s["shadow_x"] if s["sun_left"] else x > s["shadow_x"]
        return s["shadow_k"] if shaded else 1.0

    def sprite(self, x: float, z: float, left: float, right: float, top: float, bottom: float = 0.0
               ) -> tuple[slice, slice, np.ndarray, np.ndarray, float] | None:
        """Pixel box of a flat sprite standing at (x, z) spanning [-left, right] x [bottom, top]
        metres; returns (rows, cols, lx, ly, metres per pixel) or None if off-screen."""
        if z < 1.0:
            return None
        scale = self.f * self.h / z                     # pixels per metre
        cx = (self.xv + self.f * x / z) * self.h
        gy = (self.yh + self.f * self.hc / z) * self.h
        x0, x1 = int(math.floor(cx - left * scale)) - 1, int(math.ceil(cx + right * scale)) + 2
        y0, y1 = int(math.floor(gy - top * scale)) - 1, int(math.ceil(gy - bottom * scale)) + 2
        x0, x1, y0, y1 = max(x0, 0), min(x1, self.w), max(y0, 0), min(y1, self.h)
        if x0 >= x1 or y0 >= y1:
            return None
        lx = ((np.arange(x0, x1, dtype=np.float32) + 0.5 - cx) / scale)[None, :]
        ly = ((gy - np.arange(y0, y1, dtype=np.float32) - 0.5) / scale)[:, None]
        return slice(y0, y1), slice(x0, x1), lx, ly, 1.0 / scale

    def paint(self, rows: slice, cols: slice, mask: np.ndarray, color: np.ndarray | float, label: int) -> None:
        """Set ``mask`` pixels of the box to ``color`` ((3,), a scalar, or (h, w, 3)-broadcastable)."""
        if isinstance(color, np.ndarray) and color.ndim == 3:
            src = np.moveaxis(color, -1, 0)
        elif isinstance(color, np.ndarray) and color.ndim == 1:
            src = color[:, None, None]
        else:
            src = color
        np.copyto(self.img[:, rows, cols], src, where=mask, casting="unsafe")
        np.copyto(self.lab[rows, cols], np.uint8(label), where=mask)

    def void_rim(self, rows: slice, cols: slice, mask: np.ndarray) -> None:
        """Mark the one-pixel outline of a painted object as void (rough human annotation)."""
        if mask.shape[0] < 3 or mask.shape[1] < 3:
            return
        inner = mask.copy()
        inner[1:] &= mask[:-1]
        inner[:-1] &= mask[1:]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        self.lab[rows, cols][mask & ~inner] = VOID


def segment_mask(lx: np.ndarray, ly: np.ndarray, ax: float, ay: float, bx: float, by: float,
                 half: float) -> np.ndarray:
    """Pixels within ``half`` of the segment (ax, ay)-(bx, by), all in sprite-local metres."""
    dx, dy = bx - ax, by - ay
    t = np.clip(((lx - ax) * dx + (ly - ay) * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    return (lx - ax - t * dx) ** 2 + (ly - ay - t * dy) ** 2 < half * half


def poly(gx: np.ndarray, gy: np.ndarray, pts: Sequence[tuple[float, float]]) -> np.ndarray:
    """Inside test for a convex polygon given in pixel coordinates (either orientation);
    ``gx`` is (1, w) and ``gy`` (h, 1)."""
    a = np.array(pts, np.float32)
    b = np.roll(a, -1, axis=0)
    area = float(np.sum(a[:, 0] * b[:, 1] - b[:, 0] * a[:, 1]))
    if abs(area) < 1e-9:
        return np.zeros((gy.shape[0], gx.shape[1]), bool)
    if area < 0:
        a, b = b, a
    ex, ey = (b[:, 0] - a[:, 0])[:, None, None], (b[:, 1] - a[:, 1])[:, None, None]
    # Edge functions of all edges at once: (n, h, w) = ex * (gy - ay) - ey * (gx - ax).
    c = ex * gy[None] - ey * gx[None] + (ey[:, :, 0] * a[:, 0:1] - ex[:, :, 0] * a[:, 1:2])[..., None]
    return (c >= 0).all(axis=0)
