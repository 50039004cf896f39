"""Hand-designed real-time segmentation networks, built by name for any class count."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from segnas.errors import SegnasError
from segnas.zoo.fast_scnn import FastSCNN

MODELS: dict[str, Callable[..., nn.Module]] = {
    "fast_scnn": FastSCNN,
}


def register_model(name: str) -> Callable:
    """Decorator adding a network class or factory to the zoo under ``name``."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = factory
        return factory

    return wrap


def build_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build zoo network ``name`` for ``num_classes`` classes."""
    key = name.lower().replace("-", "_")
    if key not in MODELS:
        raise SegnasError(f"model: unknown name {name!r}; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[key](num_classes=num_classes, **kwargs)


def deploy_parameter_count(model: nn.Module) -> int:
    """Parameters used at inference (auxiliary heads, used only in training, are left out)."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("aux_heads"))
