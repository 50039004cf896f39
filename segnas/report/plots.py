"""Matplotlib figures for run reports (headless Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_training_curve(history: list[dict[str, Any]], path: str | Path) -> None:
    """Training loss and val mIoU against epoch."""
    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [r.get("train_loss") for r in history], color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss", color="tab:blue")
    evals = [r for r in history if "val_miou" in r]
    if evals:
        ax2 = ax.twinx()
        ax2.plot([r["epoch"] for r in evals], [100 * r["val_miou"] for r in evals], "o-", color="tab:red")
        ax2.set_ylabel("val mIoU (%)", color="tab:red")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
