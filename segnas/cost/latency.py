"""Whole-network latency measurement: warm-up, then timed runs until both a minimum count and a
minimum time are reached; median, inter-quartile range and FPS are reported with the thread count."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn


@dataclass
class LatencyResult:
    backend: str
    input_shape: tuple[int, ...]
    median_ms: float
    iqr_ms: float
    runs: int
    threads: int

    @property
    def fps(self) -> float:
        return 1000.0 / self.median_ms

    def to_dict(self) -> dict:
        return {**asdict(self), "fps": self.fps}


def time_callable(fn: Callable[[], object], warmup: int = 3, min_runs: int = 10, min_time_s: float = 1.0,
                  max_runs: int = 1000) -> list[float]:
    """Run ``fn`` ``warmup`` times, then until ``min_runs`` and ``min_time_s`` are both reached;
    return per-run milliseconds."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < min_time_s):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def summarize(times_ms: list[float], backend: str, shape: tuple[int, ...], threads: int) -> LatencyResult:
    q = statistics.quantiles(times_ms, n=4) if len(times_ms) >= 2 else [times_ms[0]] * 3
    return LatencyResult(backend, tuple(shape), statistics.median(times_ms), q[2] - q[0], len(times_ms), threads)


@torch.inference_mode()
def measure_latency(model: nn.Module, input_shape: tuple[int, int, int, int], threads: int | None = None,
                    channels_last: bool = False, warmup: int = 3, min_runs: int = 10,
                    min_time_s: float = 1.0) -> LatencyResult:
    """Latency of ``model`` in PyTorch eager inference mode on CPU for one ``input_shape`` batch."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model = model.eval()
        x = torch.randn(*input_shape)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        times = time_callable(lambda: model(x), warmup, min_runs, min_time_s)
        return summarize(times, "eager" + ("-cl" if channels_last else ""), input_shape, torch.get_num_threads())
    finally:
        torch.set_num_threads(previous)
