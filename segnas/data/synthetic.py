"""SyntheticStreets: the embedded default dataset, a procedural street-scene generator.

Every sample is a street seen from a car, rendered with a pinhole camera: a horizon line, a
road converging to a vanishing point, pavements on both sides, building facades (with windows
and shop fronts) that run along the street and sometimes close it at the far end, and - sorted by
depth and painted far to near - trees, poles with signs, street lights and traffic lights,
fences, parked and moving cars, pedestrians, bicyclists and unlabelled clutter. Sizes follow the
perspective (``1 / depth``), so objects shrink toward the horizon and near ones occlude far ones.
The 11 classes and display colours are CamVid's; 255 marks void (rough borders of some objects
and clutter such as bins), a few percent of the pixels at most.

Why it separates architectures instead of being solved by a colour lookup:

* Thin structures: poles are 1-3 px wide at 128x160, fence rails and posts and bicycle wheels
  are one pixel, so a network that throws resolution away early loses them.
* Context, not colour, tells the big regions apart: sky, road, pavement and building all draw
  from overlapping grey/beige ranges (overcast sky vs concrete road, facades and pavements from
  one material palette, car windows that reflect the sky); what decides is position relative
  to the horizon and the road edges, perspective, and the surroundings.
* Shared colours between object classes: cars, signs, fences and clothes use one palette.
* Per-image exposure, white balance, gamma, shadows cast across the street, vignetting, sensor
  noise and textures (windows, leaf noise with holes, lane markings, paving slabs).

A test fits the best "quantized RGB -> majority class" table on training samples; on validation
samples it stays far below what a segmentation network reaches (see tests/test_synthetic.py).

Samples are deterministic functions of ``(seed, split, index)``; all scene parameters are drawn
before any pixel is touched, so one sample shows the same scene at every ``size``. Splits use
disjoint seed streams. Rendering is vectorized numpy: about 5-10 ms per 128x160 sample on one
CPU core, so the demo can train on freshly generated data.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from segnas.data.base import IGNORE_INDEX, ClassInfo, Transform, to_sample
from segnas.errors import SegnasError
from segnas.utils import atomic_write, parse_size

SYNTHETIC_CLASSES = ClassInfo(
    names=("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
           "Pedestrian", "Bicyclist"),
    colors=((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
            (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)),
)
SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, SIGN, FENCE, CAR, PEDESTRIAN, BICYCLIST = range(11)
VOID = IGNORE_INDEX

SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_LENGTH = {"train": 256, "val": 64, "test": 64}
DEFAULT_SIZE = (128, 160)
MIN_SIDE = 8
#: Bump when the generator changes so that old disk caches are not reused.
GENERATOR_VERSION = 1

# ------------------------------------------------------------------------------ colour palettes
# Linear-ish RGB in [0, 1]. Materials are shared by facades and pavements; the vivid palette is
# shared by cars, signs, fences and clothes, so colour alone never names a class.
_MATERIALS = np.array([
    (0.74, 0.67, 0.55), (0.62, 0.62, 0.60), (0.48, 0.48, 0.47), (0.58, 0.34, 0.26),
    (0.45, 0.36, 0.29), (0.80, 0.77, 0.70), (0.35, 0.35, 0.37), (0.66, 0.58, 0.45),
    (0.55, 0.52, 0.50), (0.70, 0.52, 0.42),
], dtype=np.float32)
_VIVID = np.array([
    (0.68, 0.10, 0.10), (0.45, 0.08, 0.08), (0.15, 0.25, 0.60), (0.10, 0.13, 0.30),
    (0.82, 0.68, 0.15), (0.88, 0.88, 0.86), (0.62, 0.63, 0.66), (0.10, 0.10, 0.12),
    (0.14, 0.32, 0.20), (0.28, 0.52, 0.28), (0.85, 0.45, 0.12), (0.40, 0.40, 0.42),
    (0.60, 0.55, 0.45),
], dtype=np.float32)
_SIGN_FACES = np.array([(0.72, 0.10, 0.10), (0.15, 0.28, 0.65), (0.85, 0.72, 0.15),
                        (0.90, 0.90, 0.88), (0.12, 0.45, 0.25)], dtype=np.float32)
_FENCE = np.array([(0.14, 0.30, 0.20), (0.45, 0.45, 0.46), (0.12, 0.12, 0.13), (0.45, 0.32, 0.22),
                   (0.80, 0.80, 0.78), (0.62, 0.12, 0.10), (0.15, 0.25, 0.55)], dtype=np.float32)
_POLES = np.array([(0.45, 0.46, 0.47), (0.62, 0.63, 0.64), (0.12, 0.20, 0.15), (0.11, 0.11, 0.12),
                   (0.35, 0.33, 0.30)], dtype=np.float32)
_LEAVES = np.array([(0.22, 0.33, 0.12), (0.30, 0.40, 0.16), (0.16, 0.24, 0.12), (0.40, 0.40, 0.18),
                    (0.50, 0.38, 0.14)], dtype=np.float32)
_GLASS = np.array([(0.12, 0.14, 0.18), (0.25, 0.28, 0.32), (0.55, 0.60, 0.66), (0.70, 0.72, 0.74),
                   (0.08, 0.08, 0.08)], np.float32)
_BARK = np.array([(0.30, 0.24, 0.18), (0.40, 0.36, 0.30)], np.float32)
_CLUTTER = np.concatenate([_VIVID, _MATERIALS])
_BOARDS = np.concatenate([_SIGN_FACES, _VIVID])
_SKIN = np.array([(0.85, 0.66, 0.52), (0.65, 0.46, 0.34), (0.40, 0.27, 0.19), (0.92, 0.76, 0.64)],
                 dtype=np.float32)


class _Rand:
    """Scalar random draws served from pre-drawn blocks of a numpy Generator: a scene needs a few
    hundred scalars and per-call Generator overhead would dominate. ``gen`` stays available for
    vectorized draws."""

    __slots__ = ("gen", "_buf", "_i")

    def __init__(self, gen: np.random.Generator) -> None:
        self.gen, self._buf, self._i = gen, [], 0

    def random(self, n: int | None = None):
        if n is not None:
            return np.array([self.random() for _ in range(n)])
        if self._i >= len(self._buf):
            self._buf, self._i = self.gen.random(512).tolist(), 0
        self._i += 1
        return self._buf[self._i - 1]

    def uniform(self, lo: float, hi: float, n: int | None = None):
        if n is not None:
            return lo + (hi - lo) * self.random(n)
        return lo + (hi - lo) * self.random()

    def integers(self, lo: int, hi: int | None = None) -> int:
        if hi is None:
            lo, hi = 0, lo
        return min(lo + int(self.random() * (hi - lo)), hi - 1)

    def normal(self, mean: float, sd: float, n: int | None = None):
        if n is not None:
            return np.array([self.normal(mean, sd) for _ in range(n)])
        u1, u2 = 1.0 - self.random(), self.random()
        return mean + sd * math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def _pick(rng: _Rand, palette: np.ndarray, jitter: float = 0.06) -> np.ndarray:
    """A palette colour with a small per-channel jitter (uniform, standard deviation ``jitter``)."""
    c = palette[rng.integers(len(palette))]
    a = 1.73 * jitter
    return c * np.array([1.0 + rng.uniform(-a, a), 1.0 + rng.uniform(-a, a), 1.0 + rng.uniform(-a, a)],
                        np.float32)


def _rgb(rng: _Rand, lo: float, hi: float, tint: float = 0.03) -> np.ndarray:
    """A grey-ish colour: brightness in [lo, hi] plus a small per-channel tint."""
    g, a = rng.uniform(lo, hi), 1.73 * tint
    return np.array([g + rng.uniform(-a, a), g + rng.uniform(-a, a), g + rng.uniform(-a, a)], np.float32)


# ------------------------------------------------------------------------------ scene drawing

def _draw_scene(rng: _Rand, aspect: float) -> dict[str, Any]:
    """All random parameters of one scene. Uses only ``rng`` and the aspect ratio, never the
    pixel size, so a sample looks the same at every resolution."""
    s: dict[str, Any] = {}
    s["f"] = rng.uniform(0.72, 0.95)                 # focal length in image heights
    s["yh"] = rng.uniform(0.36, 0.50)                    # horizon row (image heights)
    s["xv"] = aspect * rng.uniform(0.38, 0.62)           # vanishing point column
    s["hc"] = rng.uniform(1.3, 1.8)                 # camera height (m)
    lanes = int(rng.integers(2, 5))
    lane_w = rng.uniform(2.8, 3.6)
    cam_lane = int(rng.integers(0, lanes))
    rl = (cam_lane + rng.uniform(0.35, 0.65)) * lane_w
    rr = lanes * lane_w - rl
    s.update(lanes=lanes, lane_w=lane_w, rl=rl, rr=rr)
    pl, pr = rng.uniform(2.0, 5.5, 2)
    s["bl"], s["br"] = rl + pl, rr + pr                   # facade planes |X|
    s["verge"] = [rng.uniform(0.8, 1.5) if rng.random() < 0.18 else 0.0 for _ in range(2)]

    # Lighting.
    s["overcast"] = rng.random() < 0.5
    s["sun_left"] = rng.random() < 0.5
    s["shadow_x"] = rng.uniform(-rl - pl, rr + pr)       # shadow edge on the ground (X, m)
    s["shadow_k"] = rng.uniform(0.35, 0.65)
    # Auto-exposure aims the mean brightness at a random target: dark, dull and bright frames.
    s["exposure"] = float(np.clip(0.42 * math.exp(rng.normal(0.0, 0.25)), 0.24, 0.68))
    s["wb"] = (1.0 + rng.normal(0.0, 0.05, 3)).astype(np.float32)
    s["gamma"] = rng.uniform(0.8, 1.25)
    s["vignette"] = rng.uniform(0.0, 0.3)
    s["noise"] = rng.uniform(0.006, 0.035)
    s["blur"] = rng.random() < 0.35

    # Sky: overcast grey-white, hazy, or blue, always brighter near the horizon.
    kind = rng.random()
    if kind < 0.5:
        top = _rgb(rng, 0.55, 0.88, 0.02)
        hor = np.clip(top + rng.uniform(0.02, 0.12), 0, 1)
    elif kind < 0.75:
        top = _rgb(rng, 0.45, 0.75, 0.04)
        hor = _rgb(rng, 0.6, 0.85, 0.03)
    else:
        top = np.array((0.35, 0.50, 0.78), np.float32) * rng.uniform(0.8, 1.15)
        hor = np.array((0.62, 0.70, 0.82), np.float32) * rng.uniform(0.85, 1.1)
    s["sky"] = (top.astype(np.float32), hor.astype(np.float32))
    s["clouds"] = (rng.uniform(0.0, 0.15), rng.uniform(2, 7, 4), rng.uniform(0, 6.3, 4))
    s["treeline"] = (rng.random() < 0.4, rng.uniform(0.01, 0.05), rng.uniform(4, 30, 3),
                     rng.uniform(0, 6.3, 3), _pick(rng, _LEAVES) * 0.7)

    # Ground materials: asphalt (sometimes concrete-light or wet, reflecting the sky).
    r = rng.random()
    road = _rgb(rng, 0.22, 0.48, 0.02) if r < 0.7 else _rgb(rng, 0.48, 0.68, 0.02)
    s["road"] = road
    s["road_patches"] = (rng.uniform(0.0, 0.12), rng.uniform(0.2, 1.0, 2), rng.uniform(0, 6.3, 2))
    s["marking"] = _rgb(rng, 0.75, 0.92, 0.02)
    s["center_yellow"] = rng.random() < 0.25
    s["dash"] = (rng.uniform(2.0, 6.0), rng.uniform(0.3, 0.6), rng.uniform(0, 10))
    s["edge_lines"] = rng.random() < 0.6
    s["zebra"] = (rng.random() < 0.25, rng.uniform(6, 30), rng.uniform(2.5, 4.0))
    s["pave"] = [_pick(rng, _MATERIALS, 0.05) for _ in range(2)]
    s["slab"] = (rng.uniform(0.6, 1.5), rng.uniform(0.6, 1.5), rng.uniform(0.75, 0.92))
    s["kerb"] = rng.uniform(0.85, 1.2)
    s["grass"] = _pick(rng, _LEAVES, 0.1)

    # Facades: buildings along both sides, optionally one closing the street.
    s["z_end"] = rng.uniform(45, 220) if rng.random() < 0.6 else math.inf
    s["buildings"] = [_draw_buildings(rng.gen, 0.0, 40, allow_gaps=True) for _ in range(2)]
    s["end_buildings"] = _draw_buildings(rng.gen, -s["bl"] - rng.uniform(0, 20.0), 6, allow_gaps=False)

    s["objects"] = _draw_objects(rng, s)
    return s


def _draw_buildings(rng: np.random.Generator, start: float, count: int, allow_gaps: bool) -> dict:
    """``count`` buildings side by side from ``start`` (m along their row); one row of parameters
    each: height, gap, window spacing/phase/width, floor height, sill, window height, shop front,
    facade RGB, glass RGB, shop sign flag/offset/length/RGB."""
    widths = rng.uniform(7.0, 26.0, count)
    starts = np.concatenate([[start], start + np.cumsum(widths)]).astype(np.float32)
    rows = np.empty((count, 21), np.float32)
    rows[:, 0] = rng.uniform(5.0, 32.0, count)
    rows[:, 1] = (rng.random(count) < 0.12) if allow_gaps else 0.0
    rows[:, 2] = rng.uniform(1.8, 3.6, count)
    rows[:, 3] = rng.random(count)
    rows[:, 4] = rng.uniform(0.3, 0.65, count)
    rows[:, 5] = rng.uniform(2.8, 3.6, count)
    rows[:, 6] = rng.uniform(0.15, 0.35, count)
    rows[:, 7] = rng.uniform(0.35, 0.6, count)
    rows[:, 8] = rng.random(count) < 0.45
    jit = 1.0 + (rng.random((count, 6)) - 0.5) * 0.2
    rows[:, 9:12] = np.clip(_MATERIALS[rng.integers(0, len(_MATERIALS), count)] * jit[:, :3], 0, 1)
    rows[:, 12:15] = np.clip(_GLASS[rng.integers(0, len(_GLASS), count)] * jit[:, 3:], 0, 1)
    # Shop signs above the ground floor (CamVid counts text boards as SignSymbol).
    rows[:, 15] = (rows[:, 8] > 0.5) & (rng.random(count) < 0.6)
    rows[:, 16] = rng.uniform(0.5, 3.0, count)
    rows[:, 17] = np.minimum(rng.uniform(2.0, 9.0, count), widths - rows[:, 16] - 0.5)
    rows[:, 18:21] = np.clip(_BOARDS[rng.integers(0, len(_BOARDS), count)]
                             * (1.0 + (rng.random((count, 3)) - 0.5) * 0.15), 0, 1)
    return {"starts": starts, "rows": rows}


def _draw_objects(rng: _Rand, s: dict) -> list[tuple[float, str, dict]]:
    """Objects as (depth, kind, params); world X is lateral (m, right positive), Z is depth."""
    objs: list[tuple[float, str, dict]] = []
    rl, rr, bl, br = s["rl"], s["rr"], s["bl"], s["br"]
    edge = (-rl, rr)
    facade = (-bl, br)
    sign = (-1.0, 1.0)
    z_end = s["z_end"]

    for side in range(2):
        sg = sign[side]
        road_edge, fac = abs(edge[side]), abs(facade[side])
        # Trees along the pavement.
        if rng.random() < 0.55:
            z = rng.uniform(4.0, 14.0)
            spacing = rng.uniform(7.0, 16.0)
            leaf = _pick(rng, _LEAVES, 0.1)
            for _ in range(int(rng.integers(2, 7))):
                x = sg * (road_edge + rng.uniform(0.5, 0.85) * (fac - road_edge))
                objs.append((z, "tree", _tree(rng, x, z, leaf)))
                z += spacing * rng.uniform(0.8, 1.25)
        # Poles: street lights, sign posts, traffic lights.
        z = rng.uniform(6.0, 20.0)
        for _ in range(int(rng.integers(1, 5))):
            x = sg * (road_edge + rng.uniform(0.3, 0.8))
            objs.append((z, "pole", _pole(rng, x, z, -sg)))
            z += rng.uniform(10.0, 35.0)
        # Parked cars.
        if rng.random() < 0.75:
            z = rng.uniform(4.0, 15.0)
            for _ in range(int(rng.integers(1, 6))):
                car = _car(rng, sg * (road_edge - rng.uniform(0.95, 1.25)), z)
                objs.append((z, "car", car))
                z += car["length"] + rng.uniform(0.6, 9.0)
        # Fences (railing at the kerb, or along the facades).
        if rng.random() < 0.55:
            along_kerb = rng.random() < 0.6
            x = sg * (road_edge + 0.15 if along_kerb else fac - 0.3)
            z0 = rng.uniform(3.0, 25.0)
            objs.append((z0, "fence", _fence(rng, x, z0)))
        # Pedestrians on the pavement.
        for _ in range(int(rng.integers(0, 7))):
            x = sg * (road_edge + rng.uniform(0.4, 0.95) * (fac - road_edge))
            z = rng.uniform(3.5, 45.0)
            objs.append((z, "person", _person(rng, x, z)))
        # Unlabelled clutter: bins, boxes, bollards.
        for _ in range(int(rng.integers(0, 3))):
            x = sg * (road_edge + rng.uniform(0.2, 0.95) * (fac - road_edge))
            z = rng.uniform(4.0, 50.0)
            objs.append((z, "clutter", {"x": x, "w": rng.uniform(0.3, 0.9), "h": rng.uniform(0.5, 1.2),
                                        "color": _pick(rng, _CLUTTER, 0.1),
                                        "round": rng.random() < 0.4}))
    # Moving cars in the lanes.
    lane_w = s["lane_w"]
    for _ in range(int(rng.integers(1, 6))):
        lane = int(rng.integers(0, s["lanes"]))
        x = -rl + (lane + 0.5) * lane_w + rng.normal(0, 0.2)
        z = rng.uniform(7.0, 110.0)
        objs.append((z, "car", _car(rng, x, z)))
    # Bicyclists near the road edges, some pedestrians crossing.
    for _ in range(int(rng.integers(1, 4)) if rng.random() < 0.75 else 0):
        x = (-rl + rng.uniform(0.6, 1.4)) if rng.random() < 0.5 else (rr - rng.uniform(0.6, 1.4))
        z = rng.uniform(4.0, 30.0)
        objs.append((z, "bike", _bike(rng, x, z)))
    for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.3 else 0):
        x = rng.uniform(-rl, rr)
        z = rng.uniform(6.0, 40.0)
        objs.append((z, "person", _person(rng, x, z)))
    # Nothing behind the street's far end.
    objs = [o for o in objs if o[0] + o[2].get("length", 0.0) < z_end - 1.0]
    order = sorted(range(len(objs)), key=lambda i: (-objs[i][0], i))
    return [objs[i] for i in order]


def _tree(rng, x, z, leaf) -> dict:
    return {"x": x, "trunk_h": rng.uniform(1.8, 3.5), "trunk_w": rng.uniform(0.15, 0.35),
            "r": rng.uniform(1.4, 3.4), "ry": rng.uniform(0.8, 1.5),
            "harm": rng.uniform(0.0, 1.0, 6).astype(np.float32),
            "leaf": np.clip(leaf * rng.uniform(0.85, 1.15), 0, 1).astype(np.float32),
            "trunk": _pick(rng, _BARK),
            "holes": rng.uniform(0.03, 0.12), "clump": rng.uniform(1.5, 4.0, 4)}


def _pole(rng, x, z, toward_road) -> dict:
    kind = rng.random()
    p = {"x": x, "h": rng.uniform(3.2, 8.5), "w": rng.uniform(0.09, 0.2), "color": _pick(rng, _POLES),
         "arm": 0.0, "sign": None, "light": None, "dir": toward_road}
    if kind < 0.35:                                    # street light with an arm over the road
        p["h"] = rng.uniform(6.0, 9.0)
        p["arm"] = rng.uniform(0.8, 2.5)
    elif kind < 0.8:                                   # sign post
        p["h"] = rng.uniform(2.4, 3.6)
        p["sign"] = {"shape": int(rng.integers(0, 3)), "size": rng.uniform(0.5, 1.0),
                     "face": _pick(rng, _SIGN_FACES), "rim": _pick(rng, _SIGN_FACES),
                     "y": p["h"] - rng.uniform(0.0, 0.3)}
    else:                                              # traffic light
        p["h"] = rng.uniform(2.8, 4.0)
        p["light"] = {"lit": int(rng.integers(0, 3)), "box": _pick(rng, _POLES[2:4], 0.1)}
    return p


def _car(rng, x, z) -> dict:
    return {"x": x, "length": rng.uniform(3.8, 4.9), "width": rng.uniform(1.65, 1.95),
            "clear": rng.uniform(0.18, 0.3), "body": rng.uniform(0.85, 1.05),
            "roof": rng.uniform(1.35, 1.65), "color": _pick(rng, _VIVID, 0.05),
            "glass": _pick(rng, _GLASS, 0.05),
            "void_rim": rng.random() < 0.5}


def _fence(rng, x, z0) -> dict:
    style = int(rng.integers(0, 3))   # 0: rails + posts, 1: pickets, 2: single rail on posts
    return {"x": x, "z1": z0 + rng.uniform(8.0, 50.0), "h": rng.uniform(0.9, 1.6),
            "post": rng.uniform(1.2, 2.8) if style != 1 else rng.uniform(0.12, 0.22),
            "post_w": rng.uniform(0.05, 0.1), "rails": (1, 3, 2)[style] if style != 1 else 2,
            "rail_w": rng.uniform(0.04, 0.09), "color": _pick(rng, _FENCE, 0.06)}


def _person(rng, x, z) -> dict:
    return {"x": x, "h": rng.uniform(1.5, 1.92), "build": rng.uniform(0.85, 1.2),
            "stride": rng.uniform(0.0, 0.12), "legs": _pick(rng, _VIVID, 0.08),
            "torso": _pick(rng, _VIVID, 0.08), "skin": _pick(rng, _SKIN, 0.05),
            "hair": _rgb(rng, 0.05, 0.45, 0.03), "bag": rng.random() < 0.3,
            "bag_color": _pick(rng, _VIVID, 0.08), "void_rim": rng.random() < 0.5}


def _bike(rng, x, z) -> dict:
    return {"x": x, "dir": 1.0 if rng.random() < 0.5 else -1.0, "frame": _pick(rng, _VIVID, 0.05),
            "torso": _pick(rng, _VIVID, 0.08), "legs": _pick(rng, _VIVID, 0.08),
            "skin": _pick(rng, _SKIN, 0.05), "lean": rng.uniform(-0.1, 0.15)}


# ------------------------------------------------------------------------------ rendering

def _line_cover(d: np.ndarray, width: float, footprint: np.ndarray) -> np.ndarray:
    """Box-filtered coverage of a line of ``width`` whose centre is ``d`` away, for pixels that
    cover ``footprint`` (all in metres); thin far lines fade instead of aliasing."""
    return np.minimum(np.clip((0.5 * (width + footprint) - d) / footprint, 0.0, 1.0), width / footprint)


def _stripe(coord: np.ndarray, period: float, width: float, footprint: np.ndarray,
            phase: float = 0.0) -> np.ndarray:
    """Coverage of lines of ``width`` every ``period`` (all in the same units)."""
    t = (coord - phase) / period
    d = np.abs(t - np.floor(t + 0.5)) * period
    return _line_cover(d, width, footprint)


class _Canvas:
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

    def sprite(self, x: float, z: float, left: float, right: float, top: float, bottom: float = 0.0):
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

    def paint(self, rows: slice, cols: slice, mask: np.ndarray, color, label: int) -> None:
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


def _segment_mask(lx, ly, ax, ay, bx, by, half: float) -> np.ndarray:
    dx, dy = bx - ax, by - ay
    t = np.clip(((lx - ax) * dx + (ly - ay) * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    return (lx - ax - t * dx) ** 2 + (ly - ay - t * dy) ** 2 < half * half


def _render_background(cv: _Canvas) -> None:
    """Sky, distant treeline, ground plane (road, pavements, verges) and facades."""
    s, h, w = cv.s, cv.h, cv.w
    f, yh, xv, hc = cv.f, cv.yh, cv.xv, cv.hc
    ys = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]
    xs = ((np.arange(w, dtype=np.float32) + 0.5) / h)[None, :]
    img, lab, tex = cv.img, cv.lab, cv.tex

    # Sky with a vertical gradient and soft clouds.
    top, hor = s["sky"]
    img[:] = top[:, None, None] + (hor - top)[:, None, None] * np.clip(ys / yh, 0.0, 1.0)
    amp, fr, ph = s["clouds"]
    if amp > 0.01:
        # sin(a x) sin(b y) + sin(c x + d y), written separably (outer products, no full-frame sin).
        sx, sy = np.sin(fr[2] * xs + ph[2]), np.sin(fr[3] * ys)
        cx, cy = np.cos(fr[2] * xs + ph[2]), np.cos(fr[3] * ys)
        c = np.sin(fr[0] * xs + ph[0]) * np.sin(2 * fr[1] * ys + ph[1]) + sx * cy + cx * sy
        img += np.float32(amp) * np.maximum(c, 0.0)
    lab[:] = SKY

    # Distant treeline on the horizon.
    on, th, tf, tp, tcol = s["treeline"]
    if on:
        band = th * (0.6 + 0.2 * (np.sin(tf[0] * xs + tp[0]) + np.sin(tf[1] * xs + tp[1])
                                  + 0.5 * np.sin(tf[2] * xs + tp[2])))
        m = (ys > yh - band) & (ys <= yh)
        img[:, m] = tcol[:, None] * (0.8 + 0.4 * tex[m])
        lab[m] = TREE

    # Ground plane below the horizon: road between the kerbs, pavements (and verges) outside.
    r0 = int(np.searchsorted(ys[:, 0], yh, side="right"))
    if r0 < h:
        dy = np.maximum(ys[r0:] - yh, 1e-4)
        zg = f * hc / dy                                    # depth of each row (m)
        xg = (xs - xv) * (hc / dy)                          # lateral position (m)
        fpx = zg / (f * h)                                  # metres per pixel across
        fpz = zg * zg / (f * hc * h)                        # metres per pixel along
        rl, rr = s["rl"], s["rr"]
        road = (xg >= -rl) & (xg <= rr)
        right = xg > 0
        gt = tex[r0:]
        palette = np.stack([s["pave"][0], s["pave"][1], s["road"]], axis=1)      # (3 channels, 3)
        col = palette[:, np.where(road, 2, right.view(np.uint8))]               # (3, h', w)
        # Brightness: asphalt patches and grain; paving joints and kerb stones; building shadow.
        amp, pf, pp = s["road_patches"]
        shade = 1.0 + 0.12 * (gt - 0.5)
        shade += (amp * np.sin(pf[1] * zg + pp[1]) * np.clip(1.0 - fpz, 0.0, 1.0)) * np.sin(pf[0] * xg + pp[0])
        sx, sz, sk = s["slab"]
        joints = np.maximum(_stripe(xg, sx, 0.04, fpx), _stripe(zg, sz, 0.04, fpz))
        ax = np.abs(xg)
        edge = np.where(right, np.float32(rr), np.float32(rl))
        kerb = ax < edge + 0.25
        pave_k = (1.0 - (1.0 - sk) * joints) * np.where(kerb, np.float32(s["kerb"]), np.float32(1.0))
        shade = np.where(road, shade, shade * pave_k)
        if not s["overcast"]:
            shaded = (xg < s["shadow_x"]) if s["sun_left"] else (xg > s["shadow_x"])
            shade *= np.where(shaded, np.float32(s["shadow_k"]), np.float32(1.0))
        col *= shade
        # Markings: dashed lane lines, solid edge lines, zebra crossing (labelled Road).
        lw = 0.13
        period, duty, phase = s["dash"]
        lanes, lane_w = s["lanes"], s["lane_w"]
        dashes = np.where(fpz > 0.5 * period, np.float32(duty), (((zg + phase) / period) % 1.0 < duty).astype(np.float32))
        lane = np.zeros_like(xg)
        if lanes > 1:
            inner = (xg > -rl + 0.5 * lane_w) & (xg < rr - 0.5 * lane_w)
            lane = _stripe(xg, lane_w, lw, fpx, -rl) * dashes * inner
        white = np.zeros_like(xg)
        if s["edge_lines"]:
            white = _line_cover(np.minimum(np.abs(xg + (rl - 0.3)), np.abs(xg - (rr - 0.3))), lw, fpx)
        zon, z0, zlen = s["zebra"]
        if zon:
            rows_z = ((zg > z0) & (zg < z0 + zlen) & (fpx < 0.5)).astype(np.float32)
            white = np.maximum(white, _stripe(xg, 1.0, 0.5, fpx) * rows_z)
        if s["center_yellow"]:
            col += (np.array((0.85, 0.7, 0.2), np.float32)[:, None, None] - col) * (lane * road)
        else:
            white = np.maximum(white, lane)
        col += (s["marking"][:, None, None] - col) * (white * road)
        glab = np.where(road, np.uint8(ROAD), np.uint8(PAVEMENT))
        for side, width in enumerate(s["verge"]):
            if width > 0:
                g = (right if side else ~right) & ~road & ~kerb & (ax < edge + 0.25 + width)
                if g.any():
                    col[:, g] = s["grass"][:, None] * ((0.7 + 0.6 * gt[g]) * shade[g] / np.maximum(pave_k[g], 0.1))
                    glab[g] = TREE
        img[:, r0:] = col
        lab[r0:] = glab

    # Facades along both sides and across the far end: a depth per column, a height per row.
    dxs = xs - xv
    left = dxs < 0
    bcol = np.where(left, np.float32(s["bl"]), np.float32(s["br"]))
    zc = f * bcol / np.maximum(np.abs(dxs), 1e-6)          # (1, w)
    bl_, br_ = s["buildings"]
    il, ir = _building_index(bl_, zc), _building_index(br_, zc)
    params = np.where(left[..., None], bl_["rows"][il], br_["rows"][ir])        # (1, w, P)
    start = np.where(left, bl_["starts"][il], br_["starts"][ir])
    along = zc
    dalong = zc * zc / (f * bcol * h)
    z_end = s["z_end"]
    present = zc < np.minimum(z_end, np.where(left, bl_["starts"][-1], br_["starts"][-1]))
    if math.isfinite(z_end):
        xe = dxs * (z_end / f)
        end = zc >= z_end
        eb = s["end_buildings"]
        ie = _building_index(eb, xe)
        params = np.where(end[..., None], eb["rows"][ie], params)
        start = np.where(end, eb["starts"][ie], start)
        zc = np.where(end, np.float32(z_end), zc)
        along = np.where(end, xe, along)
        dalong = np.where(end, np.float32(z_end / (f * h)), dalong)
        present = present | end
    p = params[0].T[:, None, :]                            # (P, 1, w)
    present &= p[1] < 0.5
    height = p[0]
    yw = hc - (ys - yh) * (zc / f)                          # height on the facade (m), (h, w)
    fac = present & (yw >= 0) & (yw < height)
    if fac.any():
        # Windows: a grid in (along, height) that fades to its average once below a pixel.
        wsp, wph, wfr, flo, sill, wh = p[2], p[3], p[4], p[5], p[6], p[7]
        u = ((along - start) / wsp - wph) % 1.0
        k = np.clip(1.5 - 2.0 * dalong / wsp, 0.0, 1.0) * np.clip(1.5 - 2.0 * (zc / (f * h)) / flo, 0.0, 1.0)
        v = yw / flo - sill
        v -= np.floor(v)
        walpha = ((v < wh) & (u < wfr)) * k + wfr * wh * (1.0 - k)
        walpha *= (yw > flo) & (yw < height - 0.5)
        shop = (p[8] > 0.5) & (yw > 0.3) & (yw < 2.6)
        walpha = np.where(shop, 0.85 * ((u % 0.5) > 0.04 * k), walpha)
        light = 1.0 + 0.12 * (yw > height - 0.45) + 0.1 * (tex - 0.5)
        if not s["overcast"]:
            # The facade facing away from the sun is in shade.
            light *= np.where(left == s["sun_left"], np.float32(s["shadow_k"] * 1.1), np.float32(1.0))
        col = p[9:12] + (p[12:15] - p[9:12]) * walpha               # (3, h, w)
        col *= light
        np.copyto(img, col, where=fac)
        lab[fac] = BUILDING
        # Shop signs: boards with "lettering" above shop fronts.
        off = along - start - p[16]
        board = fac & (p[15] > 0.5) & (off >= 0) & (off < p[17]) & (yw > 2.75) & (yw < 3.45)
        rs = np.flatnonzero(board.any(axis=1))
        if rs.size:
            sl = slice(rs[0], rs[-1] + 1)
            bcol = p[18:21] * light[sl]
            letters = (np.abs(yw[sl] - 3.1) < 0.18) & (tex[sl] > 0.55) & (k > 0.3)
            np.copyto(bcol, 1.0 - bcol, where=letters)
            np.copyto(img[:, sl], bcol, where=board[sl])
            lab[board] = SIGN


def _building_index(b: dict, coord: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(b["starts"], coord, side="right") - 1, 0, len(b["rows"]) - 1)


def _render_tree(cv: _Canvas, z: float, p: dict) -> None:
    r, ry, th = p["r"], p["r"] * p["ry"], p["trunk_h"]
    box = cv.sprite(p["x"], z, 1.3 * r, 1.3 * r, th + 2.3 * ry)
    if box is None:
        return
    rows, cols, lx, ly, mpp = box
    k = cv.light(p["x"])
    trunk = (np.abs(lx) < max(0.5 * p["trunk_w"], 0.5 * mpp)) & (ly >= 0) & (ly < th + ry)
    cv.paint(rows, cols, trunk, p["trunk"] * k, TREE)
    dx, dy = lx / r, (ly - th - ry) / ry
    rho = np.sqrt(dx * dx + dy * dy)
    ang = np.arctan2(dy, dx)
    a = p["harm"]
    edge = 1.0 + 0.15 * a[0] * np.sin(3 + 4 * a[1] * ang + 6.3 * a[2]) + 0.1 * a[3] * np.sin(7 * ang + 6.3 * a[4])
    n = cv.tex[rows, cols]
    cl = p["clump"]
    clump = np.sin(cl[0] * lx + cl[1]) * np.sin(cl[2] * ly + cl[3])
    canopy = (rho < edge) & ~((n > 1.0 - p["holes"]) & (rho > 0.35))
    shade = (0.75 + 0.25 * np.clip(dy, -1, 1)) * (0.75 + 0.5 * n) * (1.0 + 0.15 * clump) * k
    cv.paint(rows, cols, canopy, p["leaf"] * shade[..., None], TREE)


def _render_pole(cv: _Canvas, z: float, p: dict) -> None:
    arm, d = p["arm"], p["dir"]
    reach = arm + 0.5
    box = cv.sprite(p["x"], z, reach if d < 0 else 0.6, reach if d > 0 else 0.6, p["h"] + 0.6)
    if box is None:
        return
    rows, cols, lx, ly, mpp = box
    k = cv.light(p["x"])
    half = max(0.5 * p["w"], 0.5 * mpp)
    m = (lx >= -half) & (lx < half) & (ly >= 0) & (ly < p["h"])
    if arm > 0:
        t = max(0.06, 0.5 * mpp)
        ax = lx * d
        m |= (ax >= 0) & (ax < arm) & (np.abs(ly - p["h"] + t) < t)
        m |= (ax >= arm - 0.5) & (ax < arm) & (ly > p["h"] - 0.25) & (ly < p["h"])
    cv.paint(rows, cols, m, p["color"] * k * (0.85 + 0.3 * (lx > 0))[..., None], POLE)
    if p["sign"] is not None:
        sg = p["sign"]
        size, cy = sg["size"], sg["y"] - 0.5 * sg["size"]
        dx, dy = lx, ly - cy
        if sg["shape"] == 0:                          # round
            rr = np.sqrt(dx * dx + dy * dy) / (0.5 * size)
            outer, inner = rr < 1.0, rr < 0.75
        elif sg["shape"] == 1:                        # rectangle
            q = np.maximum(np.abs(dx) / (0.65 * size), np.abs(dy) / (0.5 * size))
            outer, inner = q < 1.0, q < 0.85
        else:                                         # triangle, point up
            q = np.maximum(dy / (0.5 * size), (np.abs(dx) * 1.73 - dy) / (0.5 * size) - 0.0)
            q = np.maximum(q, -dy / (0.5 * size))
            outer, inner = q < 1.0, q < 0.6
        col = np.where(inner[..., None], sg["face"], sg["rim"]) * k
        cv.paint(rows, cols, outer, col, SIGN)
    if p["light"] is not None:
        li = p["light"]
        bw, bh = 0.32, 0.9
        y0 = p["h"] - bh
        boxm = (np.abs(lx) < 0.5 * bw) & (ly >= y0) & (ly < p["h"])
        lamp_col = np.array([(0.9, 0.15, 0.1), (0.95, 0.7, 0.1), (0.2, 0.85, 0.35)], np.float32)
        col = np.empty(boxm.shape + (3,), np.float32)
        col[:] = li["box"] * k
        for i in range(3):
            cyl = p["h"] - (i + 0.5) * bh / 3
            disc = (lx * lx + (ly - cyl) ** 2) < (0.11 ** 2)
            bright = 1.0 if i == li["lit"] else 0.25
            col[disc] = lamp_col[i] * bright
        cv.paint(rows, cols, boxm, col, SIGN)


def _render_car(cv: _Canvas, z: float, p: dict) -> None:
    """A car seen from behind (or the front): the face at depth ``z``, plus the side that faces
    the camera, as projected convex polygons; tyres, windows, lamps and a plate."""
    f, yh, xv, hc, h = cv.f, cv.yh, cv.xv, cv.hc, cv.h
    if z < 2.0:
        return
    x, w2, L = p["x"], 0.5 * p["width"], p["length"]
    cl, bd, rf = p["clear"], p["body"], p["roof"]
    zfar = z + L

    def proj(X: float, Y: float, Z: float) -> tuple[float, float]:
        return (xv + f * X / Z) * h, (yh + f * (hc - Y) / Z) * h

    xn0, yn0 = proj(x - w2, rf, z)
    xn1, yn1 = proj(x + w2, -0.1, z)
    xf0, yf0 = proj(x - w2, rf, zfar)
    xf1, _ = proj(x + w2, 0.0, zfar)
    x0, x1 = max(int(math.floor(min(xn0, xf0))) - 1, 0), min(int(math.ceil(max(xn1, xf1))) + 2, cv.w)
    y0, y1 = max(int(math.floor(min(yn0, yf0))) - 1, 0), min(int(math.ceil(yn1)) + 2, cv.h)
    if x0 >= x1 or y0 >= y1:
        return
    rows, cols = slice(y0, y1), slice(x0, x1)
    gx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    gy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    s = f * h / z                                            # pixels per metre on the near face
    cx, gline = (xv + f * x / z) * h, (yh + f * hc / z) * h

    def rect(xa: float, xb: float, ya: float, yb: float) -> np.ndarray:
        """Axis-aligned box on the near face, in metres relative to the car's centre/ground."""
        return ((gx >= cx + xa * s) & (gx < cx + xb * s)) & ((gy >= gline - yb * s) & (gy < gline - ya * s))

    k = cv.light(x)
    color, glass = p["color"] * k, p["glass"] * k
    if (yn1 - yn0) < 6:                                       # a few pixels: silhouette only
        m = rect(-w2, w2, 0.0, bd) | _poly(gx, gy, [proj(x - w2 + 0.08, bd, z), proj(x - w2 + 0.25, rf, z),
                                                    proj(x + w2 - 0.25, rf, z), proj(x + w2 - 0.08, bd, z)])
        cv.paint(rows, cols, m, color, CAR)
        return
    detailed = (yn1 - yn0) >= 10
    # Soft shadow on the road under the car.
    sh = _poly(gx, gy, [proj(x - w2 * 1.05, 0, z - 0.1), proj(x + w2 * 1.05, 0, z - 0.1),
                        proj(x + w2 * 1.05, 0, zfar), proj(x - w2 * 1.05, 0, zfar)])
    cv.img[:, rows, cols][:, sh] *= 0.45
    full = np.zeros(sh.shape, bool)
    # The side facing the camera, if any.
    xs_side = x - w2 if x - w2 > 0 else (x + w2 if x + w2 < 0 else None)
    if xs_side is not None:
        xi = xs_side + (0.12 if xs_side > x else -0.12)
        body = _poly(gx, gy, [proj(xs_side, cl, z), proj(xs_side, bd, z), proj(xs_side, bd, zfar),
                              proj(xs_side, cl, zfar)])
        cab = _poly(gx, gy, [proj(xi, bd, z + 0.7), proj(xi, rf, z + 1.3), proj(xi, rf, zfar - 1.5),
                             proj(xi, bd, zfar - 0.8)])
        cv.paint(rows, cols, body | cab, color * 0.72, CAR)
        full |= body | cab
        if detailed:
            win = _poly(gx, gy, [proj(xi, bd + 0.06, z + 0.85), proj(xi, rf - 0.06, z + 1.35),
                                 proj(xi, rf - 0.06, zfar - 1.6), proj(xi, bd + 0.06, zfar - 1.0)])
            cv.paint(rows, cols, win, glass * 0.85, CAR)
            for wz in (z + 0.75, zfar - 0.75):
                cxw, cyw = proj(xs_side, 0.32, wz)
                rx = 0.5 * abs(proj(xs_side, 0.32, wz - 0.32)[0] - proj(xs_side, 0.32, wz + 0.32)[0])
                ryw = 0.32 * f * h / wz
                wheel = ((gx - cxw) / max(rx, 0.5)) ** 2 + ((gy - cyw) / max(ryw, 0.5)) ** 2 < 1.0
                cv.paint(rows, cols, wheel, np.float32(0.07), CAR)
                full |= wheel
    # The near face.
    tyres = rect(-w2 + 0.05, -w2 + 0.32, 0.0, cl + 0.1) | rect(w2 - 0.32, w2 - 0.05, 0.0, cl + 0.1)
    cv.paint(rows, cols, tyres, np.float32(0.06), CAR)
    cab = _poly(gx, gy, [proj(x - w2 + 0.08, bd, z + 0.4), proj(x - w2 + 0.25, rf, z + 0.8),
                         proj(x + w2 - 0.25, rf, z + 0.8), proj(x + w2 - 0.08, bd, z + 0.4)])
    rear = rect(-w2, w2, cl, bd)
    if detailed:
        win = _poly(gx, gy, [proj(x - w2 + 0.16, bd + 0.05, z + 0.42), proj(x - w2 + 0.3, rf - 0.07, z + 0.78),
                             proj(x + w2 - 0.3, rf - 0.07, z + 0.78), proj(x + w2 - 0.16, bd + 0.05, z + 0.42)])
        cv.paint(rows, cols, cab & ~win, color * 0.9, CAR)
        cv.paint(rows, cols, win, glass, CAR)
        grad = np.clip(((gline - gy) / s - cl) / max(bd - cl, 0.1), 0.0, 1.0)
        cv.paint(rows, cols, rear, color * (0.85 + 0.2 * grad)[..., None], CAR)
        lamps = rect(-w2 + 0.05, -w2 + 0.35, bd - 0.28, bd - 0.1) | rect(w2 - 0.35, w2 - 0.05, bd - 0.28, bd - 0.1)
        cv.paint(rows, cols, lamps, np.array((0.75, 0.08, 0.06), np.float32), CAR)
        cv.paint(rows, cols, rect(-0.26, 0.26, cl + 0.12, cl + 0.25), np.array((0.85, 0.85, 0.8), np.float32) * k, CAR)
    else:
        cv.paint(rows, cols, cab, glass, CAR)
        cv.paint(rows, cols, rear, color, CAR)
    full |= tyres | rear | cab
    if p["void_rim"] and (y1 - y0) >= 12:
        cv.void_rim(rows, cols, full)


def _poly(gx: np.ndarray, gy: np.ndarray, pts: Sequence[tuple[float, float]]) -> np.ndarray:
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


def _render_person(cv: _Canvas, z: float, p: dict) -> None:
    hgt = p["h"]
    box = cv.sprite(p["x"], z, 0.35 * hgt, 0.35 * hgt, hgt * 1.02)
    if box is None:
        return
    rows, cols, lx, ly, mpp = box
    k = cv.light(p["x"])
    u, v = lx / hgt, ly / hgt
    mu = mpp / hgt
    b = p["build"]
    legs = np.zeros(np.broadcast_shapes(u.shape, v.shape), bool)
    for sgn in (-1.0, 1.0):
        c = sgn * (0.035 * b + p["stride"] * np.clip(0.48 - v, 0, None) / 0.48)
        legs |= (np.abs(u - c) < max(0.035 * b, 0.5 * mu)) & (v >= 0) & (v < 0.5)
    torso = (np.abs(u) < 0.105 * b - 0.03 * np.clip(0.55 - v, 0, None)) & (v >= 0.46) & (v < 0.81)
    arms = (np.abs(np.abs(u) - 0.13 * b) < max(0.025 * b, 0.5 * mu)) & (v >= 0.5) & (v < 0.79)
    head = (u / 0.06) ** 2 + ((v - 0.9) / 0.075) ** 2 < 1.0
    neck = (np.abs(u) < 0.03) & (v >= 0.8) & (v < 0.84)
    hair = head & (v > 0.91 + 0.03 * np.abs(u) / 0.06)
    cv.paint(rows, cols, legs, p["legs"] * k, PEDESTRIAN)
    cv.paint(rows, cols, torso | arms, p["torso"] * k * (0.9 + 0.2 * (lx > 0))[..., None], PEDESTRIAN)
    cv.paint(rows, cols, (head | neck) & ~hair, p["skin"] * k, PEDESTRIAN)
    cv.paint(rows, cols, hair, p["hair"] * k, PEDESTRIAN)
    full = legs | torso | arms | head | neck
    if p["bag"]:
        bag = (np.abs(u - 0.17 * b) < 0.06) & (v > 0.42) & (v < 0.6)
        cv.paint(rows, cols, bag, p["bag_color"] * k, PEDESTRIAN)
        full |= bag
    if p["void_rim"] and full.shape[0] >= 16:
        cv.void_rim(rows, cols, full)


def _render_bike(cv: _Canvas, z: float, p: dict) -> None:
    box = cv.sprite(p["x"], z, 0.95, 0.95, 1.85)
    if box is None:
        return
    rows, cols, lx, ly, mpp = box
    k = cv.light(p["x"])
    lx = lx * p["dir"]
    t = max(0.025, 0.5 * mpp)
    wheels = np.zeros(np.broadcast_shapes(lx.shape, ly.shape), bool)
    for cx in (-0.52, 0.52):
        rho = np.sqrt((lx - cx) ** 2 + (ly - 0.34) ** 2)
        wheels |= np.abs(rho - 0.32) < t
    seat, bb, head, rear, front = (-0.2, 0.92), (0.0, 0.3), (0.38, 0.86), (-0.52, 0.34), (0.52, 0.34)
    frame = np.zeros_like(wheels)
    for a, c in ((bb, seat), (seat, head), (bb, head), (head, front), (bb, rear), (seat, rear)):
        frame |= _segment_mask(lx, ly, a[0], a[1], c[0], c[1], t)
    lean = p["lean"]
    shoulder = (0.12 + lean, 1.42)
    torso = _segment_mask(lx, ly, seat[0], seat[1] + 0.05, shoulder[0], shoulder[1], max(0.12, 0.5 * mpp))
    legs = (_segment_mask(lx, ly, seat[0], seat[1], 0.12, 0.6, max(0.07, 0.5 * mpp))
            | _segment_mask(lx, ly, 0.12, 0.6, 0.03, 0.22, max(0.05, 0.5 * mpp)))
    arms = _segment_mask(lx, ly, shoulder[0], shoulder[1] - 0.05, head[0] + 0.05, head[1] + 0.08,
                         max(0.045, 0.5 * mpp))
    headm = (lx - shoulder[0] - 0.05) ** 2 + (ly - 1.6) ** 2 < 0.11 ** 2
    cv.paint(rows, cols, wheels, np.float32(0.08) * k, BICYCLIST)
    cv.paint(rows, cols, frame, p["frame"] * k, BICYCLIST)
    cv.paint(rows, cols, legs, p["legs"] * k, BICYCLIST)
    cv.paint(rows, cols, torso | arms, p["torso"] * k, BICYCLIST)
    cv.paint(rows, cols, headm, p["skin"] * k, BICYCLIST)


def _render_fence(cv: _Canvas, z0: float, p: dict) -> None:
    f, yh, xv, hc, h = cv.f, cv.yh, cv.xv, cv.hc, cv.h
    x, z1, fh = p["x"], p["z1"], p["h"]
    xa, xb = (xv + f * x / z0) * h, (xv + f * x / z1) * h
    c0, c1 = max(int(math.floor(min(xa, xb))) - 1, 0), min(int(math.ceil(max(xa, xb))) + 2, cv.w)
    r0 = max(int(math.floor((yh + f * (hc - fh) / z0) * h)) - 1, 0)
    r1 = min(int(math.ceil((yh + f * hc / z0) * h)) + 2, cv.h)
    if c0 >= c1 or r0 >= r1:
        return
    rows, cols = slice(r0, r1), slice(c0, c1)
    dx = (np.arange(c0, c1, dtype=np.float32) + 0.5) / h - xv
    with np.errstate(divide="ignore", invalid="ignore"):
        zc = np.where(dx * x > 0, f * x / np.where(dx == 0, 1e-6, dx), np.inf)[None, :]
    ysb = ((np.arange(r0, r1, dtype=np.float32) + 0.5) / h)[:, None]
    inz = (zc >= z0) & (zc <= min(z1, cv.s["z_end"]))
    zc = np.where(inz, zc, z0)
    yw = hc - (ysb - yh) * zc / f
    mpv = zc / (f * h)
    dz = zc * zc / (f * abs(x) * h)
    m = np.zeros(yw.shape, bool)
    for i in range(p["rails"]):
        ry = fh * (1.0 - i * 0.45) - 0.5 * p["rail_w"]
        m |= np.abs(yw - ry) < np.maximum(0.5 * p["rail_w"], 0.5 * mpv)
    period = p["post"]
    d = np.abs(((zc - z0) / period + 0.5) % 1.0 - 0.5) * period
    m |= d < np.maximum(0.5 * p["post_w"], 0.5 * dz)
    m &= inz & (yw >= 0) & (yw < fh)
    cv.paint(rows, cols, m, p["color"] * cv.light(x) * (1.0 + 0.1 * (yw / fh))[..., None], FENCE)


def _render_clutter(cv: _Canvas, z: float, p: dict) -> None:
    box = cv.sprite(p["x"], z, 0.5 * p["w"], 0.5 * p["w"], p["h"])
    if box is None:
        return
    rows, cols, lx, ly, mpp = box
    if p["round"]:
        m = (np.abs(lx) < 0.5 * p["w"] * np.sqrt(np.clip(1 - (ly / p["h"]) ** 4, 0, 1))) & (ly >= 0)
    else:
        m = (np.abs(lx) < 0.5 * p["w"]) & (ly >= 0) & (ly < p["h"])
    cv.paint(rows, cols, m, p["color"] * cv.light(p["x"]) * (0.85 + 0.3 * (lx > 0))[..., None], VOID)


_RENDERERS = {"tree": _render_tree, "pole": _render_pole, "car": _render_car, "fence": _render_fence,
              "person": _render_person, "bike": _render_bike, "clutter": _render_clutter}


def render(seed: int, split: str, index: int, size: tuple[int, int] = DEFAULT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One sample as (uint8 HxWx3 RGB image, uint8 HxW mask with 255 = void)."""
    h, w = size
    ss = np.random.SeedSequence([GENERATOR_VERSION, seed, SPLITS[split], index])
    scene_seq, pixel_seq = ss.spawn(2)
    scene = _draw_scene(_Rand(np.random.default_rng(scene_seq)), w / h)
    prng = np.random.default_rng(pixel_seq)
    tex = prng.random((h, w), dtype=np.float32)
    cv = _Canvas(scene, h, w, tex)
    _render_background(cv)
    for z, kind, params in scene["objects"]:
        _RENDERERS[kind](cv, z, params)

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


# ------------------------------------------------------------------------------ dataset

class SyntheticStreets(Dataset):
    """Procedural street scenes with CamVid's 11 classes; see the module docstring.

    ``root``: optional folder for a disk cache of generated samples (used when ``cache=True``);
    with ``cache=True`` and no root, samples are kept in memory. ``size`` is (H, W) or "HxW";
    ``length`` defaults to 256 (train) / 64 (val, test); ``seed`` picks the family of scenes.
    """

    classes = SYNTHETIC_CLASSES

    def __init__(self, root: str | Path | None = None, split: str = "train", transform: Transform | None = None,
                 cache: bool = False, size: Sequence[int] | str = DEFAULT_SIZE, length: int | None = None,
                 seed: int = 0) -> None:
        if split not in SPLITS:
            raise SegnasError(f"synthetic: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        h, w = parse_size(size, field="synthetic size")
        if h < MIN_SIDE or w < MIN_SIDE:
            raise SegnasError(f"synthetic size: height and width must be at least {MIN_SIDE}, got {h}x{w}")
        if length is None:
            length = DEFAULT_LENGTH[split]
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
            raise SegnasError(f"synthetic length: expected a positive integer, got {length!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise SegnasError(f"synthetic seed: expected a non-negative integer, got {seed!r}")
        self.split, self.size, self.length, self.seed = split, (h, w), int(length), int(seed)
        self.transform = transform
        self.name = f"synthetic[{split}] {h}x{w} seed {seed}"
        self.cache_dir: Path | None = None
        self._memory: dict[int, tuple[np.ndarray, np.ndarray]] | None = None
        if cache and root is not None:
            folder = Path(root) / f"synthetic-v{GENERATOR_VERSION}" / f"{split}-seed{seed}-{h}x{w}"
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SegnasError(f"{root}: cannot create the synthetic cache folder ({exc.strerror or exc})") from None
            self.cache_dir = folder
        elif cache:
            self._memory = {}

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    def __len__(self) -> int:
        return self.length

    def _index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"{self.name}: index {index} out of range for {self.length} samples")
        return i

    def generate(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Render sample ``index`` afresh (no cache): uint8 HxWx3 image, uint8 HxW mask."""
        return render(self.seed, self.split, self._index(index), self.size)

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 HxWx3 image and uint8 HxW train-id mask (255 = void), from the cache if any."""
        i = self._index(index)
        if self._memory is not None and i in self._memory:
            return self._memory[i]
        if self.cache_dir is not None:
            path = self.cache_dir / f"{i:06d}.npz"
            arrays = self._read_cached(path)
            if arrays is None:
                arrays = render(self.seed, self.split, i, self.size)
                image, mask = arrays
                atomic_write(path, lambda tmp: _save_npz(tmp, image, mask))
            return arrays
        arrays = render(self.seed, self.split, i, self.size)
        if self._memory is not None:
            self._memory[i] = arrays
        return arrays

    def _read_cached(self, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
        """A cached sample, or None when missing or unreadable (it is then regenerated)."""
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                image, mask = data["image"], data["mask"]
        except (OSError, ValueError, KeyError, EOFError):
            return None
        h, w = self.size
        if image.shape != (h, w, 3) or mask.shape != (h, w) or image.dtype != np.uint8 or mask.dtype != np.uint8:
            return None
        return image, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_sample(*self.load_arrays(index), self.transform)

    def validate(self) -> int:
        """Nothing to read: render the first sample as a smoke test and return the length."""
        self.load_arrays(0)
        return len(self)


def _save_npz(path: Path, image: np.ndarray, mask: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, image=image, mask=mask)
