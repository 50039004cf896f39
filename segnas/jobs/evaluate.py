"""Evaluation and prediction jobs on a trained checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from segnas.data import build_dataset, eval_transforms
from segnas.data.base import IMAGE_EXTENSIONS, list_images, read_image
from segnas.data.transforms import Normalize
from segnas.engine.evaluate import evaluate, predict_logits, usable_bf16
from segnas.errors import SegnasError
from segnas.training.models import load_trained
from segnas.metrics import SegMetrics
from segnas.report.draw import colorize, overlay, save_png


def eval_job(checkpoint: str | Path, data: str, root: str | None, split: str = "val",
             base_size: tuple[int, int] | None = None, batch_size: int = 4, bf16: bool = False,
             options: dict[str, Any] | None = None) -> tuple[SegMetrics, list[str]]:
    """Score a checkpoint on a dataset split; returns metrics and the class names. ``bf16`` is
    ignored (fp32) on CPUs without native bf16, where it would only be slower."""
    model, classes, _ = load_trained(checkpoint)
    dataset = build_dataset(data, root, split, eval_transforms(base_size), **(options or {}))
    if dataset.num_classes != classes.num_classes:
        raise SegnasError(f"{checkpoint}: model predicts {classes.num_classes} classes but dataset "
                          f"{data!r} has {dataset.num_classes}")
    return evaluate(model, dataset, classes.num_classes, batch_size, usable_bf16(bf16)), list(classes.names)


def collect_inputs(path: str | Path) -> list[Path]:
    """One image, or every image in a folder (e.g. extracted video frames), sorted by name."""
    path = Path(path)
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise SegnasError(f"{path}: no images in folder (looked for {', '.join(IMAGE_EXTENSIONS)})")
        return files
    if not path.is_file():
        raise SegnasError(f"{path}: input image or folder not found")
    return [path]


def predict_job(checkpoint: str | Path, inputs: str | Path, out_dir: str | Path, alpha: float = 0.5,
                bf16: bool = False) -> list[Path]:
    """Write ``<stem>_mask.png`` (colourized classes) and ``<stem>_overlay.png`` for each input image.
    Images of any size are accepted; the network pads to its stride internally."""
    model, classes, _ = load_trained(checkpoint)
    bf16 = usable_bf16(bf16)  # fp32 where the CPU would only emulate bf16
    palette = classes.palette()
    normalize = Normalize()
    out_dir = Path(out_dir)
    written = []
    for f in collect_inputs(inputs):
        image = read_image(f)
        x, _ = normalize(torch.from_numpy(image).permute(2, 0, 1).float() / 255.0, torch.empty(0))
        pred = predict_logits(model, x[None], bf16).argmax(1)[0].numpy().astype(np.uint8)
        colors = colorize(pred, palette)
        save_png(out_dir / f"{f.stem}_mask.png", colors)
        save_png(out_dir / f"{f.stem}_overlay.png", overlay(image, colors, alpha))
        written.append(out_dir / f"{f.stem}_mask.png")
    return written
