"""Atomic checkpoint files and the model specification that lets a checkpoint rebuild its network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from segnas.errors import SegnasError
from segnas.utils import atomic_write


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` with torch.save via a temp file + rename: never a half-written checkpoint."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SegnasError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # corrupt or foreign file: name it, don't dump a traceback
        raise SegnasError(f"{path}: not a readable segnas checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(state, dict) or "model" not in state or "model_spec" not in state:
        raise SegnasError(f"{path}: not a segnas checkpoint (missing 'model' or 'model_spec')")
    return state
