"""Markdown report of a training run: scores, per-class IoU, cost, figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segnas.utils import atomic_write_text


def write_train_report(run_dir: str | Path, result: Any, class_names: list[str], latency: Any, params: int,
                       images: dict[str, str] | None = None) -> Path:
    """Write ``report.md`` in the run directory from a TrainResult and a LatencyResult."""
    run_dir = Path(run_dir)
    final = result.final
    lines = [
        f"# Run report: {run_dir.name}", "",
        "| metric | value |", "|---|---|",
        f"| best val mIoU | {100 * result.best_miou:.2f}% (epoch {result.best_epoch}) |",
        f"| last val mIoU | {100 * final.get('val_miou', float('nan')):.2f}% |",
        f"| pixel accuracy | {100 * final.get('val_pixel_acc', float('nan')):.2f}% |",
        f"| mean accuracy | {100 * final.get('val_mean_acc', float('nan')):.2f}% |",
        f"| epochs / training time | {result.epochs_done} / {result.train_seconds:.0f} s |",
        f"| parameters (deployed) | {params:,} |",
        f"| latency ({latency.backend}, {latency.threads} threads, input {'x'.join(map(str, latency.input_shape))}) "
        f"| {latency.median_ms:.2f} ms median (IQR {latency.iqr_ms:.2f}), {latency.fps:.1f} FPS |",
        "", "## Per-class IoU (last evaluation)", "", "| class | IoU |", "|---|---|",
    ]
    for name, iou in zip(class_names, final.get("val_iou", [])):
        lines.append(f"| {name} | {100 * iou:.2f}% |")
    for title, file in (images or {}).items():
        lines += ["", f"## {title}", "", f"![{title}]({file})"]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
