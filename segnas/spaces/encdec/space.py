"""The ``encdec`` space: the fixed encoder and widths, the decision sequence the RL controller emits
(``DecisionSpace``), sampling and mutation, and the space contract."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from segnas.errors import SegnasError
from segnas.nn.ops import OpKey
from segnas.spaces.base import SearchSpace, register_default, register_space
from segnas.spaces.encdec.arch import (OP_NAMES, VERSION, Cell, CellLayer, EncDecArch, cell_defect, layer_positions,
                                       pool_size)
from segnas.spaces.encdec.encoder import ENCODERS, load_encoder_weights
from segnas.spaces.encdec.network import STRIDE, EncDecNet, plan_network
from segnas.spaces.pieces import pieces_latency_keys

#: Operators without spatial filters: ``sample(spread=True)`` draws a per-network share of them.
CHEAP_OPS = ("conv1x1", "gap", "skip", "none")
#: Draws ``sample`` and ``mutate`` make before giving up on finding an architecture without a defect.
MAX_DRAWS = 1000


@register_space("encdec")
@dataclass
class EncDecSpace(SearchSpace[EncDecArch]):
    """Fixed encoder (``encoder`` at ``encoder_width``), its four outputs adapted to ``width``
    channels; searched: ``blocks`` decoder blocks' inputs and one contextual cell of ``cell_layers``
    layers. Build options (not part of an architecture): ``aux_cells`` (auxiliary heads for the
    search's child training) and ``encoder_weights`` (a file of pre-trained encoder weights)."""

    version: ClassVar[int] = VERSION
    smaller: ClassVar[str] = "a smaller width, encoder_width or fewer blocks"
    encoder: str = "mobilenetv2"
    encoder_width: float = 1.0
    width: int = 48
    blocks: int = 3
    cell_layers: int = 4
    aux_cells: bool = False
    encoder_weights: str | None = None

    def __post_init__(self) -> None:
        def fail(where: str, msg: str) -> None:
            raise SegnasError(f"encdec space: {where}: {msg}")

        if self.encoder not in ENCODERS:
            fail("encoder", f"unknown encoder {self.encoder!r}; known: {', '.join(sorted(ENCODERS))}")
        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        if not number(self.encoder_width) or not self.encoder_width > 0:
            fail("encoder_width", f"must be a number > 0, got {self.encoder_width!r}")
        for name, low in (("width", 1), ("blocks", 1), ("cell_layers", 2)):
            value = getattr(self, name)
            if not number(value) or not float(value).is_integer() or value < low:
                fail(name, f"must be an integer >= {low}, got {value!r}")
        self.encoder_width = float(self.encoder_width)
        self.width, self.blocks, self.cell_layers = int(self.width), int(self.blocks), int(self.cell_layers)
        self.aux_cells = bool(self.aux_cells)
        if self.encoder_weights is not None:
            self.encoder_weights = str(self.encoder_weights)
            if not Path(self.encoder_weights).is_file():
                fail("encoder_weights", f"{self.encoder_weights}: file not found")

    # ---- decisions (the RL controller's sequence)
    def decision_names(self) -> list[str]:
        """Block inputs first (``block{b}.input{j}``), then the cell: ``cell.first``, then per layer
        l ≥ 1 ``cell.layer{l}.input{0,1}`` and ``cell.layer{l}.op{0,1}`` — the official controller's order."""
        names = [f"block{b}.input{j}" for b in range(self.blocks) for j in range(2)] + ["cell.first"]
        for l in range(1, self.cell_layers):
            names += [f"cell.layer{l}.input0", f"cell.layer{l}.input1", f"cell.layer{l}.op0", f"cell.layer{l}.op1"]
        return names

    def decision_sizes(self) -> list[int]:
        """Block b chooses from ``4 + b`` pool entries, layer l from ``3l − 1`` cell states; operators
        from the 11."""
        n = len(OP_NAMES)
        sizes = [pool_size(b) for b in range(self.blocks) for _ in range(2)] + [n]
        for l in range(1, self.cell_layers):
            sizes += [layer_positions(l)] * 2 + [n, n]
        return sizes

    def to_decisions(self, arch: EncDecArch) -> list[int]:
        self._check_macro(arch)
        values = [i for pair in arch.blocks for i in pair] + [OP_NAMES.index(arch.cell.first)]
        for layer in arch.cell.layers:
            values += [*layer.inputs, *(OP_NAMES.index(op) for op in layer.ops)]
        return values

    def from_decisions(self, decisions: list[int]) -> EncDecArch:
        sizes = self.decision_sizes()
        if len(decisions) != len(sizes):
            raise SegnasError(f"encdec decisions: expected {len(sizes)} values, got {len(decisions)}")
        names = self.decision_names()
        for name, value, size in zip(names, decisions, sizes):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < size:
                raise SegnasError(f"encdec decision {name!r}: expected an integer in 0..{size - 1}, got {value!r}")
        d = [int(v) for v in decisions]
        nb = 2 * self.blocks
        blocks = tuple((d[2 * b], d[2 * b + 1]) for b in range(self.blocks))
        layers = tuple(CellLayer((d[k], d[k + 1]), (OP_NAMES[d[k + 2]], OP_NAMES[d[k + 3]]))
                       for k in range(nb + 1, len(d), 4))
        return self.make_arch(blocks, Cell(OP_NAMES[d[nb]], layers))

    def make_arch(self, blocks: tuple[tuple[int, int], ...], cell: Cell) -> EncDecArch:
        return EncDecArch(self.encoder, self.encoder_width, self.width, blocks, cell)

    def _check_macro(self, arch: EncDecArch) -> None:
        mine = (self.encoder, self.encoder_width, self.width, self.blocks, self.cell_layers)
        theirs = (arch.encoder, arch.encoder_width, arch.width, len(arch.blocks), len(arch.cell.layers) + 1)
        if mine != theirs:
            raise SegnasError(f"encdec: the architecture's (encoder, encoder_width, width, blocks, cell_layers) "
                              f"{theirs} differ from this space's {mine}")

    # ---- contract
    def arch_from_dict(self, d: Any) -> EncDecArch:
        return EncDecArch.from_dict(d)

    def build(self, arch: EncDecArch, num_classes: int) -> EncDecNet:
        """The network; with ``aux_cells`` its auxiliary heads, with ``encoder_weights`` the
        pre-trained encoder loaded (SegnasError if the file does not fit the arch's encoder)."""
        net = EncDecNet(arch, num_classes, aux_cells=self.aux_cells)
        if self.encoder_weights is not None:
            load_encoder_weights(net.encoder, self.encoder_weights)
        return net

    def latency_keys(self, arch: EncDecArch, num_classes: int, input_size: tuple[int, int]) -> list[OpKey]:
        return pieces_latency_keys(plan_network(arch, num_classes), input_size, STRIDE)

    def defect(self, arch: EncDecArch) -> str | None:
        return cell_defect(arch.cell)

    def sample(self, rng: np.random.Generator, spread: bool = False) -> EncDecArch:
        """Every decision uniform over its choices; ``spread`` first draws the network's share of
        cheap operators (1×1 conv, pooling, skip, none), so samples span the latency range. Drawn
        again while the cell cuts the image off (``defect``)."""
        for _ in range(MAX_DRAWS):
            arch = self._draw(rng, spread)
            if self.defect(arch) is None:
                return arch
        raise SegnasError(f"encdec: no architecture that carries the image in {MAX_DRAWS} draws")

    def _draw(self, rng: np.random.Generator, spread: bool) -> EncDecArch:
        share = float(rng.uniform()) if spread else None
        cheap = [OP_NAMES.index(o) for o in CHEAP_OPS]
        costly = [i for i in range(len(OP_NAMES)) if i not in cheap]
        values = []
        for name, size in zip(self.decision_names(), self.decision_sizes()):
            if share is not None and (name == "cell.first" or ".op" in name):
                pool = cheap if rng.random() < share else costly
                values.append(pool[int(rng.integers(len(pool)))])
            else:
                values.append(int(rng.integers(size)))
        return self.from_decisions(values)

    def mutate(self, arch: EncDecArch, rng: np.random.Generator) -> EncDecArch:
        """A neighbour: one decision (a block input, a cell input or operator) changed, so that the
        cell still carries the image (``defect``)."""
        sizes, base = self.decision_sizes(), self.to_decisions(arch)
        free = [i for i, s in enumerate(sizes) if s > 1]
        for _ in range(MAX_DRAWS):
            values = list(base)
            i = free[int(rng.integers(len(free)))]
            values[i] = (values[i] + 1 + int(rng.integers(sizes[i] - 1))) % sizes[i]
            child = self.from_decisions(values)
            if self.defect(child) is None:
                return child
        raise SegnasError(f"encdec: no neighbour that carries the image in {MAX_DRAWS} draws")


#: The space with its default settings: what ``get_space("encdec")`` returns.
ENCDEC = register_default(EncDecSpace())
