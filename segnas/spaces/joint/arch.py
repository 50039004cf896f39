"""Architectures of the ``joint`` space: ``JointArch`` (per stage its channels and slots), ``Slot``,
their validation and (de)serialization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from segnas.errors import SegnasError
from segnas.spaces.fields import ArchFields

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
        _CHECK.fields(d, "", {"channels", "stem_channels", "decoder_width", "slots"}, {"channels", "slots"})
        channels = tuple(_CHECK.integer(v, f"channels[{i}]")
                         for i, v in enumerate(_CHECK.sequence(d["channels"], "channels")))
        stages = []
        for s, st in enumerate(_CHECK.sequence(d["slots"], "slots")):
            slots = []
            for i, sd in enumerate(_CHECK.sequence(st, f"slots[{s}]")):
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
                slots.append(Slot(str(sd["op"]), _CHECK.integer(sd["dilation"], f"{where}.dilation"), sd["half"],
                                  _CHECK.integer(sd["mid"], f"{where}.mid"), _CHECK.integer(sd["out"], f"{where}.out")))
            stages.append(tuple(slots))
        kwargs = {k: _CHECK.integer(d[k], k) for k in ("stem_channels", "decoder_width") if k in d}
        return cls(channels, tuple(stages), **kwargs)


_CHECK = ArchFields("joint")


def _validate(a: JointArch) -> None:
    fail = _CHECK.fail
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

