"""Architectures of the ``encdec`` space: ``EncDecArch`` (the fixed encoder and widths, the decoder's
block connections and the one contextual cell), the cell operators, validation and (de)serialization.

Cell positions: the cell keeps a list of states — 0 the cell input, 1 the first layer's output, then
per later layer three entries (its two branches, then their sum). Layer ``l`` (1-based, after the
first) may read any state before it: positions ``0 .. 3l - 2`` (``layer_positions``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from segnas.spaces.fields import ArchFields
from segnas.spaces.encdec.encoder import ENCODERS

VERSION = 1
#: The zero operation: a branch that carries nothing.
NONE = "none"
#: Cell operators in the paper's order (official code's ``OP_NAMES``: an operator's index is its
#: decision value): name -> (operator of ``segnas.nn.ops``, dilation, extra settings), None for ``none``.
CELL_OPS: dict[str, tuple[str, int, tuple[tuple[str, Any], ...]] | None] = {
    "conv1x1": ("conv_bn_relu", 1, (("kernel", 1),)),
    "conv3x3": ("conv_bn_relu", 1, ()),
    "sep3x3": ("sep_conv", 1, ()),
    "sep5x5": ("sep_conv", 1, (("kernel", 5),)),
    "gap": ("gap_conv", 1, ()),                     # global average pooling + 1×1 conv-BN-ReLU
    "conv3x3_dil3": ("conv_bn_relu", 3, ()),
    "conv3x3_dil12": ("conv_bn_relu", 12, ()),
    "sep3x3_dil3": ("sep_conv", 3, ()),
    "sep5x5_dil6": ("sep_conv", 6, (("kernel", 5),)),
    "skip": ("skip", 1, ()),                        # identity
    NONE: None,
}
OP_NAMES: tuple[str, ...] = tuple(CELL_OPS)
#: Encoder outputs the decoder reads (1/4, 1/8, 1/16, 1/32), and their levels (log2 of the stride).
NUM_INPUTS = 4
INPUT_LEVELS: tuple[int, ...] = (2, 3, 4, 5)
#: Fields of an architecture mapping (all required).
FIELDS = ("encoder", "encoder_width", "width", "blocks", "cell")


def layer_positions(layer: int) -> int:
    """How many states cell layer ``layer`` (1-based; layer 0 reads the cell input) may read."""
    return 3 * layer - 1


def pool_size(block: int) -> int:
    """How many states decoder block ``block`` (0-based) may read: the encoder outputs and the
    earlier blocks' outputs."""
    return NUM_INPUTS + block


@dataclass(frozen=True)
class CellLayer:
    """A cell layer after the first: ``ops[i]`` applied to state ``inputs[i]``, the two summed."""

    inputs: tuple[int, int]
    ops: tuple[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": list(self.inputs), "ops": list(self.ops)}


@dataclass(frozen=True)
class Cell:
    """The contextual cell: ``first`` applied to the cell input, then ``layers``; its output sums
    every state no later layer reads (the first layer's output and the layers' sums)."""

    first: str
    layers: tuple[CellLayer, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"first": self.first, "layers": [layer.to_dict() for layer in self.layers]}


@dataclass(frozen=True)
class EncDecArch:
    """A network of the ``encdec`` space: encoder kind and width multiplier, the decoder width (every
    adapted encoder output, cell and block), the decoder blocks (two pool indices each) and the cell."""

    encoder: str
    encoder_width: float
    width: int
    blocks: tuple[tuple[int, int], ...]
    cell: Cell

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def unused_blocks(self) -> tuple[int, ...]:
        """Blocks whose output no later block reads: the decoder concatenates them."""
        read = {i for pair in self.blocks for i in pair}
        return tuple(b for b in range(len(self.blocks)) if NUM_INPUTS + b not in read)

    def to_dict(self) -> dict[str, Any]:
        return {"encoder": self.encoder, "encoder_width": self.encoder_width, "width": self.width,
                "blocks": [list(b) for b in self.blocks], "cell": self.cell.to_dict()}

    @classmethod
    def from_dict(cls, d: Any) -> EncDecArch:
        _CHECK.fields(d, "", set(FIELDS), set(FIELDS))
        width = d["encoder_width"]
        if isinstance(width, bool) or not isinstance(width, (int, float)):
            _fail("encoder_width", f"expected a number, got {width!r}")

        def pair(v: Any, where: str, kind: type) -> tuple:
            items = _typed(v, where, list)
            if len(items) != 2:
                _fail(where, f"expected 2 entries, got {len(items)}")
            return tuple(_typed(x, f"{where}[{i}]", kind) for i, x in enumerate(items))

        blocks = tuple(pair(b, f"blocks[{i}]", int) for i, b in enumerate(_typed(d["blocks"], "blocks", list)))
        c = _typed(d["cell"], "cell", dict)
        if set(c) != {"first", "layers"}:
            _fail("cell", f"expected a mapping with 'first' and 'layers', got keys {sorted(c)}")
        layers = []
        for i, layer in enumerate(_typed(c["layers"], "cell.layers", list)):
            where = f"cell.layers[{i}]"
            if not isinstance(layer, dict) or set(layer) != {"inputs", "ops"}:
                _fail(where, "expected a mapping with 'inputs' and 'ops'")
            layers.append(CellLayer(pair(layer["inputs"], f"{where}.inputs", int),
                                    pair(layer["ops"], f"{where}.ops", str)))
        cell = Cell(_typed(c["first"], "cell.first", str), tuple(layers))
        return cls(_typed(d["encoder"], "encoder", str), float(width), _typed(d["width"], "width", int), blocks, cell)


def cell_ops(cell: Cell) -> list[tuple[int, str, int]]:
    """Every branch of the cell in order: (state it writes, operator, state it reads). State 0 is
    the input, 1 the first layer's output; layer l ≥ 1 writes its branches to 3l − 1 and 3l and
    their sum to 3l + 1."""
    branches = [(1, cell.first, 0)]
    for l, layer in enumerate(cell.layers, start=1):
        branches += [(3 * l - 1, layer.ops[0], layer.inputs[0]), (3 * l, layer.ops[1], layer.inputs[1])]
    return branches


def cell_outputs(cell: Cell) -> tuple[int, ...]:
    """The states the cell's output sums: the first layer's output and every layer's sum that no
    later layer reads (the official code's "loose ends")."""
    loose = [1]
    for l, layer in enumerate(cell.layers, start=1):
        loose = [s for s in loose if s not in layer.inputs] + [3 * l + 1]
    return tuple(loose)


#: How far a state carries the image: 0 not at all (zero, or a constant made from zero),
#: 1 as one value per image (after global pooling), 2 pixel by pixel.
_NOTHING, _GLOBAL, _PIXELS = 0, 1, 2


def cell_defect(cell: Cell) -> str | None:
    """Why a network with this cell cannot segment, or None: its output must vary with the input
    pixel by pixel. Every path from the input can be cut by ``none`` (a zero, and any operator on a
    zero gives a constant) or reduced by ``gap`` to one value per image; the decoder reaches the
    classifier only through the cell, so such a network predicts one class map whatever the image."""
    carried = [_PIXELS]
    for state, op, source in cell_ops(cell):
        carried.append(_NOTHING if op == NONE else min(carried[source], _GLOBAL) if op == "gap" else carried[source])
        if state % 3 == 0:  # the layer's second branch: its sum follows
            carried.append(max(carried[-2], carried[-1]))
    reach = max(carried[s] for s in cell_outputs(cell))
    if reach == _PIXELS:
        return None
    how = "is one value per image (global pooling)" if reach == _GLOBAL else "does not depend on its input"
    return f"the cell's output {how}: every path from the input passes through 'none' or 'gap'"


_CHECK = ArchFields("encdec")
_fail, _typed = _CHECK.fail, _CHECK.typed


def _validate(a: EncDecArch) -> None:
    if a.encoder not in ENCODERS:
        _fail("encoder", f"unknown encoder {a.encoder!r}; known: {', '.join(sorted(ENCODERS))}")
    if not a.encoder_width > 0:
        _fail("encoder_width", f"must be > 0, got {a.encoder_width}")
    if a.width < 1:
        _fail("width", f"must be >= 1, got {a.width}")
    if not a.blocks:
        _fail("blocks", "at least one decoder block")
    for b, pair in enumerate(a.blocks):
        if len(pair) != 2 or any(not 0 <= i < pool_size(b) for i in pair):
            _fail(f"blocks[{b}]", f"two indices in 0..{pool_size(b) - 1} (the {NUM_INPUTS} encoder outputs, then "
                                  f"earlier blocks), got {list(pair)}")
    if a.cell.first not in CELL_OPS:
        _fail("cell.first", f"unknown operator {a.cell.first!r}; known: {', '.join(OP_NAMES)}")
    if not a.cell.layers:
        _fail("cell.layers", "at least one layer after the first")
    for i, layer in enumerate(a.cell.layers):
        where, n = f"cell.layers[{i}]", layer_positions(i + 1)
        if len(layer.inputs) != 2 or any(not 0 <= p < n for p in layer.inputs):
            _fail(f"{where}.inputs", f"two cell positions in 0..{n - 1}, got {list(layer.inputs)}")
        for j, op in enumerate(layer.ops):
            if op not in CELL_OPS:
                _fail(f"{where}.ops[{j}]", f"unknown operator {op!r}; known: {', '.join(OP_NAMES)}")
        if len(layer.ops) != 2:
            _fail(f"{where}.ops", f"two operators, got {list(layer.ops)}")
