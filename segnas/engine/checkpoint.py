"""Atomic checkpoint files, loaded safely, with the previous one kept as a fallback.

A checkpoint is read with ``torch.load(weights_only=True)`` and an explicit allowlist
(``CHECKPOINT_GLOBALS``): tensors, containers and plain Python values, which torch allows by itself,
plus numeric NumPy arrays and scalars (the NumPy RNG state every training checkpoint stores). Any
other pickled object, a callable above all, is refused in one line instead of being run.

Training and search loops call ``keep_previous`` before each new ``last.pt``: the checkpoint it
replaces is kept as ``last.prev.pt``, which ``load_latest_checkpoint`` falls back to when the newest
one is missing or unreadable, and says so.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segnas.errors import SegnasError
from segnas.progress import Echo
from segnas.utils import atomic_write

#: NumPy dtypes a checkpoint's arrays and scalars may have (no object dtype: it pickles objects).
NUMPY_DTYPES = ("?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")


@lru_cache(maxsize=1)
def checkpoint_globals() -> tuple:
    """What a checkpoint may hold beyond what ``weights_only`` allows by itself: numeric NumPy arrays
    and scalars, under their NumPy 2 and NumPy 1 names."""
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # NumPy 1
        from numpy.core.multiarray import _reconstruct, scalar
    return (np.ndarray, np.dtype, _reconstruct, scalar,
            (_reconstruct, "numpy.core.multiarray._reconstruct"), (scalar, "numpy.core.multiarray.scalar"),
            (_reconstruct, "numpy._core.multiarray._reconstruct"), (scalar, "numpy._core.multiarray.scalar"),
            *(type(np.dtype(code)) for code in NUMPY_DTYPES))


def previous_path(path: str | Path) -> Path:
    """Where the checkpoint ``path`` replaced is kept: ``last.pt`` -> ``last.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` with torch.save via a temp file + rename: never a half-written checkpoint."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def keep_previous(path: str | Path) -> None:
    """Keep the checkpoint at ``path`` as ``previous_path(path)`` before a new one replaces it
    (atomically: a hard link renamed over the old fallback, a copy where links are not supported),
    so that a checkpoint damaged later (disk, copy, hand) still leaves the one before it."""
    path = Path(path)
    if path.is_file():
        atomic_write(previous_path(path), lambda tmp: _link_or_copy(path, tmp))


def _link_or_copy(src: Path, tmp: Path) -> None:
    tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)


#: Why an SWA average read from a checkpoint cannot stand for what training scored.
STALE_SWA = ("its SWA average changed after its BatchNorm statistics were last recomputed (a training cut between "
             "evaluations)")


def kept_average(state: dict[str, Any]) -> tuple[str, dict[str, torch.Tensor], bool] | None:
    """The average a segnas checkpoint keeps beside its raw weights (``last.pt`` does: the weights
    training scored): ("EMA" or "SWA", name -> tensor, whether its BatchNorm statistics fit it); None
    when it keeps none (``best.pt`` holds only what was scored)."""
    ema, swa = state.get("ema"), state.get("swa")
    if isinstance(ema, dict) and isinstance(ema.get("module"), dict) and ema["module"]:
        return "EMA", ema["module"], True
    averaged = swa.get("averaged") if isinstance(swa, dict) else None
    if isinstance(averaged, dict) and int(averaged.get("n_averaged", 0)) > 0:
        weights = {k.removeprefix("module."): v for k, v in averaged.items() if k != "n_averaged"}
        return "SWA", weights, swa.get("bn_fresh") is not False
    return None


def read_weights(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """The name -> tensor mapping in ``path``: a segnas checkpoint's weights (its EMA or SWA average
    where it keeps one, as ``last.pt`` does: the weights training scored; else its ``model`` entry),
    or a state dict, read with ``weights_only=True``; a one-line SegnasError naming ``what`` (the
    setting that gave the file) and the file when it is missing, unreadable or holds no tensors."""
    path = Path(path)
    state = _safe_load(path, f"{what}: {path}", "file not found", "a readable checkpoint or state dict")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # a segnas checkpoint
        average = kept_average(state)
        if average is not None and not average[2]:
            raise SegnasError(f"{what}: {path}: {STALE_SWA}: use the run's best.pt")
        state = average[1] if average is not None else state["model"]
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise SegnasError(f"{what}: {path}: expected a segnas checkpoint or a state dict (name -> tensor)")
    return state


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A segnas checkpoint, read with ``weights_only=True`` and ``checkpoint_globals()``; a one-line
    SegnasError if it is missing, unreadable, not a segnas checkpoint, or holds anything else."""
    path = Path(path)
    state = _safe_load(path, str(path), "checkpoint not found", "a readable segnas checkpoint")
    if not isinstance(state, dict) or "model" not in state or "model_spec" not in state:
        raise SegnasError(f"{path}: not a segnas checkpoint (missing 'model' or 'model_spec')")
    return state


def _safe_load(path: Path, where: str, missing: str, readable: str) -> Any:
    """``torch.load`` with ``weights_only=True`` and ``checkpoint_globals()``; a one-line SegnasError
    starting with ``where`` when the file is missing (``missing``), holds something the weights-only
    unpickler refuses, or is not ``readable`` (corrupt, foreign) — never a traceback."""
    refuse_folder(path, where, "a checkpoint file")
    if not path.is_file():
        raise SegnasError(f"{where}: {missing}")
    if path.suffix.lower() == ".onnx":
        raise SegnasError(f"{where}: an ONNX export, not a segnas checkpoint: give the training checkpoint it was "
                          "exported from (runs/RUN/checkpoints/best.pt); ONNX Runtime runs the file itself "
                          "(docs/deployment.md)")
    if path.suffix.lower() in (".json", ".yaml", ".yml"):
        kind = path.suffix.lower()[1:].upper()
        raise SegnasError(f"{where}: a {kind} file, not a segnas checkpoint: an architecture "
                          "file is a network to train (segnas train --arch; model.arch), a checkpoint is what "
                          "training writes (runs/RUN/checkpoints/best.pt)")
    if _is_torchscript(path):
        raise SegnasError(f"{where}: a TorchScript export, not a segnas checkpoint: give the training checkpoint it "
                          "was exported from (runs/RUN/checkpoints/best.pt)")
    try:
        with torch.serialization.safe_globals(list(checkpoint_globals())):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        unsafe = _refused_global(exc)
        if unsafe:
            raise SegnasError(f"{where}: refused: the file holds {unsafe}, which no segnas checkpoint holds "
                              f"(loading it could run code); open only checkpoints you trust") from None
        raise SegnasError(f"{where}: not {readable} ({exc.__class__.__name__})") from None


def refuse_folder(path: Path, where: str, expected: str) -> None:
    """A one-line SegnasError when ``path`` is a folder where ``expected`` was: a run directory's is
    pointed to its ``checkpoints/best.pt``."""
    if path.is_dir():
        hint = "; give its checkpoints/best.pt" if (path / "checkpoints").is_dir() else ""
        raise SegnasError(f"{where}: a folder, not {expected}{hint}")


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding compiled ``code/``), which torch.load
    would only refuse, with a warning."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _refused_global(exc: Exception) -> str | None:
    """The name of what the weights-only unpickler refused to build, if that is why loading failed."""
    if not isinstance(exc, pickle.UnpicklingError):
        return None
    text = str(exc)
    match = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"got <class '([\w.]+)'>", text)
    return match.group(1) if match else None  # else damaged bytes ("Unsupported operand 0"), not a refusal


def unusable_path(path: str | Path) -> Path:
    """Where a checkpoint that could not be resumed from is kept for inspection: ``last.unusable.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.unusable{path.suffix}")


def load_latest_checkpoint(path: str | Path, notice: Echo | None = None
                           ) -> dict[str, Any] | None:
    """The checkpoint to resume a loop from: ``path`` (its ``last.pt``), or None when neither it nor
    the one before it (``last.prev.pt``) exists (nothing to resume).

    When ``path`` is missing or unusable and the earlier one loads, that one is restored as ``path``
    (the unusable file kept as ``last.unusable.pt``), so the next save keeps a good fallback, and
    ``notice`` is told. When neither can be used, a one-line SegnasError says what to do."""
    path = Path(path)
    prev = previous_path(path)
    if not path.is_file() and not prev.is_file():
        return None
    try:
        return load_checkpoint(path)
    except SegnasError as exc:
        problem = str(exc)
    if not prev.is_file():
        raise SegnasError(f"{problem}; there is no earlier checkpoint ({prev.name}) to fall back to: delete "
                          f"{path} to restart this run from its first epoch, or start a new run")
    try:
        state = load_checkpoint(prev)
    except SegnasError as exc:
        raise SegnasError(f"{problem}; the earlier checkpoint is unusable too ({exc}): delete {path} and "
                          f"{prev} to restart this run from its first epoch, or start a new run") from None
    kept = ""
    if path.is_file():
        os.replace(path, unusable_path(path))
        kept = f" (the unusable file is kept as {unusable_path(path).name})"
    atomic_write(path, lambda tmp: _link_or_copy(prev, tmp))
    if notice is not None:
        notice(f"{problem}; resuming from the checkpoint before it, {prev.name}{kept}")
    return state
