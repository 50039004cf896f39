"""The ``multires`` search space: FasterSeg's multi-resolution, multi-branch networks (derived form).

A network is a stem to 1/8 of the input (3×3 conv s2 → ``conv_2x`` s2 → ``conv_2x`` s2) followed by
one or more *branches*. A branch is a chain of cells; each cell applies one operator of
``CELL_OPS`` and either keeps its scale or halves the resolution (stride 2, twice the channels per
FasterSeg's 12·8·2^scale rule), so its path only steps to coarser scales, one at a time. Branches
that begin with identical cells share them (computed once), as in the official derived network.
Each branch ending at 1/2^k of 1/8 is refined back to 1/8 (1×1 conv-BN-ReLU, bilinear ×2, concat
with the branch's last feature at that scale, 3×3 conv-BN-ReLU, per scale); the 1/8 outputs of all
branches are concatenated, fused (1×1 conv-BN-ReLU), classified (``head``) and upsampled ×8.
Training-only auxiliary heads see each coarser scale (1/16, 1/32 by default).

Every piece is built from the ``segnas.nn.ops`` registry; ``latency_keys`` lists the ``OpKey`` of
every piece that runs in eval mode, so per-op latencies compose into the network's latency.
Not keyed (no compute of their own worth a table entry): the input padding, the crop, channel
concatenations.

``import_official`` reads the architectures released with the official FasterSeg code
(``arch_0.pt`` teacher, ``arch_1.pt`` student) and derives the network exactly as its
``train/model_seg.py`` + ``train/train.py`` do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from segnas.errors import SegnasError
from segnas.nn.ops import OpKey
from segnas.nn.segnet import SegmentationNet
from segnas.spaces.pieces import Piece, op_template as _key

#: Cell operators, in the order of FasterSeg's ``PRIMITIVES`` (index = position in α).
CELL_OPS: tuple[str, ...] = ("skip", "conv", "conv_downup", "conv_2x", "conv_2x_downup")
#: FasterSeg's channel expansion ratios of the base width.
DEFAULT_WIDTH_RATIOS: tuple[float, ...] = (4 / 12, 6 / 12, 8 / 12, 10 / 12, 1.0)
#: The stem halves the resolution this many times: cells start at 1/8.
STEM_LEVELS = 3
#: Classifier heads use half as many middle channels above this input width (FasterSeg's ``Head``).
HEAD_MID_LIMIT = 256
#: Bilinear upsampling inside the network follows the official code (align_corners=True).
ALIGN_CORNERS = True
VERSION = 1


def scale_name(scale: int) -> str:
    """Human name of a scale index: 0 → '1/8', 1 → '1/16', ..."""
    return f"1/{2 ** (STEM_LEVELS + scale)}"


def feature_channels(base_width: int, scale: int, ratio: float) -> int:
    """Channels of a feature at ``scale`` with width ``ratio``: round(8 · 2^scale · base_width · ratio)."""
    return int(round(2 ** (STEM_LEVELS + scale) * base_width * ratio))


def stem_channels(base_width: int, stem_width: float) -> tuple[int, int, int]:
    """Output channels of the three stem convolutions (FasterSeg: 2·nf(2), 2·nf(4), nf(8))."""
    nf = lambda s: int(round(s * base_width * stem_width))  # noqa: E731
    return 2 * nf(2), 2 * nf(4), nf(8)


# --------------------------------------------------------------------------------- architecture
@dataclass(frozen=True)
class Branch:
    """One branch: cell ``i`` reads a feature at scale ``scales[i]`` (0 = 1/8, 1 = 1/16, ...),
    applies ``ops[i]`` and is strided (halves the resolution) iff ``scales[i+1] > scales[i]``; the
    last cell is never strided, so the branch ends at ``scales[-1]``. ``widths[i]`` indexes the
    architecture's ``width_ratios`` and sets the output width of cell ``i`` for every cell but the
    last, whose output has the head width (``len(widths) == len(ops) - 1``)."""

    scales: tuple[int, ...]
    ops: tuple[str, ...]
    widths: tuple[int, ...]

    @property
    def last(self) -> int:
        return self.scales[-1]

    def __len__(self) -> int:
        return len(self.ops)

    def strided(self, i: int) -> bool:
        return i + 1 < len(self.scales) and self.scales[i + 1] > self.scales[i]

    def to_dict(self) -> dict[str, Any]:
        return {"scales": list(self.scales), "ops": list(self.ops), "widths": list(self.widths)}


@dataclass(frozen=True)
class MultiResArch:
    """A derived multi-resolution network. Channels of a feature at scale ``s`` with width ratio
    ``r``: ``round(8 · 2^s · base_width · r)``; the stem uses ``stem_width``, branch ends and heads
    ``head_width``. ``layers`` bounds the number of cells of a branch (the supernet's depth)."""

    branches: tuple[Branch, ...]
    layers: int = 16
    num_scales: int = 3
    base_width: int = 12
    width_ratios: tuple[float, ...] = DEFAULT_WIDTH_RATIOS
    stem_width: float = 1.0
    head_width: float = 1.0

    def __post_init__(self) -> None:
        _validate(self)

    # ---- channels and geometry
    @property
    def stride(self) -> int:
        """Largest downsampling factor: inputs are padded to a multiple of it."""
        return 2 ** (STEM_LEVELS + self.num_scales - 1)

    def channels(self, scale: int, ratio: float) -> int:
        return feature_channels(self.base_width, scale, ratio)

    def stem_channels(self) -> tuple[int, int, int]:
        """Output channels of the three stem convolutions (FasterSeg: 2·nf(2), 2·nf(4), nf(8))."""
        return stem_channels(self.base_width, self.stem_width)

    def cell_channels(self, branch: Branch, i: int) -> tuple[int, int]:
        """(cin, cout) of cell ``i`` of ``branch``."""
        if i == 0:
            cin = self.stem_channels()[-1]
        else:
            cin = self.channels(branch.scales[i], self.width_ratios[branch.widths[i - 1]])
        if i == len(branch) - 1:
            return cin, self.channels(branch.scales[i], self.head_width)
        return cin, self.channels(branch.scales[i + 1], self.width_ratios[branch.widths[i]])

    # ---- serialization
    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "num_scales": self.num_scales,
            "base_width": self.base_width,
            "width_ratios": list(self.width_ratios),
            "stem_width": self.stem_width,
            "head_width": self.head_width,
            "branches": [b.to_dict() for b in self.branches],
        }

    @classmethod
    def from_dict(cls, d: Any) -> MultiResArch:
        if not isinstance(d, dict):
            raise SegnasError(f"multires arch: expected a mapping, got {type(d).__name__}")
        known = {"layers", "num_scales", "base_width", "width_ratios", "stem_width", "head_width", "branches"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SegnasError(f"multires arch: unknown field {unknown[0]!r} (expected {', '.join(sorted(known))})")
        if "branches" not in d:
            raise SegnasError("multires arch: missing field 'branches' (a list of {scales, ops, widths})")
        kwargs: dict[str, Any] = {}
        for name in ("layers", "num_scales", "base_width"):
            if name in d:
                kwargs[name] = _int(d[name], name)
        for name in ("stem_width", "head_width"):
            if name in d:
                kwargs[name] = _float(d[name], name)
        if "width_ratios" in d:
            ratios = _list(d["width_ratios"], "width_ratios")
            kwargs["width_ratios"] = tuple(_float(v, f"width_ratios[{i}]") for i, v in enumerate(ratios))
        branches = []
        for b, bd in enumerate(_list(d["branches"], "branches")):
            where = f"branches[{b}]"
            if not isinstance(bd, dict):
                raise SegnasError(f"multires arch field {where!r}: expected a mapping with scales, ops, widths")
            extra = sorted(set(bd) - {"scales", "ops", "widths"})
            if extra:
                raise SegnasError(f"multires arch field {where}.{extra[0]!r}: unknown (expected scales, ops, widths)")
            for key in ("scales", "ops", "widths"):
                if key not in bd:
                    raise SegnasError(f"multires arch field {where}.{key}: missing")
            lists = {key: _list(bd[key], f"{where}.{key}") for key in ("scales", "ops", "widths")}
            scales = tuple(_int(v, f"{where}.scales[{i}]") for i, v in enumerate(lists["scales"]))
            ops = tuple(_str(v, f"{where}.ops[{i}]") for i, v in enumerate(lists["ops"]))
            widths = tuple(_int(v, f"{where}.widths[{i}]") for i, v in enumerate(lists["widths"]))
            branches.append(Branch(scales, ops, widths))
        return cls(branches=tuple(branches), **kwargs)


def _list(v: Any, where: str) -> list:
    if not isinstance(v, (list, tuple)):
        raise SegnasError(f"multires arch field {where!r}: expected a list, got {v!r}")
    return list(v)


def _int(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise SegnasError(f"multires arch field {where!r}: expected an integer, got {v!r}")
    return int(v)


def _float(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise SegnasError(f"multires arch field {where!r}: expected a number, got {v!r}")
    return float(v)


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise SegnasError(f"multires arch field {where!r}: expected an operator name, got {v!r}")
    return v


def _validate(a: MultiResArch) -> None:
    def fail(where: str, msg: str) -> None:
        raise SegnasError(f"multires arch field {where!r}: {msg}")

    if a.layers < 1:
        fail("layers", f"must be >= 1, got {a.layers}")
    if a.num_scales < 1:
        fail("num_scales", f"must be >= 1, got {a.num_scales}")
    if a.base_width < 1:
        fail("base_width", f"must be >= 1, got {a.base_width}")
    if not a.width_ratios:
        fail("width_ratios", "must not be empty")
    for i, r in enumerate(a.width_ratios):
        if not r > 0:
            fail(f"width_ratios[{i}]", f"must be > 0, got {r}")
    for name in ("stem_width", "head_width"):
        if not getattr(a, name) > 0:
            fail(name, f"must be > 0, got {getattr(a, name)}")
    if not 1 <= len(a.branches) <= a.num_scales:
        fail("branches", f"expected 1 to {a.num_scales} branches, got {len(a.branches)}")
    lasts = [b.last for b in a.branches if b.scales]
    for k, b in enumerate(a.branches):
        where = f"branches[{k}]"
        n = len(b.ops)
        if n == 0:
            fail(f"{where}.ops", "a branch needs at least one cell")
        if n > a.layers:
            fail(f"{where}.ops", f"{n} cells exceed layers={a.layers}")
        if len(b.scales) != n:
            fail(f"{where}.scales", f"expected one scale per cell ({n}), got {len(b.scales)}")
        if len(b.widths) != n - 1:
            fail(f"{where}.widths", f"expected {n - 1} widths (every cell but the last, which has the head "
                                    f"width), got {len(b.widths)}")
        for i, op in enumerate(b.ops):
            if op not in CELL_OPS:
                fail(f"{where}.ops[{i}]", f"unknown operator {op!r} (expected one of {', '.join(CELL_OPS)})")
        if b.scales[0] != 0:
            fail(f"{where}.scales[0]", f"a branch starts at scale 0 (1/8), got {b.scales[0]}")
        for i in range(1, n):
            if b.scales[i] - b.scales[i - 1] not in (0, 1):
                fail(f"{where}.scales[{i}]", f"scales step by 0 or +1 (got {b.scales[i - 1]} -> {b.scales[i]})")
        if b.last >= a.num_scales:
            fail(f"{where}.scales", f"scale {b.last} beyond num_scales={a.num_scales}")
        for i, w in enumerate(b.widths):
            if not 0 <= w < len(a.width_ratios):
                fail(f"{where}.widths[{i}]", f"index {w} outside width_ratios (0..{len(a.width_ratios) - 1})")
    if len(set(lasts)) != len(lasts):
        fail("branches", f"branches must end at different scales, got {[scale_name(s) for s in lasts]}")


# ------------------------------------------------------------------------------ network plan
@dataclass(frozen=True)
class CellStep:
    """Cell ``layer`` of the branches in ``group`` (identical prefixes: computed once)."""

    piece: Piece
    layer: int
    group: tuple[int, ...]
    scale: int
    strided: bool


@dataclass
class Plan:
    arch: MultiResArch
    stem: list[Piece]
    steps: list[CellStep]
    fusion: list[list[tuple[int, Piece, Piece, Piece]]]  # per branch: (scale, arm, up, refine), coarse to fine
    ffm: Piece
    head: Piece
    upsample: Piece
    aux: list[tuple[int, tuple[int, ...], Piece]] = field(default_factory=list)  # (scale, branches, head)

    @property
    def pieces(self) -> list[Piece]:
        """Every eval-mode piece, in execution order."""
        out = list(self.stem) + [s.piece for s in self.steps]
        for per_branch in self.fusion:
            for _, arm, up, refine in per_branch:
                out += [arm, up, refine]
        return out + [self.ffm, self.head, self.upsample]


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> OpKey:
    return _key("conv_bn_relu", cin, cout, stride, kernel=kernel)


def _upsample(channels: int, factor: int) -> OpKey:
    return _key("upsample", channels, channels, factor=factor, align_corners=ALIGN_CORNERS)


def _head(cin: int, num_classes: int) -> OpKey:
    return _key("head", cin, num_classes, mid=cin if cin <= HEAD_MID_LIMIT else cin // 2)


def _prefix_key(b: Branch, i: int) -> tuple:
    """Cells 0..i of two branches are shared iff these keys are equal (and i is not the last cell
    of either): same operators, same scales after each cell, same widths (official rule)."""
    return tuple((b.ops[j], b.scales[j + 1], b.widths[j]) for j in range(i + 1))


def stem_plan(channels: tuple[int, int, int]) -> list[Piece]:
    """The stem to 1/8: 3×3 conv-BN-ReLU s2 → ``conv_2x`` s2 → ``conv_2x`` s2."""
    c1, c2, c3 = channels
    return [Piece("stem.0", _conv(3, c1, 3, 2), 0),
            Piece("stem.1", _key("conv_2x", c1, c2, 2), 1),
            Piece("stem.2", _key("conv_2x", c2, c3, 2), 2)]


def plan_network(arch: MultiResArch, num_classes: int) -> Plan:
    """Every piece of the derived network with its channels, stride and resolution level."""
    stem = stem_plan(arch.stem_channels())
    branches = arch.branches
    steps: list[CellStep] = []
    for layer in range(max(len(b) for b in branches)):
        groups: dict[Any, list[int]] = {}
        for k, b in enumerate(branches):
            if layer >= len(b):
                continue
            shareable = layer < len(b) - 1
            groups.setdefault(_prefix_key(b, layer) if shareable else ("own", k), []).append(k)
        for group in groups.values():
            b = branches[group[0]]
            cin, cout = arch.cell_channels(b, layer)
            stride = 2 if b.strided(layer) else 1
            piece = Piece(f"cells.{layer}_{group[0]}", _key(b.ops[layer], cin, cout, stride),
                          STEM_LEVELS + b.scales[layer])
            steps.append(CellStep(piece, layer, tuple(group), b.scales[layer], stride == 2))
    head_ch = [arch.channels(s, arch.head_width) for s in range(arch.num_scales)]
    fusion = []
    for k, b in enumerate(branches):
        feat_ch = _feature_channels(arch, b)
        per_branch = []
        for s in range(b.last - 1, -1, -1):
            level = STEM_LEVELS + s
            arm = Piece(f"fusion.b{k}_s{s}_arm", _conv(head_ch[s + 1], head_ch[s], 1), level + 1)
            up = Piece(f"fusion.b{k}_s{s}_up", _upsample(head_ch[s], 2), level + 1)
            refine = Piece(f"fusion.b{k}_s{s}_refine", _conv(head_ch[s] + feat_ch[s], head_ch[s], 3), level)
            per_branch.append((s, arm, up, refine))
        fusion.append(per_branch)
    fused = head_ch[0] * len(branches)
    ffm = Piece("ffm", _conv(fused, fused, 1), STEM_LEVELS)
    head = Piece("head", _head(fused, num_classes), STEM_LEVELS)
    up = Piece("upsample", _upsample(num_classes, 2 ** STEM_LEVELS), STEM_LEVELS)
    aux = []
    for s in range(1, arch.num_scales):
        group = tuple(k for k, b in enumerate(branches) if b.last >= s)
        if group:
            cin = sum(_feature_channels(arch, branches[k])[s] for k in group)
            aux.append((s, group, Piece(f"aux_heads.{len(aux)}", _head(cin, num_classes), STEM_LEVELS + s)))
    return Plan(arch, stem, steps, fusion, ffm, head, up, aux)


def _feature_channels(arch: MultiResArch, b: Branch) -> dict[int, int]:
    """Channels of the branch's last feature at each scale it visits (what refinement and aux
    heads read): the input of its strided cell there, or its output at its final scale."""
    out = {}
    for i in range(len(b)):
        if b.strided(i):
            out[b.scales[i]] = arch.cell_channels(b, i)[0]
    out[b.last] = arch.cell_channels(b, len(b) - 1)[1]
    return out


# --------------------------------------------------------------------------------- network
class MultiResNet(SegmentationNet):
    """The plain derived network of a ``MultiResArch`` (no search machinery)."""

    def __init__(self, arch: MultiResArch, num_classes: int, aux: bool = True) -> None:
        super().__init__(num_classes)
        plan = plan_network(arch, num_classes)
        self.stride_multiple = arch.stride
        self.pieces: list[Piece] = plan.pieces
        self.stem = nn.Sequential(*(p.build() for p in plan.stem))
        self.cells = nn.ModuleDict({s.piece.name.split(".", 1)[1]: s.piece.build() for s in plan.steps})
        self.fusion = nn.ModuleDict({p.name.split(".", 1)[1]: p.build()
                                     for per_branch in plan.fusion for _, *ps in per_branch for p in ps})
        self.ffm = plan.ffm.build()
        self.head = plan.head.build()
        self.upsample = plan.upsample.build()
        self.aux_heads = nn.ModuleList(p.build() for _, _, p in plan.aux) if aux else nn.ModuleList()
        self._steps = [(s.piece.name.split(".", 1)[1], s.group, s.scale, s.strided) for s in plan.steps]
        self._lasts = [b.last for b in arch.branches]
        self._fusion = [[(s, arm.name.split(".", 1)[1], up.name.split(".", 1)[1], ref.name.split(".", 1)[1])
                         for s, arm, up, ref in per_branch] for per_branch in plan.fusion]
        self._aux = [(s, group) for s, group, _ in plan.aux] if aux else []

    def _trunk(self, x: torch.Tensor) -> list[dict[int, torch.Tensor]]:
        """Per branch, its last feature at every scale it visits."""
        x = self.stem(x)
        current = [x] * len(self._lasts)
        feats: list[dict[int, torch.Tensor]] = [{} for _ in self._lasts]
        for name, group, scale, strided in self._steps:
            y = self.cells[name](current[group[0]])
            for k in group:
                if strided:
                    feats[k][scale] = current[k]
                current[k] = y
        for k, last in enumerate(self._lasts):
            feats[k][last] = current[k]
        return feats

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits at 1/8 of the (padded) input, and the aux logits in training."""
        feats = self._trunk(x)
        outs = []
        for k, per_branch in enumerate(self._fusion):
            out = feats[k][self._lasts[k]]
            for s, arm, up, refine in per_branch:
                out = self.fusion[refine](torch.cat([self.fusion[up](self.fusion[arm](out)), feats[k][s]], dim=1))
            outs.append(out)
        main = self.head(self.ffm(torch.cat(outs, dim=1)))
        aux = []
        if self.training:
            aux = [head(torch.cat([feats[k][s] for k in group], dim=1))
                   for head, (s, group) in zip(self.aux_heads, self._aux)]
        return main, aux

    def upsample_logits(self, main: torch.Tensor, size) -> torch.Tensor:
        # the ×8 upsampling is the registered ``upsample`` op, so that it is a latency-table piece
        return self.upsample(main)


# ------------------------------------------------------------------------------------ space
class MultiResSpace:
    """The ``multires`` space: settings for sampling, and the space contract."""

    name = "multires"
    version = VERSION

    def __init__(self, layers: int = 16, num_scales: int = 3, base_width: int = 12,
                 width_ratios: Sequence[float] = DEFAULT_WIDTH_RATIOS, stem_width: float = 1.0,
                 head_width: float = 1.0, num_branches: int = 2) -> None:
        self.layers = layers
        self.num_scales = num_scales
        self.base_width = base_width
        self.width_ratios = tuple(float(r) for r in width_ratios)
        self.stem_width = stem_width
        self.head_width = head_width
        self.num_branches = num_branches
        if not 1 <= num_branches <= num_scales:
            raise SegnasError(f"multires space: num_branches must be 1..{num_scales}, got {num_branches}")

    # ---- contract
    def arch_from_dict(self, d: Any) -> MultiResArch:
        return MultiResArch.from_dict(d)

    def build(self, arch: MultiResArch, num_classes: int, aux: bool = True) -> MultiResNet:
        return MultiResNet(arch, num_classes, aux=aux)

    def latency_keys(self, arch: MultiResArch, num_classes: int, input_size: tuple[int, int]) -> list[OpKey]:
        """OpKey of every piece run in eval mode, at the sizes after padding to ``arch.stride``."""
        h, w = input_size
        m = arch.stride
        ph, pw = -(-h // m) * m, -(-w // m) * m
        return [p.key(ph, pw) for p in plan_network(arch, num_classes).pieces]

    def supernet(self, num_classes: int, input_size: tuple[int, int] = (1024, 2048), **options: Any):
        """FasterSeg's co-search supernet of these settings (``multires_supernet.MultiResSupernet``)."""
        from segnas.spaces.multires_supernet import MultiResSupernet

        return MultiResSupernet.from_space(self, num_classes, input_size, **options)

    def min_cells(self, last: int) -> int:
        """Fewest cells a branch ending at scale ``last`` keeps (official: round(L/3) + 2·last)."""
        return min(self.layers, int(round(self.layers / 3)) + 2 * last)

    def sample(self, rng: np.random.Generator, spread: bool = False) -> MultiResArch:
        """A random derived network, drawn like FasterSeg derives one: one operator (plus a non-skip
        fallback), one width and one skip priority per supernet node (layer, scale), shared by all
        branches; random paths; non-strided ``skip`` cells are removed down to ``min_cells``.

        ``spread`` first draws a per-network cap on the width choice and then widths up to it, so
        that a sample covers the space's latency range (uniform widths concentrate around the
        middle); used where architectures must span slow to fast (benchmarks, proxy ground truth)."""
        L, S = self.layers, self.num_scales
        op_grid = rng.integers(0, len(CELL_OPS), size=(L, S))
        alt_grid = rng.integers(1, len(CELL_OPS), size=(L, S))
        cap = int(rng.integers(0, len(self.width_ratios))) if spread else len(self.width_ratios) - 1
        width_grid = rng.integers(0, cap + 1, size=(L, S))
        prio_grid = rng.random(size=(L, S))
        lasts = [S - 1] + sorted(rng.choice(S - 1, size=self.num_branches - 1, replace=False).tolist(), reverse=True)
        branches = []
        for last in lasts:
            downs = sorted(rng.choice(L - 1, size=last, replace=False).tolist()) if last else []
            path = [0] * L
            for i in range(1, L):
                path[i] = path[i - 1] + (1 if i - 1 in downs else 0)
            branches.append(self._compact(path, op_grid, alt_grid, width_grid, prio_grid))
        return self._arch(branches)

    def _compact(self, path: list[int], op_grid, alt_grid, width_grid, prio_grid) -> Branch:
        n = len(path)
        strided = [i + 1 < n and path[i + 1] > path[i] for i in range(n)]
        ops = [CELL_OPS[op_grid[i, path[i]]] for i in range(n)]
        widths = [int(width_grid[i + 1, path[i + 1]]) for i in range(n - 1)]
        plain_skips = {i for i in range(n) if ops[i] == "skip" and not strided[i]}
        removable = set(plain_skips)
        # after every strided cell at least one cell stays before the next one (or the end)
        bounds = [i for i in range(n) if strided[i]] + [n]
        for a, b in zip(bounds, bounds[1:]):
            seg = list(range(a + 1, b))
            if seg and all(i in removable for i in seg):
                removable.discard(seg[0])
        budget = max(len(path) - self.min_cells(path[-1]), 0)
        removed = set(sorted(removable, key=lambda i: -prio_grid[i, path[i]])[:budget])
        for i in plain_skips - removed:  # kept plain skips fall back to a real operator
            ops[i] = CELL_OPS[alt_grid[i, path[i]]]
        kept = [i for i in range(n) if i not in removed]
        return Branch(tuple(path[i] for i in kept), tuple(ops[i] for i in kept), tuple(widths[i] for i in kept[:-1]))

    def _arch(self, branches: Sequence[Branch]) -> MultiResArch:
        return MultiResArch(tuple(branches), self.layers, self.num_scales, self.base_width, self.width_ratios,
                            self.stem_width, self.head_width)

    def mutate(self, arch: MultiResArch, rng: np.random.Generator) -> MultiResArch:
        """A valid neighbour: one operator, one width, one cell added or removed, or one downsampling
        moved by a layer. Edits to a cell shared by several branches apply to all of them."""
        for _ in range(100):
            kind = rng.choice(["op", "width", "depth", "down"])
            k = int(rng.integers(len(arch.branches)))
            new = getattr(self, f"_mutate_{kind}")(arch, k, rng)
            if new is not None and new != arch:
                return new
        raise SegnasError("multires: no valid mutation found for this architecture")

    def _apply(self, arch: MultiResArch, k: int, i: int, edit) -> MultiResArch:
        """Apply ``edit(branch) -> branch`` to branch ``k`` and every branch sharing its cell ``i``."""
        b = arch.branches[k]
        shared = [j for j, o in enumerate(arch.branches)
                  if j == k or (i < len(o) - 1 and i < len(b) - 1 and _prefix_key(o, i) == _prefix_key(b, i))]
        branches = [edit(o) if j in shared else o for j, o in enumerate(arch.branches)]
        return replace(arch, branches=tuple(branches))

    def _mutate_op(self, arch: MultiResArch, k: int, rng: np.random.Generator) -> MultiResArch | None:
        b = arch.branches[k]
        i = int(rng.integers(len(b)))
        choices = [o for o in (CELL_OPS if b.strided(i) else CELL_OPS[1:]) if o != b.ops[i]]
        op = choices[int(rng.integers(len(choices)))]
        return self._apply(arch, k, i, lambda o: replace(o, ops=o.ops[:i] + (op,) + o.ops[i + 1:]))

    def _mutate_width(self, arch: MultiResArch, k: int, rng: np.random.Generator) -> MultiResArch | None:
        b = arch.branches[k]
        if len(b) < 2 or len(arch.width_ratios) < 2:
            return None
        i = int(rng.integers(len(b) - 1))
        choices = [w for w in range(len(arch.width_ratios)) if w != b.widths[i]]
        w = choices[int(rng.integers(len(choices)))]
        return self._apply(arch, k, i, lambda o: replace(o, widths=o.widths[:i] + (w,) + o.widths[i + 1:]))

    def _mutate_depth(self, arch: MultiResArch, k: int, rng: np.random.Generator) -> MultiResArch | None:
        b = arch.branches[k]
        n = len(b)
        if rng.random() < 0.5 and n < arch.layers:  # insert a non-strided cell before cell i (or at the end)
            i = int(rng.integers(n + 1))
            scale = b.scales[i] if i < n else b.last
            op = CELL_OPS[int(rng.integers(1, len(CELL_OPS)))]
            w = int(rng.integers(len(arch.width_ratios)))
            widths = b.widths[:i] + (w,) + b.widths[i:] if i < n else b.widths + (w,)
            new = Branch(b.scales[:i] + (scale,) + b.scales[i:], b.ops[:i] + (op,) + b.ops[i:], widths)
        else:  # remove a non-strided cell that does not end a segment after a strided cell
            removable = [i for i in range(n) if not b.strided(i) and n - 1 > b.last
                         and not (i > 0 and b.strided(i - 1) and (i == n - 1 or b.strided(i + 1)))]
            if not removable:
                return None
            i = removable[int(rng.integers(len(removable)))]
            widths = b.widths[:i] + b.widths[i + 1:] if i < n - 1 else b.widths[:-1]
            new = Branch(b.scales[:i] + b.scales[i + 1:], b.ops[:i] + b.ops[i + 1:], widths)
        return replace(arch, branches=arch.branches[:k] + (new,) + arch.branches[k + 1:])

    def _mutate_down(self, arch: MultiResArch, k: int, rng: np.random.Generator) -> MultiResArch | None:
        b = arch.branches[k]
        downs = [i for i in range(len(b)) if b.strided(i)]
        if not downs:
            return None
        d = downs[int(rng.integers(len(downs)))]
        target = d + (1 if rng.random() < 0.5 else -1)
        if not 0 <= target <= len(b) - 2 or target in downs:
            return None
        new_downs = set(downs) - {d} | {target}
        scales = [0]
        for i in range(len(b) - 1):
            scales.append(scales[-1] + (1 if i in new_downs else 0))
        ops = list(b.ops)
        if ops[d] == "skip":  # the formerly strided cell is now a plain cell: no identity skips
            ops[d] = CELL_OPS[int(rng.integers(1, len(CELL_OPS)))]
        new = Branch(tuple(scales), tuple(ops), b.widths)
        return replace(arch, branches=arch.branches[:k] + (new,) + arch.branches[k + 1:])


MULTIRES = MultiResSpace()


# ------------------------------------------------------------------------- official import
OFFICIAL_PRIMITIVES = CELL_OPS  # train/genotypes.py PRIMITIVES, same order
OFFICIAL_STEM_HEAD_WIDTH = {0: (1.0, 1.0), 1: (8 / 12, 8 / 12)}  # train/config_train.py, teacher / student
OFFICIAL_LATENCY_TARGET_MS = 8.3  # tools/utils/darts_utils.py objective_acc_lat


def _objective(miou: float, latency: float, target: float = OFFICIAL_LATENCY_TARGET_MS, w: float = -0.07) -> float:
    return miou * math.pow(latency / target, w)


def official_pair(objective02: float, objective12: float) -> tuple[int, int]:
    """``train.py``'s choice of branch ends: 1/32 + 1/8 if its objective is strictly better, else
    1/32 + 1/16."""
    return (2, 0) if objective02 > objective12 else (2, 1)


def _official_path(betas: list, last: int, layers: int) -> list[int]:
    """``betas2path``: the scale path (input scale of each of ``layers`` cells) ending at ``last``.
    Kept as the official code has it: for ``last == 2`` the best β1[i]·β2[j] (1 <= i <= j − 2,
    j < layers − 4) strides after cells i + 1 and j + 2 (what those β rows choose); for ``last == 1``
    the best β1[r] (1 <= r <= layers − 4) strides after cell r, one cell earlier than its row means."""
    downs = [0] * layers
    if last == 1:
        downs[int(torch.argmax(betas[1][1:-1, 0])) + 1] = 1
    elif last == 2:
        best, best_ij = 0, (0, 1)
        for j in range(layers - 4):
            for i in range(1, j - 1):
                p = betas[1][i][0] * betas[2][j][0]
                if p > best:
                    best, best_ij = p, (i, j)
        downs[best_ij[0] + 1] = 1
        downs[best_ij[1] + 2] = 1
    path = [0]
    for d in downs[:-1]:
        path.append(path[-1] + d)
    return path


def _official_ops(alphas: list[torch.Tensor], path: list[int], widths: list, ignore_skip: bool):
    """``alphas2ops_path_width``: argmax operators; non-strided skips are removed (most skip-like
    first) while more than round(n/3) + 2·last cells remain and never all cells after a strided
    one; other skips fall back to their second-best operator. Edits α in place, like the official
    code (so later branch derivations see them)."""
    n = len(path)
    min_len = int(np.round(n / 3.0)) + 2 * path[-1]
    row = lambda i: alphas[path[i]][i - path[i]]  # noqa: E731  (a view: writes go to alphas)
    skip_prob = lambda i: torch.softmax(row(i), dim=-1)[0]  # noqa: E731
    candidates = []
    for i in range(n):
        if ignore_skip:
            row(i)[0] = -float("inf")
        if int(row(i).argmax()) == 0 and (i == n - 1 or path[i] == path[i + 1]):
            candidates.append((i, skip_prob(i)))
    positions = [i for i, _ in candidates]
    downs = [i for i in range(n - 1) if path[i] < path[i + 1]]
    if downs:
        bounds = downs + [n]
        for a, b in zip(bounds, bounds[1:]):
            all_skips = (a + 1 in positions and b - 1 in positions
                         and positions.index(b - 1) - positions.index(a + 1) == b - a - 2)
            if all_skips:
                best = (1.0, -1)
                for j in range(a + 1, b):
                    if skip_prob(j) <= best[0]:
                        best = (skip_prob(j), j)
                row(best[1])[0] = -float("inf")
    if len(candidates) > n - min_len:
        candidates = sorted(candidates, key=lambda c: c[1], reverse=True)[: n - min_len]
    removed = {i for i, _ in candidates}
    ops, kept = [], []
    for i in range(n):
        op = int(row(i).argmax())
        if op == 0:
            if i in removed:
                continue
            row(i)[0] = -float("inf")
            op = int(row(i).argmax())
        kept.append(i)
        ops.append(op)
    return ops, [path[i] for i in kept], [widths[i] for i in kept[:-1]]


def official_branches(alphas: Sequence[torch.Tensor], betas: Sequence[torch.Tensor | None],
                      ratios: Sequence[torch.Tensor], width_choices: Sequence[Any],
                      ignore_skip: bool) -> dict[int, Branch]:
    """The branch ending at each scale (0, 1, 2) that official FasterSeg derives from one searched
    architecture: ``alphas[s]`` (L − s, 5) operator logits, ``betas[1]`` (L − 2, 2) and ``betas[2]``
    (L − 3, 2) path logits (column 0: from the finer scale, 1: same scale; ``betas[0]`` unused),
    ``ratios[s]`` width logits ((L − 1, n), (L − 1, n), (L − 2, n)); a width is
    ``width_choices[argmax]`` (what ``Branch.widths`` then holds). Runs ``network_metas`` for
    last = 0, 1, 2 in the official order on copies, so its in-place edits of α (skips set to −inf)
    and β (softmaxed once more per branch) carry over between branches as they do there."""
    alphas = [a.detach().float().cpu().clone() for a in alphas]
    betas = [None] + [b.detach().float().cpu().clone() for b in betas[1:3]]
    ratios = [r.detach().float().cpu() for r in ratios]
    layers = alphas[0].shape[0]
    branches = {}
    for last in (0, 1, 2):
        betas[1] = torch.softmax(betas[1], dim=-1)
        betas[2] = torch.softmax(betas[2], dim=-1)
        path = _official_path(betas, last, layers)
        widths = [width_choices[int(ratios[path[i]][i - max(path[i], 1)].argmax())] for i in range(1, layers)]
        ops, path, widths = _official_ops(alphas, path, widths, ignore_skip)
        branches[last] = Branch(tuple(path), tuple(OFFICIAL_PRIMITIVES[o] for o in ops), tuple(widths))
    return branches


def derive_official(state: dict, idx: int | None = None, lasts: Sequence[int] | None = None,
                    base_width: int = 12, width_ratios: Sequence[float] = DEFAULT_WIDTH_RATIOS,
                    stem_head_width: tuple[float, float] | None = None) -> MultiResArch:
    """The network that official FasterSeg's ``train.py`` builds from one searched architecture
    (``alpha_{idx}_s``, ``beta_{idx}_s``, ``ratio_{idx}_s`` tensors, ``mIoU02/12``, ``latency02/12``)."""
    if idx is None:
        found = sorted({int(k.split("_")[1]) for k in state if k.startswith("alpha_")})
        if len(found) != 1:
            raise SegnasError(f"official arch: expected alpha_<idx>_<scale> tensors of one network, "
                              f"found indices {found}")
        idx = found[0]
    names = ([f"alpha_{idx}_{s}" for s in range(3)] + [f"beta_{idx}_{s}" for s in (1, 2)]
             + [f"ratio_{idx}_{s}" for s in range(3)])
    for name in names:
        if name not in state:
            raise SegnasError(f"official arch: missing field {name!r}")
    alphas = [state[f"alpha_{idx}_{s}"] for s in range(3)]
    betas = [None] + [state[f"beta_{idx}_{s}"] for s in (1, 2)]
    ratios = [state[f"ratio_{idx}_{s}"] for s in range(3)]
    layers = alphas[0].shape[0]
    ignore_skip = idx == 0  # train.py: the teacher (arch 0) never keeps a skip
    width_ratios = tuple(float(r) for r in width_ratios)
    if ratios[0].shape[1] == 1:  # no width search: the teacher is at full width
        choices = [1.0] if ignore_skip else [4 / 12]
    else:
        choices = list(width_ratios)
        if ratios[0].shape[1] != len(choices):
            raise SegnasError(f"official arch: ratio tensors have {ratios[0].shape[1]} width choices, "
                              f"width_ratios has {len(choices)}")
    derived = official_branches(alphas, betas, ratios, choices, ignore_skip)
    if lasts is None:
        for name in ("mIoU02", "latency02", "mIoU12", "latency12"):
            if name not in state:
                raise SegnasError(f"official arch: missing field {name!r} (needed to choose the branch pair; "
                                  "or pass lasts)")
        obj02 = _objective(float(state["mIoU02"]), float(state["latency02"]))
        obj12 = _objective(float(state["mIoU12"]), float(state["latency12"]))
        lasts = official_pair(obj02, obj12)
    branches = []
    for last in lasts:
        b = derived[last]
        idxs = []
        for w in b.widths:
            match = [i for i, r in enumerate(width_ratios) if abs(r - w) < 1e-9]
            if not match:
                raise SegnasError(f"official arch: width ratio {w} is not in width_ratios {width_ratios}")
            idxs.append(match[0])
        branches.append(replace(b, widths=tuple(idxs)))
    stem_w, head_w = stem_head_width or OFFICIAL_STEM_HEAD_WIDTH.get(idx, (1.0, 1.0))
    return MultiResArch(tuple(branches), layers=layers, num_scales=3, base_width=base_width,
                        width_ratios=width_ratios, stem_width=float(stem_w), head_width=float(head_w))


def import_official(path: str | Path, **kwargs: Any) -> MultiResArch:
    """Read an official ``arch_<idx>.pt`` (0 = teacher, 1 = student) and derive its network."""
    path = Path(path)
    if not path.is_file():
        raise SegnasError(f"{path}: official FasterSeg architecture file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise SegnasError(f"{path}: cannot read as a torch-pickled FasterSeg architecture ({exc})") from None
    if not isinstance(state, dict):
        raise SegnasError(f"{path}: expected a dict of alpha/beta/ratio tensors, got {type(state).__name__}")
    try:
        return derive_official(state, **kwargs)
    except SegnasError as exc:
        raise SegnasError(f"{path}: {exc}") from None


# ------------------------------------------------------------------------------- reporting
def structure_rows(arch: MultiResArch, num_classes: int) -> list[dict[str, Any]]:
    """One row per eval-mode piece: part, branch(es), layer, scale, op, cin, cout, stride."""
    plan = plan_network(arch, num_classes)
    label = lambda group: "+".join(scale_name(arch.branches[k].last) for k in group)  # noqa: E731
    rows = [dict(part="stem", branch="", layer=i, scale=f"1/{2 ** i}", op=p.template.op,
                 cin=p.template.cin, cout=p.template.cout, stride=p.template.stride) for i, p in enumerate(plan.stem)]
    for s in plan.steps:
        t = s.piece.template
        rows.append(dict(part="cell", branch=label(s.group), layer=s.layer, scale=scale_name(s.scale), op=t.op,
                         cin=t.cin, cout=t.cout, stride=t.stride))
    for k, per_branch in enumerate(plan.fusion):
        for scale, arm, up, refine in per_branch:
            for p, sc in ((arm, scale + 1), (up, scale + 1), (refine, scale)):
                t = p.template
                extra = dict(t.extra)
                op = t.op + (f"(k{extra['kernel']})" if t.op == "conv_bn_relu" else f"(x{extra['factor']})")
                rows.append(dict(part="fusion", branch=label([k]), layer="", scale=scale_name(sc), op=op,
                                 cin=t.cin, cout=t.cout, stride=1))
    for name, p in (("ffm", plan.ffm), ("head", plan.head), ("upsample", plan.upsample)):
        t = p.template
        rows.append(dict(part=name, branch="", layer="", scale=scale_name(0), op=t.op, cin=t.cin, cout=t.cout,
                         stride=1))
    return rows


def summarize(arch: MultiResArch, num_classes: int = 19, input_size: tuple[int, int] = (1024, 2048),
              flops: bool = True) -> str:
    """The structure table, the deployed parameter count and (optionally) FLOPs at ``input_size``."""
    from segnas.cost.flops import count_flops
    from segnas.cost.params import count_parameters

    rows = structure_rows(arch, num_classes)
    cols = ["part", "branch", "layer", "scale", "op", "cin", "cout", "stride"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    model = MULTIRES.build(arch, num_classes)
    lines.append(f"parameters (deployed, no aux heads): {count_parameters(model):,} "
                 f"({count_parameters(model) / 1e6:.3f} M)")
    if flops:
        res = count_flops(model, (1, 3, *input_size))
        lines.append(f"at {input_size[0]}x{input_size[1]}, {num_classes} classes: "
                     f"{res.gflops:.2f} GFLOPs = {res.gmacs:.2f} GMACs")
    return "\n".join(lines)


def print_summary(arch: MultiResArch | str | Path, num_classes: int = 19,
                  input_size: tuple[int, int] = (1024, 2048), flops: bool = True) -> str:
    """Print ``summarize`` of an architecture or of an official ``arch_*.pt`` file; returns the text."""
    if not isinstance(arch, MultiResArch):
        arch = import_official(arch)
    text = summarize(arch, num_classes, input_size, flops)
    print(text)
    return text


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:]:
        print(f"== {arg}")
        print_summary(arg)
