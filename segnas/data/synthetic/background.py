"""Painting the static background: sky, treeline, ground plane with markings, and facades."""

from __future__ import annotations

import math

import numpy as np

from segnas.data.synthetic.canvas import Canvas, line_cover, stripe
from segnas.data.synthetic.classes import BUILDING, PAVEMENT, ROAD, SIGN, SKY, TREE


def render_background(cv: Canvas) -> None:
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
        joints = np.maximum(stripe(xg, sx, 0.04, fpx), stripe(zg, sz, 0.04, fpz))
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
            lane = stripe(xg, lane_w, lw, fpx, -rl) * dashes * inner
        white = np.zeros_like(xg)
        if s["edge_lines"]:
            white = line_cover(np.minimum(np.abs(xg + (rl - 0.3)), np.abs(xg - (rr - 0.3))), lw, fpx)
        zon, z0, zlen = s["zebra"]
        if zon:
            rows_z = ((zg > z0) & (zg < z0 + zlen) & (fpx < 0.5)).astype(np.float32)
            white = np.maximum(white, stripe(xg, 1.0, 0.5, fpx) * rows_z)
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
