"""Architectures drawn as diagrams: one drawer per search space (``multires``: branches over scales;
``joint``: stages of slots; ``cells``: the macro layout and each distinct cell's graph;
``mobile``: stem, stages, the two branches' fusion), registered
with ``@arch_drawer("space")``, and for any space the decisions of its arch file as a table."""

from __future__ import annotations

from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from segnas.spaces.base import get_space  # noqa: E402

#: Space name -> a function drawing an architecture of that space (the decoded object).
ARCH_DRAWERS: dict[str, Callable[[Any], Figure]] = {}
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def arch_drawer(space: str) -> Callable[[Callable[[Any], Figure]], Callable[[Any], Figure]]:
    """Decorator: register a drawer for architectures of ``space``."""

    def register(fn: Callable[[Any], Figure]) -> Callable[[Any], Figure]:
        ARCH_DRAWERS[space] = fn
        return fn

    return register


def draw_architecture(arch_file: dict[str, Any]) -> Figure | None:
    """The diagram of an arch-file mapping (``{"space", "arch", ...}``), or None when its space has
    no drawer (the report shows ``arch_decisions`` then)."""
    drawer = ARCH_DRAWERS.get(arch_file.get("space", ""))
    if drawer is None:
        return None
    return drawer(get_space(arch_file["space"]).arch_from_dict(arch_file["arch"]))


def arch_decisions(arch: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Every decision of an architecture mapping as (dotted path, value) rows; lists of scalars stay
    on one row (``branches[0].ops: conv, skip, ...``)."""
    if isinstance(arch, dict):
        rows = []
        for k, v in arch.items():
            rows += arch_decisions(v, f"{prefix}.{k}" if prefix else str(k))
        return rows
    if isinstance(arch, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in arch):
            return [(prefix, ", ".join(_fmt(v) for v in arch))]
        rows = []
        for i, v in enumerate(arch):
            rows += arch_decisions(v, f"{prefix}[{i}]")
        return rows
    return [(prefix, _fmt(arch))]


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _box(ax: Axes, x: float, y: float, text: str, color: str, w: float = 0.8, h: float = 0.42,
         fill: str = "white", fontsize: float = 7.0) -> None:
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.06",
                                linewidth=1.2, edgecolor=color, facecolor=fill, zorder=2))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, zorder=3)


def _arrow(ax: Axes, a: tuple[float, float], b: tuple[float, float], color: str = "0.3", label: str = "",
           fontsize: float = 6.5, rad: float = 0.0, shrink: float = 12.0) -> None:
    """An arrow from ``a`` to ``b``, each end ``shrink`` points short (from a box's centre: 12; from its edge: 2)."""
    ax.annotate("", xy=b, xytext=a, zorder=1, arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.0,
                                                          "shrinkA": shrink, "shrinkB": shrink,
                                                          "connectionstyle": f"arc3,rad={rad}"})
    if label:
        ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.08 + rad * 0.5, label, fontsize=fontsize, ha="center",
                va="bottom", color=color, zorder=4, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})


# ------------------------------------------------------------------------------------ multires
MULTIRES_OP_LABELS = {"skip": "skip", "conv": "conv", "conv_downup": "conv ↓↑", "conv_2x": "conv×2",
                      "conv_2x_downup": "conv×2 ↓↑"}


@arch_drawer("multires")
def draw_multires(arch: Any) -> Figure:
    """Branches as paths over a grid of cell position (x) and scale (y, 1/8 on top); each cell box
    names its operator and output channels; a cell before a step down is strided."""
    from segnas.spaces.multires.arch import scale_name

    n = max(len(b) for b in arch.branches)
    nb = len(arch.branches)
    row = 0.55 * nb + 0.35  # each scale has one lane per branch, so branches sharing a scale do not overlap
    y = lambda s, k: -row * s - 0.55 * k  # noqa: E731
    fig, ax = plt.subplots(figsize=(max(6.0, 1.05 * (n + 3)), 0.75 * row * arch.num_scales + 1.5))
    stem = (-1.2, y(0, (nb - 1) / 2))
    _box(ax, *stem, f"stem\n→ {arch.stem_channels()[-1]} ch", "black", w=0.95, h=0.5)
    head = (n + 0.3, y((arch.num_scales - 1) / 2, (nb - 1) / 2))
    _box(ax, *head, "fuse +\nhead", "black", w=0.95, h=0.5)
    for k, branch in enumerate(arch.branches):
        color = COLORS[k % len(COLORS)]
        pts = [(i, y(s, k)) for i, s in enumerate(branch.scales)]
        _arrow(ax, stem, pts[0], color)
        for i, (op, p) in enumerate(zip(branch.ops, pts)):
            cout = arch.cell_channels(branch, i)[1]
            stride = " /2" if branch.strided(i) else ""
            _box(ax, *p, f"{MULTIRES_OP_LABELS.get(op, op)}{stride}\n{cout} ch", color, w=0.9, h=0.42,
                 fontsize=6.5)
            if i + 1 < len(pts):
                _arrow(ax, p, pts[i + 1], color)
        _arrow(ax, pts[-1], head, color, label=f"branch {k} ends at {scale_name(branch.last)}")
    ticks = [y(s, (nb - 1) / 2) for s in range(arch.num_scales)]
    ax.set_yticks(ticks, [scale_name(s) for s in range(arch.num_scales)])
    ax.set_xticks(range(n), [str(i) for i in range(n)])
    ax.set_xlabel("cell")
    ax.set_ylabel("resolution")
    ax.set_xlim(-1.9, n + 1.0)
    ax.set_ylim(y(arch.num_scales - 1, nb - 1) - 0.45, 0.45)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"multires: {nb} branch{'es' if nb > 1 else ''}, base width {arch.base_width}", fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------ joint
@arch_drawer("joint")
def draw_joint(arch: Any) -> Figure:
    """One row per stage (stride on the left): its downsampler, then its slots (operator, dilation,
    half resolution, middle → output channels; skipped slots grey); the decoder on the right."""
    stages = len(arch.channels)
    n = max((len(s) for s in arch.slots), default=0)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.25 * (n + 3)), 0.95 * stages + 1.3))
    dec = (1.25 * (n + 1) + 0.4, -(stages - 1) / 2)
    _box(ax, *dec, f"decoder\n{arch.decoder_width} ch", "black", w=1.0, h=0.55)
    prev = arch.stem_channels
    for s, (c, slots) in enumerate(zip(arch.channels, arch.slots)):
        color = COLORS[s % len(COLORS)]
        y = -s
        label = f"stem\n3→{arch.stem_channels}→{c}" if s == 0 else f"down /2\n{prev}→{c}"
        _box(ax, 0, y, label, color, w=1.0, h=0.55, fill="#eeeeee")
        last = (0.0, float(y))
        for i, slot in enumerate(slots):
            p = (1.25 * (i + 1), float(y))
            if slot.op == "skip":
                _box(ax, *p, "skip", "0.6", w=1.0, h=0.55, fontsize=6.5)
            else:
                flags = f" d{slot.dilation}" + (" ½" if slot.half else "")
                _box(ax, *p, f"{slot.op}{flags}\n{slot.mid}→{slot.out}", color, w=1.0, h=0.55, fontsize=6.5)
            _arrow(ax, last, p, color)
            last = p
        _arrow(ax, last, dec, color)
        if s + 1 < stages:
            _arrow(ax, last, (0, -(s + 1)), "0.5", rad=0.15)
        prev = slots[-1].out if slots and slots[-1].op != "skip" else c
    ax.set_yticks([-s for s in range(stages)], [f"1/{2 ** (s + 2)}" for s in range(stages)])
    ax.set_xticks([])
    ax.set_xlim(-0.8, dec[0] + 0.8)
    ax.set_ylim(-stages + 0.4, 0.7)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"joint: {stages} stages, channels {list(arch.channels)}", fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------ cells
@arch_drawer("cells")
def draw_cells(arch: Any) -> Figure:
    """The macro layout (each cell position named by its distinct cell, A, B, ...; R: reduction)
    over the stages, and the graph of each distinct cell (up to four): inputs c_{k-2}, c_{k-1},
    intermediate nodes, and the concatenated output."""
    from segnas.spaces.cells.arch import STAGE_STRIDES

    distinct: list[Any] = []
    for cell in arch.cells:
        if cell not in distinct:
            distinct.append(cell)
    shown = distinct[:4]
    fig = plt.figure(figsize=(max(7.0, 0.55 * len(arch.cells) + 2), 2.0 + 2.6 * ((len(shown) + 1) // 2)))
    grid = fig.add_gridspec(1 + (len(shown) + 1) // 2, 2, height_ratios=[0.7] + [1.0] * ((len(shown) + 1) // 2))
    top = fig.add_subplot(grid[0, :])
    x, k = 0.0, 0
    _box(top, x, 0, f"stem\n{arch.stem_channels}", "black", w=0.9, h=0.7)
    for stage, count in enumerate(arch.layout):
        for j in range(count):
            x += 1.0
            letter = chr(ord("A") + distinct.index(arch.cells[k]))
            reduce = j == 0 and stage > 0
            _box(top, x, 0, f"{letter}{' R' if reduce else ''}\n{arch.channels[stage]}",
                 COLORS[distinct.index(arch.cells[k]) % len(COLORS)], w=0.8, h=0.7)
            k += 1
        if count:
            top.text(x - (count - 1) / 2, 0.55, f"1/{STAGE_STRIDES[stage]}", ha="center", fontsize=8)
    _box(top, x + 1.2, 0, f"decoder\n{arch.decoder_width}", "black", w=1.0, h=0.7)
    top.set_xlim(-0.7, x + 2.0)
    top.set_ylim(-0.6, 0.85)
    top.axis("off")
    top.set_title(f"cells: layout {list(arch.layout)}, {arch.nodes} nodes per cell, "
                  f"{len(distinct)} distinct cell{'s' if len(distinct) > 1 else ''}", fontsize=10)
    for c, cell in enumerate(shown):
        ax = fig.add_subplot(grid[1 + c // 2, c % 2])
        _draw_cell(ax, cell, chr(ord("A") + c), COLORS[c % len(COLORS)])
    fig.tight_layout()
    return fig


def _draw_cell(ax: Axes, cell: Any, letter: str, color: str) -> None:
    nodes = len(cell)
    pos = {0: (0.0, -1.0), 1: (0.0, 1.0)}
    for m in range(nodes):
        pos[m + 2] = (2.0 * (m + 1), 0.9 if m % 2 == 0 else -0.9)
    out = (2.0 * (nodes + 1), 0.0)
    _box(ax, *pos[0], "c(k-2)", "black", w=0.9, h=0.5)
    _box(ax, *pos[1], "c(k-1)", "black", w=0.9, h=0.5)
    _box(ax, *out, "concat", "black", w=0.9, h=0.5)
    for m, node in enumerate(cell):
        _box(ax, *pos[m + 2], str(m), color, w=0.5, h=0.5)
        for e in node:
            _arrow(ax, pos[e.input], pos[m + 2], color, e.op, rad=0.1 if e.input >= 2 else 0.0)
        _arrow(ax, pos[m + 2], out, "0.6")
    ax.set_xlim(-0.8, out[0] + 0.8)
    ax.set_ylim(-1.6, 1.6)
    ax.axis("off")
    ax.set_title(f"cell {letter}", fontsize=9)


# ------------------------------------------------------------------------------------ mobile
def _blocks_text(blocks: Any) -> str:
    """A stage's blocks: runs of equal blocks counted (``3× t6 k3``; ``d2`` where dilated)."""
    runs: list[list[Any]] = []
    for block in blocks:
        if runs and runs[-1][0] == block:
            runs[-1][1] += 1
        else:
            runs.append([block, 1])
    return "\n".join(f"{n}× t{b.expansion} k{b.kernel}{f' d{b.dilation}' if b.dilation > 1 else ''}"
                     for b, n in runs)


#: Horizontal distance between the mobile diagram's boxes (each 1.15 wide: room for an arrow).
STEP = 1.55


@arch_drawer("mobile")
def draw_mobile(arch: Any) -> Figure:
    """Left to right: the learning-to-downsample stem, each inverted-residual stage (output stride,
    width, its blocks), the global context; the 1/8 branch joins the deep one in the fusion, then
    the head."""
    from segnas.spaces.mobile.arch import HIGH_STRIDE

    items = [(f"stem {layer.op}\n/2 → {layer.width} ch", "black") for layer in arch.stem]
    high = len(items) - 1  # where the 1/8 branch leaves: the stem's end, or the last stage at 1/8
    for s, stage in enumerate(arch.stages):
        items.append((f"1/{stage.stride}, {stage.width} ch\n{_blocks_text(stage.blocks)}", COLORS[s % len(COLORS)]))
        if stage.stride == HIGH_STRIDE:
            high = len(items) - 1
    if arch.context != "none":
        items.append((f"context\n{arch.context}", "0.4"))
    lines = max(text.count("\n") + 1 for text, _ in items)
    h = 0.22 * lines + 0.2
    fig, ax = plt.subplots(figsize=(max(6.0, STEP * (len(items) + 2)), 2.2 + 0.35 * lines))
    for i, (text, color) in enumerate(items):
        _box(ax, STEP * i, 0.0, text, color, w=1.15, h=h, fontsize=6.5)
        if i:
            _arrow(ax, (STEP * (i - 1) + 0.575, 0.0), (STEP * i - 0.575, 0.0), shrink=2)
    fuse, head = (STEP * len(items), -1.3), (STEP * (len(items) + 1), -1.3)
    _box(ax, *fuse, f"fusion +\n{arch.fusion_width} ch", "black", w=1.15, h=0.55, fontsize=6.5)
    _box(ax, *head, f"head\n{arch.head_depth} dsconv", "black", w=1.15, h=0.55, fontsize=6.5)
    _arrow(ax, (STEP * (len(items) - 1), -h / 2), (fuse[0] - 0.3, fuse[1] + 0.28), "0.3", label="↑ to 1/8",
           shrink=2)
    _arrow(ax, (STEP * high, -h / 2), (fuse[0] - 0.575, fuse[1]), "tab:red", label=f"1/8 branch, {arch.high_width} ch",
           rad=0.12, shrink=2)
    _arrow(ax, (fuse[0] + 0.575, fuse[1]), (head[0] - 0.575, head[1]), shrink=2)
    ax.set_xlim(-0.8, head[0] + 0.8)
    ax.set_ylim(-1.8, h / 2 + 0.3)
    ax.axis("off")
    ax.set_title(f"mobile: {len(arch.stages)} stages to 1/{arch.stride}, {sum(len(s.blocks) for s in arch.stages)} "
                 f"blocks, context {arch.context}", fontsize=10)
    fig.tight_layout()
    return fig
