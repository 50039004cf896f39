"""Exponential moving average (Polyak averaging) of model weights, used at evaluation."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """Keeps ``shadow = d·shadow + (1−d)·weights`` after each step, floating-point buffers (BN
    statistics) included; integer buffers (BN's step count) are copied.

    The effective decay warms up as min(decay, (1 + n) / (10 + n)) so early averages are not
    dominated by the random initialization.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        msd = model.state_dict()
        for name, value in self.module.state_dict().items():
            src = msd[name]
            if value.dtype.is_floating_point:
                value.mul_(d).add_(src.detach(), alpha=1.0 - d)
            else:
                value.copy_(src)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]
        self.decay = state["decay"]
