"""The ``mobile`` space: its ranges, the fixed-length decision sequence that encodes every member
(``segnas.spaces.base.DecisionSpace``), sampling and mutation, and the space contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np

from segnas.errors import SegnasError
from segnas.nn.ops import OpKey
from segnas.spaces.base import SearchSpace, register_default, register_space
from segnas.spaces.mobile.arch import (CONTEXTS, HIGH_STRIDE, STAGE_STRIDES, STEM_OPS, VERSION, Block, MobileArch,
                                       Stage, StemLayer, fast_scnn)
from segnas.spaces.mobile.network import MobileNet, plan_network
from segnas.spaces.mobile.supernet import MobileSupernet
from segnas.spaces.pieces import pieces_latency_keys


@dataclass(frozen=True)
class Decision:
    """One position of the decision sequence: its name and its choices (numbers ascending, so that
    index order is cost order)."""

    name: str
    choices: tuple[Any, ...]

    @property
    def ordered(self) -> bool:
        return all(isinstance(c, int) for c in self.choices)


@register_space("mobile")
@dataclass
class MobileSpace(SearchSpace[MobileArch]):
    """Ranges of the ``mobile`` space (see the package docstring). Stage slot ``s`` works at
    ``stage_strides[s]`` with ``stage_depths[s]`` = (fewest, most) blocks and a width from
    ``stage_widths[s]``; the first slot at each stride past 1/8 needs at least one block (it holds
    the stride-2 block)."""

    version: ClassVar[int] = VERSION
    smaller: ClassVar[str] = "smaller stem_widths and stage_widths, or shallower stage_depths"
    stem_widths: tuple[tuple[int, ...], ...] = ((16, 24, 32), (24, 32, 48), (32, 48, 64))
    #: Kinds of the second and third stem layers (the first is a plain conv on the 3 input channels).
    stem_ops: tuple[str, ...] = ("dsconv", "conv")
    stage_strides: tuple[int, ...] = (8, 16, 16, 32, 32)
    stage_depths: tuple[tuple[int, int], ...] = ((0, 2), (1, 4), (0, 3), (1, 4), (0, 3))
    stage_widths: tuple[tuple[int, ...], ...] = ((32, 48, 64), (32, 48, 64, 96), (64, 96, 128),
                                                 (48, 72, 96, 128), (64, 96, 128, 160))
    expansions: tuple[int, ...] = (2, 3, 4, 6)
    kernels: tuple[int, ...] = (3, 5)
    dilations: tuple[int, ...] = (1, 2)
    contexts: tuple[str, ...] = ("none", "ppm")
    fusion_widths: tuple[int, ...] = (64, 96, 128, 160)
    head_depths: tuple[int, ...] = (0, 1, 2)
    decisions: list[Decision] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        def ints(v: Any, where: str, low: int = 1) -> tuple[int, ...]:
            out = tuple(sorted({int(x) for x in v}))
            if not out or out[0] < low:
                fail(where, f"one or more distinct integers >= {low}, got {list(v)}")
            return out

        def fail(where: str, msg: str) -> None:
            raise SegnasError(f"mobile space: {where}: {msg}")

        if len(self.stem_widths) != 3:
            fail("stem_widths", f"one list of choices per stem layer (3), got {len(self.stem_widths)}")
        self.stem_widths = tuple(ints(w, f"stem_widths[{i}]") for i, w in enumerate(self.stem_widths))
        self.stem_ops, self.contexts = tuple(self.stem_ops), tuple(self.contexts)
        for name, given, known in (("stem_ops", self.stem_ops, STEM_OPS), ("contexts", self.contexts, CONTEXTS)):
            if not given or len(set(given)) != len(given) or any(g not in known for g in given):
                fail(name, f"distinct names among {', '.join(known)}, got {list(given)}")
        self.stage_strides = tuple(int(s) for s in self.stage_strides)
        n = len(self.stage_strides)
        if len(self.stage_depths) != n or len(self.stage_widths) != n or not n:
            fail("stage_depths", f"stage_strides, stage_depths and stage_widths need one entry per stage slot, got "
                                 f"{n}, {len(self.stage_depths)} and {len(self.stage_widths)}")
        self.stage_widths = tuple(ints(w, f"stage_widths[{s}]") for s, w in enumerate(self.stage_widths))
        depths = []
        for s, d in enumerate(self.stage_depths):
            if len(d) != 2 or not 0 <= int(d[0]) <= int(d[1]) or int(d[1]) < 1:
                fail(f"stage_depths[{s}]", f"(fewest, most) blocks with 0 <= fewest <= most, most >= 1, got {list(d)}")
            depths.append((int(d[0]), int(d[1])))
        self.stage_depths = tuple(depths)
        current = HIGH_STRIDE
        for s, stride in enumerate(self.stage_strides):
            if stride not in STAGE_STRIDES or stride not in (current, 2 * current):
                fail(f"stage_strides[{s}]", f"strides among {list(STAGE_STRIDES)}, from 8 on, each at most twice the "
                                            f"previous one ({current}); got {stride}")
            if stride != current and self.stage_depths[s][0] < 1:
                fail(f"stage_depths[{s}]", f"the first stage at stride {stride} holds the stride-2 block: it needs "
                                           f"at least one block, got {list(self.stage_depths[s])}")
            current = stride
        if current == HIGH_STRIDE:
            fail("stage_strides", "the last stage must be coarser than 1/8 (the low-resolution branch)")
        self.expansions = ints(self.expansions, "expansions")
        self.kernels = ints(self.kernels, "kernels")
        if any(k % 2 == 0 for k in self.kernels):
            fail("kernels", f"odd kernel sizes, got {list(self.kernels)}")
        self.dilations = ints(self.dilations, "dilations")
        self.fusion_widths = ints(self.fusion_widths, "fusion_widths")
        self.head_depths = ints(self.head_depths, "head_depths", low=0)
        if "ppm" in self.contexts and min(self.stage_widths[-1]) < 4 and self.stage_depths[-1][0] > 0:
            fail("stage_widths", "pyramid pooling needs >= 4 channels in the last stage")
        self.decisions = self._layout()

    # ------------------------------------------------------------------ the decision sequence
    def strided(self, s: int) -> bool:
        """Whether slot ``s``'s first block strides (the first slot at a stride past 1/8)."""
        previous = self.stage_strides[s - 1] if s else HIGH_STRIDE
        return self.stage_strides[s] != previous

    def _layout(self) -> list[Decision]:
        out = [Decision("stem.0.width", self.stem_widths[0])]
        for i in (1, 2):
            out += [Decision(f"stem.{i}.op", self.stem_ops), Decision(f"stem.{i}.width", self.stem_widths[i])]
        for s, (low, high) in enumerate(self.stage_depths):
            out += [Decision(f"stage.{s}.depth", tuple(range(low, high + 1))),
                    Decision(f"stage.{s}.width", self.stage_widths[s])]
            for b in range(high):
                out += [Decision(f"stage.{s}.block.{b}.expansion", self.expansions),
                        Decision(f"stage.{s}.block.{b}.kernel", self.kernels)]
                if not (b == 0 and self.strided(s)):  # a strided block is never dilated
                    out.append(Decision(f"stage.{s}.block.{b}.dilation", self.dilations))
        return out + [Decision("context", self.contexts), Decision("fusion_width", self.fusion_widths),
                      Decision("head_depth", self.head_depths)]

    def decision_sizes(self) -> list[int]:
        return [len(d.choices) for d in self.decisions]

    def decision_names(self) -> list[str]:
        return [d.name for d in self.decisions]

    def from_decisions(self, decisions: Sequence[int]) -> MobileArch:
        """The architecture of a decision sequence (positions of blocks past a stage's depth, and the
        width of an empty stage, are ignored)."""
        if len(decisions) != len(self.decisions):
            raise SegnasError(f"mobile: expected {len(self.decisions)} decisions, got {len(decisions)}")
        value: dict[str, Any] = {}
        for d, i in zip(self.decisions, decisions):
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < len(d.choices):
                raise SegnasError(f"mobile decision {d.name!r}: expected an index 0..{len(d.choices) - 1}, got {i!r}")
            value[d.name] = d.choices[int(i)]
        stem = (StemLayer("conv", value["stem.0.width"]),
                *(StemLayer(value[f"stem.{i}.op"], value[f"stem.{i}.width"]) for i in (1, 2)))
        stages = []
        for s, stride in enumerate(self.stage_strides):
            blocks = tuple(Block(value[f"stage.{s}.block.{b}.expansion"], value[f"stage.{s}.block.{b}.kernel"],
                                 value.get(f"stage.{s}.block.{b}.dilation", 1))
                           for b in range(value[f"stage.{s}.depth"]))
            if blocks:
                stages.append(Stage(stride, value[f"stage.{s}.width"], blocks))
        return MobileArch(stem, tuple(stages), value["context"], value["fusion_width"], value["head_depth"])

    def to_decisions(self, arch: MobileArch) -> list[int]:
        """The decision sequence of ``arch`` (inactive positions 0); SegnasError naming the field when
        ``arch`` lies outside this space's ranges."""
        value: dict[str, Any] = {"context": arch.context, "fusion_width": arch.fusion_width,
                                 "head_depth": arch.head_depth, "stem.0.width": arch.stem[0].width}
        if arch.stem[0].op != "conv":
            _outside("stem[0].op", arch.stem[0].op, ("conv",))
        for i in (1, 2):
            value[f"stem.{i}.op"], value[f"stem.{i}.width"] = arch.stem[i].op, arch.stem[i].width
        slots = self.slots_of(arch)
        for s, stage in enumerate(slots):
            value[f"stage.{s}.depth"] = len(stage.blocks) if stage else 0
            if stage:
                value[f"stage.{s}.width"] = stage.width
                for b, block in enumerate(stage.blocks):
                    value[f"stage.{s}.block.{b}.expansion"] = block.expansion
                    value[f"stage.{s}.block.{b}.kernel"] = block.kernel
                    value[f"stage.{s}.block.{b}.dilation"] = block.dilation
        out = []
        for d in self.decisions:
            if d.name not in value:
                out.append(0)
            elif value[d.name] in d.choices:
                out.append(d.choices.index(value[d.name]))
            else:
                _outside(_field_of(d.name, slots), value[d.name], d.choices)
        return out

    def slots_of(self, arch: MobileArch) -> list[Stage | None]:
        """The stage of ``arch`` in each stage slot (None for empty slots), slots taken in order;
        SegnasError naming the field when ``arch`` does not fit the slots."""
        best: list[str] = []  # why assignments failed, first failure first

        def fits(stage: Stage, s: int, where: str) -> str | None:
            low, high = self.stage_depths[s]
            if not max(low, 1) <= len(stage.blocks) <= high:
                return f"mobile arch field {where + '.blocks'!r}: {len(stage.blocks)} blocks, outside the space's " \
                       f"{max(low, 1)}..{high} at stride {stage.stride}"
            if stage.width not in self.stage_widths[s]:
                return f"mobile arch field {where + '.width'!r}: {stage.width} is not among the space's choices " \
                       f"{list(self.stage_widths[s])}"
            for b, block in enumerate(stage.blocks):
                for key, choices in (("expansion", self.expansions), ("kernel", self.kernels),
                                     ("dilation", (1,) if b == 0 and self.strided(s) else self.dilations)):
                    if getattr(block, key) not in choices:
                        field_name = f"{where}.blocks[{b}].{key}"
                        return f"mobile arch field {field_name!r}: {getattr(block, key)} is not among the space's " \
                               f"choices {list(choices)}"
            return None

        def assign(i: int, s: int) -> list[Stage | None] | None:
            if s == len(self.stage_strides):
                if i == len(arch.stages):
                    return []
                best.append(f"mobile arch field 'stages[{i}]': no stage slot left for it (the space's strides: "
                            f"{list(self.stage_strides)})")
                return None
            if i < len(arch.stages) and arch.stages[i].stride == self.stage_strides[s]:
                error = fits(arch.stages[i], s, f"stages[{i}]")
                if error is None:
                    rest = assign(i + 1, s + 1)
                    if rest is not None:
                        return [arch.stages[i], *rest]
                else:
                    best.append(error)
            if self.stage_depths[s][0] == 0:
                rest = assign(i, s + 1)
                if rest is not None:
                    return [None, *rest]
            elif not best:
                best.append(f"mobile arch field 'stages': the space needs a stage at stride {self.stage_strides[s]} "
                            f"here (slot {s}), got {[st.stride for st in arch.stages]}")
            return None

        slots = assign(0, 0)
        if slots is None:
            raise SegnasError(best[0] if best else "mobile arch field 'stages': outside the space")
        return slots

    def contains(self, arch: MobileArch) -> bool:
        try:
            self.to_decisions(arch)
        except SegnasError:
            return False
        return True

    # ------------------------------------------------------------------ contract
    def arch_from_dict(self, d: Any) -> MobileArch:
        return MobileArch.from_dict(d)

    def build(self, arch: MobileArch, num_classes: int, aux: bool = True) -> MobileNet:
        return MobileNet(arch, num_classes, aux=aux)

    def supernet(self, num_classes: int, input_size: tuple[int, int], **options: Any) -> MobileSupernet:
        """The weight-sharing supernet over this space's members (``segnas.spaces.mobile.supernet``)."""
        if options:
            raise SegnasError(f"mobile supernet: no options (got {', '.join(options)})")
        return MobileSupernet(self, num_classes, input_size)

    def latency_keys(self, arch: MobileArch, num_classes: int, input_size: tuple[int, int]) -> list[OpKey]:
        return pieces_latency_keys(plan_network(arch, num_classes), input_size, arch.stride)

    def sample(self, rng: np.random.Generator, spread: bool = False) -> MobileArch:
        """Every decision drawn uniformly; ``spread`` first draws a size u ~ U(0, 1) for the network
        and takes every ordered choice (depths, widths, expansions, kernels, ...) near quantile u, so
        samples span the space's latency range."""
        u = float(rng.uniform()) if spread else None
        return self.from_decisions([self._draw(d, rng, u) for d in self.decisions])

    @staticmethod
    def _draw(d: Decision, rng: np.random.Generator, u: float | None) -> int:
        n = len(d.choices)
        if u is None or not d.ordered:
            return int(rng.integers(n))
        return int(np.clip(np.floor((u + rng.uniform(-0.2, 0.2)) * n), 0, n - 1))

    def mutate(self, arch: MobileArch, rng: np.random.Generator) -> MobileArch:
        """A neighbour: one decision that shapes the network changes; blocks a deeper stage gains are
        drawn at random."""
        decisions = self.to_decisions(arch)
        index = {d.name: i for i, d in enumerate(self.decisions)}
        active = [i for i, d in enumerate(self.decisions) if len(d.choices) > 1 and self._active(d.name, arch, decisions,
                                                                                                  index)]
        for _ in range(100):
            i = active[int(rng.integers(len(active)))]
            d, new = self.decisions[i], list(decisions)
            new[i] = (decisions[i] + 1 + int(rng.integers(len(d.choices) - 1))) % len(d.choices)
            if d.name.endswith(".depth"):
                s = int(d.name.split(".")[1])
                for b in range(d.choices[decisions[i]], d.choices[new[i]]):
                    for key in ("expansion", "kernel", "dilation"):
                        j = index.get(f"stage.{s}.block.{b}.{key}")
                        if j is not None:
                            new[j] = int(rng.integers(len(self.decisions[j].choices)))
            candidate = self.from_decisions(new)
            if candidate != arch:
                return candidate
        raise SegnasError("mobile: no valid mutation found for this architecture")

    def _active(self, name: str, arch: MobileArch, decisions: list[int], index: dict[str, int]) -> bool:
        """Whether decision ``name`` shapes ``arch`` (a block past its stage's depth, or the width of
        an empty stage, does not)."""
        if not name.startswith("stage.") or name.endswith(".depth"):
            return True
        s = int(name.split(".")[1])
        depth = self.decisions[index[f"stage.{s}.depth"]].choices[decisions[index[f"stage.{s}.depth"]]]
        if name.endswith(".width"):
            return depth > 0
        return int(name.split(".")[3]) < depth


def _outside(where: str, value: Any, choices: Sequence[Any]) -> None:
    raise SegnasError(f"mobile arch field {where!r}: {value!r} is not among the space's choices {list(choices)}")


def _field_of(name: str, slots: list[Stage | None]) -> str:
    """The arch-file field of decision ``name`` (stage slots renumbered to the arch's stages)."""
    if name.startswith("stem."):
        return "stem[{}].{}".format(*name.split(".")[1:])
    if name.startswith("stage."):
        parts = name.split(".")
        s = sum(1 for st in slots[:int(parts[1])] if st)
        return f"stages[{s}].{parts[2]}" if len(parts) == 3 else f"stages[{s}].blocks[{parts[3]}].{parts[4]}"
    return name


#: The space with its default ranges: what ``get_space("mobile")`` returns.
MOBILE = register_default(MobileSpace())
#: Fast-SCNN (``segnas.zoo.fast_scnn.FastSCNN``) as a member of the default space.
MOBILE_FAST_SCNN = fast_scnn()
