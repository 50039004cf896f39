"""Whole-network latency: warm-up, then timed runs until both a minimum count and a minimum time
are reached; median, inter-quartile range and FPS are reported with backend and thread count.
``measure_latency_interleaved`` times several networks in one session, in alternating rounds."""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from segnas.cost.backends import Runner, pinned_threads, prepare


@dataclass
class LatencyResult:
    backend: str
    input_shape: tuple[int, ...]
    median_ms: float
    iqr_ms: float
    runs: int
    threads: int
    device: str = "cpu"
    #: per-round medians when measured in interleaved rounds (``measure_latency_interleaved``)
    round_medians_ms: tuple[float, ...] = ()
    #: the reference network's median just before each round's block (``measure_latency_gated``)
    round_probe_ms: tuple[float, ...] = ()
    #: the median of the rounds whose probe ran in the session's reference state (``measure_latency_gated``)
    steady_ms: float | None = None

    @property
    def fps(self) -> float:
        return 1000.0 / self.median_ms

    @property
    def quietest_ms(self) -> float:
        """The lowest of the per-round medians (the median when measured in one round). On a shared
        machine a round runs much slower while another tenant keeps the host busy (Fast-SCNN timed
        11 ms and 18 ms within one minute on a 2-core cloud VM, nothing else running in the VM): the
        quietest round is the machine's own speed, the median over every run a mix of both."""
        return min(self.round_medians_ms) if self.round_medians_ms else self.median_ms

    def to_dict(self) -> dict:
        return {**asdict(self), "fps": self.fps, "quietest_ms": self.quietest_ms}


def time_callable(fn: Callable[[], object], warmup: int = 3, min_runs: int = 10, min_time_s: float = 1.0,
                  max_runs: int = 10_000) -> list[float]:
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


def summarize(times_ms: list[float], backend: str, shape: tuple[int, ...], threads: int,
              device: str = "cpu") -> LatencyResult:
    q = statistics.quantiles(times_ms, n=4) if len(times_ms) >= 2 else [times_ms[0]] * 3
    return LatencyResult(backend, tuple(shape), statistics.median(times_ms), q[2] - q[0], len(times_ms),
                         threads, device)


def job_threads(threads: int | None = None) -> int:
    """The torch threads a job computes on: ``threads``, else ``OMP_NUM_THREADS`` where it is set
    (torchrun sets 1 per rank), else the cores this process may use (``default_threads``); not the
    caller's torch setting, so that the same settings run alike from the command line and Python."""
    if threads:
        return threads
    given = os.environ.get("OMP_NUM_THREADS", "")
    return int(given) if given.isdigit() and int(given) > 0 else default_threads()


def default_threads() -> int:
    """The cores this process may use: its CPU affinity, capped by a container's CPU quota (cgroup
    v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), so a 2-CPU container on a 64-core host times 2 threads."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs a container's quota allows (e.g. 2.0 for ``--cpus=2``), or None without a quota."""
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError, ZeroDivisionError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def measure_latency(model: nn.Module, input_shape: tuple[int, int, int, int], backend: str = "eager",
                    threads: int | None = None, device: str = "cpu", warmup: int = 3, min_runs: int = 10,
                    min_time_s: float = 1.0) -> LatencyResult:
    """Latency of one ``input_shape`` batch through ``model`` on ``backend``."""
    threads = threads or default_threads()
    x = np.random.default_rng(0).standard_normal(input_shape, dtype=np.float32)
    with pinned_threads(threads), torch.random.fork_rng():
        run = prepare(backend, model, input_shape, threads, device)
        times = time_callable(lambda: run(x), warmup, min_runs, min_time_s)
    return summarize(times, backend, input_shape, threads, device)


def measure_latency_interleaved(models: Mapping[str, nn.Module], input_shape: tuple[int, int, int, int],
                                backend: str = "eager", threads: int | None = None, device: str = "cpu",
                                warmup: int = 3, min_runs: int = 10, min_time_s: float = 1.0, rounds: int = 3,
                                max_runs: int = 10_000) -> dict[str, LatencyResult]:
    """Latency of several networks measured in one session, so that their ratios are fair.

    Each is prepared on ``backend`` in this process; then, in each of ``rounds`` rounds (the order
    of the networks rotated every round), each network runs ``warmup`` untimed runs and a block of
    timed runs: at least ``min_runs / rounds`` runs and ``min_time_s / rounds`` seconds. The median
    over all its timed runs is kept (``LatencyResult.round_medians_ms``: one median per round). A
    load that comes and goes during the session slows every network alike instead of whichever
    was measured at that moment.

    Runs are timed in blocks, not alternated run by run: on ONNX Runtime the idle threads of the
    session that just ran keep spinning for a while, and a run of another session right after it
    competes with them — alternating single runs of 4 networks on 2 cores measured each about 3x
    slower than alone, a block after 3 warm-up runs within the session-to-session noise."""
    threads = threads or default_threads()
    with pinned_threads(threads), torch.random.fork_rng():
        runners = {name: prepare(backend, model, input_shape, threads, device) for name, model in models.items()}
        return runners_interleaved(runners, input_shape, backend, threads, device, warmup, min_runs, min_time_s,
                                   rounds, max_runs)


def runners_interleaved(runners: Mapping[str, Runner], input_shape: tuple[int, int, int, int], backend: str,
                        threads: int, device: str = "cpu", warmup: int = 3, min_runs: int = 10,
                        min_time_s: float = 1.0, rounds: int = 3, max_runs: int = 10_000) -> dict[str, LatencyResult]:
    """``measure_latency_interleaved`` of prepared runners (e.g. ``onnxruntime_runner`` of exported
    files), ``backend``, ``threads`` and ``device`` being what they run on."""
    rounds = max(int(rounds), 1)
    x = np.random.default_rng(0).standard_normal(input_shape, dtype=np.float32)
    names = list(runners)
    times: dict[str, list[list[float]]] = {name: [] for name in names}
    per_block_runs = max(-(-min_runs // rounds), 1)
    for r in range(rounds):
        shift = r % max(len(names), 1)
        for name in names[shift:] + names[:shift]:
            times[name].append(time_callable(lambda: runners[name](x), warmup, per_block_runs,
                                             min_time_s / rounds, max(max_runs // rounds, 1)))
    out = {}
    for name in names:
        result = summarize([t for block in times[name] for t in block], backend, input_shape, threads, device)
        result.round_medians_ms = tuple(statistics.median(block) for block in times[name])
        out[name] = result
    return out


#: A block counts as taken in the reference state when its probe ran within this over the reference probe.
STEADY_TOLERANCE = 0.1
#: The reference state: the probe's time at this quantile of all its blocks (``reference_probe``).
REFERENCE_QUANTILE = 0.25


def reference_probe(probe_ms: Iterable[float]) -> float:
    """The probe's time in the host state that figures are taken in: the lower quartile of its blocks,
    i.e. the fastest state the host spent at least a quarter of the time in. Not the single fastest
    probe: on a 2-core VM a rare fast spell (Fast-SCNN 5.2 ms against a usual 7.8 ms, 64 networks
    timed over 12 minutes) left most networks without a block in it, so their figures came from
    another state than the rest (within ±10% of the table's corrected prediction: 50% of held-out
    networks; from this reference 100%)."""
    return float(np.quantile(np.asarray(list(probe_ms), dtype=float), REFERENCE_QUANTILE))


class HostProbe:
    """A fixed reference network timed in a short block (``runs`` runs after one warm-up): its median
    tells the host's speed state now, for timings taken beside it (``measure_latency_gated``, a
    latency table's entries). ``name`` identifies the probe: only probes of one name compare."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, int, int, int], backend: str = "onnxruntime",
                 threads: int | None = None, device: str = "cpu", runs: int = 5, name: str = "probe") -> None:
        self.model, self.input_shape, self.backend, self.device = model, input_shape, backend, device
        self.threads = threads or default_threads()
        self.runs = runs
        self.name = f"{name}@{backend}/{self.threads}t/{'x'.join(map(str, input_shape))}"
        self._x = np.random.default_rng(0).standard_normal(input_shape, dtype=np.float32)
        self._run: Callable[[np.ndarray], object] | None = None

    def __call__(self) -> float:
        with pinned_threads(self.threads):
            if self._run is None:
                with torch.random.fork_rng():
                    self._run = prepare(self.backend, self.model.eval(), self.input_shape, self.threads, self.device)
            run = self._run
            return statistics.median(time_callable(lambda: run(self._x), 1, self.runs, 0.0))


def steady_rounds(round_medians_ms: Sequence[float], round_probe_ms: Sequence[float], reference_probe_ms: float,
                  tolerance: float = STEADY_TOLERANCE) -> list[float]:
    """The rounds, in order, whose probe ran within ``tolerance`` over ``reference_probe_ms``
    (``reference_probe`` of every network's rounds: one state of the host for all)."""
    return [m for m, p in zip(round_medians_ms, round_probe_ms) if p <= reference_probe_ms * (1 + tolerance)]


def steady_median(round_medians_ms: Sequence[float], round_probe_ms: Sequence[float], reference_probe_ms: float,
                  tolerance: float = STEADY_TOLERANCE) -> float | None:
    """The median of the ``steady_rounds``, None if there are none."""
    kept = steady_rounds(round_medians_ms, round_probe_ms, reference_probe_ms, tolerance)
    return statistics.median(kept) if kept else None


def measure_latency_gated(models: Mapping[str, nn.Module], input_shape: tuple[int, int, int, int], probe: nn.Module,
                          backend: str = "onnxruntime", threads: int | None = None, device: str = "cpu",
                          block_runs: int = 5, block_time_s: float = 0.2, min_rounds: int = 5, max_rounds: int = 40,
                          min_steady: int = 2, tolerance: float = STEADY_TOLERANCE,
                          earlier_probes: Sequence[float] = ()) -> dict[str, LatencyResult]:
    """Latency of several networks in one session, each figure taken in the same state of the host.

    A cloud host changes speed for seconds to minutes at a time, and not alike for every network
    (on a 2-core VM, nothing else running: Fast-SCNN 9 ms or 15-21 ms, a GAS network 12 or 21 ms; over
    276 paired blocks their times correlated at 0.78). Before every block of a network the ``probe``
    (a fixed reference network) runs a short block of its own: its median tells the host's state.
    Rounds (the networks' order rotated every round) go on past ``min_rounds`` until every network
    has ``min_steady`` blocks whose probe was within ``tolerance`` over the session's
    ``reference_probe`` (the fastest state the host spent a quarter of the session in), or
    ``max_rounds``. ``steady_ms``: the median of those blocks' medians (None for a network that has
    none), so that every figure comes from one state of the host and the ratios are fair.
    ``earlier_probes``: the probes of earlier sessions of the same measurement, so that a session
    run wholly in a slow spell waits for the state the others were taken in (up to ``max_rounds``).
    """
    threads = threads or default_threads()
    x = np.random.default_rng(0).standard_normal(input_shape, dtype=np.float32)
    names = list(models)
    blocks: dict[str, list[list[float]]] = {name: [] for name in names}
    probes: dict[str, list[float]] = {name: [] for name in names}

    def steady_blocks(name: str, state: float) -> int:
        return sum(p <= state * (1 + tolerance) for p in probes[name])

    with pinned_threads(threads), torch.random.fork_rng():
        runners = {name: prepare(backend, models[name], input_shape, threads, device) for name in names}
        reference = HostProbe(probe, input_shape, backend, threads, device, runs=block_runs)
        for r in range(max_rounds):
            shift = r % max(len(names), 1)
            for name in names[shift:] + names[:shift]:
                probes[name].append(reference())
                blocks[name].append(time_callable(lambda: runners[name](x), 2, block_runs, block_time_s))
            state = reference_probe([*earlier_probes, *(p for values in probes.values() for p in values)])
            if r + 1 >= min_rounds and all(steady_blocks(n, state) >= min_steady for n in names):
                break
    state = reference_probe([*earlier_probes, *(p for values in probes.values() for p in values)])
    out = {}
    for name in names:
        result = summarize([t for block in blocks[name] for t in block], backend, input_shape, threads, device)
        result.round_medians_ms = tuple(statistics.median(block) for block in blocks[name])
        result.round_probe_ms = tuple(probes[name])
        result.steady_ms = steady_median(result.round_medians_ms, result.round_probe_ms, state, tolerance)
        out[name] = result
    return out
