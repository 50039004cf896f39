"""The derived network of a ``multires`` architecture: its plan (every piece with its ``OpKey``
template and resolution level) and ``MultiResNet``, the plain network built from that plan.

Each branch ending at 1/2^k of 1/8 is refined back to 1/8 (1×1 conv-BN-ReLU, bilinear ×2, concat
with the branch's last feature at that scale, 3×3 conv-BN-ReLU, per scale); the 1/8 outputs of all
branches are concatenated, fused (1×1 conv-BN-ReLU), classified (``head``) and upsampled ×8.
Branches that begin with identical cells share them (computed once), as in the official derived
network. Training-only auxiliary heads see each coarser scale (1/16, 1/32 by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from segnas.nn.ops import OpKey
from segnas.nn.segnet import SegmentationNet
from segnas.spaces.multires.arch import ALIGN_CORNERS, HEAD_MID_LIMIT, STEM_LEVELS, Branch, MultiResArch
from segnas.spaces.pieces import Piece, op_template as _key


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


def conv_key(cin: int, cout: int, kernel: int, stride: int = 1) -> OpKey:
    return _key("conv_bn_relu", cin, cout, stride, kernel=kernel)


def upsample_key(channels: int, factor: int) -> OpKey:
    return _key("upsample", channels, channels, factor=factor, align_corners=ALIGN_CORNERS)


def head_key(cin: int, num_classes: int) -> OpKey:
    return _key("head", cin, num_classes, mid=cin if cin <= HEAD_MID_LIMIT else cin // 2)


def prefix_key(b: Branch, i: int) -> tuple:
    """Cells 0..i of two branches are shared iff these keys are equal (and i is not the last cell
    of either): same operators, same scales after each cell, same widths (official rule)."""
    return tuple((b.ops[j], b.scales[j + 1], b.widths[j]) for j in range(i + 1))


def stem_plan(channels: tuple[int, int, int]) -> list[Piece]:
    """The stem to 1/8: 3×3 conv-BN-ReLU s2 → ``conv_2x`` s2 → ``conv_2x`` s2."""
    c1, c2, c3 = channels
    return [Piece("stem.0", conv_key(3, c1, 3, 2), 0),
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
            groups.setdefault(prefix_key(b, layer) if shareable else ("own", k), []).append(k)
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
            arm = Piece(f"fusion.b{k}_s{s}_arm", conv_key(head_ch[s + 1], head_ch[s], 1), level + 1)
            up = Piece(f"fusion.b{k}_s{s}_up", upsample_key(head_ch[s], 2), level + 1)
            refine = Piece(f"fusion.b{k}_s{s}_refine", conv_key(head_ch[s] + feat_ch[s], head_ch[s], 3), level)
            per_branch.append((s, arm, up, refine))
        fusion.append(per_branch)
    fused = head_ch[0] * len(branches)
    ffm = Piece("ffm", conv_key(fused, fused, 1), STEM_LEVELS)
    head = Piece("head", head_key(fused, num_classes), STEM_LEVELS)
    up = Piece("upsample", upsample_key(num_classes, 2 ** STEM_LEVELS), STEM_LEVELS)
    aux = []
    for s in range(1, arch.num_scales):
        group = tuple(k for k, b in enumerate(branches) if b.last >= s)
        if group:
            cin = sum(_feature_channels(arch, branches[k])[s] for k in group)
            aux.append((s, group, Piece(f"aux_heads.{len(aux)}", head_key(cin, num_classes), STEM_LEVELS + s)))
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

    def upsample_logits(self, main: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        # the ×8 upsampling is the registered ``upsample`` op, so that it is a latency-table piece
        return self.upsample(main)

