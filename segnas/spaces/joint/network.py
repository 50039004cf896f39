"""The derived network of a ``joint`` architecture: its pieces (``OpKey`` templates at resolution
levels) and ``JointNet``, the plain network built from them, with the fixed decoder
(``JointDecoder``) that the SSR supernet shares."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from segnas.nn.ops import OpKey
from segnas.nn.segnet import SegmentationNet
from segnas.spaces.joint.arch import BLOCK_OPS, JointArch, Slot
from segnas.spaces.pieces import Piece, op_template


def block_template(channels: int, slot: Slot) -> OpKey:
    return op_template(BLOCK_OPS[slot.op], channels, slot.out, dilation=slot.dilation, half=slot.half, mid=slot.mid)


def stem_pieces(arch: JointArch) -> list[Piece]:
    return [Piece("stem.0", op_template("erf_down", 3, arch.stem_channels, 2), 0),
            Piece("stem.1", op_template("erf_down", arch.stem_channels, arch.channels[0], 2), 1)]


def down_piece(arch: JointArch, s: int) -> Piece:
    """The downsampler that starts stage ``s`` > 0."""
    return Piece(f"down.{s}", op_template("erf_down", arch.channels[s - 1], arch.channels[s], 2), s + 1)


def decoder_pieces(arch: JointArch, num_classes: int) -> list[Piece]:
    d = arch.decoder_width
    pieces = [Piece(f"dec.proj{s}", op_template("conv_bn_relu", c, d, kernel=1), s + 2)
              for s, c in enumerate(arch.channels)]
    pieces += [Piece(f"dec.up{s}", op_template("upsample", d, d, factor=2, align_corners=False), s + 2)
               for s in range(len(arch.channels) - 1, 0, -1)]
    return pieces + [Piece("dec.head", op_template("head", d, num_classes, mid=d), 2),
                     Piece("dec.out", op_template("upsample", num_classes, num_classes, factor=4,
                                                  align_corners=False), 2)]


def plan_network(arch: JointArch, num_classes: int) -> list[Piece]:
    """Every eval-mode piece of the derived network, in execution order (skips have none)."""
    pieces = stem_pieces(arch)
    for s, c in enumerate(arch.channels):
        if s:
            pieces.append(down_piece(arch, s))
        pieces += [Piece(f"slot.{s}.{i}", block_template(c, slot), s + 2)
                   for i, slot in enumerate(arch.slots[s]) if slot.op != "skip"]
    return pieces + decoder_pieces(arch, num_classes)


class JointDecoder(nn.Module):
    """The fixed decoder (module docstring); built from its pieces."""

    def __init__(self, pieces: Sequence[Piece], stages: int) -> None:
        super().__init__()
        by_name = {p.name.split(".", 1)[1]: p for p in pieces}
        self.proj = nn.ModuleList(by_name[f"proj{s}"].build() for s in range(stages))
        self.up = nn.ModuleList(by_name[f"up{s}"].build() for s in range(1, stages))
        self.head = by_name["head"].build()
        self.out = by_name["out"].build()

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits at 1/4 from the stage outputs (shallow to deep)."""
        y = self.proj[-1](feats[-1])
        for s in range(len(feats) - 2, -1, -1):
            y = self.up[s](y) + self.proj[s](feats[s])
        return self.head(y)


class JointNet(SegmentationNet):
    """The plain derived network of a ``JointArch``."""

    #: Trained with bf16 autocast in channels-last, these networks hit NaN weight gradients within a
    #: few dozen steps: oneDNN's weight gradient of a dilated 3×1 convolution (24 channels, 45×60,
    #: batch 8) came back NaN from finite inputs and output gradients, while replaying the same
    #: tensors 300 times gave finite results — an intermittent kernel fault, not an overflow. In
    #: NCHW, or in fp32, they train cleanly.
    bf16_channels_last_ok = False

    def __init__(self, arch: JointArch, num_classes: int) -> None:
        super().__init__(num_classes)
        self.stride_multiple = arch.stride
        self.stem = nn.Sequential(*(p.build() for p in stem_pieces(arch)))
        self.downs = nn.ModuleList(down_piece(arch, s).build() for s in range(1, len(arch.channels)))
        self.stages = nn.ModuleList(
            nn.Sequential(*(block_template(c, slot).build() for slot in arch.slots[s] if slot.op != "skip"))
            for s, c in enumerate(arch.channels))
        self.decoder = JointDecoder(decoder_pieces(arch, num_classes), len(arch.channels))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.stem(x)
        feats = []
        for s, stage in enumerate(self.stages):
            if s:
                x = self.downs[s - 1](x)
            x = stage(x)
            feats.append(x)
        return self.decoder(feats), []

    def upsample_logits(self, main: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return self.decoder.out(main)  # the registered ×4 ``upsample`` op: a latency-table piece
