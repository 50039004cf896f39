"""Choosing proxy-discovery settings by cross-validation inside the training split.

Genetic programming on a few dozen noisy ground-truth networks fits their noise: the best of
thousands of expressions ranks its training networks well by chance. How strongly to prefer small
trees (``discover``'s ``parsimony``) trades that off, and the held-out split must not choose it.
``discover_cv`` splits the training networks into ``folds`` parts, runs discovery with every
candidate setting on all parts but one and scores the found expression (Kendall τ-b) on the part
left out; the setting with the best mean τ then evolves the final expression on all training
networks. The table of every candidate's fold τs is kept in the result's ``settings``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from segnas.errors import SegnasError
from segnas.metrics.ranking import tau_rho
from segnas.proxies.discovery import DiscoveredProxy, discover
from segnas.proxies.graph import NetStats, pack_inits

__all__ = ["PARSIMONY_GRID", "as_numpy", "cross_validate", "discover_cv", "discovery_task", "fold_indices",
           "run_discovery"]

#: Candidate settings tried by default: from no size penalty to one where each extra node costs
#: 0.02 τ (a 10-node tree must rank 0.2 τ better than a 1-node one).
PARSIMONY_GRID: tuple[dict[str, Any], ...] = tuple({"parsimony": p} for p in (0.0, 0.002, 0.006, 0.02))


def fold_indices(n: int, folds: int, seed: int) -> list[list[int]]:
    """``range(n)`` shuffled with ``seed`` and cut into ``folds`` parts of near-equal size, each sorted."""
    if folds < 2 or n < 3 * folds:
        raise SegnasError(f"cross-validation: needs folds ≥ 2 and at least 3 architectures per fold; got {folds} "
                          f"folds for {n} architectures")
    order = np.random.default_rng(seed).permutation(n)
    return [sorted(int(i) for i in part) for part in np.array_split(order, folds)]


def cross_validate(stats_per_arch: Sequence[NetStats], target_mious: Sequence[float],
                   candidates: Sequence[Mapping[str, Any]] = PARSIMONY_GRID, *, folds: int = 3, seed: int = 0,
                   on_candidate: Callable[[dict[str, Any]], None] | None = None,
                   **common: Any) -> list[dict[str, Any]]:
    """For every candidate (keyword arguments of ``discover``, on top of ``common``): the τ on each
    left-out fold of the expression discovered on the other folds, and their mean. One row per
    candidate, in order; a fold where the expression cannot rank counts as τ = 0."""
    if not candidates:
        raise SegnasError("cross-validation: no candidate settings given")
    parts = fold_indices(len(stats_per_arch), folds, seed)
    packed = [pack_inits(s) for s in stats_per_arch]
    rows = []
    for settings in candidates:
        taus = []
        for k, held in enumerate(parts):
            train = [i for j, part in enumerate(parts) if j != k for i in part]
            found = discover([stats_per_arch[i] for i in train], [target_mious[i] for i in train], seed=seed,
                             **{**common, **settings})
            tau = tau_rho([found.evaluate(packed[i]) for i in held], [target_mious[i] for i in held])[0]
            taus.append(tau if math.isfinite(tau) else 0.0)
        row = {"settings": dict(settings), "fold_taus": taus, "mean_tau": float(np.mean(taus))}
        rows.append(row)
        if on_candidate is not None:
            on_candidate(row)
    return rows


def discover_cv(stats_per_arch: Sequence[NetStats], target_mious: Sequence[float],
                candidates: Sequence[Mapping[str, Any]] = PARSIMONY_GRID, *, folds: int = 3, seed: int = 0,
                validation: tuple[Sequence, Sequence[float]] | None = None,
                callback: Callable[[dict[str, Any]], None] | None = None,
                on_candidate: Callable[[dict[str, Any]], None] | None = None, **common: Any) -> DiscoveredProxy:
    """``discover`` with the candidate setting that cross-validates best on ``stats_per_arch``
    (``cross_validate``; ties go to the earlier candidate); ``validation`` is only reported, as in
    ``discover``; ``callback`` gets the final run's generations, ``on_candidate`` each candidate's
    row. The result's ``settings["cross_validation"]`` holds every candidate's row."""
    rows = cross_validate(stats_per_arch, target_mious, candidates, folds=folds, seed=seed,
                          on_candidate=on_candidate, **common)
    best = max(range(len(rows)), key=lambda i: (rows[i]["mean_tau"], -i))
    found = discover(stats_per_arch, target_mious, seed=seed, validation=validation, callback=callback,
                     **{**common, **rows[best]["settings"]})
    found.settings["cross_validation"] = {"folds": folds, "candidates": rows, "chosen": rows[best]["settings"]}
    return found


def run_discovery(stats_per_arch: Sequence[NetStats], target_mious: Sequence[float], *,
                  cv_folds: int = 0, on_candidate: Callable[[dict[str, Any]], None] | None = None,
                  **options: Any) -> DiscoveredProxy:
    """``discover_cv`` with ``cv_folds`` folds, or plain ``discover`` (parsimony 0 unless given)
    when ``cv_folds`` is 0; ``options`` are ``discover``'s keyword arguments."""
    if cv_folds:
        return discover_cv(stats_per_arch, target_mious, folds=cv_folds, on_candidate=on_candidate, **options)
    return discover(stats_per_arch, target_mious, **options)


def discovery_task(item: Mapping[str, Any]) -> dict[str, Any]:
    """One ``run_discovery`` as a ``segnas.parallel.run_all`` work item (picklable, JSON result):
    ``item`` holds ``stats`` and ``targets`` of the training networks, optionally ``validation`` =
    (stats, targets) to report (statistics as ``layer_stats`` gives them or, cheaper to send to
    another process, with numpy arrays for tensors: ``as_numpy``), ``cv_folds`` and ``discover``'s
    keyword arguments under ``options``; other keys are ignored. Returns ``DiscoveredProxy.to_dict()``."""
    validation = item.get("validation")
    if validation is not None:
        validation = (_as_torch(validation[0]), validation[1])
    found = run_discovery(_as_torch(item["stats"]), item["targets"], cv_folds=item.get("cv_folds") or 0,
                          validation=validation, **(item.get("options") or {}))
    return found.to_dict()


def as_numpy(stats_per_arch: Sequence[NetStats]) -> list:
    """``layer_stats`` of several networks (of one or several initializations each) with numpy
    arrays for tensors: pickled by value, where thousands of tensors sent to a process pool would
    each hold a shared-memory file open."""
    return [_convert(arch, lambda v: v.numpy()) for arch in stats_per_arch]


def _as_torch(stats_per_arch: Sequence) -> list:
    return [_convert(arch, torch.as_tensor) for arch in stats_per_arch]


def _convert(stats: Any, fn: Callable[[Any], Any]) -> list:
    """One network's statistics, as nested lists ending in per-layer dicts, with ``fn`` applied to every value."""
    return [{k: fn(v) for k, v in item.items()} if isinstance(item, Mapping) else _convert(item, fn) for item in stats]
