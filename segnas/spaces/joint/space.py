"""The ``joint`` space: stage layout and per-slot choices (operator, dilation, resolution, depth,
widths), sampling and mutation, and the space contract (``segnas.spaces.base.SearchSpace``)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from segnas.errors import SegnasError
from segnas.nn.ops import OpKey
from segnas.spaces.base import SearchSpace, register_default, register_space
from segnas.spaces.joint.arch import BLOCK_OPS, DEFAULT_WIDTH_RATIOS, VERSION, JointArch, Slot
from segnas.spaces.joint.network import JointNet, plan_network
from segnas.spaces.pieces import pieces_latency_keys

if TYPE_CHECKING:
    from segnas.spaces.joint.supernet import JointSupernet


@dataclass(frozen=True)
class Candidate:
    """One choice of a slot besides its widths: skip, or a block kind with dilation and resolution."""

    op: str
    dilation: int = 1
    half: bool = False

    def slot(self, mid: int = 0, out: int = 0) -> Slot:
        return Slot("skip") if self.op == "skip" else Slot(self.op, self.dilation, self.half, mid, out)


@register_space("joint")
@dataclass
class JointSpace(SearchSpace[JointArch]):
    """The ``joint`` space settings: stage layout (channels, slots), the choices of every slot."""

    version: ClassVar[int] = VERSION
    smaller: ClassVar[str] = "smaller channels or fewer slots"
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
        if self.stem_channels <= 3:
            raise SegnasError(f"joint space: stem_channels must exceed 3 (the image's), got {self.stem_channels}")
        widths = (self.stem_channels,) + self.channels
        narrower = next((i for i, (a, b) in enumerate(zip(widths, widths[1:])) if b <= a), None)
        if narrower is not None:
            before = f"channels[{narrower - 1}]" if narrower else "stem_channels"
            raise SegnasError(f"joint space: each stage has more channels than the one before: channels[{narrower}]="
                              f"{widths[narrower + 1]} is not above {before}={widths[narrower]} (channels "
                              f"{list(self.channels)})")
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
        return pieces_latency_keys(plan_network(arch, num_classes), input_size, arch.stride)

    def supernet(self, num_classes: int, input_size: tuple[int, int], **options: Any) -> JointSupernet:
        """SSR's supernet over this space (``supernet.JointSupernet``), costed at ``input_size`` (H, W)."""
        from segnas.spaces.joint.supernet import JointSupernet

        return JointSupernet(self, num_classes, input_size, **options)

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


#: The space with SSR's settings: what ``get_space("joint")`` returns.
JOINT = register_default(JointSpace())
