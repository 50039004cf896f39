"""Parameter counting."""

from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module, deploy: bool = True) -> int:
    """Number of parameters; ``deploy`` leaves out training-only auxiliary heads (``aux_heads.*``)."""
    return sum(p.numel() for n, p in model.named_parameters() if not (deploy and n.startswith("aux_heads")))
