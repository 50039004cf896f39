"""Saving and restoring every random stream a job draws from, for exact resumption."""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch


def rng_state(loader: torch.Generator) -> dict[str, Any]:
    """torch (CPU, and every GPU once CUDA is in use), NumPy and Python global states plus the data
    loader's generator."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             "loader": loader.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], loader: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    loader.set_state(state["loader"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def kept_rng() -> Iterator[None]:
    """Run a block that draws from, or reseeds, the global random streams (a nested training), then
    put them back as they were: what follows draws as if the block had not run."""
    keep = torch.Generator()
    state = rng_state(keep)
    try:
        yield
    finally:
        restore_rng(state, keep)
