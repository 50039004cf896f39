"""Rank statistics between scores and targets: Kendall τ, Spearman ρ, seeded splits, noise ceilings."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from segnas.errors import SegnasError


def _rounded(values: Sequence[float]) -> np.ndarray:
    """Values to 9 significant digits, so that rounding noise does not break ties into ranks."""
    return np.array([float(f"{v:.9g}") for v in values], dtype=np.float64)


def tau_rho(values: Sequence[float], targets: Sequence[float]) -> tuple[float, float]:
    """(Kendall τ-b, Spearman ρ) of ``values`` against ``targets``; NaN when undefined."""
    v = _rounded(values)
    if not np.all(np.isfinite(v)) or np.ptp(v) == 0:
        return math.nan, math.nan
    from scipy.stats import kendalltau, spearmanr  # (half a second to import: only when ranking)

    return float(kendalltau(v, targets).statistic), float(spearmanr(v, targets).statistic)


def rank_correlations(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Kendall τ (tau-b) and Spearman ρ between two equally long score lists (NaN when undefined)."""
    if len(a) != len(b):
        raise SegnasError(f"rank_correlations: lists of different length ({len(a)} vs {len(b)})")
    if len(a) < 2:
        return {"kendall_tau": float("nan"), "spearman_rho": float("nan"), "n": len(a)}
    tau, rho = tau_rho(a, b)
    return {"kendall_tau": tau, "spearman_rho": rho, "n": len(a)}


def split_indices(n: int, train_fraction: float = 0.5, seed: int = 0) -> tuple[list[int], list[int]]:
    """A seeded random split of ``range(n)`` into (train, held-out) positions, the training part
    ``round(train_fraction * n)`` long (at least 3)."""
    if not 0 < train_fraction < 1:
        raise SegnasError(f"train_fraction must be between 0 and 1, got {train_fraction}")
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_train = max(3, int(round(train_fraction * n)))
    return order[:n_train], order[n_train:]


def noise_ceiling_tau(seed_vs_seed_tau: float, runs: int = 1) -> float:
    """Kendall τ that a perfect proxy (one that knew every network's expected mIoU) would reach against
    the mean of ``runs`` training runs, given the τ between two single runs.

    Model: each run's mIoU = expected mIoU + independent Gaussian noise. Under bivariate normality
    τ = (2/π)·asin(r), so the run-to-run correlation r = sin(π·τ/2); the mean of k runs has
    reliability R = k·r / (1 + (k−1)·r) (Spearman–Brown) and correlates with the expectation at √R.
    """
    if runs < 1:
        raise SegnasError(f"runs must be >= 1, got {runs}")
    if math.isnan(seed_vs_seed_tau):
        return float("nan")
    r = math.sin(math.pi * max(seed_vs_seed_tau, 0.0) / 2)
    reliability = runs * r / (1 + (runs - 1) * r) if r > 0 else 0.0
    return 2 / math.pi * math.asin(math.sqrt(reliability))
