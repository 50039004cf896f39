"""A network's predicted latency broken down per operator, from the latency model's operator table
(``segnas.cost.LatencyModel.op_latencies``): the same entries every search composes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from segnas.cost.latency_model import LatencyModel
from segnas.nn.ops import OpKey
from segnas.spaces.base import Architecture, SearchSpace


@dataclass
class LatencyBreakdown:
    """Per operator of a network (in execution order) its table entry in ms, plus the runtime's
    one call overhead; ``context``: backend, threads and input size."""

    keys: list[OpKey]
    op_ms: list[float]
    overhead_ms: float
    context: str

    @property
    def total_ms(self) -> float:
        return sum(self.op_ms) + self.overhead_ms

    def by_op(self) -> dict[str, float]:
        """ms per operator type (``conv``, ``sep_conv``, ...), largest first, the call overhead last."""
        out: dict[str, float] = {}
        for key, ms in zip(self.keys, self.op_ms):
            out[key.op] = out.get(key.op, 0.0) + ms
        out = dict(sorted(out.items(), key=lambda kv: -kv[1]))
        if self.overhead_ms:
            out["call overhead"] = self.overhead_ms
        return out

    def rows(self) -> list[tuple[int, OpKey, float]]:
        """(position, key, ms) of every operator, slowest first."""
        return sorted(((i, k, ms) for i, (k, ms) in enumerate(zip(self.keys, self.op_ms))), key=lambda r: -r[2])


def latency_breakdown(model: LatencyModel, space: str | SearchSpace, arch: Architecture | dict[str, Any],
                      num_classes: int,
                      progress: bool = False) -> LatencyBreakdown:
    """The breakdown of ``arch`` of ``space`` with a ``num_classes`` head at the model's size; table
    entries missing on this machine are measured (and cached) first, with a progress bar."""
    keys = space.latency_keys(arch, num_classes, model.size)
    model.ensure(keys, progress=progress)
    return LatencyBreakdown(keys, model.op_latencies(keys), model.call_overhead(), model.describe())
