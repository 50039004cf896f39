"""Cost of a network: parameter count and latency measurement."""

from segnas.cost.latency import LatencyResult, measure_latency
from segnas.cost.params import count_parameters

__all__ = ["LatencyResult", "measure_latency", "count_parameters"]
