"""`segnas demo`: a short, search-free training of the reference network on the embedded synthetic
street scenes, then a report with mIoU, latency and a sample prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from segnas.config.io import build_config
from segnas.config.train import TrainConfig
from segnas.cost import LatencyResult, count_parameters, measure_latency
from segnas.data.transforms import denormalize
from segnas.engine.evaluate import predict_logits
from segnas.engine.trainer import TrainResult
from segnas.training.models import load_trained
from segnas.training.job import make_datasets, train_job
from segnas.report.draw import colorize, save_png
from segnas.report.plots import plot_training_curve
from segnas.report.run_report import write_train_report
from segnas.utils import atomic_write_text


def demo_config(minutes: float = 2.5, size: tuple[int, int] = (128, 160), out_dir: str = "runs",
                threads: int | None = None, seed: int = 0) -> TrainConfig:
    """The demo's training settings; a bad argument is a one-line error naming its option."""
    flags = {"time_budget_min": "--minutes", "data.crop_size": "--size", "threads": "--threads", "seed": "--seed",
             "out_dir": "--out-dir"}
    return build_config(TrainConfig, {
        "job": "demo",
        "data": {"name": "synthetic", "options": {"size": list(size)}, "crop_size": list(size),
                 "scale": [0.75, 1.5], "jitter": 0.2, "batch_size": 16, "eval_batch_size": 16},
        "model": {"name": "fast_scnn"},
        "optim": {"name": "adamw", "lr": 4e-3, "weight_decay": 1e-4, "schedule": "cosine", "warmup_iters": 30},
        "epochs": None, "time_budget_min": minutes, "eval_every": 5, "bf16": True, "channels_last": True,
        "threads": threads, "seed": seed, "out_dir": out_dir,
    }, "demo", flags)


def demo_job(minutes: float = 2.5, size: tuple[int, int] = (128, 160), out_dir: str = "runs",
             threads: int | None = None, seed: int = 0,
             echo: Callable[[str], None] | None = None) -> tuple[TrainResult, Path]:
    """Train, measure and report; returns the training result and the report path."""
    echo = echo or (lambda m: None)
    cfg = demo_config(minutes, size, out_dir, threads, seed)
    echo(f"training Fast-SCNN on synthetic street scenes {size[0]}x{size[1]} for up to {minutes} min")
    result = train_job(cfg, echo=echo)
    run = Path(result.run_dir)
    model, classes, state = load_trained(run / "checkpoints" / "best.pt")
    latency = measure_latency(model, (1, 3, *size), threads=threads)
    _, val = make_datasets(cfg)
    image, mask = val[0]
    pred = predict_logits(model, image[None]).argmax(1)[0].numpy()
    rgb = (denormalize(image).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    palette = classes.palette()
    strip = np.concatenate([rgb, colorize(mask.numpy(), palette), colorize(pred, palette)], axis=1)
    save_png(run / "sample_prediction.png", strip)
    plot_training_curve(result.history, run / "training_curve.png")
    report = write_train_report(run, result, list(classes.names), latency, count_parameters(model),
                                images={"Sample (image | ground truth | prediction)": "sample_prediction.png",
                                        "Training curve": "training_curve.png"})
    warning = latency_warning(latency)
    if warning:  # the report states the measurement is not to be trusted, next to it
        atomic_write_text(report, report.read_text() + f"\n> **Warning:** {warning}\n")
        echo(f"warning: {warning}")
    echo(f"val mIoU {result.best_miou * 100:.1f}% | latency {latency.median_ms:.2f} ms "
         f"({latency.fps:.0f} FPS, eager, {latency.threads} threads) | report {report}")
    return result, report


def latency_warning(latency: LatencyResult) -> str | None:
    """A warning when a latency measurement is too noisy to report: its inter-quartile range is
    larger than its median (typically another job on the same cores)."""
    if latency.iqr_ms > latency.median_ms:
        return (f"the latency measurement is unreliable: its IQR ({latency.iqr_ms:.2f} ms) is larger than its "
                f"median ({latency.median_ms:.2f} ms); the machine was probably busy, measure again when it is idle")
    return None
