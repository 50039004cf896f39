"""The ``joint`` search space: SSR's encoder with every slot choosing operator, dilation, resolution,
depth and widths jointly, and a fixed light decoder.

Network: two ERFNet downsamplers (3 → ``stem_channels`` → C₁, to 1/4), then stages; stage s works at
1/2^(s+2) with C_s channels and starts (for s > 0) with a downsampler from C_(s−1). Every stage
holds searchable *slots*; a slot is ``skip`` (the depth choice: no block) or one factorized
residual block (``segnas.nn.factorized``): ``fact`` (ERFNet non-bottleneck-1D) or the cheaper
``dwfact``, with a dilation, a resolution (``half``: pool → block → upsample) and two widths,
``mid`` and ``out`` (channels, chosen from ``width_ratios`` of C_s).

Decoder (fixed; the released SSR code searched the encoder only): each stage's output goes
through a 1×1 conv-BN-ReLU to ``decoder_width``; from the deepest stage up, the running feature is
upsampled ×2 and added to the next shallower one; a head (3×3 conv-BN-ReLU + 1×1 classifier)
predicts at 1/4 and the logits are upsampled ×4. It is cheap, exports to ONNX and gives the fine
1/4 features a direct path to the classifier.

Every piece is an ``OpKey`` of ``segnas.nn.ops``: the latency table, the derived network and the
SSR supernet (``joint_supernet``) build from the same factories.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

import segnas.nn.factorized  # noqa: F401  (registers fact_res, dw_fact_res, erf_down)
from segnas.errors import SegnasError
from segnas.nn.ops import OpKey
from segnas.nn.segnet import SegmentationNet
from segnas.spaces.pieces import Piece, op_template

VERSION = 1
#: Slot operators: the registered op each block kind is built from.
BLOCK_OPS: dict[str, str] = {"fact": "fact_res", "dwfact": "dw_fact_res"}
DEFAULT_WIDTH_RATIOS: tuple[float, ...] = (1.0, 0.875, 0.75, 0.625, 0.5)


@dataclass(frozen=True)
class Slot:
    """One searchable slot: ``op`` is "skip", "fact" or "dwfact"; widths are channel counts."""

    op: str
    dilation: int = 1
    half: bool = False
    mid: int = 0
    out: int = 0

    def to_dict(self) -> dict[str, Any]:
        if self.op == "skip":
            return {"op": "skip"}
        return {"op": self.op, "dilation": self.dilation, "half": self.half, "mid": self.mid, "out": self.out}


@dataclass(frozen=True)
class JointArch:
    """A derived network of the ``joint`` space: per stage its channels and its slots."""

    channels: tuple[int, ...]
    slots: tuple[tuple[Slot, ...], ...]
    stem_channels: int = 16
    decoder_width: int = 64

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def stride(self) -> int:
        return 2 ** (len(self.channels) + 1)

    def to_dict(self) -> dict[str, Any]:
        return {"channels": list(self.channels), "stem_channels": self.stem_channels,
                "decoder_width": self.decoder_width, "slots": [[s.to_dict() for s in st] for st in self.slots]}

    @classmethod
    def from_dict(cls, d: Any) -> JointArch:
        if not isinstance(d, dict):
            raise SegnasError(f"joint arch: expected a mapping, got {type(d).__name__}")
        known = {"channels", "stem_channels", "decoder_width", "slots"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SegnasError(f"joint arch: unknown field {unknown[0]!r} (expected {', '.join(sorted(known))})")
        for key in ("channels", "slots"):
            if key not in d:
                raise SegnasError(f"joint arch: missing field {key!r}")
        channels = tuple(_int(v, f"channels[{i}]") for i, v in enumerate(_list(d["channels"], "channels")))
        stages = []
        for s, st in enumerate(_list(d["slots"], "slots")):
            slots = []
            for i, sd in enumerate(_list(st, f"slots[{s}]")):
                where = f"slots[{s}][{i}]"
                if not isinstance(sd, dict) or "op" not in sd:
                    raise SegnasError(f"joint arch field {where}: expected a mapping with 'op'")
                extra = sorted(set(sd) - {"op", "dilation", "half", "mid", "out"})
                if extra:
                    raise SegnasError(f"joint arch field {where}.{extra[0]}: unknown")
                if sd["op"] == "skip":
                    slots.append(Slot("skip"))
                    continue
                for key in ("dilation", "half", "mid", "out"):
                    if key not in sd:
                        raise SegnasError(f"joint arch field {where}.{key}: missing")
                if not isinstance(sd["half"], bool):
                    raise SegnasError(f"joint arch field {where}.half: expected true or false, got {sd['half']!r}")
                slots.append(Slot(str(sd["op"]), _int(sd["dilation"], f"{where}.dilation"), sd["half"],
                                  _int(sd["mid"], f"{where}.mid"), _int(sd["out"], f"{where}.out")))
            stages.append(tuple(slots))
        kwargs = {k: _int(d[k], k) for k in ("stem_channels", "decoder_width") if k in d}
        return cls(channels, tuple(stages), **kwargs)


def _list(v: Any, where: str) -> list:
    if not isinstance(v, list):
        raise SegnasError(f"joint arch field {where!r}: expected a list, got {type(v).__name__}")
    return v


def _int(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SegnasError(f"joint arch field {where!r}: expected an integer, got {v!r}")
    return v


def _validate(a: JointArch) -> None:
    def fail(where: str, msg: str) -> None:
        raise SegnasError(f"joint arch field {where!r}: {msg}")

    if not a.channels:
        fail("channels", "at least one stage is needed")
    if len(a.slots) != len(a.channels):
        fail("slots", f"one list of slots per stage ({len(a.channels)}), got {len(a.slots)}")
    previous = a.stem_channels
    if a.stem_channels < 1 or a.stem_channels <= 3:
        fail("stem_channels", f"must exceed the 3 input channels, got {a.stem_channels}")
    for s, c in enumerate(a.channels):
        if c <= previous:
            fail(f"channels[{s}]", f"each stage must be wider than the one before ({previous}), got {c}")
        previous = c
        for i, slot in enumerate(a.slots[s]):
            where = f"slots[{s}][{i}]"
            if slot.op == "skip":
                continue
            if slot.op not in BLOCK_OPS:
                fail(f"{where}.op", f"unknown operator {slot.op!r} (expected skip, {', '.join(BLOCK_OPS)})")
            if slot.dilation < 1:
                fail(f"{where}.dilation", f"must be >= 1, got {slot.dilation}")
            for key in ("mid", "out"):
                v = getattr(slot, key)
                if not 1 <= v <= c:
                    fail(f"{where}.{key}", f"must be 1..{c} (the stage's channels), got {v}")
    if a.decoder_width < 1:
        fail("decoder_width", f"must be >= 1, got {a.decoder_width}")


# ------------------------------------------------------------------------------ network plan
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

    def upsample_logits(self, main: torch.Tensor, size) -> torch.Tensor:
        return self.decoder.out(main)  # the registered ×4 ``upsample`` op: a latency-table piece


# ------------------------------------------------------------------------------------ space
@dataclass(frozen=True)
class Candidate:
    """One choice of a slot besides its widths: skip, or a block kind with dilation and resolution."""

    op: str
    dilation: int = 1
    half: bool = False

    def slot(self, mid: int = 0, out: int = 0) -> Slot:
        return Slot("skip") if self.op == "skip" else Slot(self.op, self.dilation, self.half, mid, out)


@dataclass
class JointSpace:
    """The ``joint`` space settings: stage layout (channels, slots), the choices of every slot."""

    name: str = "joint"
    version: int = VERSION
    channels: tuple[int, ...] = (64, 128)
    slots: tuple[int, ...] = (5, 8)
    stem_channels: int = 16
    decoder_width: int = 64
    ops: tuple[str, ...] = ("fact", "dwfact")
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16)
    resolutions: tuple[bool, ...] = (False, True)  # half resolution?
    width_ratios: tuple[float, ...] = field(default=DEFAULT_WIDTH_RATIOS)

    def __post_init__(self) -> None:
        self.channels, self.slots = tuple(int(c) for c in self.channels), tuple(int(n) for n in self.slots)
        if len(self.channels) != len(self.slots) or not self.channels or min(self.slots) < 1:
            raise SegnasError(f"joint space: one slot count >= 1 per stage, got channels {list(self.channels)} "
                              f"and slots {list(self.slots)}")
        widths = (self.stem_channels,) + self.channels
        if self.stem_channels <= 3 or any(b <= a for a, b in zip(widths, widths[1:])):
            raise SegnasError(f"joint space: stem_channels ({self.stem_channels}) must exceed 3 and each stage's "
                              f"channels the previous ones, got channels {list(self.channels)}")
        unknown = [o for o in self.ops if o not in BLOCK_OPS]
        if unknown or not self.ops:
            raise SegnasError(f"joint space: ops must be among {', '.join(BLOCK_OPS)}, got {list(self.ops)}")
        if not self.width_ratios or not all(0 < r <= 1 for r in self.width_ratios):
            raise SegnasError(f"joint space: width ratios must be in (0, 1], got {list(self.width_ratios)}")
        if not self.dilations or min(self.dilations) < 1:
            raise SegnasError(f"joint space: dilations must be >= 1, got {list(self.dilations)}")

    # ---- choices
    def candidates(self) -> list[Candidate]:
        """Per slot: ``skip`` first, then every (block kind, dilation, resolution)."""
        return [Candidate("skip")] + [Candidate(op, d, half) for op in self.ops for d in self.dilations
                                      for half in self.resolutions]

    def widths(self, stage: int) -> list[int]:
        """Channel choices of stage ``stage``, widest first (duplicates after rounding removed)."""
        c = self.channels[stage]
        return sorted({max(1, int(round(c * r))) for r in self.width_ratios}, reverse=True)

    # ---- contract
    def arch_from_dict(self, d: Any) -> JointArch:
        return JointArch.from_dict(d)

    def build(self, arch: JointArch, num_classes: int) -> JointNet:
        return JointNet(arch, num_classes)

    def latency_keys(self, arch: JointArch, num_classes: int, input_size: tuple[int, int]) -> list[OpKey]:
        m = arch.stride
        ph, pw = -(-input_size[0] // m) * m, -(-input_size[1] // m) * m
        return [p.key(ph, pw) for p in plan_network(arch, num_classes)]

    def supernet(self, num_classes: int, input_size: tuple[int, int] = (512, 1024)):
        from segnas.spaces.joint_supernet import JointSupernet

        return JointSupernet(self, num_classes, input_size)

    def sample(self, rng: np.random.Generator, spread: bool = False) -> JointArch:
        """A random network; ``spread`` first draws a per-network cap on widths and on the share of
        blocks, so samples span the space's latency range."""
        cands = self.candidates()
        n_w = len(self.width_ratios)
        cap = int(rng.integers(0, n_w)) if spread else 0  # index of the widest width allowed
        keep = float(rng.uniform(0.2, 1.0)) if spread else None
        stages = []
        for s, n in enumerate(self.slots):
            widths = self.widths(s)
            slots = []
            for _ in range(n):
                if keep is None:
                    cand = cands[int(rng.integers(len(cands)))]
                else:
                    cand = cands[0] if rng.random() > keep else cands[1 + int(rng.integers(len(cands) - 1))]
                lo = min(cap, len(widths) - 1)
                slots.append(cand.slot(widths[int(rng.integers(lo, len(widths)))],
                                       widths[int(rng.integers(lo, len(widths)))]))
            stages.append(tuple(slots))
        return self.make_arch(stages)

    def make_arch(self, stages: Sequence[Sequence[Slot]]) -> JointArch:
        return JointArch(self.channels, tuple(tuple(st) for st in stages), self.stem_channels, self.decoder_width)

    def mutate(self, arch: JointArch, rng: np.random.Generator) -> JointArch:
        """A neighbour: one slot gets another candidate, or one of its widths changes."""
        cands = self.candidates()
        for _ in range(100):
            s = int(rng.integers(len(arch.slots)))
            i = int(rng.integers(len(arch.slots[s])))
            slot, widths = arch.slots[s][i], self.widths(s)
            if slot.op == "skip" or rng.random() < 0.5:
                new = cands[int(rng.integers(len(cands)))].slot(slot.mid or widths[0], slot.out or widths[0])
            else:
                key = "mid" if rng.random() < 0.5 else "out"
                new = replace(slot, **{key: widths[int(rng.integers(len(widths)))]})
            if new != slot:
                stages = [list(st) for st in arch.slots]
                stages[s][i] = new
                return self.make_arch(stages)
        raise SegnasError("joint: no valid mutation found for this architecture")


JOINT = JointSpace()
