"""Saving and restoring every random stream a job draws from, for exact resumption."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state(loader: torch.Generator) -> dict[str, Any]:
    """torch, NumPy and Python global states plus the data loader's generator."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "loader": loader.get_state()}


def restore_rng(state: dict[str, Any], loader: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    loader.set_state(state["loader"])
