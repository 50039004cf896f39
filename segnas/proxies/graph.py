"""Proxy graphs (SasWOT): a zero-cost proxy written as a strongly typed expression tree over the
per-layer statistics of an untrained network, evaluated for all layers at once.

Types keep every tree valid. ``WeightTensor`` values have a layer's weight shape (terminals ``W``
and ``G``, the weights and their loss gradients, sampled at the same positions), so they mix
elementwise with each other; ``ActTensor`` values have the shape of a layer's sampled output
activations (terminal ``A``) and mix only with themselves; both mix with a ``LayerScalar`` (one
number per layer, broadcast) and reduce to one. ``LayerScalar`` terminals are ``nW`` (weights in the
layer), ``nA`` (output activations per image) and the constants 0.5, 1.0, 2.0. The root,
``layer_sum`` or ``layer_mean``, turns the per-layer scalar into the proxy value. Primitive sets
built with extra terminals (``primitive_set``) may also read ``GA`` (``ActTensor``: the loss
gradient with respect to the sampled activations) and ``R`` (``LayerScalar``: the output's spatial
positions as a fraction of the input image's pixels, i.e. the layer's resolution), and sets built
with ``network_ops`` combine whole-network values above the root too: ``<op>_p`` for the unary
``NETWORK_UNARY`` and every binary op (e.g. ``div_p(layer_mean(...), layer_sum(R))``).

Primitive names carry their type: ``<op>_w`` on weight-shaped tensors, ``<op>_a`` on activations,
no suffix on layer scalars. Unary: abs, neg, log (log(|x|+ε)), sqrt (√|x|), square, sigmoid, tanh,
exp (argument clamped at 50), sign, relu, and per layer minmax (to [0, 1]) and zscore (tensors
only). Binary: add, sub, mul, div (protected: 0 where the divisor is 0). Tensor with scalar:
scale, shift. Reductions per layer, tensor → scalar: mean, std, min, max, sum, l1, l2 — sum, l1 and
l2 are estimated from the samples for the full tensor (mean × true count), so they measure size as
well. Every operation maps NaN to 0 and clamps to ±1e30: any tree gives a finite value.

The layers of one network are packed into flat float64 tensors with a layer index per element
(``pack``), so one torch call serves all layers.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from deap import gp

from segnas.errors import SegnasError

#: Values are clamped to ±BIG after every operation.
BIG = 1e30
EPS = 1e-20
#: Keys of one layer's statistics (see ``segnas.proxies.discovery.layer_stats``).
STAT_KEYS = ("W", "G", "A", "numel_w", "numel_a")


class WeightTensor:
    """Type tag: a tensor of a layer's (sampled) weight shape."""


class ActTensor:
    """Type tag: a tensor of a layer's (sampled) output-activation shape."""


class LayerScalar:
    """Type tag: one number per layer."""


class ProxyValue:
    """Type tag: the proxy value (the root)."""


@dataclass
class PackedStats:
    """One network's per-layer statistics, flattened: ``W``/``G`` share layer index ``seg_w``,
    ``A`` (and ``GA`` when measured, else None) has ``seg_a``; ``numel_w``/``numel_a`` are the true
    per-layer counts and ``R`` (None when not measured) the resolutions (float64, length L).
    ``cache`` memoizes per-layer scalar subtrees by their text (bounded, least recently used)."""

    W: torch.Tensor
    G: torch.Tensor
    A: torch.Tensor
    seg_w: torch.Tensor
    seg_a: torch.Tensor
    count_w: torch.Tensor
    count_a: torch.Tensor
    numel_w: torch.Tensor
    numel_a: torch.Tensor
    GA: torch.Tensor | None = None
    R: torch.Tensor | None = None
    cache_size: int = 0
    cache: OrderedDict = field(default_factory=OrderedDict, repr=False)

    @property
    def layers(self) -> int:
        return int(self.numel_w.numel())


def pack(stats: Sequence[Mapping[str, torch.Tensor]], cache_size: int = 0) -> PackedStats:
    """Flatten a network's per-layer statistics (a list of dicts with ``STAT_KEYS``) for evaluation."""
    if not stats:
        raise SegnasError("proxy graph: the network has no convolution or linear layer to score")
    ws, gs, acts, act_grads, seg_w, seg_a, numel_w, numel_a = [], [], [], [], [], [], [], []
    for key in EXTRA_TERMINALS:
        having = sum(key in layer for layer in stats)
        if having not in (0, len(stats)):
            raise SegnasError(f"proxy graph: {having} of {len(stats)} layers have {key!r} statistics; "
                              "expected all or none")
    with_grads, with_res = "GA" in stats[0], "R" in stats[0]
    for i, layer in enumerate(stats):
        missing = [k for k in STAT_KEYS if k not in layer]
        if missing:
            raise SegnasError(f"proxy graph: layer {i} statistics lack {missing[0]!r}; expected keys "
                              f"{', '.join(STAT_KEYS)}")
        w = layer["W"].detach().reshape(-1).double().cpu()
        g = layer["G"].detach().reshape(-1).double().cpu()
        a = layer["A"].detach().reshape(-1).double().cpu()
        if w.numel() == 0 or w.shape != g.shape:
            raise SegnasError(f"proxy graph: layer {i} has W {tuple(w.shape)} and G {tuple(g.shape)}; "
                              "expected equal non-empty shapes")
        da = layer["GA"].detach().reshape(-1).double().cpu() if with_grads else None
        if da is not None and da.shape != a.shape:
            raise SegnasError(f"proxy graph: layer {i} has A {tuple(a.shape)} and GA {tuple(da.shape)}; "
                              "expected equal shapes")
        if a.numel() == 0:
            a = torch.zeros(1, dtype=torch.float64)
            da = None if da is None else torch.zeros(1, dtype=torch.float64)
        act_grads.append(da)
        ws.append(w)
        gs.append(g)
        acts.append(a)
        seg_w.append(torch.full((w.numel(),), i, dtype=torch.int64))
        seg_a.append(torch.full((a.numel(),), i, dtype=torch.int64))
        numel_w.append(float(layer["numel_w"]))
        numel_a.append(float(layer["numel_a"]))
    sw, sa = torch.cat(seg_w), torch.cat(seg_a)
    n = len(stats)
    return PackedStats(
        W=_safe(torch.cat(ws)), G=_safe(torch.cat(gs)), A=_safe(torch.cat(acts)), seg_w=sw, seg_a=sa,
        count_w=torch.bincount(sw, minlength=n).double(), count_a=torch.bincount(sa, minlength=n).double(),
        numel_w=torch.tensor(numel_w, dtype=torch.float64), numel_a=torch.tensor(numel_a, dtype=torch.float64),
        GA=_safe(torch.cat(act_grads)) if with_grads else None,
        R=torch.tensor([float(layer["R"]) for layer in stats], dtype=torch.float64) if with_res else None,
        cache_size=cache_size)


#: One network's statistics: its ``layer_stats`` (a list of per-layer dicts) or them packed; or a
#: list of either, one per weight initialization, whose proxy values are averaged.
LayerStatsList = Sequence[Mapping[str, torch.Tensor]]
NetStats = LayerStatsList | PackedStats | Sequence[LayerStatsList | PackedStats]


def pack_inits(stats: NetStats, cache_size: int = 0) -> list[PackedStats]:
    """One network's statistics (``NetStats``) packed, one ``PackedStats`` per initialization."""
    if isinstance(stats, PackedStats):
        return [stats]
    if not stats or isinstance(stats[0], Mapping):
        return [pack(stats, cache_size)]
    return [s if isinstance(s, PackedStats) else pack(s, cache_size) for s in stats]


def evaluate_inits(tree: Sequence, packs: Sequence[PackedStats]) -> float:
    """The mean over initializations of ``evaluate_tree``."""
    return float(np.mean([evaluate_tree(tree, p) for p in packs]))


# ---------------------------------------------------------------- operations
# Every op takes (packed, *args); ``kind`` ("w", "a", "s") says which layer index a tensor uses.

def _safe(x: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(x, nan=0.0, posinf=BIG, neginf=-BIG).clamp_(-BIG, BIG)


def _seg(p: PackedStats, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    return (p.seg_w, p.count_w) if kind == "w" else (p.seg_a, p.count_a)


def _seg_mean(p: PackedStats, kind: str, x: torch.Tensor) -> torch.Tensor:
    seg, count = _seg(p, kind)
    return torch.zeros(p.layers, dtype=x.dtype).index_add_(0, seg, x) / count


def _seg_extreme(p: PackedStats, kind: str, x: torch.Tensor, how: str) -> torch.Tensor:
    seg, _ = _seg(p, kind)
    start = -BIG if how == "amax" else BIG
    return torch.full((p.layers,), start, dtype=x.dtype).scatter_reduce_(0, seg, x, how, include_self=True)


def _seg_std(p: PackedStats, kind: str, x: torch.Tensor) -> torch.Tensor:
    seg, _ = _seg(p, kind)
    centred = x - _seg_mean(p, kind, x)[seg]
    return _seg_mean(p, kind, centred * centred).sqrt()


def _numel(p: PackedStats, kind: str) -> torch.Tensor:
    return p.numel_w if kind == "w" else p.numel_a


ELEMENTWISE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "abs": torch.abs,
    "neg": torch.neg,
    "log": lambda x: torch.log(x.abs() + EPS),
    "sqrt": lambda x: torch.sqrt(x.abs()),
    "square": lambda x: x * x,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "exp": lambda x: torch.exp(x.clamp(max=50.0)),
    "sign": torch.sign,
    "relu": torch.relu,
}

BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": lambda x, y: torch.where(y == 0, torch.zeros_like(x), x / torch.where(y == 0, torch.ones_like(y), y)),
}


def _unary(fn: Callable, p: PackedStats, x: torch.Tensor) -> torch.Tensor:
    return _safe(fn(x))


def _binary(fn: Callable, p: PackedStats, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _safe(fn(x, y))


def _minmax(kind: str, p: PackedStats, x: torch.Tensor) -> torch.Tensor:
    seg, _ = _seg(p, kind)
    lo, hi = _seg_extreme(p, kind, x, "amin")[seg], _seg_extreme(p, kind, x, "amax")[seg]
    return _safe((x - lo) / (hi - lo + EPS))


def _zscore(kind: str, p: PackedStats, x: torch.Tensor) -> torch.Tensor:
    seg, _ = _seg(p, kind)
    return _safe((x - _seg_mean(p, kind, x)[seg]) / (_seg_std(p, kind, x)[seg] + EPS))


def _with_scalar(fn: Callable, kind: str, p: PackedStats, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return _safe(fn(x, s[_seg(p, kind)[0]]))


REDUCTIONS: dict[str, Callable[[PackedStats, str, torch.Tensor], torch.Tensor]] = {
    "mean": _seg_mean,
    "std": _seg_std,
    "min": lambda p, k, x: _seg_extreme(p, k, x, "amin"),
    "max": lambda p, k, x: _seg_extreme(p, k, x, "amax"),
    "sum": lambda p, k, x: _seg_mean(p, k, x) * _numel(p, k),
    "l1": lambda p, k, x: _seg_mean(p, k, x.abs()) * _numel(p, k),
    "l2": lambda p, k, x: (_seg_mean(p, k, x * x) * _numel(p, k)).sqrt(),
}


def _reduce(fn: Callable, kind: str, p: PackedStats, x: torch.Tensor) -> torch.Tensor:
    return _safe(fn(p, kind, x))


def _layer_sum(p: PackedStats, s: torch.Tensor) -> torch.Tensor:
    return _safe(s.sum())


def _layer_mean(p: PackedStats, s: torch.Tensor) -> torch.Tensor:
    return _safe(s.mean())


CONSTANTS = {"0.5": 0.5, "1.0": 1.0, "2.0": 2.0}
BASE_TERMINALS = {"W": WeightTensor, "G": WeightTensor, "A": ActTensor, "nW": LayerScalar, "nA": LayerScalar}
#: Terminals a primitive set has only when asked for (``primitive_set``); their statistics have the same key.
EXTRA_TERMINALS = {"GA": ActTensor, "R": LayerScalar}
DATA_TERMINALS = tuple(BASE_TERMINALS) + tuple(EXTRA_TERMINALS)


def canonical_extras(extras: Sequence[str]) -> tuple[str, ...]:
    """Extra terminal names, checked and in ``EXTRA_TERMINALS`` order."""
    unknown = [e for e in extras if e not in EXTRA_TERMINALS]
    if unknown:
        raise SegnasError(f"proxy graph: unknown extra terminal {unknown[0]!r}; choose from {', '.join(EXTRA_TERMINALS)}")
    return tuple(e for e in EXTRA_TERMINALS if e in extras)


#: Unary operations on whole-network values (``network_ops``).
NETWORK_UNARY = ("abs", "neg", "log", "sqrt")


def build_primitive_set(extras: Sequence[str] = (), network_ops: bool = False) -> gp.PrimitiveSetTyped:
    """The typed primitive set: terminals ``W, G, A, nW, nA``, the ``extras`` among
    ``EXTRA_TERMINALS`` and constants, ops as in the module docstring, root ``layer_sum``/``layer_mean``;
    with ``network_ops`` also ops on whole-network values (``<op>_p``)."""
    names = list(BASE_TERMINALS) + list(canonical_extras(extras))
    pset = gp.PrimitiveSetTyped("proxy", [{**BASE_TERMINALS, **EXTRA_TERMINALS}[n] for n in names], ProxyValue)
    pset.renameArguments(**{f"ARG{i}": n for i, n in enumerate(names)})
    for name, value in CONSTANTS.items():
        pset.addTerminal(value, LayerScalar, name=name)
    tensors = {"w": WeightTensor, "a": ActTensor}
    for op, fn in ELEMENTWISE.items():
        for kind, t in tensors.items():
            pset.addPrimitive(functools.partial(_unary, fn), [t], t, name=f"{op}_{kind}")
        pset.addPrimitive(functools.partial(_unary, fn), [LayerScalar], LayerScalar, name=op)
    for kind, t in tensors.items():
        pset.addPrimitive(functools.partial(_minmax, kind), [t], t, name=f"minmax_{kind}")
        pset.addPrimitive(functools.partial(_zscore, kind), [t], t, name=f"zscore_{kind}")
    for op, fn in BINARY.items():
        for kind, t in tensors.items():
            pset.addPrimitive(functools.partial(_binary, fn), [t, t], t, name=f"{op}_{kind}")
        pset.addPrimitive(functools.partial(_binary, fn), [LayerScalar, LayerScalar], LayerScalar, name=op)
    for kind, t in tensors.items():
        pset.addPrimitive(functools.partial(_with_scalar, torch.mul, kind), [t, LayerScalar], t, name=f"scale_{kind}")
        pset.addPrimitive(functools.partial(_with_scalar, torch.add, kind), [t, LayerScalar], t, name=f"shift_{kind}")
        for op, fn in REDUCTIONS.items():
            pset.addPrimitive(functools.partial(_reduce, fn, kind), [t], LayerScalar, name=f"{op}_{kind}")
    pset.addPrimitive(_layer_sum, [LayerScalar], ProxyValue, name="layer_sum")
    pset.addPrimitive(_layer_mean, [LayerScalar], ProxyValue, name="layer_mean")
    if network_ops:
        for op in NETWORK_UNARY:
            pset.addPrimitive(functools.partial(_unary, ELEMENTWISE[op]), [ProxyValue], ProxyValue, name=f"{op}_p")
        for op, fn in BINARY.items():
            pset.addPrimitive(functools.partial(_binary, fn), [ProxyValue, ProxyValue], ProxyValue, name=f"{op}_p")
    return pset


@functools.lru_cache(maxsize=None)
def _primitive_set(extras: tuple[str, ...], network_ops: bool) -> gp.PrimitiveSetTyped:
    return build_primitive_set(extras, network_ops)


def primitive_set(extras: Sequence[str] = (), network_ops: bool = False) -> gp.PrimitiveSetTyped:
    """The primitive set with these extra terminals (and network ops), built once per combination;
    read-only."""
    return _primitive_set(canonical_extras(extras), bool(network_ops))


#: The original primitive set, and the one with everything, which parses any expression.
PSET = primitive_set()
PSET_ALL = primitive_set(tuple(EXTRA_TERMINALS), network_ops=True)

_TOKEN = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*|[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|[(),]|\S)")


def _type_name(t: type) -> str:
    return t.__name__


def parse(expression: str, pset: gp.PrimitiveSetTyped = PSET_ALL) -> gp.PrimitiveTree:
    """Parse and type-check an expression (DEAP's ``str`` form); unknown names, wrong arity or types
    raise ``SegnasError``. Nothing is ``eval``-ed."""
    if not isinstance(expression, str) or not expression.strip():
        raise SegnasError("proxy expression: empty; expected e.g. 'layer_sum(l1_w(mul_w(W, G)))'")
    tokens = _TOKEN.findall(expression.strip())
    nodes: list = []
    pos = 0

    def expect(tok: str) -> None:
        nonlocal pos
        if pos >= len(tokens) or tokens[pos] != tok:
            got = tokens[pos] if pos < len(tokens) else "the end"
            raise SegnasError(f"proxy expression {expression!r}: expected {tok!r} at token {pos}, got {got!r}")
        pos += 1

    def node(want: type) -> None:
        nonlocal pos
        if pos >= len(tokens):
            raise SegnasError(f"proxy expression {expression!r}: ends early")
        name = tokens[pos]
        prim = pset.mapping.get(name)
        if prim is None:
            raise SegnasError(f"proxy expression {expression!r}: unknown primitive {name!r}")
        if prim.ret is not want:
            raise SegnasError(f"proxy expression {expression!r}: {name!r} gives {_type_name(prim.ret)} where "
                              f"{_type_name(want)} is expected")
        pos += 1
        nodes.append(prim)
        if isinstance(prim, gp.Primitive):
            expect("(")
            for i, arg in enumerate(prim.args):
                if i:
                    expect(",")
                node(arg)
            expect(")")

    node(pset.ret)
    if pos != len(tokens):
        raise SegnasError(f"proxy expression {expression!r}: unexpected {tokens[pos]!r} after the expression")
    return gp.PrimitiveTree(nodes)


def uses_data(tree: Sequence) -> bool:
    """Whether the tree reads any statistic (otherwise it is a constant)."""
    return any(isinstance(n, gp.Terminal) and n.value in DATA_TERMINALS for n in tree)


def _texts_and_ends(tree: Sequence) -> tuple[list[str], list[int]]:
    texts: list[str] = [""] * len(tree)
    ends: list[int] = [0] * len(tree)
    stack: list[int] = []
    for i in range(len(tree) - 1, -1, -1):
        n = tree[i]
        if n.arity == 0:
            texts[i], ends[i] = n.format(), i + 1
        else:
            children = [stack.pop() for _ in range(n.arity)]
            texts[i] = n.format(*(texts[c] for c in children))
            ends[i] = ends[children[-1]]
        stack.append(i)
    return texts, ends


def evaluate_tree(tree: Sequence, packed: PackedStats, pset: gp.PrimitiveSetTyped = PSET_ALL) -> float:
    """The proxy value of ``tree`` (a typed ``PrimitiveTree`` rooted at ``ProxyValue``) on one
    network's packed statistics; always finite."""
    use_cache = packed.cache_size > 0
    texts, ends = _texts_and_ends(tree) if use_cache else (None, None)
    terminals = {"W": packed.W, "G": packed.G, "A": packed.A, "nW": packed.numel_w, "nA": packed.numel_a}
    for name in EXTRA_TERMINALS:
        if getattr(packed, name) is not None:
            terminals[name] = getattr(packed, name)
        elif any(isinstance(n, gp.Terminal) and n.value == name for n in tree):
            raise SegnasError(f"proxy graph: the expression reads {name} but the statistics lack it; measure "
                              "them again with segnas.proxies.discovery.layer_stats")

    def run(i: int) -> tuple[torch.Tensor, int]:
        n = tree[i]
        if n.arity == 0:
            if n.value in terminals:
                return terminals[n.value], i + 1
            return torch.full((packed.layers,), float(pset.context[n.value]), dtype=torch.float64), i + 1
        key = texts[i] if use_cache and n.ret is LayerScalar else None
        if key is not None and key in packed.cache:
            packed.cache.move_to_end(key)
            return packed.cache[key], ends[i]
        args, j = [], i + 1
        for _ in range(n.arity):
            value, j = run(j)
            args.append(value)
        out = pset.context[n.name](packed, *args)
        if key is not None:
            packed.cache[key] = out
            if len(packed.cache) > packed.cache_size:
                packed.cache.popitem(last=False)
        return out, j

    if not tree or tree[0].ret is not pset.ret:
        raise SegnasError("proxy graph: the tree's root must be layer_sum or layer_mean")
    value, _ = run(0)
    return float(value)


def evaluate_expression(expression: str | gp.PrimitiveTree, stats: NetStats) -> float:
    """The proxy value of an expression (text or tree) on one network's statistics (averaged over
    initializations when there are several)."""
    tree = parse(expression) if isinstance(expression, str) else expression
    return evaluate_inits(tree, pack_inits(stats))
