"""Zero-cost proxies for dense prediction: score an untrained segmentation network from a few
images without training it.

``@proxy("name")`` (``common``) registers a proxy; a new proxy is one file plus its import below.
``score`` runs one by name on a deep copy of the network (the caller's network, its mode and
gradients are never touched), deterministically for a seed, ``chunk_size`` images at a time;
additive proxies do not depend on the chunk size. The loss is per-pixel cross-entropy over labelled
pixels (``ignore_index`` excluded); BatchNorm uses each batch's statistics (``common`` explains how).
Proxies combined by their ranks over a population of networks (AZ-NAS's Σ log(rank/m), mean rank)
are not per-network proxies: ``segnas.proxies.aggregate`` scores them, by name, on a population.
"""

from __future__ import annotations

import copy
import numbers
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from segnas.errors import SegnasError
from segnas.proxies import (az_nas, fisher, flops, grad_norm, grasp, jacob_cov, meco, nwot, params, snip, swap, synflow,
                            zen, zico)
from segnas.proxies.common import PROXIES, Batch, ProxySettings, proxy

#: The modules whose ``@proxy`` decorators fill ``PROXIES`` when imported.
PROXY_MODULES = (az_nas, fisher, flops, grad_norm, grasp, jacob_cov, meco, nwot, params, snip, swap, synflow, zen, zico)

__all__ = ["PROXIES", "ProxySettings", "proxy", "score", "score_all"]


def _check_names(names: Iterable[str]) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in PROXIES]
    if unknown:
        from segnas.proxies.aggregate import is_aggregate  # imports this package

        hint = (" (a rank aggregate over a population of networks: use segnas.proxies.aggregate.score_population)"
                if is_aggregate(unknown[0]) else "")
        raise SegnasError(f"proxy: unknown name {unknown[0]!r}{hint}; choose one of {', '.join(sorted(PROXIES))}")
    return names


def _prepare(net: nn.Module, batches: Sequence[Batch]) -> list[Batch]:
    if isinstance(batches, tuple) and len(batches) == 2 and isinstance(batches[0], torch.Tensor):
        raise SegnasError("proxies: batches must be a list of (images, masks) pairs, got one pair")
    if not batches:
        raise SegnasError("proxies: batches is empty; give at least one (images, masks) pair")
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    prepared = []
    for i, batch in enumerate(batches):
        try:
            images, masks = batch
        except (TypeError, ValueError):
            raise SegnasError(f"proxies: batches[{i}] must be a pair (images, masks)") from None
        if images.dim() != 4 or masks.dim() != 3 or images.shape[0] != masks.shape[0] \
                or images.shape[-2:] != masks.shape[-2:]:
            raise SegnasError(f"proxies: batches[{i}] has images {tuple(images.shape)} and masks "
                              f"{tuple(masks.shape)}; expected N×3×H×W and N×H×W")
        if masks.is_floating_point():
            raise SegnasError(f"proxies: batches[{i}] masks are {masks.dtype}; expected integer class ids")
        prepared.append((images.detach().to(device, dtype), masks.detach().to(device, torch.int64)))
    return prepared


def _copy(net: nn.Module) -> nn.Module:
    clone = copy.deepcopy(net)
    clone.eval()
    for p in clone.parameters():
        p.grad = None
        p.requires_grad_(True)
    return clone


def score(name: str, net: nn.Module, batches: Sequence[Batch], *, seed: int = 0, ignore_index: int = 255,
          chunk_size: int = 4) -> float:
    """Proxy ``name`` of ``net`` on ``batches`` (a list of (images N×3×H×W float, masks N×H×W int64)).

    Works on a deep copy; seeds torch's RNG locally (the global state is restored); processes at most
    ``chunk_size`` images per forward/backward."""
    _check_names([name])
    value = run_isolated(PROXIES[name], net, batches, seed=seed, ignore_index=ignore_index, chunk_size=chunk_size)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.detach().item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fn = PROXIES[name]
        raise SegnasError(f"proxy {name} ({fn.__module__}.{fn.__qualname__}) returned {type(value).__name__}: a proxy "
                          "returns its score as a number")
    return float(value)


def run_isolated(fn: Callable[[nn.Module, list[Batch], ProxySettings], Any], net: nn.Module,
                 batches: Sequence[Batch], *, seed: int = 0, ignore_index: int = 255, chunk_size: int = 4) -> Any:
    """``fn(copy of net, checked batches, ProxySettings)`` with gradients on and torch's RNG seeded
    locally (the caller's network and RNG state are left as they were)."""
    if chunk_size < 1:
        raise SegnasError(f"proxies: chunk_size must be a positive integer, got {chunk_size}")
    prepared = _prepare(net, batches)
    settings = ProxySettings(seed=seed, ignore_index=ignore_index, chunk_size=chunk_size)
    device = prepared[0][0].device
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        with torch.enable_grad():
            return fn(_copy(net), prepared, settings)


def score_all(names: Iterable[str], net: nn.Module, batches: Sequence[Batch], *, seed: int = 0,
              ignore_index: int = 255, chunk_size: int = 4) -> dict[str, float]:
    """``score`` for each of ``names`` (each on a fresh copy), by name; unknown names fail first."""
    return {n: score(n, net, batches, seed=seed, ignore_index=ignore_index, chunk_size=chunk_size)
            for n in _check_names(names)}
