"""The comparison's Pareto plot: validation mIoU against measured latency for the networks the
methods found and the zoo baselines, with the latency target as a line and error bars over seeds.

Reads the rows of ``compare.json`` (``segnas.jobs.compare``): ``name``, ``kind`` ("method" or
"zoo"), ``latency_ms``, ``val_miou_mean``, ``val_miou_std``; rows without a latency or an mIoU
(failed ones) are left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from segnas.utils import atomic_write  # noqa: E402

STYLE = {"method": {"marker": "o", "color": "tab:blue", "label": "found by a method"},
         "zoo": {"marker": "s", "color": "tab:gray", "label": "zoo baseline"}}


def plottable(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that have both a measured latency and a validation mIoU."""
    return [r for r in rows if r.get("latency_ms") is not None and r.get("val_miou_mean") is not None]


def pareto_front(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Names of the rows no other row beats on both latency (lower) and mIoU (higher)."""
    rows = plottable(rows)
    return [r["name"] for r in rows
            if not any(o is not r and o["latency_ms"] <= r["latency_ms"] and o["val_miou_mean"] >= r["val_miou_mean"]
                       and (o["latency_ms"], o["val_miou_mean"]) != (r["latency_ms"], r["val_miou_mean"])
                       for o in rows)]


def pareto_figure(rows: Sequence[dict[str, Any]], target_ms: float | None, title: str | None = None,
                  latency_label: str = "measured latency (ms)") -> Any:
    """The figure (matplotlib ``Figure``): one point per network with its seed spread as an error
    bar, the Pareto front as a step line, the target as a dashed vertical line."""
    points = plottable(rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, style in STYLE.items():
        group = [r for r in points if r.get("kind") == kind]
        if not group:
            continue
        ax.errorbar([r["latency_ms"] for r in group], [100 * r["val_miou_mean"] for r in group],
                    yerr=[100 * (r.get("val_miou_std") or 0.0) for r in group], fmt=style["marker"],
                    color=style["color"], ecolor=style["color"], capsize=3, markersize=7, label=style["label"])
    front = sorted((r for r in points if r["name"] in pareto_front(points)), key=lambda r: r["latency_ms"])
    if len(front) > 1:
        ax.step([r["latency_ms"] for r in front], [100 * r["val_miou_mean"] for r in front], where="post",
                color="tab:green", alpha=0.5, linewidth=1, label="Pareto front")
    if target_ms:
        ax.axvline(target_ms, color="tab:red", linestyle="--", linewidth=1, label=f"target {target_ms:g} ms")
    ax.set_xlabel(latency_label)
    ax.set_ylabel("val mIoU (%)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if points or target_ms:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    place_labels(ax, [(r["name"], r["latency_ms"], 100 * r["val_miou_mean"]) for r in points])  # (at final size)
    return fig


#: Where a point's name may go, in points from it, nearest first (tried in order: the first free
#: place wins): rings of eight directions, the text beside, above or below the point.
LABEL_OFFSETS = tuple((ux * r, uy * r + (-8 if uy < 0 else -3 if uy == 0 else 0),
                       "left" if ux > 0 else "right" if ux < 0 else "center")
                      for r in (5, 14, 24, 36)
                      for ux, uy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)))


def place_labels(ax: Any, points: Sequence[tuple[str, float, float]]) -> None:
    """Name each point (name, x, y) beside it where its label stays inside the axes and overlaps no
    marker and no label placed before it (points left to right; a label with no free place takes the
    first place inside the axes, else the first)."""
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.canvas.draw()  # (text extents need a renderer, and the axes' final limits)
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed: list[Any] = []
    for _, x, y in points:  # every marker, with room for its error-bar caps
        px, py = ax.transData.transform((x, y))
        placed.append(Bbox.from_extents(px - 6, py - 6, px + 6, py + 6))
    for name, x, y in sorted(points, key=lambda p: (p[1], -p[2])):
        first = None
        for dx, dy, align in LABEL_OFFSETS:
            label = _label(ax, name, x, y, dx, dy, align)
            box = label.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in placed):
                break
            first = first or ((dx, dy, align) if inside else None)
            label.remove()
        else:
            dx, dy, align = first or LABEL_OFFSETS[0]
            label = _label(ax, name, x, y, dx, dy, align)
            box = label.get_window_extent(renderer)
        placed.append(box)


def _label(ax: Any, name: str, x: float, y: float, dx: float, dy: float, align: str) -> Any:
    """``name`` at (dx, dy) points from the point (x, y); a label set farther off than the nearest
    places gets a thin line to its point."""
    leader = {"arrowstyle": "-", "lw": 0.5, "color": "0.5"} if max(abs(dx), abs(dy)) > 8 else None
    return ax.annotate(name, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8, ha=align,
                       arrowprops=leader)


def plot_pareto(rows: Sequence[dict[str, Any]], target_ms: float | None, path: str | Path,
                title: str | None = None, latency_label: str = "measured latency (ms)") -> Path:
    """Save ``pareto_figure`` as a PNG at ``path``."""
    fig = pareto_figure(rows, target_ms, title, latency_label)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return Path(path)
