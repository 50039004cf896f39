"""Whole-network latency predicted from the operator table: the sum of the network's operator
entries plus one runtime call overhead."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from segnas.cost.table import LatencyTable
from segnas.nn.ops import OpKey


@dataclass
class Prediction:
    total_ms: float
    ops_ms: float
    overhead_ms: float
    per_op: list[tuple[str, float]]


def predict_latency(keys: Sequence[OpKey], table: LatencyTable, input_shape: tuple[int, int, int, int]
                    ) -> Prediction:
    """Predicted latency of a network whose operators are ``keys`` for one ``input_shape`` batch."""
    table.ensure(keys, progress=False)
    per_op = [(k.to_str(), table.lookup(k)) for k in keys]
    ops_ms = sum(ms for _, ms in per_op)
    overhead = table.call_overhead(tuple(input_shape))
    return Prediction(ops_ms + overhead, ops_ms, overhead, per_op)
