"""Matplotlib figures for run reports (headless Agg backend): training curves, one-shot search
curves, ask/tell candidates, latency breakdowns. The ``*_figure`` functions return an open figure
(``segnas.report.html`` embeds and closes it)."""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from segnas.nn.ops import OPS  # noqa: E402


def training_curve_figure(history: list[dict[str, Any]], title: str = "") -> Figure:
    """Training loss and val mIoU against epoch."""
    epochs = [r.get("epoch") for r in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    losses = [(e, r["train_loss"]) for e, r in zip(epochs, history) if r.get("train_loss") is not None]
    ax.plot([e for e, _ in losses], [v for _, v in losses], ".-", color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss", color="tab:blue")
    evals = [r for r in history if r.get("val_miou") is not None]  # (null: no class had pixels)
    if evals:
        ax2 = ax.twinx()
        ax2.plot([r["epoch"] for r in evals], [100 * r["val_miou"] for r in evals], "o-", color="tab:red")
        ax2.set_ylabel("val mIoU (%)", color="tab:red")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


#: Panels of the one-shot search curves: title, y label, which metric keys go in it.
SEARCH_PANELS: tuple[tuple[str, str, Any], ...] = (
    ("losses", "loss", lambda k: k == "weight_loss" or (re.match(r"arch\d+_", k) and "miou" not in k)),
    ("mIoU of the supernet", "mIoU (%)", lambda k: "miou" in k),
    ("λ (latency weight)", "λ", lambda k: k == "lambda"),
    ("predicted latency", "ms", lambda k: k.endswith("latency_ms")),
    ("expected cost", "cost", lambda k: k == "expected_cost"),
    ("candidates left", "count", lambda k: k.startswith("active_")),
)


def search_curve_panels(records: list[dict[str, Any]]) -> list[tuple[str, str, list[str]]]:
    """The panels that ``records`` have numbers for: (title, y label, metric keys)."""
    keys: list[str] = []
    for r in records:
        keys += [k for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in keys]
    panels = []
    for title, ylabel, wanted in SEARCH_PANELS:
        chosen = [k for k in keys if wanted(k)]
        if chosen:
            panels.append((title, ylabel, chosen))
    return panels


def search_curves_figure(records: list[dict[str, Any]]) -> Figure | None:
    """Per-epoch curves of a one-shot search (losses, mIoU, λ, latency, candidates left), one panel
    each, against the epoch counted over both phases; a dashed line where the search phase starts.
    None when the records hold none of these."""
    panels = search_curve_panels(records)
    if not panels:
        return None
    x = list(range(1, len(records) + 1))
    start = next((i for i, r in enumerate(records) if r.get("phase") == "search"), None)
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.1 * len(panels) + 0.6), sharex=True, squeeze=False)
    for ax, (title, ylabel, keys) in zip(axes[:, 0], panels):
        for k in keys:
            pts = [(xi, r[k]) for xi, r in zip(x, records) if isinstance(r.get(k), (int, float))]
            scale = 100.0 if "miou" in k else 1.0
            ax.plot([p[0] for p in pts], [scale * p[1] for p in pts], "o-", markersize=3, label=k)
        if title.startswith("λ") and all(r.get("lambda", 1) > 0 for r in records if "lambda" in r):
            ax.set_yscale("log")
        if start:
            ax.axvline(start + 0.5, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        if len(keys) > 1 or keys[0] != "lambda":
            ax.legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("epoch (pre-training, then search)" if start else "epoch")
    fig.tight_layout()
    return fig


def candidates_figure(latency_ms: Sequence[float | None], scores: Sequence[float | None],
                      target_ms: float | None = None, found: int | None = None) -> Figure:
    """Candidates of an ask/tell search: score against predicted latency (colour: evaluation
    order; a star: the found network; a dashed line: the target) and score in evaluation order with
    the best so far."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    pts = [(i, lat, s) for i, (lat, s) in enumerate(zip(latency_ms, scores)) if lat is not None and s is not None]
    if pts:
        sc = left.scatter([p[1] for p in pts], [p[2] for p in pts], c=[p[0] + 1 for p in pts], cmap="viridis", s=18)
        fig.colorbar(sc, ax=left, label="candidate #")
    if found is not None and latency_ms[found] is not None and scores[found] is not None:
        left.scatter([latency_ms[found]], [scores[found]], marker="*", s=220, color="tab:red", edgecolor="black",
                     zorder=3, label="found")
    lats = [p[1] for p in pts]
    if target_ms and (not lats or target_ms <= 2 * max(lats)):
        left.axvline(target_ms, color="tab:red", linestyle="--", linewidth=1, label="target")
    elif target_ms:  # far beyond every candidate: a line there would squash the points
        left.text(0.99, 0.02, f"target {target_ms:.4g} ms: off scale", transform=left.transAxes, ha="right",
                  fontsize=8, color="tab:red")
    if left.get_legend_handles_labels()[0]:
        left.legend(fontsize=8)
    left.set_xlabel("predicted latency (ms)")
    left.set_ylabel("score")
    left.set_title("candidates: score vs latency", fontsize=10)
    seq = [(i + 1, s) for i, s in enumerate(scores) if s is not None]
    best, running = float("-inf"), []
    for _, s in seq:
        best = max(best, s)
        running.append(best)
    right.plot([p[0] for p in seq], [p[1] for p in seq], ".", color="tab:blue", label="score")
    right.plot([p[0] for p in seq], running, "-", color="tab:red", label="best so far")
    right.set_xlabel("candidate #")
    right.set_ylabel("score")
    right.set_title("search progress", fontsize=10)
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def op_colour(op: str) -> Any:
    """One colour per operator type in every report (its place among the registered operators; the
    call overhead grey), so that a colour means the same operator from one page to the next."""
    if op not in OPS:
        return "0.6"
    return plt.get_cmap("tab20")(sorted(OPS).index(op) % 20)


def latency_by_op_figure(breakdowns: Mapping[str, Mapping[str, float]], title: str = "",
                         target_ms: float | None = None) -> Figure:
    """Predicted latency per operator type: one horizontal bar per network, stacked by operator type
    (the call overhead included as an entry when present), in ms; the target as a dashed line when
    it is within twice the slowest bar."""
    ops: list[str] = []
    for parts in breakdowns.values():
        ops += [op for op in parts if op not in ops]
    totals = {op: sum(p.get(op, 0.0) for p in breakdowns.values()) for op in ops}
    ops.sort(key=lambda op: -totals[op])
    names = list(breakdowns)
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(names) + 1.6))
    left = [0.0] * len(names)
    for op in ops:
        widths = [breakdowns[n].get(op, 0.0) for n in names]
        ax.barh(names, widths, left=left, color=op_colour(op), label=op, edgecolor="white", linewidth=0.5)
        left = [a + b for a, b in zip(left, widths)]
    if target_ms and target_ms <= 2 * max(left, default=0.0):  # (a target far off the bars would squash them)
        ax.axvline(target_ms, color="tab:red", linestyle="--", linewidth=1, label=f"target {target_ms:g} ms")
    ax.invert_yaxis()
    ax.set_xlabel("predicted latency (ms)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig
