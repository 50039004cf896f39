"""Architectures of the ``multires`` space: ``MultiResArch`` (branches of cells over scales), its
validation and (de)serialization, and the constants that fix the network's geometry.

A network is a stem to 1/8 of the input followed by one or more *branches*. A branch is a chain of
cells; each cell applies one operator of ``CELL_OPS`` and either keeps its scale or halves the
resolution (stride 2, twice the channels per FasterSeg's 12·8·2^scale rule), so its path only
steps to coarser scales, one at a time (see ``segnas.spaces.multires`` for the whole network).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from segnas.spaces.fields import ArchFields

#: Cell operators, in the order of FasterSeg's ``PRIMITIVES`` (index = position in α).
CELL_OPS: tuple[str, ...] = ("skip", "conv", "conv_downup", "conv_2x", "conv_2x_downup")
#: FasterSeg's channel expansion ratios of the base width.
DEFAULT_WIDTH_RATIOS: tuple[float, ...] = (4 / 12, 6 / 12, 8 / 12, 10 / 12, 1.0)
#: The stem halves the resolution this many times: cells start at 1/8.
STEM_LEVELS = 3
#: The fields of one branch's mapping, each a list.
BRANCH_FIELDS = ("scales", "ops", "widths")
_CHECK = ArchFields("multires")
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
        _CHECK.fields(
            d, "", {"layers", "num_scales", "base_width", "width_ratios", "stem_width", "head_width", "branches"},
            {"branches"})
        kwargs: dict[str, Any] = {}
        for name in ("layers", "num_scales", "base_width"):
            if name in d:
                kwargs[name] = _CHECK.integer(d[name], name)
        for name in ("stem_width", "head_width"):
            if name in d:
                kwargs[name] = _CHECK.number(d[name], name)
        if "width_ratios" in d:
            ratios = _CHECK.sequence(d["width_ratios"], "width_ratios")
            kwargs["width_ratios"] = tuple(_CHECK.number(v, f"width_ratios[{i}]") for i, v in enumerate(ratios))
        branches = []
        for b, bd in enumerate(_CHECK.sequence(d["branches"], "branches")):
            where = f"branches[{b}]"
            _CHECK.fields(bd, where, set(BRANCH_FIELDS), set(BRANCH_FIELDS))
            lists = {key: _CHECK.sequence(bd[key], f"{where}.{key}") for key in BRANCH_FIELDS}
            scales = tuple(_CHECK.integer(v, f"{where}.scales[{i}]") for i, v in enumerate(lists["scales"]))
            ops = tuple(_CHECK.text(v, f"{where}.ops[{i}]", "an operator name") for i, v in enumerate(lists["ops"]))
            widths = tuple(_CHECK.integer(v, f"{where}.widths[{i}]") for i, v in enumerate(lists["widths"]))
            branches.append(Branch(scales, ops, widths))
        return cls(branches=tuple(branches), **kwargs)


def check_shape(fail: Callable[[str, str], None], layers: int, num_scales: int, base_width: int,
                width_ratios: Sequence[float], stem_width: float, head_width: float) -> None:
    """The checks an architecture and the space share: ``fail(field, message)`` for the first bad one."""
    if layers < 1:
        fail("layers", f"must be >= 1, got {layers}")
    if num_scales < 1:
        fail("num_scales", f"must be >= 1, got {num_scales}")
    if base_width < 1:
        fail("base_width", f"must be >= 1, got {base_width}")
    if not width_ratios:
        fail("width_ratios", "must not be empty")
    for i, r in enumerate(width_ratios):
        if not r > 0:
            fail(f"width_ratios[{i}]", f"must be > 0, got {r}")
    for name, value in (("stem_width", stem_width), ("head_width", head_width)):
        if not value > 0:
            fail(name, f"must be > 0, got {value}")


def _validate(a: MultiResArch) -> None:
    fail = _CHECK.fail
    check_shape(fail, a.layers, a.num_scales, a.base_width, a.width_ratios, a.stem_width, a.head_width)
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

