"""Architectures of the ``mobile`` space: ``MobileArch`` (learning-to-downsample stem, inverted-residual
stages, global context, fusion width, head depth), its parts, validation and (de)serialization, and
``fast_scnn()``, Fast-SCNN as a ``MobileArch``.

An architecture describes the network alone (only its non-empty stages), so that an arch file builds
without the space's settings; whether it lies inside a space's ranges is the space's question
(``MobileSpace.to_decisions``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from segnas.errors import SegnasError
from segnas.spaces.fields import ArchFields

VERSION = 1
#: Stem layer kinds and the registered op each is built from (both 3×3, stride 2).
STEM_OPS: dict[str, str] = {"conv": "conv_bn_relu", "dsconv": "sep_conv"}
#: Global-context modules after the last stage.
CONTEXTS: tuple[str, ...] = ("ppm", "none")
#: Output stride of the three stride-2 stem layers: the high-resolution branch's stride.
HIGH_STRIDE = 8
STAGE_STRIDES: tuple[int, ...] = (8, 16, 32)


@dataclass(frozen=True)
class StemLayer:
    """A 3×3 stride-2 layer of the learning-to-downsample stem: ``conv`` (conv-BN-ReLU) or ``dsconv``
    (depthwise-separable: depthwise 3×3 conv-BN-ReLU + 1×1 conv-BN-ReLU)."""

    op: str
    width: int

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "width": self.width}


@dataclass(frozen=True)
class Block:
    """An inverted-residual block: hidden width ``expansion`` × its input channels, a ``kernel``×
    ``kernel`` depthwise conv with ``dilation`` (1 when the block strides)."""

    expansion: int
    kernel: int = 3
    dilation: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"expansion": self.expansion, "kernel": self.kernel, "dilation": self.dilation}


@dataclass(frozen=True)
class Stage:
    """Blocks at output stride ``stride`` with ``width`` output channels; the first block of the
    first stage at a new stride has stride 2, and every first block changes the width."""

    stride: int
    width: int
    blocks: tuple[Block, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"stride": self.stride, "width": self.width, "blocks": [b.to_dict() for b in self.blocks]}


@dataclass(frozen=True)
class BlockPlan:
    """Where a block sits: stage and block index, channels in and out, its stride, the level (log2
    of the stride) of its input."""

    stage: int
    index: int
    cin: int
    cout: int
    stride: int
    level: int
    block: Block


@dataclass(frozen=True)
class MobileArch:
    """A network of the ``mobile`` space (module docstring of ``segnas.spaces.mobile``)."""

    stem: tuple[StemLayer, ...]
    stages: tuple[Stage, ...]
    context: str = "ppm"
    fusion_width: int = 128
    head_depth: int = 2

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def stride(self) -> int:
        """Output stride of the low-resolution branch: the network's largest downsampling."""
        return self.stages[-1].stride

    @property
    def high_width(self) -> int:
        """Channels of the 1/8 branch: the last stride-8 stage's, else the stem's."""
        eights = [s for s in self.stages if s.stride == HIGH_STRIDE]
        return eights[-1].width if eights else self.stem[-1].width

    @property
    def low_width(self) -> int:
        return self.stages[-1].width

    def block_plans(self) -> Iterator[BlockPlan]:
        """Every block in execution order, with its channels, stride and input level."""
        cin, current = self.stem[-1].width, HIGH_STRIDE
        for s, stage in enumerate(self.stages):
            for i, block in enumerate(stage.blocks):
                stride = 2 if stage.stride != current else 1  # only ever for a stage's first block
                yield BlockPlan(s, i, cin, stage.width, stride, current.bit_length() - 1, block)
                cin, current = stage.width, stage.stride

    def to_dict(self) -> dict[str, Any]:
        return {"stem": [layer.to_dict() for layer in self.stem], "stages": [s.to_dict() for s in self.stages],
                "context": self.context, "fusion_width": self.fusion_width, "head_depth": self.head_depth}

    @classmethod
    def from_dict(cls, d: Any) -> MobileArch:
        if not isinstance(d, dict):
            raise SegnasError(f"mobile arch: expected a mapping, got {type(d).__name__}")
        _fields(d, "", {"stem", "stages", "context", "fusion_width", "head_depth"}, {"stem", "stages"})
        stem = []
        for i, ld in enumerate(_CHECK.sequence(d["stem"], "stem")):
            where = f"stem[{i}]"
            _fields(ld, where, {"op", "width"}, {"op", "width"})
            stem.append(StemLayer(_CHECK.text(ld["op"], f"{where}.op"), _CHECK.integer(ld["width"], f"{where}.width")))
        stages = []
        for s, sd in enumerate(_CHECK.sequence(d["stages"], "stages")):
            where = f"stages[{s}]"
            _fields(sd, where, {"stride", "width", "blocks"}, {"stride", "width", "blocks"})
            blocks = []
            for b, bd in enumerate(_CHECK.sequence(sd["blocks"], f"{where}.blocks")):
                bw = f"{where}.blocks[{b}]"
                _fields(bd, bw, {"expansion", "kernel", "dilation"}, {"expansion"})
                blocks.append(Block(_CHECK.integer(bd["expansion"], f"{bw}.expansion"),
                                    *(_CHECK.integer(bd[k], f"{bw}.{k}") for k in ("kernel", "dilation") if k in bd)))
            stages.append(Stage(_CHECK.integer(sd["stride"], f"{where}.stride"),
                                _CHECK.integer(sd["width"], f"{where}.width"), tuple(blocks)))
        kwargs: dict[str, Any] = {k: _CHECK.integer(d[k], k) for k in ("fusion_width", "head_depth") if k in d}
        if "context" in d:
            kwargs["context"] = _CHECK.text(d["context"], "context")
        return cls(tuple(stem), tuple(stages), **kwargs)


def fast_scnn(width: float = 1.0) -> MobileArch:
    """Fast-SCNN (``segnas.zoo.fast_scnn.FastSCNN`` with its ``width`` multiplier) as a ``MobileArch``:
    stem conv 32, dsconv 48, dsconv 64; bottlenecks t=6, k=3: 64×3 at 1/16, 96×3 and 128×3 at 1/32;
    pyramid pooling; fusion to 128; two DSConvs in the classifier."""

    def c(ch: int) -> int:  # the zoo's rounding of widths
        return max(8, int(round(ch * width / 8)) * 8)

    t6 = Block(6, 3, 1)
    return MobileArch(stem=(StemLayer("conv", c(32)), StemLayer("dsconv", c(48)), StemLayer("dsconv", c(64))),
                      stages=(Stage(16, c(64), (t6,) * 3), Stage(32, c(96), (t6,) * 3), Stage(32, c(128), (t6,) * 3)),
                      context="ppm", fusion_width=c(128), head_depth=2)


# ---------------------------------------------------------------------------------- validation
_CHECK = ArchFields("mobile")
_fail, _fields = _CHECK.fail, _CHECK.fields


def _validate(a: MobileArch) -> None:
    if len(a.stem) != 3:
        _fail("stem", f"the learning-to-downsample stem has 3 stride-2 layers (to 1/8), got {len(a.stem)}")
    for i, layer in enumerate(a.stem):
        if layer.op not in STEM_OPS:
            _fail(f"stem[{i}].op", f"unknown kind {layer.op!r} (expected {', '.join(STEM_OPS)})")
        if layer.width < 1:
            _fail(f"stem[{i}].width", f"must be >= 1, got {layer.width}")
    if not a.stages:
        _fail("stages", "at least one stage is needed")
    current = HIGH_STRIDE
    for s, stage in enumerate(a.stages):
        where = f"stages[{s}]"
        if stage.stride not in STAGE_STRIDES:
            _fail(f"{where}.stride", f"must be one of {', '.join(map(str, STAGE_STRIDES))}, got {stage.stride}")
        if stage.stride not in (current, 2 * current):
            _fail(f"{where}.stride", f"strides grow by at most 2 from stage to stage (previous {current}), "
                                     f"got {stage.stride}")
        if stage.width < 1:
            _fail(f"{where}.width", f"must be >= 1, got {stage.width}")
        if not stage.blocks:
            _fail(f"{where}.blocks", "a stage has at least one block (leave empty stages out)")
        for b, block in enumerate(stage.blocks):
            bw = f"{where}.blocks[{b}]"
            if block.expansion < 1:
                _fail(f"{bw}.expansion", f"must be >= 1, got {block.expansion}")
            if block.kernel < 1 or block.kernel % 2 == 0:
                _fail(f"{bw}.kernel", f"must be odd and >= 1, got {block.kernel}")
            if block.dilation < 1:
                _fail(f"{bw}.dilation", f"must be >= 1, got {block.dilation}")
            if b == 0 and stage.stride != current and block.dilation != 1:
                _fail(f"{bw}.dilation", f"must be 1 in a strided block, got {block.dilation}")
        current = stage.stride
    if a.stride == HIGH_STRIDE:
        _fail("stages", f"the last stage must be coarser than 1/{HIGH_STRIDE} (the low-resolution branch)")
    if a.context not in CONTEXTS:
        _fail("context", f"unknown module {a.context!r} (expected {', '.join(CONTEXTS)})")
    if a.context == "ppm" and a.low_width < 4:
        _fail("context", f"pyramid pooling needs >= 4 channels in the last stage, got {a.low_width}")
    if a.fusion_width < 1:
        _fail("fusion_width", f"must be >= 1, got {a.fusion_width}")
    if a.head_depth < 0:
        _fail("head_depth", f"must be >= 0, got {a.head_depth}")
