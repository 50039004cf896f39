"""Painting the scene's objects (trees, poles, cars, people, bicyclists, fences, clutter)."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from segnas.data.synthetic.canvas import Canvas, poly, segment_mask
from segnas.data.synthetic.classes import BICYCLIST, CAR, FENCE, PEDESTRIAN, POLE, SIGN, TREE, VOID


def _render_tree(cv: Canvas, z: float, p: dict) -> None:
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


def _render_pole(cv: Canvas, z: float, p: dict) -> None:
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


def _render_car(cv: Canvas, z: float, p: dict) -> None:
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
        m = rect(-w2, w2, 0.0, bd) | poly(gx, gy, [proj(x - w2 + 0.08, bd, z), proj(x - w2 + 0.25, rf, z),
                                                   proj(x + w2 - 0.25, rf, z), proj(x + w2 - 0.08, bd, z)])
        cv.paint(rows, cols, m, color, CAR)
        return
    detailed = (yn1 - yn0) >= 10
    # Soft shadow on the road under the car.
    sh = poly(gx, gy, [proj(x - w2 * 1.05, 0, z - 0.1), proj(x + w2 * 1.05, 0, z - 0.1),
                       proj(x + w2 * 1.05, 0, zfar), proj(x - w2 * 1.05, 0, zfar)])
    cv.img[:, rows, cols][:, sh] *= 0.45
    full = np.zeros(sh.shape, bool)
    # The side facing the camera, if any.
    xs_side = x - w2 if x - w2 > 0 else (x + w2 if x + w2 < 0 else None)
    if xs_side is not None:
        xi = xs_side + (0.12 if xs_side > x else -0.12)
        body = poly(gx, gy, [proj(xs_side, cl, z), proj(xs_side, bd, z), proj(xs_side, bd, zfar),
                             proj(xs_side, cl, zfar)])
        cab = poly(gx, gy, [proj(xi, bd, z + 0.7), proj(xi, rf, z + 1.3), proj(xi, rf, zfar - 1.5),
                            proj(xi, bd, zfar - 0.8)])
        cv.paint(rows, cols, body | cab, color * 0.72, CAR)
        full |= body | cab
        if detailed:
            win = poly(gx, gy, [proj(xi, bd + 0.06, z + 0.85), proj(xi, rf - 0.06, z + 1.35),
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
    cab = poly(gx, gy, [proj(x - w2 + 0.08, bd, z + 0.4), proj(x - w2 + 0.25, rf, z + 0.8),
                        proj(x + w2 - 0.25, rf, z + 0.8), proj(x + w2 - 0.08, bd, z + 0.4)])
    rear = rect(-w2, w2, cl, bd)
    if detailed:
        win = poly(gx, gy, [proj(x - w2 + 0.16, bd + 0.05, z + 0.42), proj(x - w2 + 0.3, rf - 0.07, z + 0.78),
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


def _render_person(cv: Canvas, z: float, p: dict) -> None:
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


def _render_bike(cv: Canvas, z: float, p: dict) -> None:
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
        frame |= segment_mask(lx, ly, a[0], a[1], c[0], c[1], t)
    lean = p["lean"]
    shoulder = (0.12 + lean, 1.42)
    torso = segment_mask(lx, ly, seat[0], seat[1] + 0.05, shoulder[0], shoulder[1], max(0.12, 0.5 * mpp))
    legs = (segment_mask(lx, ly, seat[0], seat[1], 0.12, 0.6, max(0.07, 0.5 * mpp))
            | segment_mask(lx, ly, 0.12, 0.6, 0.03, 0.22, max(0.05, 0.5 * mpp)))
    arms = segment_mask(lx, ly, shoulder[0], shoulder[1] - 0.05, head[0] + 0.05, head[1] + 0.08,
                        max(0.045, 0.5 * mpp))
    headm = (lx - shoulder[0] - 0.05) ** 2 + (ly - 1.6) ** 2 < 0.11 ** 2
    cv.paint(rows, cols, wheels, np.float32(0.08) * k, BICYCLIST)
    cv.paint(rows, cols, frame, p["frame"] * k, BICYCLIST)
    cv.paint(rows, cols, legs, p["legs"] * k, BICYCLIST)
    cv.paint(rows, cols, torso | arms, p["torso"] * k, BICYCLIST)
    cv.paint(rows, cols, headm, p["skin"] * k, BICYCLIST)


def _render_fence(cv: Canvas, z0: float, p: dict) -> None:
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


def _render_clutter(cv: Canvas, z: float, p: dict) -> None:
    box = cv.sprite(p["x"], z, 0.5 * p["w"], 0.5 * p["w"], p["h"])
    if box is None:
        return
    rows, cols, lx, ly, mpp = box
    if p["round"]:
        m = (np.abs(lx) < 0.5 * p["w"] * np.sqrt(np.clip(1 - (ly / p["h"]) ** 4, 0, 1))) & (ly >= 0)
    else:
        m = (np.abs(lx) < 0.5 * p["w"]) & (ly >= 0) & (ly < p["h"])
    cv.paint(rows, cols, m, p["color"] * cv.light(p["x"]) * (0.85 + 0.3 * (lx > 0))[..., None], VOID)


#: Painter of each object kind: ``(canvas, depth, params) -> None``.
RENDERERS: dict[str, Callable[[Canvas, float, dict], None]] = {
    "tree": _render_tree, "pole": _render_pole, "car": _render_car, "fence": _render_fence,
    "person": _render_person, "bike": _render_bike, "clutter": _render_clutter,
}
