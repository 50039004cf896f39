"""`segnas report RUN_DIR`: one self-contained HTML page for any run directory (train, search,
compare). The page is rendered by ``segnas.report.html_report``; this job adds what needs the layers
above it: sample predictions of the run's trained network (its checkpoint and validation data) and
the per-operator latency of the run's network(s) from the latency table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from segnas.config.search import LatencyTarget
from segnas.config.train import DataConfig
from segnas.cost import LatencyModel, count_parameters
from segnas.data import dataset_classes, eval_transforms, open_data
from segnas.data.transforms import denormalize
from segnas.engine.evaluate import predict_logits
from segnas.engine.rundir import best_checkpoint, last_checkpoint
from segnas.errors import SegnasError
from segnas.progress import Echo
from segnas.report.breakdown import LatencyBreakdown, latency_breakdown
from segnas.report.html_report import ReportInputs, Sample, SampleSet, architectures, write_report
from segnas.report.runfiles import RunFiles, found_network, read_run
from segnas.spaces import get_space
from segnas.training.models import load_trained
from segnas.utils import check_output_file


def report_job(run_dir: str | Path, out: str | Path | None = None, samples: int = 3, latency: bool = True,
               latency_model: LatencyModel | None = None, echo: Echo | None = None) -> Path:
    """Write the HTML report of the run at ``run_dir`` to ``out`` (default ``<run_dir>/report.html``),
    atomically; returns its path. ``samples``: validation images predicted (0: none); ``latency``:
    include the per-operator latency breakdown (missing table entries are measured, then cached);
    ``latency_model`` replaces the one the run's settings describe."""
    echo = echo or (lambda m: None)
    if samples < 0:
        raise SegnasError(f"--samples: must be >= 0, got {samples}")
    run = read_run(run_dir)
    out = Path(out) if out is not None else run.path / "report.html"
    if out.is_dir():
        raise SegnasError(f"--out {out}: is a folder; give the report's file name (e.g. {out / 'report.html'})")
    check_output_file(out, "--out")  # a missing folder is made, as export and predict make theirs
    inputs = ReportInputs()
    checkpoints = report_checkpoints(run)
    state: dict[str, Any] | None = None
    if not checkpoints:
        inputs.notes["samples"] = ["No trained network in this run (no checkpoints/best.pt or last.pt): "
                                   "no sample predictions."]
    else:
        sets, notes = [], inputs.notes.setdefault("samples", [])
        # each network on its own (one that fails is named); without samples, the best one only
        for name, checkpoint in list(checkpoints.items())[:None if samples else 1]:
            try:
                model, classes, loaded, weights = load_trained(checkpoint)
                state = state or loaded  # the first (best) network's: class names, latency breakdowns
                inputs.params = inputs.params or count_parameters(model)
                inputs.class_names = inputs.class_names or list(classes.names)
                if samples:
                    sets.append(predict_samples(model, classes, loaded, samples, f"{checkpoint} ({weights} weights)",
                                                name))
            except SegnasError as exc:
                notes.append(f"No sample predictions{'' if len(checkpoints) == 1 else ' of ' + name}: {exc}")
        if sets:
            inputs.samples, left_out = merged_samples(sets)
            if left_out:
                notes.append(f"Left out of the side-by-side predictions (scored on other images or classes): "
                             f"{', '.join(left_out)}.")
        elif not samples:
            notes.append("Sample predictions left out (--samples 0).")
    if inputs.class_names is None and run.kind == "training":  # no readable checkpoint: the run's dataset names them
        inputs.class_names = dataset_class_names(run.config)
    inputs.archs = architectures(run)
    spec = (state or {}).get("model_spec") or {}
    if run.kind == "training" and spec.get("kind") == "arch":  # the checkpoint holds the whole arch file
        inputs.archs = {Path((run.config.get("model") or {}).get("arch") or "network").stem: spec}
    if latency:
        inputs.latency, inputs.notes["latency"] = breakdowns(run, inputs.archs, state, latency_model, echo)
    else:
        inputs.notes["latency"] = ["Latency breakdown left out (--no-latency)."]
    path = write_report(run, out, inputs)
    echo(f"wrote {path}")
    return path


def report_checkpoints(run: RunFiles) -> dict[str, Path]:
    """The checkpoints whose predictions the report shows, by network: a training run's best (else
    last) checkpoint; a search's final training of its found network; every compared network's
    (its first seed with one), the best-scoring first."""
    def best_of(folder: Path) -> Path | None:
        return next((p for p in (best_checkpoint(folder), last_checkpoint(folder))
                     if p.is_file()), None)

    if run.kind == "training":
        found_ckpt = best_of(run.path)
        return {"prediction": found_ckpt} if found_ckpt else {}
    if run.kind == "search":
        found = [named[0]] if (named := found_network(run.search_result)) else []
        for name in found + [n for n in run.finals if n not in found]:
            if name in run.finals and best_of(run.finals[name].path):
                return {name: best_of(run.finals[name].path)}
        return {}
    out = {}
    for r in sorted((run.compare or {}).get("rows", []), key=lambda r: -(r.get("val_miou_mean") or -1.0)):
        for seed in r.get("seeds") or []:
            folder = Path(seed["run_dir"]) if seed.get("run_dir") else None
            found_ckpt = best_of(folder if folder.is_absolute() else run.path / folder) if folder else None
            if found_ckpt:
                out[str(r.get("name"))] = found_ckpt
                break
    return out


def dataset_class_names(config: dict[str, Any]) -> list[str] | None:
    """The class names of the training split a run's settings name; None when that data cannot be
    opened here (moved, or settings of another version)."""
    try:
        data = DataConfig.model_validate(config.get("data") or {})
        return list(open_data(data, data.train_split, None, cache=False).classes.names)
    except (SegnasError, ValueError, OSError):
        return None


def predict_samples(model: torch.nn.Module, classes: Any, state: dict[str, Any], count: int,
                    source: str, name: str = "prediction") -> SampleSet:
    """The first ``count`` validation images of the checkpoint's dataset (at its evaluation size),
    their ground truth and the network's predictions (under ``name``); a missing dataset raises
    SegnasError."""
    data = DataConfig.model_validate((state.get("config") or {}).get("data") or {})
    split = data.val_split or data.train_split
    dataset = open_data(data, split, eval_transforms(data.base_size), cache=False)
    if dataset.num_classes != classes.num_classes:
        raise SegnasError(f"the checkpoint predicts {classes.num_classes} classes, dataset {data.name!r} has "
                          f"{dataset.num_classes}")
    out = []
    with torch.no_grad():
        for i in range(min(count, len(dataset))):
            image, mask = dataset[i]
            pred = predict_logits(model, image[None]).argmax(1)[0].numpy().astype(np.uint8)
            rgb = (denormalize(image).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            out.append(Sample(f"{split} image {i}", rgb, mask.numpy().astype(np.uint8), {name: pred}))
    return SampleSet(out, classes.palette(), list(classes.names), f"{source}, {data.name} {split} split")


def merged_samples(sets: list[SampleSet]) -> tuple[SampleSet, list[str]]:
    """One set of samples holding every set's predictions of the same images (a comparison's
    networks, the first set's images), and the networks left out: scored on other images or classes
    (another size or dataset)."""
    first = sets[0]
    same = [s for s in sets if len(s.samples) == len(first.samples) and s.class_names == first.class_names
            and all(a.image.shape == b.image.shape for a, b in zip(s.samples, first.samples))]
    samples = [Sample(a.name, a.image, a.truth, {k: v for s in same for k, v in s.samples[i].preds.items()})
               for i, a in enumerate(first.samples)]
    data = first.source.split(", ")[-1]  # "<dataset> <split> split"
    source = first.source if len(same) == 1 else f"each network's best (else last) checkpoint, {data}"
    kept = {id(s) for s in same}
    left_out = [name for s in sets if id(s) not in kept for name in (s.samples[0].preds if s.samples else ["?"])]
    return SampleSet(samples, first.palette, first.class_names, source), left_out


def run_latency_model(run: RunFiles) -> LatencyModel:
    """The latency model of the run's settings: its ``latency`` section (search, compare) or the
    defaults (a training run), at the deployment size (``latency.size``, else the crop or base size)."""
    settings = LatencyTarget.model_validate(run.config.get("latency") or {})
    data = run.config.get("data") or {}
    size = settings.size or data.get("crop_size") or data.get("base_size")
    if size is None:
        raise SegnasError("no deployment size in the run's settings (latency.size, data.crop_size or "
                          "data.base_size)")
    return LatencyModel.from_settings(settings, tuple(size), run.config.get("threads"))


def breakdowns(run: RunFiles, archs: dict[str, dict[str, Any]], state: dict[str, Any] | None,
               model: LatencyModel | None, echo: Echo) -> tuple[dict[str, LatencyBreakdown], list[str]]:
    """The latency breakdown of each architecture (by name) of the run; notes on what has none."""
    notes: list[str] = []
    if run.kind == "training" and not archs:
        model_cfg = run.config.get("model") or {}
        if model_cfg.get("arch"):
            return {}, [f"No latency breakdown: {model_cfg['arch']}: architecture file not found, and no "
                        "checkpoint holding it."]
        return {}, [f"{model_cfg.get('name')!r} is a zoo network, not built from a search space's operators: no "
                    "per-operator breakdown (measure it whole with `segnas bench`)."]
    if run.kind == "comparison":
        zoo = [str(r.get("name")) for r in (run.compare or {}).get("rows", []) if r.get("kind") == "zoo"]
        if zoo:
            notes.append(f"Zoo networks ({', '.join(zoo)}) are measured whole, not from the operator table.")
    if not archs:
        return {}, notes + ["No architecture file in this run: nothing to break down."]
    try:
        model = model or run_latency_model(run)
    except SegnasError as exc:
        return {}, notes + [f"No latency breakdown: {exc}"]
    out = {}
    table = model.table  # (what a LatencyTable measured now, and of that on a busy host: noted below)
    measured_before, volatile_before = getattr(table, "measured", 0), len(getattr(table, "volatile", ()))
    for name, data in archs.items():
        try:
            space = get_space(data["space"])
            arch = space.arch_from_dict(data["arch"])
            classes = data.get("num_classes") or _num_classes(run, state)
            echo(f"latency breakdown of {name} ({model.describe()})")
            out[name] = latency_breakdown(model, space, arch, int(classes), progress=True)
        except SegnasError as exc:
            notes.append(f"No latency breakdown of {name}: {exc}")
    fresh = getattr(table, "measured", 0) - measured_before
    unsaved = len(getattr(table, "volatile", ())) - volatile_before
    if fresh:
        notes.append(f"{fresh} operator entries were timed now for this page (not in the cache)"
                     + (f", {unsaved} of them while other processes kept the cores busy (not kept)" if unsaved else "")
                     + ": its figures may differ from those the run's own measurement gave.")
    return out, notes


def _num_classes(run: RunFiles, state: dict[str, Any] | None) -> int:
    if state is not None and state.get("classes"):
        return len(state["classes"]["names"])
    return dataset_classes(DataConfig.model_validate(run.config.get("data") or {})).num_classes
