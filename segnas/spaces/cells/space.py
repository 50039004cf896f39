"""The ``cells`` space: the macro settings and the operators every cell chooses from, sampling and
mutation, and the space contract (``segnas.spaces.base.SearchSpace``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

import numpy as np

from segnas.errors import SegnasError
from segnas.nn.ops import OpKey
from segnas.spaces.base import SearchSpace, register_default, register_space
from segnas.spaces.cells.arch import CELL_OPS, DEFAULT_OPS, NONE, VERSION, Cell, CellsArch, Edge, validate_macro
from segnas.spaces.cells.network import STAGE_STRIDES, CellsNet, plan_network
from segnas.spaces.pieces import pieces_latency_keys

if TYPE_CHECKING:
    from segnas.spaces.cells.supernet import CellsSupernet

#: Operators without weights: ``sample(spread=True)`` draws a per-network share of them.
CHEAP_OPS = ("skip", "avg_pool3x3", "max_pool3x3")


@register_space("cells")
@dataclass
class CellsSpace(SearchSpace[CellsArch]):
    """Stem to 1/4, cells over strides 1/4 → 1/32 (``layout``: cells per stage; the first cell of
    every later stage reduces), every cell a DAG of ``nodes`` intermediate nodes summing
    ``node_inputs`` edges each, with its own operators from ``ops``; a decoder fusing
    ``decoder_strides``."""

    version: ClassVar[int] = VERSION
    smaller: ClassVar[str] = "smaller channels or fewer cells in layout"
    layout: tuple[int, ...] = (1, 2, 2, 2)
    channels: tuple[int, ...] = (12, 24, 48, 96)
    nodes: int = 3
    node_inputs: int = 2
    ops: tuple[str, ...] = DEFAULT_OPS
    stem_channels: int = 16
    decoder_width: int = 64
    decoder_strides: tuple[int, int] = (8, 32)

    def __post_init__(self) -> None:
        self.layout, self.channels = tuple(int(v) for v in self.layout), tuple(int(v) for v in self.channels)
        self.decoder_strides, self.ops = tuple(int(v) for v in self.decoder_strides), tuple(self.ops)

        def fail(where: str, msg: str) -> NoReturn:
            raise SegnasError(f"cells space: {where}: {msg}")

        validate_macro(self, fail)
        unknown = [o for o in self.ops if o != NONE and o not in CELL_OPS]
        if unknown or len(set(self.ops)) != len(self.ops) or not self.choices:
            fail("ops", f"distinct names among {NONE}, {', '.join(CELL_OPS)}, at least one besides {NONE}; "
                        f"got {list(self.ops)}")
        if self.node_inputs < 1:
            fail("node_inputs", f"must be >= 1, got {self.node_inputs}")

    @property
    def choices(self) -> tuple[str, ...]:
        """The operators a derived edge can have (``ops`` without the zero operation)."""
        return tuple(o for o in self.ops if o != NONE)

    @property
    def num_cells(self) -> int:
        return sum(self.layout)

    def kept(self, node: int) -> int:
        """Edges node ``node`` keeps in a derived network (it has ``node + 2`` candidates)."""
        return min(self.node_inputs, node + 2)

    def make_arch(self, cells: list[Cell] | tuple[Cell, ...]) -> CellsArch:
        return CellsArch(self.layout, self.channels, self.nodes, tuple(cells), self.stem_channels,
                         self.decoder_width, self.decoder_strides)

    # ---- contract
    def arch_from_dict(self, d: Any) -> CellsArch:
        return CellsArch.from_dict(d)

    def build(self, arch: CellsArch, num_classes: int) -> CellsNet:
        return CellsNet(arch, num_classes)

    def latency_keys(self, arch: CellsArch, num_classes: int, input_size: tuple[int, int]) -> list[OpKey]:
        return pieces_latency_keys(plan_network(arch, num_classes), input_size, STAGE_STRIDES[-1])

    def supernet(self, num_classes: int, input_size: tuple[int, int], **options: Any) -> CellsSupernet:
        """The weight-sharing supernet (``supernet.CellsSupernet``), costed at ``input_size`` (H, W)."""
        from segnas.spaces.cells.supernet import CellsSupernet

        return CellsSupernet(self, num_classes, input_size, **options)

    def sample(self, rng: np.random.Generator, spread: bool = False) -> CellsArch:
        """Every cell drawn on its own: per node ``node_inputs`` distinct inputs, each with an operator.
        ``spread`` first draws the share of weight-free operators (skip, pooling) of the network, so
        samples span the space's latency range."""
        choices = self.choices
        cheap = [o for o in choices if o in CHEAP_OPS]
        costly = [o for o in choices if o not in CHEAP_OPS]
        share = float(rng.uniform()) if spread and cheap and costly else None

        def op() -> str:
            if share is None:
                return choices[int(rng.integers(len(choices)))]
            pool = cheap if rng.random() < share else costly
            return pool[int(rng.integers(len(pool)))]

        cells = []
        for _ in range(self.num_cells):
            nodes = []
            for i in range(self.nodes):
                sources = sorted(int(s) for s in rng.choice(i + 2, size=self.kept(i), replace=False))
                nodes.append(tuple(Edge(op(), s) for s in sources))
            cells.append(tuple(nodes))
        return self.make_arch(cells)

    def mutate(self, arch: CellsArch, rng: np.random.Generator) -> CellsArch:
        """A neighbour: one edge gets another operator, or reads another input of its node."""
        for _ in range(100):
            k, i = int(rng.integers(len(arch.cells))), int(rng.integers(len(arch.cells[0])))
            node = list(arch.cells[k][i])
            j = int(rng.integers(len(node)))
            if rng.random() < 0.5:
                node[j] = Edge(self.choices[int(rng.integers(len(self.choices)))], node[j].input)
            else:
                free = sorted(set(range(i + 2)) - {e.input for e in node})
                if not free:
                    continue
                node[j] = Edge(node[j].op, free[int(rng.integers(len(free)))])
                node.sort(key=lambda e: e.input)
            if tuple(node) != arch.cells[k][i]:
                cells = [list(c) for c in arch.cells]
                cells[k][i] = tuple(node)
                return replace(arch, cells=tuple(tuple(c) for c in cells))
        raise SegnasError("cells: no valid mutation found for this architecture")


#: The space with its default settings: what ``get_space("cells")`` returns.
CELLS = register_default(CellsSpace())
