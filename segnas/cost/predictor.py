"""Whole-network latency predicted from the operator table: the sum of the network's operator
entries plus one runtime call overhead (a learned correction may refine it: ``segnas.cost.calibration``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from segnas.cost.table import OperatorCosts
from segnas.nn.ops import OpKey


@dataclass
class Prediction:
    """The table's prediction (``total_ms`` = ``ops_ms`` + ``overhead_ms``, per operator in
    ``per_op``) and, where the space has a fitted correction, the corrected one."""

    total_ms: float
    ops_ms: float
    overhead_ms: float
    per_op: list[tuple[OpKey, float]]
    corrected_ms: float | None = None

    @property
    def best_ms(self) -> float:
        """The corrected prediction when there is one, else the table's."""
        return self.corrected_ms if self.corrected_ms is not None else self.total_ms


def predict_latency(keys: Sequence[OpKey], table: OperatorCosts, input_shape: tuple[int, int, int, int]
                    ) -> Prediction:
    """Predicted latency of a network whose operators are ``keys`` for one ``input_shape`` batch."""
    table.ensure(keys, progress=False)
    per_op = [(k, table.lookup(k)) for k in keys]
    ops_ms = sum(ms for _, ms in per_op)
    overhead = table.call_overhead(tuple(input_shape))
    return Prediction(ops_ms + overhead, ops_ms, overhead, per_op)
