"""SasWOT proxy discovery: evolve a proxy graph (``segnas.proxies.graph``) by strongly typed genetic
programming (DEAP) so that its scores rank a set of architectures like their trained mIoU.

``layer_stats`` measures an untrained network once (weights, loss gradients and output activations
of every convolution/linear layer, sampled deterministically); ``discover`` evolves expressions over
those statistics, maximizing Kendall's τ-b with the target mIoUs; the result, a ``DiscoveredProxy``,
is a readable expression that saves to JSON, reloads, and scores new networks.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from deap import algorithms, base, gp, tools
from torch import nn

from segnas.errors import SegnasError
from segnas.metrics.ranking import tau_rho
from segnas.proxies import run_isolated
from segnas.proxies.common import (Batch, ProxySettings, chunks, forward_logits, freeze_batch_stats, pixel_ce,
                                   valid_pixels, weight_layers)
from segnas.proxies.graph import (NetStats, canonical_extras, evaluate_inits, pack_inits, parse, primitive_set,
                                  uses_data)
from segnas.utils import atomic_write_text, json_float

log = logging.getLogger(__name__)

__all__ = ["DiscoveredProxy", "collect_stats", "discover", "layer_stats"]

FORMAT = "segnas.proxy_expression"
#: Fitness of an individual whose values are constant, non-finite or unrankable (below any τ).
PENALTY = -2.0
#: Bumped whenever the same inputs, settings and seed evolve another expression, so that cached
#: discoveries (``benchmarks/proxies_camvid.py``) are not reused across such a change.
#: 2: parsimony, and a crossover that is the same in every process (``_cx_one_point``).
ALGORITHM_VERSION = 2
LayerStats = list[dict[str, torch.Tensor]]


# ---------------------------------------------------------------- statistics

def _sample_index(n: int, k: int | None, seed: int, salt: int) -> torch.Tensor | None:
    """``k`` sorted positions in ``range(n)`` drawn for (seed, salt); None = all positions."""
    if k is None or n <= k:
        return None
    g = torch.Generator().manual_seed((seed * 1_000_003 + salt) % (2 ** 62))
    return torch.randint(n, (k,), generator=g).sort().values


def _sampled(flat: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """Rows of ``flat`` (images × positions) at positions ``idx`` (None = all), as one flat CPU float tensor."""
    return (flat if idx is None else flat[:, idx.to(flat.device)]).float().cpu().reshape(-1)


def collect_stats(net: nn.Module, batches: Sequence[Batch], settings: ProxySettings, max_weights: int | None,
             max_activations: int | None) -> LayerStats:
    """Statistics of ``net`` (a copy the caller may mutate) on prepared ``batches``."""
    layers = weight_layers(net)
    acts: list[list[torch.Tensor]] = [[] for _ in layers]
    act_grads: list[list[torch.Tensor | None]] = [[] for _ in layers]  # same positions as acts
    resolutions: list[list[float]] = [[] for _ in layers]
    pixels = [1]  # of the images being forwarded
    sizes: list[list[int]] = [[] for _ in layers]
    index: dict[tuple[int, int], torch.Tensor | None] = {}
    recording = [False]

    def hook(i: int) -> Callable:
        def record(module: nn.Module, args: tuple, out: object) -> None:
            if not recording[0] or not isinstance(out, torch.Tensor):
                return
            flat = out.detach().flatten(1)
            n = flat.shape[1]
            if (i, n) not in index:
                index[(i, n)] = _sample_index(n, max_activations, settings.seed, 2 * i + 1)
            idx = index[(i, n)]
            acts[i].append(_sampled(flat, idx))
            resolutions[i].append((out[0, 0].numel() if out.dim() > 2 else 1) / pixels[0])
            sizes[i].extend([n] * flat.shape[0])
            slot = len(act_grads[i])
            act_grads[i].append(None)  # stays None (zeros) where the output does not reach the loss
            if out.requires_grad:
                def keep(grad: torch.Tensor) -> None:
                    act_grads[i][slot] = _sampled(grad.detach().flatten(1), idx)
                out.register_hook(keep)
        return record

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(layers)]
    total = max(valid_pixels(batches, settings.ignore_index), 1)
    try:
        for images, masks in batches:
            recording[0] = False
            freeze_batch_stats(net, images)
            recording[0] = True
            for imgs, msks in chunks(images, masks, settings.chunk_size):
                pixels[0] = imgs.shape[-2] * imgs.shape[-1]
                loss = pixel_ce(forward_logits(net, imgs), msks, settings.ignore_index).sum() / total
                if loss.requires_grad:
                    loss.backward()
    finally:
        for h in handles:
            h.remove()
    out: LayerStats = []
    for i, m in enumerate(layers):
        w = m.weight.detach().reshape(-1)
        g = m.weight.grad.detach().reshape(-1) if m.weight.grad is not None else torch.zeros_like(w)
        idx = _sample_index(w.numel(), max_weights, settings.seed, 2 * i)
        if idx is not None:
            w, g = w[idx.to(w.device)], g[idx.to(g.device)]
        grads = [torch.zeros_like(a) if d is None else d for a, d in zip(acts[i], act_grads[i])]
        out.append({
            "W": w.float().cpu().clone(), "G": g.float().cpu().clone(),
            "A": torch.cat(acts[i]) if acts[i] else torch.zeros(0),
            "GA": torch.cat(grads) if grads else torch.zeros(0),
            "numel_w": torch.tensor(float(m.weight.numel())),
            "numel_a": torch.tensor(float(np.mean(sizes[i])) if sizes[i] else 0.0),
            "R": torch.tensor(float(np.mean(resolutions[i])) if resolutions[i] else 0.0),
        })
    return out


def layer_stats(net: nn.Module, batches: Sequence[Batch], *, seed: int = 0, ignore_index: int = 255,
                chunk_size: int = 4, max_weights: int | None = 4096,
                max_activations: int | None = 256) -> LayerStats:
    """Per-layer statistics of ``net`` (untrained; left untouched) on ``batches`` of (images, masks):
    for every convolution/linear layer, in ``net.modules()`` order, a dict with ``W`` (weights),
    ``G`` (gradient of the mean per-pixel cross-entropy over all labelled pixels), both flattened and
    sampled at the same ≤ ``max_weights`` positions; ``A`` (output activations, ≤ ``max_activations``
    fixed positions per image, all images concatenated) and ``GA`` (that loss's gradient with respect
    to them, at the same positions); ``R`` (the output's spatial positions over the image's pixels);
    ``numel_w`` / ``numel_a`` (the true counts: weights, activations per image). BatchNorm and chunking as in ``segnas.proxies.common``;
    deterministic for a seed (the seed picks the sampled positions). ``None`` = no sampling."""
    for name, k in (("max_weights", max_weights), ("max_activations", max_activations)):
        if k is not None and (not isinstance(k, int) or k < 1):
            raise SegnasError(f"layer_stats: {name} must be a positive integer or None, got {k!r}")
    return run_isolated(lambda copy, prepared, settings: collect_stats(copy, prepared, settings, max_weights,
                                                                   max_activations),
                        net, batches, seed=seed, ignore_index=ignore_index, chunk_size=chunk_size)


# ---------------------------------------------------------------- fitness

class _Fitness(base.Fitness):
    weights = (1.0,)


class _Individual(gp.PrimitiveTree):
    def __init__(self, content: Sequence) -> None:
        super().__init__(content)
        self.fitness = _Fitness()


# ---------------------------------------------------------------- result

class SavedProxy:
    """What a discovered expression and an ensemble of them share: scoring a network from its
    statistics, and saving to / loading from JSON. Subclasses define ``evaluate``, ``to_dict`` and
    ``from_dict``."""

    def evaluate(self, stats: NetStats) -> float:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: Any) -> "SavedProxy":
        raise NotImplementedError

    def score_net(self, net: nn.Module, batches: Sequence[Batch], *, seed: int = 0, ignore_index: int = 255,
                  chunk_size: int = 4, max_weights: int | None = 4096, max_activations: int | None = 256) -> float:
        """The proxy value of ``net`` (``layer_stats`` then ``evaluate``)."""
        return self.evaluate(layer_stats(net, batches, seed=seed, ignore_index=ignore_index, chunk_size=chunk_size,
                                         max_weights=max_weights, max_activations=max_activations))

    def save(self, path: str | Path) -> None:
        """Write JSON atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "SavedProxy":
        return read_proxy_file(path, lambda data: cls)


def read_proxy_file(path: str | Path, kind: Callable[[Any], type[SavedProxy]]) -> SavedProxy:
    """A saved proxy, parsed by the class ``kind(data)`` picks for the file's JSON; errors name the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SegnasError(f"{path}: cannot read a proxy file ({exc})") from None
    try:
        return kind(data).from_dict(data)
    except SegnasError as exc:
        raise SegnasError(f"{path}: {exc}") from None


@dataclass
class DiscoveredProxy(SavedProxy):
    """An evolved (or hand-written) proxy expression with how it was found.

    ``history`` has one record per generation: best / mean τ, the best expression, counts."""

    expression: str
    train_tau: float | None = None
    train_rho: float | None = None
    val_tau: float | None = None
    val_rho: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tree = parse(self.expression)
        self.expression = str(self.tree)

    @classmethod
    def from_expression(cls, expression: str) -> "DiscoveredProxy":
        return cls(expression=expression)

    def evaluate(self, stats: NetStats) -> float:
        """The proxy value on one network's ``layer_stats`` (higher = predicted better); given the
        statistics of several initializations, the mean of their values."""
        return evaluate_inits(self.tree, pack_inits(stats))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": 1, "expression": self.expression, "train_tau": self.train_tau,
                "train_rho": self.train_rho, "val_tau": self.val_tau, "val_rho": self.val_rho,
                "settings": self.settings, "history": self.history}

    @classmethod
    def from_dict(cls, data: Any) -> "DiscoveredProxy":
        """The inverse of ``to_dict``."""
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("expression"), str):
            raise SegnasError(f"not a {FORMAT} file (expected keys format, expression)")
        return cls(expression=data["expression"], train_tau=data.get("train_tau"), train_rho=data.get("train_rho"),
                   val_tau=data.get("val_tau"), val_rho=data.get("val_rho"),
                   history=list(data.get("history") or []), settings=dict(data.get("settings") or {}))


# ---------------------------------------------------------------- evolution

def _generate(pset: gp.PrimitiveSetTyped, min_: int, max_: int, type_: type | None = None) -> list:
    """Half-and-half generation; a whole tree (root type) is at least 2 deep so that it can read data."""
    if type_ is None or type_ is pset.ret:
        min_, max_ = max(min_, 2), max(max_, 2)
    return half_and_half(pset, min_, max_, type_)


def half_and_half(pset: gp.PrimitiveSetTyped, min_: int, max_: int, type_: type | None = None) -> list:
    """DEAP's ``gp.genHalfAndHalf`` (the same random draws, so the same trees for a seed), except
    that where a branch must end on a type without terminals (a whole-network value, with network
    ops) it ends on a primitive that does not take that type (``layer_sum``/``layer_mean``)."""
    grow = random.choice((True, False))  # genGrow is DEAP's first choice, genFull its second
    height = random.randint(min_, max_)
    expr: list = []
    stack = [(0, pset.ret if type_ is None else type_)]
    while stack:
        depth, t = stack.pop()
        # >= (DEAP: ==) ends the branches below such a primitive as soon as they can end
        if depth >= height or (grow and depth >= min_ and random.random() < pset.terminalRatio):
            if pset.terminals[t]:
                expr.append(random.choice(pset.terminals[t]))
                continue
            prim = random.choice([p for p in pset.primitives[t] if t not in p.args])
        else:
            prim = random.choice(pset.primitives[t])
        expr.append(prim)
        stack.extend((depth + 1, arg) for arg in reversed(prim.args))
    return expr


def _cx_one_point(ind1: gp.PrimitiveTree, ind2: gp.PrimitiveTree) -> tuple[gp.PrimitiveTree, gp.PrimitiveTree]:
    """DEAP's typed one-point crossover (swap two subtrees of one node type), with the shared types
    in a fixed order: ``gp.cxOnePoint`` draws from a set of type classes, whose order follows their
    memory addresses, so the same seed evolved differently in each process."""
    if len(ind1) < 2 or len(ind2) < 2:
        return ind1, ind2
    types1: dict[type, list[int]] = defaultdict(list)
    types2: dict[type, list[int]] = defaultdict(list)
    for idx, node in enumerate(ind1[1:], 1):
        types1[node.ret].append(idx)
    for idx, node in enumerate(ind2[1:], 1):
        types2[node.ret].append(idx)
    common = sorted((t for t in types1 if t in types2), key=lambda t: t.__name__)
    if common:
        type_ = random.choice(common)
        slice1 = ind1.searchSubtree(random.choice(types1[type_]))
        slice2 = ind2.searchSubtree(random.choice(types2[type_]))
        ind1[slice1], ind2[slice2] = ind2[slice2], ind1[slice1]
    return ind1, ind2


def _check_inputs(stats_per_arch: Sequence, target_mious: Sequence[float], what: str) -> list[float]:
    if len(stats_per_arch) != len(target_mious):
        raise SegnasError(f"discover: {what} has {len(stats_per_arch)} statistics but {len(target_mious)} "
                          "target mIoUs; expected one per architecture")
    targets = [float(t) for t in target_mious]
    if not all(math.isfinite(t) for t in targets):
        raise SegnasError(f"discover: {what} target mIoUs must be finite numbers")
    return targets


def discover(stats_per_arch: Sequence[NetStats], target_mious: Sequence[float], *,
             population: int = 64, generations: int = 20, seed: int = 0, crossover: float = 0.5,
             mutation: float = 0.2, tournament: int = 3, elite: int = 2, max_height: int = 8,
             init_height: tuple[int, int] = (2, 4), parsimony: float = 0.0,
             validation: tuple[Sequence, Sequence[float]] | None = None, cache_size: int = 2048,
             extra_terminals: Sequence[str] = (), network_ops: bool = False, callback: Callable[[dict[str, Any]], None] | None = None) -> DiscoveredProxy:
    """Evolve a proxy expression maximizing Kendall τ-b between its values on ``stats_per_arch``
    (``layer_stats`` of each architecture, or a list of them for several initializations: then an
    expression's value is its mean over them) and ``target_mious``.

    Per generation: ``elite`` best unique individuals survive unchanged (hall of fame); the rest are
    tournament-selected, crossed over (one point, typed) with probability ``crossover`` and mutated
    with probability ``mutation`` (uniform subtree, node replacement or shrink, uniformly); trees
    higher than ``max_height`` are rejected (``gp.staticLimit``); duplicates and trees reading no
    statistic are replaced by fresh random trees; constant or unrankable ones get fitness −2.
    Selection uses τ − ``parsimony`` × (nodes in the tree), so a larger tree must rank better to win
    (``segnas.proxies.cross_validation`` picks ``parsimony`` on the training split); ties prefer the
    smaller tree. History and results report the plain τ. Deterministic for a seed, in any process
    (Python's ``random`` state is restored). ``extra_terminals`` (names in
    ``segnas.proxies.graph.EXTRA_TERMINALS``: ``GA``, ``R``) lets trees read those statistics too;
    ``network_ops`` lets them combine whole-network values (``layer_sum``/``layer_mean`` results).
    ``validation`` = (stats, mIoUs) is scored with the best tree each generation (never selects)."""
    targets = _check_inputs(stats_per_arch, target_mious, "the training split")
    if len(targets) < 3:
        raise SegnasError(f"discover: needs at least 3 architectures, got {len(targets)}")
    if len(set(targets)) < 2:
        raise SegnasError("discover: all target mIoUs are equal; nothing to rank")
    if population < 2 or generations < 0 or tournament < 1 or not 0 <= elite < population:
        raise SegnasError(f"discover: expected population ≥ 2, generations ≥ 0, tournament ≥ 1 and "
                          f"0 ≤ elite < population; got {population}, {generations}, {tournament}, {elite}")
    if not (math.isfinite(parsimony) and parsimony >= 0):
        raise SegnasError(f"discover: parsimony must be a non-negative number, got {parsimony!r}")
    if not (0 <= crossover <= 1 and 0 <= mutation <= 1):
        raise SegnasError(f"discover: crossover and mutation are probabilities; got {crossover}, {mutation}")
    lo, hi = init_height
    if not 2 <= lo <= hi <= max_height:
        raise SegnasError(f"discover: expected 2 ≤ init_height[0] ≤ init_height[1] ≤ max_height, got "
                          f"{init_height} and {max_height}")
    train = [pack_inits(s, cache_size) for s in stats_per_arch]
    extras = canonical_extras(extra_terminals)
    lacking = [e for e in extras if any(getattr(p, e) is None for packs in train for p in packs)]
    if lacking:
        raise SegnasError(f"discover: extra terminal {lacking[0]!r} needs statistics that hold it; measure them "
                          "again with layer_stats")
    pset = primitive_set(extras, network_ops)
    val = None
    if validation is not None:
        val_stats, val_targets = validation
        val = ([pack_inits(s) for s in val_stats], _check_inputs(val_stats, val_targets, "the validation split"))
    settings = {"population": population, "generations": generations, "seed": seed, "crossover": crossover,
                "mutation": mutation, "tournament": tournament, "elite": elite, "max_height": max_height,
                "init_height": list(init_height), "parsimony": parsimony, "architectures": len(targets)}
    if extras:
        settings["extra_terminals"] = list(extras)
    if network_ops:
        settings["network_ops"] = True

    toolbox = base.Toolbox()
    toolbox.register("expr", _generate, pset, lo, hi)
    toolbox.register("expr_mut", _generate, min_=0, max_=2)
    toolbox.register("mate", _cx_one_point)
    toolbox.register("mutate", lambda ind: random.choice((
        lambda: gp.mutUniform(ind, toolbox.expr_mut, pset),
        lambda: gp.mutNodeReplacement(ind, pset),
        lambda: gp.mutShrink(ind)))())
    limit = gp.staticLimit(key=lambda ind: ind.height, max_value=max_height)
    toolbox.decorate("mate", limit)
    toolbox.decorate("mutate", limit)

    tau_cache: dict[str, float] = {}
    counts = {"evaluated": 0}

    def train_tau(ind: gp.PrimitiveTree) -> float:
        """Plain τ on the training split (PENALTY when unrankable), cached by expression."""
        key = str(ind)
        if key not in tau_cache:
            counts["evaluated"] += 1
            tau, _ = tau_rho([evaluate_inits(ind, p) for p in train], targets)
            tau_cache[key] = tau if math.isfinite(tau) else PENALTY
        return tau_cache[key]

    def fitness(ind: gp.PrimitiveTree) -> float:
        tau = train_tau(ind)
        return tau if tau == PENALTY else tau - parsimony * len(ind)

    def fresh(seen: set[str]) -> _Individual:
        for _ in range(50):
            ind = _Individual(toolbox.expr())
            if str(ind) not in seen and uses_data(ind):
                return ind
        return ind

    def unique(pop: list[_Individual]) -> list[_Individual]:
        seen: set[str] = set()
        out = []
        for ind in pop:
            if str(ind) in seen or not uses_data(ind):
                ind = fresh(seen)
            seen.add(str(ind))
            out.append(ind)
        return out

    def order(ind: _Individual) -> tuple:
        return (-ind.fitness.values[0], len(ind), str(ind))

    def record(gen: int, pop: list[_Individual], best: _Individual) -> dict[str, Any]:
        taus = [train_tau(ind) for ind in pop if train_tau(ind) > PENALTY]
        rec = {"generation": gen, "best_tau": train_tau(best), "best_fitness": best.fitness.values[0],
               "population_best_tau": max(taus, default=None),
               "mean_tau": float(np.mean(taus)) if taus else None, "valid": len(taus),
               "evaluated": counts["evaluated"], "best": str(best)}
        if val is not None:
            rec["val_tau"] = json_float(tau_rho([evaluate_inits(best, p) for p in val[0]], val[1])[0])
        log.info("proxy discovery: generation %d best τ %.4f (%d valid) %s", gen, rec["best_tau"], len(taus), best)
        if callback is not None:
            callback(rec)
        return rec

    state = random.getstate()
    random.seed(seed)
    try:
        pop = unique([_Individual(toolbox.expr()) for _ in range(population)])
        for ind in pop:
            ind.fitness.values = (fitness(ind),)
        hall = sorted(pop, key=order)[:max(elite, 1)]
        history = [record(0, pop, hall[0])]
        for gen in range(1, generations + 1):
            parents = tools.selTournament(pop, population - elite, tournsize=tournament)
            offspring = algorithms.varAnd(parents, toolbox, crossover, mutation)
            pop = unique([copy.deepcopy(ind) for ind in hall[:elite]] + offspring)
            for ind in pop:
                if not ind.fitness.valid:
                    ind.fitness.values = (fitness(ind),)
            merged = {str(ind): ind for ind in sorted(hall + pop, key=order)[::-1]}
            hall = sorted(merged.values(), key=order)[:max(elite, 1)]
            history.append(record(gen, pop, hall[0]))
    finally:
        random.setstate(state)

    best = hall[0]
    tau, rho = tau_rho([evaluate_inits(best, p) for p in train], targets)
    result = DiscoveredProxy(expression=str(best), train_tau=json_float(tau), train_rho=json_float(rho),
                             history=history, settings=settings)
    if val is not None:
        vt, vr = tau_rho([evaluate_inits(best, p) for p in val[0]], val[1])
        result.val_tau, result.val_rho = json_float(vt), json_float(vr)
    return result


