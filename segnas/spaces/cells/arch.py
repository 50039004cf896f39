"""Architectures of the ``cells`` space: ``CellsArch`` (the macro layout and every cell's DAG),
``Edge``, the cell operators, validation and (de)serialization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NoReturn, Protocol

from segnas.spaces.fields import ArchFields

VERSION = 1
#: The zero operation: a search-time choice only (an edge whose strongest weight it is carries
#: nothing); derived networks never contain it.
NONE = "none"
#: Cell operators: name -> (operator of ``segnas.nn.ops``, dilation, extra settings of the op).
CELL_OPS: dict[str, tuple[str, int, tuple[tuple[str, Any], ...]]] = {
    "skip": ("skip", 1, ()),                       # identity; factorized reduce when strided
    "conv3x3": ("conv", 1, ()),                    # 3×3 conv-BN-ReLU
    "sep3x3": ("sep_conv", 1, ()),                 # depthwise 3×3 + pointwise 1×1, each BN-ReLU
    "dil2_sep3x3": ("sep_conv", 2, ()),            # the same, dilated
    "dil4_sep3x3": ("sep_conv", 4, ()),
    "dil8_sep3x3": ("sep_conv", 8, ()),
    "avg_pool3x3": ("pool", 1, (("kind", "avg"),)),
    "max_pool3x3": ("pool", 1, (("kind", "max"),)),
}
#: The operators a ``cells`` space searches by default (``max_pool3x3`` is available as an option).
DEFAULT_OPS: tuple[str, ...] = ("none", "skip", "conv3x3", "sep3x3", "dil2_sep3x3", "dil4_sep3x3", "dil8_sep3x3",
                                "avg_pool3x3")
#: Output strides of the four stages; cells of stage s work at 1/STAGE_STRIDES[s].
STAGE_STRIDES: tuple[int, ...] = (4, 8, 16, 32)


class Macro(Protocol):
    """The fixed part of a network of the space (held by both ``CellsArch`` and ``CellsSpace``)."""

    layout: tuple[int, ...]
    channels: tuple[int, ...]
    nodes: int
    stem_channels: int
    decoder_width: int
    decoder_strides: tuple[int, int]


@dataclass(frozen=True)
class Edge:
    """One kept edge of a cell: ``op`` applied to state ``input`` (0: the cell before the previous
    one, 1: the previous cell, 2 + m: intermediate node m of this cell)."""

    op: str
    input: int

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "input": self.input}


Node = tuple[Edge, ...]
Cell = tuple[Node, ...]


@dataclass(frozen=True)
class CellsArch:
    """A derived network of the ``cells`` space: the macro layout and, per cell, its nodes' edges."""

    layout: tuple[int, ...]
    channels: tuple[int, ...]
    nodes: int
    cells: tuple[Cell, ...]
    stem_channels: int = 16
    decoder_width: int = 64
    decoder_strides: tuple[int, int] = (8, 32)

    def __post_init__(self) -> None:
        validate_macro(self, _fail)
        _validate_cells(self)

    @property
    def distinct_cells(self) -> int:
        """How many different cell architectures the network has."""
        return len(set(self.cells))

    @property
    def changes(self) -> int:
        """How many cells differ from the cell before them."""
        return sum(a != b for a, b in zip(self.cells, self.cells[1:]))

    def to_dict(self) -> dict[str, Any]:
        return {"layout": list(self.layout), "channels": list(self.channels), "nodes": self.nodes,
                "stem_channels": self.stem_channels, "decoder_width": self.decoder_width,
                "decoder_strides": list(self.decoder_strides),
                "cells": [[[e.to_dict() for e in node] for node in cell] for cell in self.cells]}

    @classmethod
    def from_dict(cls, d: Any) -> CellsArch:
        _CHECK.fields(d, "", set(FIELDS), set(REQUIRED))
        ints = {k: tuple(_typed(v, f"{k}[{i}]", int) for i, v in enumerate(_typed(d[k], k, list)))
                for k in ("layout", "channels", "decoder_strides") if k in d}
        scalars = {k: _typed(d[k], k, int) for k in ("nodes", "stem_channels", "decoder_width") if k in d}

        def edge(e: Any, where: str) -> Edge:
            if not isinstance(e, dict) or set(e) != {"op", "input"}:
                _fail(where, "expected a mapping with 'op' and 'input'")
            return Edge(_typed(e["op"], f"{where}.op", str), _typed(e["input"], f"{where}.input", int))

        def node(v: Any, where: str) -> Node:
            return tuple(edge(e, f"{where}[{j}]") for j, e in enumerate(_typed(v, where, list)))

        cells = tuple(tuple(node(n, f"cells[{k}][{i}]") for i, n in enumerate(_typed(cell, f"cells[{k}]", list)))
                      for k, cell in enumerate(_typed(d["cells"], "cells", list)))
        return cls(cells=cells, **ints, **scalars)


#: Fields of an architecture mapping, and those without a default.
FIELDS = ("layout", "channels", "nodes", "cells", "stem_channels", "decoder_width", "decoder_strides")
REQUIRED = FIELDS[:4]
_CHECK = ArchFields("cells")
_fail, _typed = _CHECK.fail, _CHECK.typed


def validate_macro(m: Macro, fail: Callable[[str, str], NoReturn]) -> None:
    """Check the macro settings of an architecture or a space; ``fail(field, message)`` raises."""
    n = len(STAGE_STRIDES)
    if len(m.layout) != n or min(m.layout) < 0 or min(m.layout[1:]) < 1:
        fail("layout", f"cells per stage at strides {list(STAGE_STRIDES)}: {n} counts, >= 1 from the second "
                       f"stage on (its first cell reduces), got {list(m.layout)}")
    if len(m.channels) != n or min(m.channels) < 2:
        fail("channels", f"channels per node for each of the {n} stages (>= 2), got {list(m.channels)}")
    for name in ("nodes", "stem_channels", "decoder_width"):
        if getattr(m, name) < 1:
            fail(name, f"must be >= 1, got {getattr(m, name)}")
    fine, coarse = (tuple(m.decoder_strides) + (0, 0))[:2]
    if len(m.decoder_strides) != 2 or fine not in STAGE_STRIDES or coarse not in STAGE_STRIDES or fine >= coarse:
        fail("decoder_strides", f"two of {list(STAGE_STRIDES)}, finer first, got {list(m.decoder_strides)}")


def _validate_cells(a: CellsArch) -> None:
    if len(a.cells) != sum(a.layout):
        _fail("cells", f"one cell per layout position ({sum(a.layout)}), got {len(a.cells)}")
    for k, cell in enumerate(a.cells):
        if len(cell) != a.nodes:
            _fail(f"cells[{k}]", f"{a.nodes} nodes expected, got {len(cell)}")
        for i, node in enumerate(cell):
            if not node:
                _fail(f"cells[{k}][{i}]", "a node needs at least one edge")
            inputs = [e.input for e in node]
            if len(set(inputs)) != len(inputs):
                _fail(f"cells[{k}][{i}]", f"two edges from the same input ({inputs})")
            for j, e in enumerate(node):
                where = f"cells[{k}][{i}][{j}]"
                if e.op == NONE:
                    _fail(f"{where}.op", "'none' (the zero operation) is a search-time choice; networks omit "
                                         "such edges")
                if e.op not in CELL_OPS:
                    _fail(f"{where}.op", f"unknown operator {e.op!r} (expected one of {', '.join(CELL_OPS)})")
                if not 0 <= e.input < i + 2:
                    _fail(f"{where}.input", f"node {i} reads states 0..{i + 1}, got {e.input}")
