"""The network of an ``encdec`` architecture: its pieces (``OpKey`` templates at resolution levels,
the latency keys) and ``EncDecNet``, built from the same pieces, with optional auxiliary cells.

Module names (and piece names): ``encoder.*`` (the encoder's layers), ``decoder.adapt.{i}``,
``decoder.blocks.{b}.cells.{0,1}.ops.{state}``, ``decoder.blocks.{b}.agg.{0,1}``,
``decoder.blocks.{b}.up``, ``decoder.ups.{b}``, ``decoder.fuse``, ``decoder.classifier``, ``out``;
training-only: ``aux_heads.{b}.cell.ops.{state}``, ``aux_heads.{b}.classifier`` (left out of
``segnas.cost.count_parameters``, never run in eval mode, so never exported or costed).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from segnas.nn.ops import OpKey
from segnas.nn.segnet import SegmentationNet
from segnas.spaces.encdec.arch import CELL_OPS, INPUT_LEVELS, NONE, NUM_INPUTS, Cell, EncDecArch, cell_ops, cell_outputs
from segnas.spaces.encdec.encoder import build_encoder, encoder_kind, encoder_pieces
from segnas.spaces.pieces import Piece, op_template

#: Level of the decoder's output (1/4) and the stride inputs are padded to (1/32).
OUT_LEVEL = INPUT_LEVELS[0]
STRIDE = 2 ** INPUT_LEVELS[-1]


# ------------------------------------------------------------------------------------- plans
def op_key(op: str, channels: int) -> OpKey:
    """The ``OpKey`` template of cell operator ``op`` (not ``none``) on ``channels`` channels."""
    name, dilation, extra = CELL_OPS[op]
    return op_template(name, channels, channels, 1, dilation, **dict(extra))


def cell_pieces(cell: Cell, channels: int, level: int, prefix: str) -> list[Piece]:
    """The cell's operators (``none`` branches have none) at ``level``."""
    return [Piece(f"{prefix}ops.{state}", op_key(op, channels), level)
            for state, op, _ in cell_ops(cell) if op != NONE]


def levels(arch: EncDecArch) -> list[int]:
    """Level of every pool entry: the encoder outputs, then each block (the finer of its inputs)."""
    out = list(INPUT_LEVELS)
    for a, b in arch.blocks:
        out.append(min(out[a], out[b]))
    return out


def block_pieces(arch: EncDecArch, b: int) -> list[Piece]:
    """Block ``b``: the cell on each input, a 1×1 conv-BN-ReLU on each, the coarser upsampled to the
    finer (``up``, when their levels differ), then summed."""
    lv, w, prefix = levels(arch), arch.width, f"decoder.blocks.{b}."
    pair = arch.blocks[b]
    pieces = []
    for j, i in enumerate(pair):
        pieces += cell_pieces(arch.cell, w, lv[i], f"{prefix}cells.{j}.")
    pieces += [Piece(f"{prefix}agg.{j}", op_template("conv_bn_relu", w, w, kernel=1), lv[i]) for j, i in enumerate(pair)]
    coarse, fine = max(lv[i] for i in pair), min(lv[i] for i in pair)
    if coarse > fine:
        pieces.append(Piece(f"{prefix}up", op_template("upsample", w, w, factor=2 ** (coarse - fine),
                                                       align_corners=False), coarse))
    return pieces


def decoder_pieces(arch: EncDecArch, num_classes: int) -> list[Piece]:
    """Adapters, blocks, then the unused blocks upsampled to 1/4, concatenated, fused by a 1×1
    conv-BN-ReLU and classified by a 1×1 conv."""
    w, lv = arch.width, levels(arch)
    channels = encoder_kind(arch.encoder).channels(arch.encoder_width)
    pieces = [Piece(f"decoder.adapt.{i}", op_template("conv_bn_relu", c, w, kernel=1), INPUT_LEVELS[i])
              for i, c in enumerate(channels)]
    for b in range(len(arch.blocks)):
        pieces += block_pieces(arch, b)
    unused = arch.unused_blocks
    for b in unused:
        level = lv[NUM_INPUTS + b]
        if level > OUT_LEVEL:
            pieces.append(Piece(f"decoder.ups.{b}", op_template("upsample", w, w, factor=2 ** (level - OUT_LEVEL),
                                                                align_corners=False), level))
    pieces += [Piece("decoder.fuse", op_template("conv_bn_relu", len(unused) * w, w, kernel=1), OUT_LEVEL),
               Piece("decoder.classifier", op_template("classifier", w, num_classes), OUT_LEVEL)]
    return pieces


def out_piece(num_classes: int) -> Piece:
    """The logits at 1/4 upsampled to the (padded) input."""
    return Piece("out", op_template("upsample", num_classes, num_classes, factor=2 ** OUT_LEVEL,
                                    align_corners=False), OUT_LEVEL)


def plan_network(arch: EncDecArch, num_classes: int) -> list[Piece]:
    """Every piece the eval-mode network runs (identity skips included), encoder first."""
    return encoder_pieces(arch.encoder, arch.encoder_width) + decoder_pieces(arch, num_classes) + [out_piece(num_classes)]


# ------------------------------------------------------------------------------------- modules
def _built(pieces: list[Piece], prefix: str) -> dict[str, nn.Module]:
    return {p.name[len(prefix):]: p.build() for p in pieces if p.name.startswith(prefix)}


class ContextualCell(nn.Module):
    """One copy of the searched cell (its own weights): branches on earlier states, summed per layer;
    the output sums the loose ends. A ``none`` branch is zero; a zero state stays zero through
    ``skip`` and is materialized (``zeros_like``) for any other operator, so the network computes
    exactly what the official code's zero operator (``x * 0``) gives."""

    def __init__(self, cell: Cell, channels: int) -> None:
        super().__init__()
        self.branches = cell_ops(cell)
        self.outputs = cell_outputs(cell)
        self.ops = nn.ModuleDict(_built(cell_pieces(cell, channels, 0, ""), "ops."))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states: list[torch.Tensor | None] = [x]
        for state, op, source in self.branches:
            inp = states[source]
            if op == NONE or (inp is None and op == "skip"):
                out = None
            else:
                out = self.ops[str(state)](torch.zeros_like(x) if inp is None else inp)
            states.append(out)
            if state % 3 == 0:  # the layer's second branch: append the layer's sum
                a, b = states[-2], states[-1]
                states.append(a if b is None else b if a is None else a + b)
        total = None
        for s in self.outputs:
            if states[s] is not None:
                total = states[s] if total is None else total + states[s]
        return torch.zeros_like(x) if total is None else total


class DecoderBlock(nn.Module):
    """Two copies of the cell on the block's two inputs, a 1×1 conv-BN-ReLU each, the coarser one
    upsampled to the finer one's resolution, summed (official ``MergeCell`` + ``AggregateCell``)."""

    def __init__(self, arch: EncDecArch, b: int) -> None:
        super().__init__()
        pieces = block_pieces(arch, b)
        prefix = f"decoder.blocks.{b}."
        self.cells = nn.ModuleList(ContextualCell(arch.cell, arch.width) for _ in range(2))
        built = _built(pieces, prefix)
        self.agg = nn.ModuleList([built["agg.0"], built["agg.1"]])
        lv = levels(arch)
        a, c = (lv[i] for i in arch.blocks[b])
        #: which input is upsampled (the coarser), None when both have the same resolution
        self.up_index = None if a == c else (0 if a > c else 1)
        if self.up_index is not None:
            self.up = built["up"]

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        outs = [agg(cell(x)) for cell, agg, x in zip(self.cells, self.agg, (x0, x1))]
        if self.up_index is not None:
            outs[self.up_index] = self.up(outs[self.up_index])
        return outs[0] + outs[1]


class EncDecDecoder(nn.Module):
    """The four encoder maps → (logits at 1/4, every block's output)."""

    def __init__(self, arch: EncDecArch, num_classes: int) -> None:
        super().__init__()
        built = _built(decoder_pieces(arch, num_classes), "decoder.")
        self.connections = arch.blocks
        self.unused = arch.unused_blocks
        self.adapt = nn.ModuleList(built[f"adapt.{i}"] for i in range(NUM_INPUTS))
        self.blocks = nn.ModuleList(DecoderBlock(arch, b) for b in range(len(arch.blocks)))
        self.ups = nn.ModuleDict({k.split(".")[1]: m for k, m in built.items() if k.startswith("ups.")})
        self.fuse, self.classifier = built["fuse"], built["classifier"]

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if len(features) != NUM_INPUTS:
            raise ValueError(f"the decoder reads {NUM_INPUTS} feature maps, got {len(features)}")
        pool = [adapt(f) for adapt, f in zip(self.adapt, features)]
        for block, (a, b) in zip(self.blocks, self.connections):
            pool.append(block(pool[a], pool[b]))
        blocks = pool[NUM_INPUTS:]
        collected = [self.ups[str(b)](blocks[b]) if str(b) in self.ups else blocks[b] for b in self.unused]
        return self.classifier(self.fuse(torch.cat(collected, 1))), blocks


class AuxHead(nn.Module):
    """Training-only auxiliary cell: a copy of the cell and a 1×1 classifier on a block's output."""

    def __init__(self, arch: EncDecArch, num_classes: int) -> None:
        super().__init__()
        self.cell = ContextualCell(arch.cell, arch.width)
        self.classifier = op_template("classifier", arch.width, num_classes).build()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.cell(x))


class EncDecNet(SegmentationNet):
    """Encoder → searched decoder → logits at the input size (inputs padded to a multiple of 32).

    With ``aux_cells``, every decoder block also has an auxiliary head (``aux_heads``); in training
    mode the network then returns ``{"out": logits, "aux": [one logits map per block]}``, all at the
    input size. Eval mode never runs them; ``without_aux()`` drops them before export."""

    stride_multiple = STRIDE

    def __init__(self, arch: EncDecArch, num_classes: int, aux_cells: bool = False) -> None:
        super().__init__(num_classes)
        self.arch = arch
        self.encoder = build_encoder(arch.encoder, arch.encoder_width)
        self.decoder = EncDecDecoder(arch, num_classes)
        self.out = out_piece(num_classes).build()
        self.aux_heads = nn.ModuleList(AuxHead(arch, num_classes) for _ in arch.blocks) if aux_cells \
            else nn.ModuleList()

    def without_aux(self) -> EncDecNet:
        """Drop the auxiliary heads (in place); returns the network."""
        self.aux_heads = nn.ModuleList()
        return self

    def decode(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The decoder's logits at 1/4 of the padded input (before the ×4 upsampling) from the
        encoder's four maps, and in training mode the auxiliary heads' (at their blocks' sizes)."""
        main, blocks = self.decoder(features)
        aux = [head(x) for head, x in zip(self.aux_heads, blocks)] if self.training else []
        return main, aux

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.decode(self.encoder(x))

    def upsample_logits(self, main: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return self.out(main)  # the registered ``upsample`` op (a latency-table piece): ×4 to ``size``

    def forward_decoder(self, features: Sequence[torch.Tensor],
                        size: Sequence[int] | None = None) -> torch.Tensor | dict[str, Any]:
        """What ``forward`` returns, from the encoder's four maps of a padded input (e.g. cached
        features, to train the decoder alone): logits at the padded size cropped to ``size`` (H, W;
        default: no crop), and in training mode with auxiliary heads ``{"out", "aux"}``."""
        main, aux = self.decode(features)
        padded = tuple(4 * d for d in features[0].shape[-2:])  # the first map is at 1/4
        return self.assemble(main, aux, {}, padded, tuple(size) if size is not None else padded)
