"""Rank aggregation: several registered proxies combined into one by their ranks over a population
of networks (AZ-NAS, Lee & Ham, CVPR 2024; reference code cvlab-yonsei/AZ-NAS,
``evolution_search_az.py``).

Each component proxy ranks the m networks (``ranks``: average ranks 1 … m, m = best, ties share
their mean rank, NaN counts as −inf: last, tied with any −inf); the aggregate of network j is

- ``kind="log"`` (AZ-NAS): Σ_k log(rank_k(j) / m) — a network must rank well on every proxy, since
  one bad rank costs much more than a good rank gains;
- ``kind="mean"``: mean_k rank_k(j) / m — the plain mean rank, as a fraction of the population.

Higher is better for both. A component whose docstring says lower is better is named in
``lower_is_better`` (every registered proxy is higher-is-better today).

A rank only exists within a population, so an aggregate is not a function of one network and is
not in ``PROXIES``: ``segnas.proxies.score`` cannot score it. It is used by name at the population
level instead — ``score_population(name, nets, batches)`` takes either kind of name — or in two
steps where networks arrive one by one (SasWOT's search): ``RankAggregate.component_scores`` when a
network is scored, ``RankAggregate.combine`` over the scored population whenever networks are
compared (AZ-NAS re-ranks all networks scored so far after every new one). Names: those of
``AGGREGATES`` (``az_nas``: AZ-NAS's four proxies, ``kind="log"``), ``register_aggregate`` for
more, or the inline forms ``rank_log(a,b,...)`` and ``rank_mean(a,b,...)`` over registered proxies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Sequence, get_args

import numpy as np
from torch import nn

from segnas.errors import SegnasError
from segnas.proxies import PROXIES, score, score_all
from segnas.proxies.az_nas import AZ_PROXIES
from segnas.proxies.common import Batch

RankKind = Literal["log", "mean"]
INLINE = re.compile(r"^rank_(log|mean)\((.+)\)$")

__all__ = ["AGGREGATES", "RankAggregate", "RankKind", "aggregate_ranks", "is_aggregate", "ranks",
           "register_aggregate", "resolve_aggregate", "score_population"]


def ranks(values: Sequence[float], *, lower_is_better: bool = False) -> np.ndarray:
    """Average ranks 1 … m of ``values`` (m = the best; ties share their mean rank); NaN ranks
    below every value, tied with −inf (and with +inf when ``lower_is_better``)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise SegnasError(f"ranks: expected a non-empty list of numbers, got shape {v.shape}")
    v = -v if lower_is_better else v.copy()
    v[np.isnan(v)] = -np.inf
    from scipy.stats import rankdata  # (scipy.stats takes half a second to import: only when ranking)

    return rankdata(v, method="average")


def _check_kind(kind: str) -> None:
    if kind not in get_args(RankKind):
        raise SegnasError(f"rank aggregation: kind must be one of {', '.join(get_args(RankKind))}, got {kind!r}")


def aggregate_ranks(scores: Mapping[str, Sequence[float]], kind: RankKind = "log", *,
                    lower_is_better: Iterable[str] = ()) -> list[float]:
    """One value per network from each proxy's scores of the same m networks (``scores[name][j]`` =
    network j's score): Σ log(rank/m) (``log``) or the mean of rank/m (``mean``); higher = better."""
    _check_kind(kind)
    lower = set(lower_is_better)
    if not scores:
        raise SegnasError("rank aggregation: give the scores of at least one proxy")
    if lower - set(scores):
        raise SegnasError(f"rank aggregation: lower_is_better names {sorted(lower - set(scores))} have no scores")
    lengths = {name: len(values) for name, values in scores.items()}
    if len(set(lengths.values())) != 1:
        raise SegnasError(f"rank aggregation: every proxy must score the same networks, got lengths {lengths}")
    m = next(iter(lengths.values()))
    fractions = np.stack([ranks(values, lower_is_better=name in lower) / m for name, values in scores.items()])
    combined = np.log(fractions).sum(0) if kind == "log" else fractions.mean(0)
    return [float(v) for v in combined]


@dataclass(frozen=True)
class RankAggregate:
    """Registered proxies ``components`` combined by rank (``aggregate_ranks``) over a population."""

    components: tuple[str, ...]
    kind: RankKind = "log"
    lower_is_better: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        _check_kind(self.kind)
        if not self.components or len(set(self.components)) != len(self.components):
            raise SegnasError(f"rank aggregation: expected distinct proxy names, got {list(self.components)}")
        unknown = [c for c in self.components if c not in PROXIES]
        if unknown:
            raise SegnasError(f"rank aggregation: unknown proxy {unknown[0]!r}; choose from "
                              f"{', '.join(sorted(PROXIES))}")
        if not self.lower_is_better <= set(self.components):
            raise SegnasError(f"rank aggregation: lower_is_better {sorted(self.lower_is_better)} are not components")

    @property
    def name(self) -> str:
        """The inline name (``rank_log(a,b)``), which ``resolve_aggregate`` reads back."""
        return f"rank_{self.kind}({','.join(self.components)})"

    def component_scores(self, net: nn.Module, batches: Sequence[Batch], *, seed: int = 0, ignore_index: int = 255,
                         chunk_size: int = 4) -> dict[str, float]:
        """Every component's score of one network (``segnas.proxies.score_all``): what a population
        record must keep for ``combine``."""
        return score_all(self.components, net, batches, seed=seed, ignore_index=ignore_index, chunk_size=chunk_size)

    def combine(self, population: Sequence[Mapping[str, float]]) -> list[float]:
        """The aggregate of each network of ``population`` (one ``component_scores`` dict each)."""
        if not population:
            raise SegnasError("rank aggregation: the population is empty")
        missing = [c for c in self.components if any(c not in p for p in population)]
        if missing:
            raise SegnasError(f"rank aggregation: a network has no score for {missing[0]!r}")
        return aggregate_ranks({c: [float(p[c]) for p in population] for c in self.components}, self.kind,
                               lower_is_better=self.lower_is_better)

    def score_population(self, nets: Iterable[nn.Module], batches: Sequence[Batch], *, seed: int = 0,
                         ignore_index: int = 255, chunk_size: int = 4) -> list[float]:
        """The aggregate of each of ``nets``, ranked among themselves."""
        return self.combine([self.component_scores(n, batches, seed=seed, ignore_index=ignore_index,
                                                   chunk_size=chunk_size) for n in nets])


#: Named aggregates; ``az_nas`` is AZ-NAS's (its four proxies, Σ log(rank/m)).
AGGREGATES: dict[str, RankAggregate] = {"az_nas": RankAggregate(AZ_PROXIES, "log")}


def register_aggregate(name: str, components: Sequence[str], kind: RankKind = "log", *,
                       lower_is_better: Iterable[str] = ()) -> RankAggregate:
    """Register ``components`` combined by ``kind`` under ``name`` (not a proxy name already)."""
    if name in AGGREGATES or name in PROXIES or INLINE.match(name):
        raise SegnasError(f"rank aggregation: name {name!r} is already taken or reserved")
    AGGREGATES[name] = RankAggregate(tuple(components), kind, frozenset(lower_is_better))
    return AGGREGATES[name]


def resolve_aggregate(name: str) -> RankAggregate | None:
    """The aggregate a name stands for (registered, or ``rank_log(a,b)`` / ``rank_mean(a,b)``);
    None for any other name."""
    if name in AGGREGATES:
        return AGGREGATES[name]
    found = INLINE.match(name.replace(" ", ""))
    if found is None:
        return None
    return RankAggregate(tuple(found.group(2).split(",")), found.group(1))  # type: ignore[arg-type]


def is_aggregate(name: str) -> bool:
    """Whether ``name`` is a rank aggregate (a population-level name)."""
    return resolve_aggregate(name) is not None


def score_population(name: str, nets: Iterable[nn.Module], batches: Sequence[Batch], *, seed: int = 0,
                     ignore_index: int = 255, chunk_size: int = 4) -> list[float]:
    """Scores of ``nets`` by ``name``: a registered proxy (each network alone) or a rank aggregate
    (the networks ranked among themselves); higher = better either way."""
    found = resolve_aggregate(name)
    if found is not None:
        return found.score_population(nets, batches, seed=seed, ignore_index=ignore_index, chunk_size=chunk_size)
    if name not in PROXIES:
        raise SegnasError(f"proxy: unknown name {name!r}; choose a proxy ({', '.join(sorted(PROXIES))}), an "
                          f"aggregate ({', '.join(sorted(AGGREGATES))}) or rank_log(...)/rank_mean(...)")
    return [score(name, n, batches, seed=seed, ignore_index=ignore_index, chunk_size=chunk_size) for n in nets]
