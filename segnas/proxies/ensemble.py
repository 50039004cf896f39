"""Ensembles of discovered proxy expressions.

One genetic-programming run fits its training networks' noise in its own way: on the CamVid ground
truth, expressions evolved with different seeds on the same training networks differ by up to ±0.1
in held-out Kendall τ. ``discover_ensemble`` evolves ``members`` expressions on the same training
networks (member j with seed ``seed + 1000·j``, so neighbouring seeds share no member) and a
``ProxyEnsemble`` averages them on a common scale: each member's value becomes its quantile among
that member's values on the training networks (interpolated between them; beyond their range it
keeps rising or falling within the last half-step, so the member's own ranking is kept exactly).
Every member then counts alike whatever its units. The ensemble saves to and loads from JSON, like
a single expression; ``load_proxy`` reads either kind of file. With ``bag_fraction`` < 1 each
member evolves on its own random part of the training networks (bagging), which makes the members
differ in what they fit, not only in their seeds; the ensemble's scale still uses all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from torch import nn

from segnas.errors import SegnasError
from segnas.metrics.ranking import tau_rho
from segnas.proxies.common import PROXIES, Batch, ProxySettings, proxy
from segnas.proxies.cross_validation import run_discovery
from segnas.proxies.discovery import DiscoveredProxy, SavedProxy, collect_stats, read_proxy_file
from segnas.proxies.graph import NetStats, pack_inits
from segnas.utils import json_float

__all__ = ["ENSEMBLE_FORMAT", "MEMBER_SEED_STRIDE", "ProxyEnsemble", "bagged_indices", "check_bag_fraction",
           "discover_ensemble", "load_proxy", "member_seeds"]

ENSEMBLE_FORMAT = "segnas.proxy_ensemble"
#: Member j of an ensemble evolves with seed ``seed + MEMBER_SEED_STRIDE * j``.
MEMBER_SEED_STRIDE = 1000

def member_seeds(seed: int, members: int) -> list[int]:
    """The evolution seeds of an ensemble's members (member 0 evolves with ``seed`` itself)."""
    return [seed + MEMBER_SEED_STRIDE * j for j in range(members)]


def check_bag_fraction(fraction: float, members: int | None = None) -> None:
    """Refuse a bag fraction outside (0, 1], or below 1 for fewer than 2 ``members`` (when given)."""
    if not 0.0 < fraction <= 1.0:
        raise SegnasError(f"bag fraction must be in (0, 1], got {fraction}")
    if members is not None and fraction < 1.0 and members < 2:
        raise SegnasError(f"bag fraction {fraction} needs members > 1 (each member evolves on its own share)")


def bagged_indices(n: int, fraction: float, seed: int) -> list[int]:
    """The training networks (indices into ``n``) one member evolves on: all at ``fraction`` 1, else a
    random ``fraction`` of them (at least 8, at most ``n``) drawn with the member's ``seed``, in order."""
    check_bag_fraction(fraction)
    if fraction == 1.0:
        return list(range(n))
    keep = np.random.default_rng(seed).choice(n, size=min(n, max(8, round(fraction * n))), replace=False)
    return sorted(int(i) for i in keep)


def quantile_scale(reference: Sequence[float], value: float) -> float:
    """``value``'s quantile among ``reference`` (finite values, any order): ``(i + 0.5) / n`` at the
    i-th smallest, linear in between; beyond the smallest or largest it approaches 0 or 1
    (``tanh`` of the distance in units of the reference's range), so the map is strictly increasing.
    NaN for a non-finite ``value``."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    if not math.isfinite(value):
        return math.nan
    n = len(ref)
    lo, hi = float(ref[0]), float(ref[-1])
    span = hi - lo if hi > lo else 1.0
    tail = 0.5 / n
    if value < lo:
        return tail - tail * math.tanh((lo - value) / span)
    if value > hi:
        return 1.0 - tail + tail * math.tanh((value - hi) / span)
    if hi == lo:
        return 0.5
    quantiles = (np.arange(n) + 0.5) / n
    # equal reference values: np.interp needs increasing x; average the quantiles of ties
    xs, inverse = np.unique(ref, return_inverse=True)
    qs = np.bincount(inverse, weights=quantiles) / np.bincount(inverse)
    return float(np.interp(value, xs, qs))


@dataclass
class ProxyEnsemble(SavedProxy):
    """Several proxy expressions averaged on their quantile scales (see the module docstring).

    ``references[j]`` holds member j's values on the networks it was evolved on."""

    members: list[DiscoveredProxy]
    references: list[list[float]]
    train_tau: float | None = None
    train_rho: float | None = None
    val_tau: float | None = None
    val_rho: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.members or len(self.members) != len(self.references):
            raise SegnasError(f"proxy ensemble: expected one reference per member and at least one member, got "
                              f"{len(self.members)} members and {len(self.references)} references")
        for j, ref in enumerate(self.references):
            if len(ref) < 2 or not all(math.isfinite(float(v)) for v in ref):
                raise SegnasError(f"proxy ensemble: member {j}'s reference needs at least 2 finite values")
        self.references = [sorted(float(v) for v in ref) for ref in self.references]

    @classmethod
    def from_members(cls, members: Sequence[DiscoveredProxy], stats_per_arch: Sequence[NetStats],
                     target_mious: Sequence[float] | None = None, *,
                     validation: tuple[Sequence[NetStats], Sequence[float]] | None = None,
                     settings: Mapping[str, Any] | None = None) -> "ProxyEnsemble":
        """The ensemble of ``members`` scaled on ``stats_per_arch`` (the networks they were evolved
        on); with ``target_mious`` its τ/ρ there, with ``validation`` = (stats, mIoUs) its τ/ρ there.
        A member's non-finite values on the training networks are left out of its reference."""
        packed = [pack_inits(s) for s in stats_per_arch]
        refs = [[v for v in (m.evaluate(p) for p in packed) if math.isfinite(v)] for m in members]
        ensemble = cls(members=list(members), references=refs, settings=dict(settings or {}))
        if target_mious is not None:
            ensemble.train_tau, ensemble.train_rho = _correlations(ensemble, packed, target_mious)
        if validation is not None:
            ensemble.val_tau, ensemble.val_rho = _correlations(ensemble, validation[0], validation[1])
        return ensemble

    @property
    def expression(self) -> str:
        """A readable form: the members' expressions, averaged on their quantile scales."""
        return "mean_quantile(" + ", ".join(m.expression for m in self.members) + ")"

    def member_values(self, stats: NetStats) -> list[float]:
        """Each member's raw value on one network's statistics."""
        packed = pack_inits(stats)
        return [m.evaluate(packed) for m in self.members]

    def evaluate(self, stats: NetStats) -> float:
        """The mean of the members' quantiles on one network's ``layer_stats`` (higher = predicted
        better); NaN when a member's value is not finite."""
        scaled = [quantile_scale(ref, v) for ref, v in zip(self.references, self.member_values(stats))]
        return float(np.mean(scaled))

    def to_dict(self) -> dict[str, Any]:
        return {"format": ENSEMBLE_FORMAT, "version": 1, "expression": self.expression,
                "train_tau": self.train_tau, "train_rho": self.train_rho, "val_tau": self.val_tau,
                "val_rho": self.val_rho, "settings": self.settings,
                "members": [m.to_dict() | {"reference": ref} for m, ref in zip(self.members, self.references)]}

    @classmethod
    def from_dict(cls, data: Any) -> "ProxyEnsemble":
        """The inverse of ``to_dict``."""
        if not isinstance(data, dict) or data.get("format") != ENSEMBLE_FORMAT or not isinstance(
                data.get("members"), list):
            raise SegnasError(f"not a {ENSEMBLE_FORMAT} file (expected keys format, members)")
        members, refs = [], []
        for j, m in enumerate(data["members"]):
            if not isinstance(m, dict) or not isinstance(m.get("reference"), list):
                raise SegnasError(f"member {j}: expected an expression with its reference values")
            members.append(DiscoveredProxy.from_dict(m))
            refs.append(m["reference"])
        return cls(members=members, references=refs, train_tau=data.get("train_tau"),
                   train_rho=data.get("train_rho"), val_tau=data.get("val_tau"), val_rho=data.get("val_rho"),
                   settings=dict(data.get("settings") or {}))


def _correlations(ensemble: ProxyEnsemble, stats: Sequence[NetStats], targets: Sequence[float]
                  ) -> tuple[float | None, float | None]:
    tau, rho = tau_rho([ensemble.evaluate(s) for s in stats], [float(t) for t in targets])
    return json_float(tau), json_float(rho)


def load_proxy(path: str | Path) -> DiscoveredProxy | ProxyEnsemble:
    """A saved proxy file: one expression (``DiscoveredProxy``) or an ensemble (``ProxyEnsemble``)."""
    return read_proxy_file(path, lambda data: ProxyEnsemble if isinstance(data, dict)
                           and data.get("format") == ENSEMBLE_FORMAT else DiscoveredProxy)


def discover_ensemble(stats_per_arch: Sequence[NetStats], target_mious: Sequence[float],
                      *, members: int = 5, seed: int = 0, bag_fraction: float = 1.0,
                      validation: tuple[Sequence, Sequence[float]] | None = None,
                      discover_member: Callable[..., DiscoveredProxy] | None = None,
                      on_member: Callable[[int, DiscoveredProxy], None] | None = None,
                      **options: Any) -> ProxyEnsemble:
    """Evolve ``members`` expressions on the same training networks (seeds ``member_seeds``) and
    average them (``ProxyEnsemble``). ``discover_member`` (default
    ``segnas.proxies.cross_validation.run_discovery``) gets ``options`` and each member's seed;
    ``bag_fraction`` < 1: each member evolves on ``bagged_indices`` of the training networks;
    ``validation`` = (stats, mIoUs) is only reported, for each member and the ensemble."""
    if members < 1:
        raise SegnasError(f"discover: members must be at least 1, got {members}")
    check_bag_fraction(bag_fraction)
    discover_member = discover_member or run_discovery
    found = []
    for j, member_seed in enumerate(member_seeds(seed, members)):
        bag = bagged_indices(len(target_mious), bag_fraction, member_seed)
        found.append(discover_member([stats_per_arch[i] for i in bag], [target_mious[i] for i in bag],
                                     seed=member_seed, validation=validation, **options))
        if on_member is not None:
            on_member(j, found[-1])
    settings = {"members": members, "seed": seed, "member_seeds": member_seeds(seed, members),
                **({"bag_fraction": bag_fraction} if bag_fraction < 1.0 else {}),
                "architectures": len(target_mious), **{k: v for k, v in found[0].settings.items()
                                                        if k not in ("seed", "architectures", "cross_validation")}}
    return ProxyEnsemble.from_members(found, stats_per_arch, target_mious, validation=validation, settings=settings)


def as_proxy(expression: str | Path | DiscoveredProxy | ProxyEnsemble) -> DiscoveredProxy | ProxyEnsemble:
    """A proxy from itself, a saved JSON file (one expression or an ensemble), or an expression string."""
    if isinstance(expression, (DiscoveredProxy, ProxyEnsemble)):
        return expression
    if isinstance(expression, Path) or (isinstance(expression, str) and expression.strip().endswith(".json")):
        return load_proxy(expression)
    if isinstance(expression, str):
        return DiscoveredProxy.from_expression(expression)
    raise SegnasError(f"proxy expression: expected a string, a .json path, a DiscoveredProxy or a ProxyEnsemble, "
                      f"got {type(expression).__name__}")



def score_expression(expression: str | Path | DiscoveredProxy | ProxyEnsemble, net: nn.Module,
                     batches: Sequence[Batch], *, seed: int = 0, ignore_index: int = 255, chunk_size: int = 4) -> float:
    """Score ``net`` with an expression (string, saved JSON path, ``DiscoveredProxy`` or ``ProxyEnsemble``)."""
    return as_proxy(expression).score_net(net, batches, seed=seed, ignore_index=ignore_index, chunk_size=chunk_size)



def register_expression(name: str, expression: str | Path | DiscoveredProxy | ProxyEnsemble, *,
                        max_weights: int | None = 4096,
                        max_activations: int | None = 256) -> DiscoveredProxy | ProxyEnsemble:
    """Register an expression as zero-cost proxy ``name`` so that ``segnas.proxies.score(name, ...)``
    uses it; ``PROXIES.pop(name)`` removes it again."""
    found = as_proxy(expression)
    if name in PROXIES:
        raise SegnasError(f"proxy: name {name!r} is already registered")

    @proxy(name)
    def expression_proxy(net: nn.Module, batches: list[Batch], settings: ProxySettings) -> float:
        return found.evaluate(collect_stats(net, batches, settings, max_weights, max_activations))

    return found
