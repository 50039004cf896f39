"""Random scene model: every parameter of one street scene (camera, lighting, ground, facades,
objects sorted far to near), drawn before any pixel is touched."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

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


class Rand:
    """Scalar random draws served from pre-drawn blocks of a numpy Generator: a scene needs a few
    hundred scalars and per-call Generator overhead would dominate. ``gen`` stays available for
    vectorized draws."""

    __slots__ = ("gen", "_buf", "_i")

    def __init__(self, gen: np.random.Generator) -> None:
        self.gen, self._buf, self._i = gen, [], 0

    def random(self, n: int | None = None) -> Any:  # a float, or an array of n
        if n is not None:
            return np.array([self.random() for _ in range(n)])
        if self._i >= len(self._buf):
            self._buf, self._i = self.gen.random(512).tolist(), 0
        self._i += 1
        return self._buf[self._i - 1]

    def uniform(self, lo: float, hi: float, n: int | None = None) -> Any:  # a float, or an array of n
        if n is not None:
            return lo + (hi - lo) * self.random(n)
        return lo + (hi - lo) * self.random()

    def integers(self, lo: int, hi: int | None = None) -> int:
        if hi is None:
            lo, hi = 0, lo
        return min(lo + int(self.random() * (hi - lo)), hi - 1)

    def normal(self, mean: float, sd: float, n: int | None = None) -> Any:  # a float, or an array of n
        if n is not None:
            return np.array([self.normal(mean, sd) for _ in range(n)])
        u1, u2 = 1.0 - self.random(), self.random()
        return mean + sd * math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def _pick(rng: Rand, palette: np.ndarray, jitter: float = 0.06) -> np.ndarray:
    """A palette colour with a small per-channel jitter (uniform, standard deviation ``jitter``)."""
    c = palette[rng.integers(len(palette))]
    a = 1.73 * jitter
    return c * np.array([1.0 + rng.uniform(-a, a), 1.0 + rng.uniform(-a, a), 1.0 + rng.uniform(-a, a)],
                        np.float32)


def _rgb(rng: Rand, lo: float, hi: float, tint: float = 0.03) -> np.ndarray:
    """A grey-ish colour: brightness in [lo, hi] plus a small per-channel tint."""
    g, a = rng.uniform(lo, hi), 1.73 * tint
    return np.array([g + rng.uniform(-a, a), g + rng.uniform(-a, a), g + rng.uniform(-a, a)], np.float32)


# ------------------------------------------------------------------------------ scene drawing

def draw_scene(rng: Rand, aspect: float) -> dict[str, Any]:
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


def _draw_objects(rng: Rand, s: dict) -> list[tuple[float, str, dict]]:
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
