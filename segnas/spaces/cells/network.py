"""The derived network of a ``cells`` architecture: where every cell sits (``CellPlan``), the pieces
(``OpKey`` templates at resolution levels) of the stem, the cells' edges and the decoder, and
``CellsNet``, the plain network built from them. The supernet (``segnas.spaces.cells.supernet``)
builds its fixed parts and every candidate edge from the same plans."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from segnas.nn.segnet import SegmentationNet
from segnas.spaces.cells.arch import CELL_OPS, STAGE_STRIDES, Cell, CellsArch, Macro
from segnas.spaces.pieces import Piece, op_template

#: Level (log2 of the stride) of the stem's output: the first stage works at 1/4.
STEM_LEVEL = 2


@dataclass(frozen=True)
class CellPlan:
    """Cell ``index``: its stage, whether it reduces (its first stage cell: stride 2 on the edges
    from its two inputs), its channels per node, its output level and the preprocessing of its two
    inputs to those channels (1×1 conv-BN-ReLU; a factorized reduce for the older input when the
    previous cell reduced)."""

    index: int
    stage: int
    reduction: bool
    channels: int
    level: int
    pre0: Piece
    pre1: Piece

    def edge(self, node: int, source: int, op: str) -> Piece:
        """The piece of ``op`` on the edge from state ``source`` into intermediate node ``node``."""
        name, dilation, extra = CELL_OPS[op]
        from_input = source < 2
        stride = 2 if self.reduction and from_input else 1
        level = self.level - 1 if self.reduction and from_input else self.level
        c = self.channels
        return Piece(f"cells.{self.index}.{node}.{source}", op_template(name, c, c, stride, dilation, **dict(extra)),
                     level)


def stem_pieces(m: Macro) -> list[Piece]:
    """Two 3×3 stride-2 conv-BN-ReLUs: the input to 1/4 with ``stem_channels``."""
    c = m.stem_channels
    return [Piece("stem.0", op_template("conv_bn_relu", 3, c, 2), 0),
            Piece("stem.1", op_template("conv_bn_relu", c, c, 2), 1)]


def cell_plans(m: Macro) -> list[CellPlan]:
    """Every cell in order. Cell k reads the outputs of cells k−2 and k−1 (the stem's output stands
    in for missing ones); its output concatenates its ``nodes`` intermediate nodes."""
    states = [(m.stem_channels, STEM_LEVEL)] * 2  # (channels, level) of every state so far
    plans = []
    for stage, count in enumerate(m.layout):
        level, c = STEM_LEVEL + stage, m.channels[stage]
        for _ in range(count):
            (c0, l0), (c1, l1) = states[-2], states[-1]
            k = len(plans)
            pre0 = (op_template("conv_bn_relu", c0, c, kernel=1) if l0 == l1 else op_template("skip", c0, c, 2))
            plans.append(CellPlan(k, stage, l1 < level, c, level, Piece(f"cells.{k}.pre0", pre0, l0),
                                  Piece(f"cells.{k}.pre1", op_template("conv_bn_relu", c1, c, kernel=1), l1)))
            states.append((m.nodes * c, level))
    return plans


def stage_taps(m: Macro) -> dict[int, tuple[int, int]]:
    """Per stage stride: (index into the forward's list of states [stem, stem, cell 0, cell 1, …] of
    the stage's output — its last cell, or the stem for an empty first stage —, its channels)."""
    taps, last = {}, (1, m.stem_channels)
    for stage, count in enumerate(m.layout):
        if count:
            last = (1 + sum(m.layout[:stage + 1]), m.nodes * m.channels[stage])
        taps[STAGE_STRIDES[stage]] = last
    return taps


def decoder_pieces(m: Macro, num_classes: int) -> list[Piece]:
    """The fixed decoder: 1×1 conv-BN-ReLU of the fine and coarse stage outputs to ``decoder_width``,
    the coarse one upsampled and added to the fine one, a head (3×3 conv-BN-ReLU + 1×1 classifier)
    at the fine stride and the logits upsampled to the input."""
    fine, coarse = m.decoder_strides
    taps, d = stage_taps(m), m.decoder_width
    lf, lc = fine.bit_length() - 1, coarse.bit_length() - 1
    return [Piece("decoder.fine", op_template("conv_bn_relu", taps[fine][1], d, kernel=1), lf),
            Piece("decoder.coarse", op_template("conv_bn_relu", taps[coarse][1], d, kernel=1), lc),
            Piece("decoder.up", op_template("upsample", d, d, factor=coarse // fine, align_corners=False), lc),
            Piece("decoder.head", op_template("head", d, num_classes, mid=d), lf),
            Piece("decoder.out", op_template("upsample", num_classes, num_classes, factor=fine,
                                             align_corners=False), lf)]


def plan_network(arch: CellsArch, num_classes: int) -> list[Piece]:
    """Every piece of the derived network in execution order (identity skips included)."""
    pieces = stem_pieces(arch)
    for plan, cell in zip(cell_plans(arch), arch.cells):
        pieces += [plan.pre0, plan.pre1]
        pieces += [plan.edge(i, e.input, e.op) for i, node in enumerate(cell) for e in node]
    return pieces + decoder_pieces(arch, num_classes)


class CellsDecoder(nn.Module):
    """The fixed decoder (``decoder_pieces``), shared by the derived networks and the supernet."""

    def __init__(self, m: Macro, num_classes: int) -> None:
        super().__init__()
        pieces = {p.name.split(".", 1)[1]: p.build() for p in decoder_pieces(m, num_classes)}
        self.fine, self.coarse, self.up = pieces["fine"], pieces["coarse"], pieces["up"]
        self.head, self.out = pieces["head"], pieces["out"]
        taps = stage_taps(m)
        self.taps = (taps[m.decoder_strides[0]][0], taps[m.decoder_strides[1]][0])

    def forward(self, states: list[torch.Tensor]) -> torch.Tensor:
        """Logits at the fine stride from the list of states (stem, stem, cell outputs)."""
        fine, coarse = (states[i] for i in self.taps)
        return self.head(self.up(self.coarse(coarse)) + self.fine(fine))


class DerivedCell(nn.Module):
    """One cell of a derived network: its kept edges, summed per node, the nodes concatenated."""

    def __init__(self, plan: CellPlan, cell: Cell) -> None:
        super().__init__()
        self.pre0, self.pre1 = plan.pre0.build(), plan.pre1.build()
        self.sources = [[e.input for e in node] for node in cell]
        self.ops = nn.ModuleList(nn.ModuleList(plan.edge(i, e.input, e.op).build() for e in node)
                                 for i, node in enumerate(cell))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for sources, ops in zip(self.sources, self.ops):
            out = ops[0](states[sources[0]])
            for j, op in zip(sources[1:], ops[1:]):
                out = out + op(states[j])
            states.append(out)
        return torch.cat(states[2:], dim=1)


class CellsNet(SegmentationNet):
    """The plain derived network of a ``CellsArch``."""

    stride_multiple = STAGE_STRIDES[-1]

    def __init__(self, arch: CellsArch, num_classes: int) -> None:
        super().__init__(num_classes)
        self.stem = nn.Sequential(*(p.build() for p in stem_pieces(arch)))
        self.cells = nn.ModuleList(DerivedCell(plan, cell) for plan, cell in zip(cell_plans(arch), arch.cells))
        self.decoder = CellsDecoder(arch, num_classes)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.stem(x)
        states = [x, x]
        for cell in self.cells:
            states.append(cell(states[-2], states[-1]))
        return self.decoder(states), []

    def upsample_logits(self, main: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return self.decoder.out(main)  # the registered ``upsample`` op: a latency-table piece
