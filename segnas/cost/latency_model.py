"""The one latency model: a target on one runtime, thread count and input size, the operator table
measured for them, and the predicted latency of any architecture of any space.

Every strategy, evaluator and the ground-truth runner predict latency through ``LatencyModel``:
``predict(space, arch, num_classes)`` sums the table entries of the space's ``latency_keys`` and adds
one runtime call overhead (``segnas.cost.predictor``); one-shot supernets compose their
differentiable expected latency from ``op_latencies`` and ``call_overhead``.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from segnas.config.search import LatencyTarget
from segnas.cost.predictor import Prediction, predict_latency
from segnas.cost.table import LatencyTable
from segnas.errors import SegnasError
from segnas.nn.ops import OpKey


class HasLatencyKeys(Protocol):
    """The part of a search space the latency model needs (``segnas.spaces.SearchSpace``)."""

    def latency_keys(self, arch: Any, num_classes: int, input_size: tuple[int, int]) -> list[OpKey]: ...


class LatencyModel:
    """Latency (ms) at batch 1 and ``size`` (H, W) on ``table``'s runtime, with an optional target."""

    def __init__(self, table: LatencyTable, size: Sequence[int], target_ms: float | None = None) -> None:
        if len(size) != 2 or min(int(s) for s in size) < 1:
            raise SegnasError(f"latency.size: expected H, W >= 1, got {list(size)}")
        if target_ms is not None and not target_ms > 0:
            raise SegnasError(f"latency.target_ms: must be > 0, got {target_ms}")
        self.table = table
        self.size = (int(size[0]), int(size[1]))
        self.target_ms = target_ms

    @classmethod
    def create(cls, backend: str = "onnxruntime", size: Sequence[int] = (360, 480), target_ms: float | None = None,
               threads: int | None = None, device: str = "cpu", min_runs: int = 20,
               min_time_s: float = 0.3) -> "LatencyModel":
        """A model over the cached table of ``backend`` with ``threads`` on this machine."""
        table = LatencyTable(backend, threads=threads, device=device, min_runs=min_runs, min_time_s=min_time_s)
        return cls(table, size, target_ms)

    @classmethod
    def from_settings(cls, settings: LatencyTarget, default_size: Sequence[int] | None = None,
                      threads: int | None = None) -> "LatencyModel":
        """The model a job's ``latency`` section describes (size: ``settings.size``, else
        ``default_size``; threads: ``settings.threads``, else ``threads``)."""
        size = settings.size or default_size
        if size is None:
            raise SegnasError("latency.size: give the deployment input size (HxW), e.g. --size 360x480")
        return cls.create(settings.backend, size, settings.target, settings.threads or threads,
                          min_runs=settings.table_min_runs, min_time_s=settings.table_min_time_s)

    @property
    def backend(self) -> str:
        return self.table.backend

    @property
    def threads(self) -> int:
        return self.table.threads

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, *self.size)

    def describe(self) -> str:
        return f"{self.backend}, {self.threads} threads, input {self.size[0]}x{self.size[1]}"

    # ------------------------------------------------------------------ operators
    def op_latencies(self, keys: list[OpKey]) -> list[float]:
        """Table entries (ms, call overhead excluded) of ``keys``, measuring the missing ones."""
        self.table.ensure(keys, progress=False)
        return [self.table.lookup(k, save=False) for k in keys]

    def call_overhead(self) -> float:
        """The runtime's fixed cost per call at this model's input shape (ms)."""
        return self.table.call_overhead(self.input_shape)

    def ensure(self, keys: list[OpKey], progress: bool = True) -> int:
        """Measure every missing table entry up front (with a progress bar); returns how many."""
        return self.table.ensure(keys, progress=progress)

    # ------------------------------------------------------------------ networks
    def explain(self, space: HasLatencyKeys, arch: Any, num_classes: int) -> Prediction:
        """The prediction with its per-operator breakdown."""
        return predict_latency(space.latency_keys(arch, num_classes, self.size), self.table, self.input_shape)

    def predict(self, space: HasLatencyKeys, arch: Any, num_classes: int) -> float:
        """Predicted latency (ms) of ``arch`` of ``space`` with a ``num_classes`` head."""
        return float(self.explain(space, arch, num_classes).total_ms)

    def meets_target(self, latency_ms: float) -> bool:
        return self.target_ms is None or latency_ms <= self.target_ms
