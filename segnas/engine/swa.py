"""Stochastic weight averaging (Izmailov et al., 2018) of a training run's weights.

From a fraction of the training budget on, the weights after every optimizer step enter an
equal-weight average (``torch.optim.swa_utils.AveragedModel``). An average of weights has no
matching BatchNorm statistics, so before the average is evaluated or saved they are recomputed on
training batches (``torch.optim.swa_utils.update_bn``), with a data order and augmentations of
their own: the training run's random streams are left as they were, so a resumed run matches an
uninterrupted one.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn


class WeightAverage:
    """The SWA average of ``model``'s weights from progress ``start`` (a fraction of the budget) on."""

    def __init__(self, model: nn.Module, start: float, bn_batches: int) -> None:
        self.start = start
        self.bn_batches = bn_batches
        self.averaged = AveragedModel(model)
        self.averaged.requires_grad_(False)
        self.bn_fresh = False

    @property
    def module(self) -> nn.Module:
        """The averaged network (the wrapped copy, with the network's own state-dict names)."""
        return self.averaged.module

    @property
    def count(self) -> int:
        """Weights averaged so far."""
        return int(self.averaged.n_averaged.item())

    def update(self, model: nn.Module, progress: float) -> None:
        """Add ``model``'s weights once training is ``start`` of the way through its budget."""
        if progress >= self.start:
            self.averaged.update_parameters(model)
            self.bn_fresh = False

    def ready(self, batches: Callable[[], Iterable[torch.Tensor]]) -> nn.Module:
        """The averaged network with BatchNorm statistics of its own weights, recomputed (when the
        average changed since) on the first ``bn_batches`` image batches of ``batches()``, whose
        random numbers do not touch the caller's streams."""
        if not self.bn_fresh:
            device = next(self.module.parameters()).device
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                update_bn(itertools.islice(batches(), self.bn_batches), self.module)
            self.module.eval()
            self.bn_fresh = True
        return self.module

    def state_dict(self) -> dict:
        return {"averaged": self.averaged.state_dict(), "start": self.start, "bn_fresh": self.bn_fresh}

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state["averaged"])
        self.bn_fresh = bool(state.get("bn_fresh", False))
