"""Turning a model specification (zoo name or architecture file) into a network, and back from a
checkpoint; starting a network from other weights (``model.init``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from segnas.config.train import ModelConfig
from segnas.data.base import ClassInfo
from segnas.engine.checkpoint import STALE_SWA, kept_average, load_checkpoint, read_weights
from segnas.engine.rundir import best_checkpoint, run_kind
from segnas.errors import SegnasError
from segnas.report.runfiles import found_network, training_folder
from segnas.spaces import build_from_arch, read_arch_file
from segnas.training.start import continue_command
from segnas.zoo import build_model
from segnas.utils import read_json


def model_spec_from_config(mc: ModelConfig) -> dict[str, Any]:
    """A self-contained description stored in checkpoints: the zoo name, or the whole arch file."""
    if mc.arch is not None:
        return {"kind": "arch", **read_arch_file(mc.arch)}
    return {"kind": "zoo", "name": mc.name, "options": mc.options}


def build_network(spec: dict[str, Any], num_classes: int) -> nn.Module:
    if spec["kind"] == "arch":
        return build_from_arch(spec, num_classes)
    return build_model(spec["name"], num_classes, **spec.get("options", {}))


def trained_checkpoint(path: str | Path) -> Path:
    """The checkpoint ``path`` stands for: itself (a file), a training's run directory's
    ``best.pt``, or the ``best.pt`` of the final training of the network a search run found."""
    path = Path(path)
    if not path.is_dir():
        return path
    result_file = path / "search_result.json"
    kind = run_kind(path) if (path / "config.yaml").is_file() else None
    if kind == "search" and not result_file.is_file():
        raise SegnasError(f"{path}: a search that has not finished (no search_result.json); continue it with "
                          f"{continue_command(path, kind)} (search(resume=...) from Python)")
    if result_file.is_file():
        result = read_json(result_file)
        found = (found_network(result) or ("", None))[1]
        recorded = (found or {}).get("training") or {}
        folder = training_folder(path, recorded["run_dir"]) if "run_dir" in recorded else None
        if folder is None:
            arch = path / (found or {}).get("arch_file", "arch.json")
            raise SegnasError(f"{path}: the search trained no found network (final.epochs 0, or its training "
                              f"folder is gone); train it: segnas train --arch {arch} ... "
                              f"(train({{'model.arch': '{arch}', ...}}) from Python)")
        path = folder
    best = best_checkpoint(path)
    if not best.is_file():
        raise SegnasError(f"{path}: no checkpoints/best.pt: give a checkpoint, a finished training's run "
                          "directory or a search's")
    return best


def load_trained(checkpoint: str | Path, raw: bool = False) -> tuple[nn.Module, ClassInfo, dict[str, Any], str]:
    """Rebuild a trained network from a checkpoint alone (or a run directory: ``trained_checkpoint``),
    holding the weights its training scored (its EMA or SWA average where it has one; the raw ones
    with ``raw``: ``select_weights``); returns (model in eval mode, classes, state, which weights:
    "EMA", "SWA" or "raw")."""
    checkpoint = trained_checkpoint(checkpoint)
    state = load_checkpoint(checkpoint)
    if state["model_spec"].get("kind") not in ("zoo", "arch") or "classes" not in state:
        raise SegnasError(f"{checkpoint}: not a trained-network checkpoint (a search state?); "
                          "use checkpoints/best.pt or last.pt of a training run")
    classes = ClassInfo(tuple(state["classes"]["names"]), tuple(tuple(c) for c in state["classes"]["colors"]))
    try:
        model = build_network(state["model_spec"], classes.num_classes)
    except SegnasError as exc:
        raise SegnasError(f"{checkpoint}: the network it describes cannot be built ({exc})") from None
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)[:200]
        raise SegnasError(f"{checkpoint}: weights do not fit the network it describes ({first})") from None
    weights = select_weights(checkpoint, model, state, raw)
    damaged = next((name for name, t in model.state_dict().items()
                    if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
    if damaged is not None:
        raise SegnasError(f"{checkpoint}: its {weights} weights hold NaN or infinite values (tensor {damaged}): a "
                          "diverged training or a damaged file; use another checkpoint")
    return model.eval(), classes, state, weights


def select_weights(checkpoint: str | Path, model: nn.Module, state: dict[str, Any], raw: bool = False) -> str:
    """Put the weights training reported into ``model``: the EMA or SWA average when the checkpoint
    has it (``last.pt`` keeps both; ``best.pt`` holds only what was scored), the raw ones with
    ``raw``. Returns which: "EMA", "SWA" or "raw"."""
    average = kept_average(state)
    if average is not None:
        kind, weights, fresh = average
        if raw:
            return "raw"
        if not fresh:
            raise SegnasError(f"{checkpoint}: {STALE_SWA}: evaluate the run's best.pt, resume the training to its "
                              "end, or take its raw weights (--raw; raw=True from Python)")
        model.load_state_dict(weights)
        return kind
    config = state.get("config") or {}
    held = state.get("weights") or ("EMA" if config.get("ema_decay") else "raw")  # best.pt: what was scored
    if held != "raw" and raw:
        raise SegnasError(f"{checkpoint}: holds only the {held} weights (what training scored); the raw weights "
                          "are in the run's checkpoints/last.pt")
    return held


def resolve_model(source: str, num_classes: int = 19) -> tuple[nn.Module, str]:
    """A network from a checkpoint (``.pt``; or a training's or search's run directory: its trained
    network), an architecture file (``.json``) or a zoo name; returns the network in eval mode and a
    display name."""
    path = Path(source)
    if path.is_dir():
        path = trained_checkpoint(path)
    if path.suffix == ".pt":
        model = load_trained(path)[0]
        return model, path.stem if path.stem not in ("best", "last") else path.parent.parent.name
    if path.suffix == ".json":
        name = path.parent.name if path.stem == "arch" and path.parent.name else path.stem  # a run's arch.json
        return build_from_arch(read_arch_file(path), num_classes).eval(), name
    if path.suffix.lower() == ".onnx":
        raise SegnasError(f"{path}: an ONNX export: give the checkpoint it was exported from "
                          "(runs/RUN/checkpoints/best.pt), an arch file or a zoo name")
    if path.is_file():
        raise SegnasError(f"{path}: not a network: give a checkpoint (.pt), an arch file (.json), a run folder "
                          "or a zoo name")
    return build_model(source, num_classes).eval(), source


def load_init_weights(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load into ``model`` every tensor of ``path`` (a segnas checkpoint, its ``model`` entry, or a
    state dict) whose name and shape match one of ``model``'s; the rest of ``model`` keeps its
    initialization. Returns ``{"weights", "loaded", "of", "shape_mismatch"}`` (tensors loaded, of
    the network's, same name but another shape). One-line SegnasError naming ``model.init`` and the
    file when it is missing, unreadable, not weights, or when no tensor matches."""
    state = read_weights(path, "model.init")
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and k in own and v.shape == own[k].shape}
    other = [k for k, v in state.items() if isinstance(v, torch.Tensor) and k in own and k not in fits]
    if not fits:
        example = f"; e.g. {other[0]!r} has shape {list(state[other[0]].shape)}, the network's " \
                  f"{list(own[other[0]].shape)}" if other else f"; e.g. {next(iter(state))!r} is not one of its names"
        raise SegnasError(f"model.init: {path}: no tensor matches the network by name and shape{example}")
    model.load_state_dict(fits, strict=False)
    return {"weights": str(path), "loaded": len(fits), "of": len(own), "shape_mismatch": len(other)}
