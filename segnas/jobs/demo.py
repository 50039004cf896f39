"""`segnas demo`: a small comparison (``segnas.jobs.compare``) on the embedded synthetic street scenes.

A latency target is set on this machine, a training-free search (SasWOT, NWOT proxy) and random
search (the same proxy) look for a network that meets it, the winners and Fast-SCNN are trained
briefly with one recipe and budget, and the run gets the compare table, the Pareto plot, a sample
prediction of every network and, where installed, the HTML report. Sized to finish within about
five minutes on two quiet cores of a fresh machine (the latency table built on the way included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segnas.config.compare import CompareSettings
from segnas.config.io import build_config
from segnas.cost.calibration import HeldCorrections
from segnas.cost.memory import check_inference_size
from segnas.data import eval_transforms, open_data
from segnas.data.synthetic.classes import SYNTHETIC_CLASSES
from segnas.data.transforms import denormalize
from segnas.engine.evaluate import predict_logits
from segnas.engine.rundir import RunDir, best_checkpoint
from segnas.errors import SegnasError
from segnas.jobs.compare import chosen_methods, compare_job, latency_warning, search_settings
from segnas.jobs.search import search_latency_model
from segnas.progress import Echo
from segnas.report.draw import colorize, save_png
from segnas.spaces import get_space
from segnas.training.models import load_trained

__all__ = ["DEMO_STEPS", "demo_job", "demo_settings", "demo_target", "latency_warning"]

#: Optimizer steps each network trains for (batch 16).
DEMO_STEPS = 120
#: The space both methods search: the multi-resolution space, small enough to train in the demo.
DEMO_SPACE: dict[str, Any] = {"space": "multires", "space_options": {"layers": 10, "base_width": 8}}
#: The training recipe of every network (short training from scratch: AdamW, cosine, no EMA).
DEMO_RECIPE: dict[str, Any] = {
    "optim": {"name": "adamw", "lr": 4e-3, "weight_decay": 1e-4, "schedule": "cosine", "warmup_iters": 30},
    "loss": {"kind": "ce"}, "ema_decay": None, "bf16": True, "channels_last": True}
#: Candidates each method scores, and the proxy (on 8 training images at the demo size).
DEMO_CANDIDATES = 16
DEMO_PROXY = "nwot"
#: The default target: this quantile of the predicted latencies of networks drawn from the space.
TARGET_QUANTILE = 0.3
TARGET_DRAWS = 48
#: Latency on ONNX Runtime (the deployment runtime the latency model is validated on), operators
#: timed briefly, since a fresh machine builds its table during the demo.
DEMO_LATENCY: dict[str, Any] = {"backend": "onnxruntime", "table_min_runs": 5, "table_min_time_s": 0.02,
                                "calibration_networks": 16}


def demo_target(cfg: CompareSettings, echo: Echo | None = None) -> tuple[float, HeldCorrections]:
    """A target the demo's space can meet on this machine: the ``TARGET_QUANTILE`` of the predicted
    latency (ms, corrected: the space is calibrated first, as its searches would) of
    ``TARGET_DRAWS`` networks drawn across its latency range; and the correction fitted for it on a
    busy host (not cached), for the comparison's searches to predict with (another fit, on a busy
    host, can put the whole space above the target)."""
    label, own = next(iter(chosen_methods(cfg).items()))
    classes = SYNTHETIC_CLASSES.num_classes
    model = search_latency_model(search_settings(cfg, label, own, Path(cfg.out_dir)), classes)  # the searches' own
    space = get_space(DEMO_SPACE["space"], **DEMO_SPACE["space_options"])
    if cfg.latency.calibration_networks:
        model.calibrate(space, classes, cfg.latency.calibration_networks, cfg.progress, echo=echo)
    rng = np.random.default_rng(cfg.seed)
    predicted = [model.predict(space, space.sample(rng, spread=True), classes) for _ in range(TARGET_DRAWS)]
    return round(float(np.quantile(predicted, TARGET_QUANTILE)), 2), HeldCorrections.of(model.corrections)


def demo_settings(steps: int | None = None, minutes: float | None = None, size: tuple[int, int] = (128, 160),
                  out_dir: str = "runs", threads: int | None = None, seed: int = 0,
                  target_ms: float | None = None, target_fps: float | None = None) -> CompareSettings:
    """The demo's comparison settings; a bad argument is a one-line error naming its option.
    A target (``target_ms`` or ``target_fps``) not given is filled in by ``demo_job`` (``demo_target``)."""
    flags = {"train.cpu_minutes": "--minutes", "train.steps": "--steps", "data.crop_size": "--size",
             "latency.size": "--size", "threads": "--threads", "seed": "--seed", "out_dir": "--out-dir",
             "latency.target_ms": "--target-ms", "latency.target_fps": "--target-fps"}
    given = target_ms is not None or target_fps is not None
    scoring = {"proxy": DEMO_PROXY, "images": 8, "batch_size": 8, "size": list(size)}
    return build_config(CompareSettings, {
        "job": "demo",
        "data": {"name": "synthetic", "options": {"size": list(size)}, "crop_size": list(size), "cache": True,
                 "scale": [0.75, 1.5], "jitter": 0.2, "batch_size": 16, "eval_batch_size": 16},
        "latency": {**DEMO_LATENCY, "target_ms": target_ms if given else 1.0, "target_fps": target_fps,
                    "size": list(size)},
        "methods": {
            "saswot": {"saswot": {**DEMO_SPACE, "candidates": DEMO_CANDIDATES, "population": 8, "sample_size": 3,
                                  "final_inits": 0, "top_k": 3, "scoring": scoring}},
            "random": {"random": {**DEMO_SPACE, "candidates": DEMO_CANDIDATES, "top_k": 3,
                                  "evaluator": {"kind": "proxy", "proxy": scoring}}}},
        "zoo": ["fast_scnn"],
        "train": {"steps": DEMO_STEPS if steps is None and minutes is None else steps, "cpu_minutes": minutes,
                  "seeds": 1, "recipe": DEMO_RECIPE},
        "measure_min_runs": 10, "measure_min_time_s": 0.5,
        "executor": "inline", "threads": threads, "seed": seed, "out_dir": out_dir,
    }, "demo", flags)


def demo_job(steps: int | None = None, minutes: float | None = None, size: tuple[int, int] = (128, 160),
             out_dir: str = "runs", threads: int | None = None, seed: int = 0, target_ms: float | None = None,
             echo: Echo | None = None, target_fps: float | None = None) -> tuple[dict[str, Any], Path]:
    """Run the demo comparison; returns the comparison summary and its ``compare.md``."""
    echo = echo or (lambda m: None)
    cfg = demo_settings(steps, minutes, size, out_dir, threads, seed, target_ms, target_fps)  # bad options fail first
    RunDir.check_parent(cfg.out_dir)  # before the target's latency work
    check_inference_size(tuple(size), SYNTHETIC_CLASSES.num_classes, "--size")
    if target_ms is None and target_fps is None:
        echo(f"setting the latency target: the {TARGET_QUANTILE:.0%} quantile of {TARGET_DRAWS} networks of the "
             f"space, predicted on this machine ({DEMO_LATENCY['backend']}, {size[0]}x{size[1]})")
        target_ms, held = demo_target(cfg, echo)
        cfg = cfg.model_copy(update={"latency": cfg.latency.model_copy(update={"target_ms": target_ms})})
    else:
        held = None
    summary = compare_job(cfg, echo=echo, held=held)
    run = Path(summary["run_dir"])
    panels = sample_predictions(summary, run / "sample_prediction.png", cfg)
    echo(f"table: {run / 'compare.md'}; plot: {run / 'pareto.png'}; sample ({' | '.join(panels)}): "
         f"{run / 'sample_prediction.png'}")
    return summary, run / "compare.md"


def sample_predictions(summary: dict[str, Any], path: Path, cfg: CompareSettings) -> list[str]:
    """One validation image, its ground truth and every trained network's prediction, side by side
    (each network's first seed); returns the panels' names, left to right."""
    image, mask = open_data(cfg.data, cfg.data.val_split, eval_transforms(cfg.data.base_size))[0]
    rgb = (denormalize(image).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    panels, palette, names = [rgb], None, []
    for row in summary["rows"]:
        seed = next((s for s in row["seeds"] if s["status"] == "ok"), None)
        if seed is None:
            continue
        model, classes, _, _ = load_trained(best_checkpoint(Path(summary["run_dir"]) / seed["run_dir"]))
        palette = classes.palette()
        if len(panels) == 1:
            panels.append(colorize(mask.numpy(), palette))
        panels.append(colorize(predict_logits(model, image[None]).argmax(1)[0].numpy(), palette))
        names.append(row["name"])
    if palette is None:
        raise SegnasError("demo: no network was trained; see the compare table for why")
    save_png(path, np.concatenate(panels, axis=1))
    return ["image", "ground truth", *names]
