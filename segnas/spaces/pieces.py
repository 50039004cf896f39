"""Network pieces: an operator template (an ``OpKey`` without a resolution) placed at a resolution level.

Spaces describe their derived networks as lists of pieces, so that the plain network builds every
module from the same ``OpKey`` the latency table measures, and the network's latency keys at any
input size follow from the pieces alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

from torch import nn

from segnas.nn.ops import OpKey
from segnas.nn.segnet import padded_size


def costs_time(key: OpKey) -> bool:
    """False for the identity (a stride-1 ``skip`` keeping the channels): it runs no operator."""
    return not (key.op == "skip" and key.stride == 1 and key.cin == key.cout)


def pieces_latency_keys(pieces: Iterable[Piece], input_size: Sequence[int], multiple: int) -> list[OpKey]:
    """The table keys of a network's ``pieces`` for an input of ``input_size``, which the network pads
    to a multiple of ``multiple`` (its output stride); identities, which run nothing, left out."""
    ph, pw = padded_size(input_size, multiple)
    return [k for k in (p.key(ph, pw) for p in pieces) if costs_time(k)]


def op_template(op: str, cin: int, cout: int, stride: int = 1, dilation: int = 1, **extra: Any) -> OpKey:
    """An ``OpKey`` with no resolution yet (h = w = 0); ``Piece.key`` fills it in."""
    return OpKey(op, cin, cout, 0, 0, stride, dilation, tuple(sorted(extra.items())))


@dataclass(frozen=True)
class Piece:
    """One compute piece: the module at ``name`` in the network is ``template.build()``; its input
    has the resolution of the padded input divided by ``2**level``."""

    name: str
    template: OpKey
    level: int

    def key(self, padded_h: int, padded_w: int) -> OpKey:
        return replace(self.template, h=padded_h >> self.level, w=padded_w >> self.level)

    def build(self) -> nn.Module:
        return self.template.build()
