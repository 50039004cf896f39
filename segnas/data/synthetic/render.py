"""One sample from ``(seed, split, index)``: draw the scene, paint it, apply the camera."""

from __future__ import annotations

import numpy as np

from segnas.data.synthetic.background import render_background
from segnas.data.synthetic.canvas import Canvas
from segnas.data.synthetic.objects import RENDERERS
from segnas.data.synthetic.scene import Rand, draw_scene

#: Split name -> its seed stream (splits never share a scene).
SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZE = (128, 160)
#: Bump when the generator changes so that old disk caches are not reused.
GENERATOR_VERSION = 1


def render(seed: int, split: str, index: int, size: tuple[int, int] = DEFAULT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One sample as (uint8 HxWx3 RGB image, uint8 HxW mask with 255 = void)."""
    h, w = size
    ss = np.random.SeedSequence([GENERATOR_VERSION, seed, SPLITS[split], index])
    scene_seq, pixel_seq = ss.spawn(2)
    scene = draw_scene(Rand(np.random.default_rng(scene_seq)), w / h)
    prng = np.random.default_rng(pixel_seq)
    tex = prng.random((h, w), dtype=np.float32)
    cv = Canvas(scene, h, w, tex)
    render_background(cv)
    for z, kind, params in scene["objects"]:
        RENDERERS[kind](cv, z, params)

    # Camera: exposure, white balance, vignetting, optional blur, gamma, sensor noise.
    img = cv.img
    gain = scene["exposure"] / max(float(img.mean()), 0.05)
    img *= (gain * scene["wb"])[:, None, None]
    if scene["vignette"] > 0:
        ys = (np.arange(h, dtype=np.float32) + 0.5) / h - 0.5
        xs = ((np.arange(w, dtype=np.float32) + 0.5) / w - 0.5) * (w / h)
        r2 = ys[:, None] ** 2 + xs[None, :] ** 2
        img *= 1.0 - scene["vignette"] * r2 / (0.25 + 0.25 * (w / h) ** 2)
    if scene["blur"]:
        img[:, 1:-1] = 0.25 * img[:, :-2] + 0.5 * img[:, 1:-1] + 0.25 * img[:, 2:]
        img[:, :, 1:-1] = 0.25 * img[:, :, :-2] + 0.5 * img[:, :, 1:-1] + 0.25 * img[:, :, 2:]
    np.clip(img, 0.0, 1.0, out=img)
    img **= np.float32(1.0 / scene["gamma"])
    # Sensor noise, uniform with the drawn standard deviation (cheaper than Gaussian).
    img += (prng.random((3, h, w), dtype=np.float32) - 0.5) * np.float32(3.46 * scene["noise"])
    img *= 255.0
    img += 0.5
    np.clip(img, 0, 255, out=img)
    image = np.ascontiguousarray(img.astype(np.uint8).transpose(1, 2, 0))
    return image, cv.lab
