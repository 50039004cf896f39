"""Per-operator latency table: measured on the target runtime on first use, cached on disk.

Entries are keyed by the operator's ``OpKey`` (op, channels, input size, stride, dilation, extra
settings); one table file holds one measurement context (backend, threads, device, machine
fingerprint), so tables for different runtimes or machines never mix. Files are written
atomically; a corrupt file, or one from another context, is reported with a warning and rebuilt.

Each entry stores the operator's time minus the runtime's fixed per-call overhead (measured on a
graph with the same input and a one-element output), so the latency of a network is predicted as the sum of its
operators' entries plus one call overhead.

A table given a ``HostProbe`` times the probe before every entry and keeps its median with the
entry: on a host that changes speed by itself (a cloud VM), the entries timed while the probe ran
more than ``STEADY_TOLERANCE`` over its ``reference_probe`` in the table (the fastest state the host
spent a quarter of the time in) are timed again (``probe_passes`` times at most), each keeping its
timing of the faster state, so that the entries add up in one state of the machine.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Protocol

import torch
from torch import nn

from segnas.cost.backends import pinned_threads, prepare
from segnas.cost.latency import STEADY_TOLERANCE, HostProbe, default_threads, reference_probe, time_callable
from segnas.cost.machine import cache_dir, is_busy, machine_fingerprint, other_processes_cores
from segnas.errors import SegnasWarning
from segnas.progress import progress_bar
from segnas.nn.ops import OpKey
from segnas.utils import atomic_write_text

FORMAT = "segnas-latency-table"
VERSION = 2  # 2: call overhead measured on a one-element output
#: Seconds a busy reading of other processes' load stands for (each reading takes half a second).
LOAD_RECHECK_S = 30.0


class _CallOverhead(nn.Module):
    """A graph that does (almost) nothing with its input: timing it gives the runtime's fixed cost
    per call. Its output is one element, so the cost does not grow with the input's size (an
    identity or ``x + 0`` would add a pass over the input, which a network's operators do not pay
    again, and subtracting it would bias every prediction low)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1, :1, :1] * 1.0


class OperatorCosts(Protocol):
    """What a latency prediction needs of a table: a cost (ms) per operator and per runtime call.
    ``LatencyTable`` measures them; tests give made-up costs (then nothing is measured or shared)."""

    def missing(self, keys: Iterable[OpKey]) -> list[OpKey]: ...

    def ensure(self, keys: Iterable[OpKey], progress: bool = True) -> int: ...

    def lookup(self, key: OpKey, save: bool = True) -> float: ...

    def call_overhead(self, shape: tuple[int, int, int, int]) -> float: ...


class LatencyTable:
    """Latency (ms) of operators on one runtime and machine; missing entries are measured on demand."""

    def __init__(self, backend: str = "onnxruntime", threads: int | None = None, device: str = "cpu",
                 path: str | Path | None = None, min_runs: int = 20, min_time_s: float = 0.3,
                 probe: HostProbe | None = None, probe_passes: int = 2) -> None:
        self.backend = backend
        self.threads = threads or default_threads()
        self.device = device
        self.fingerprint = machine_fingerprint(device)
        self.context = {"backend": backend, "threads": self.threads, "device": device,
                        "fingerprint": self.fingerprint}
        self.path = Path(path) if path else cache_dir() / "latency" / (
            f"{backend}-{self.threads}t-{device}-{self.fingerprint}.json")
        self.min_runs = min_runs
        self.min_time_s = min_time_s
        self.entries: dict[str, float] = {}
        self.overheads: dict[str, float] = {}
        self.measured = 0  # entries measured by this instance (not read from the cache)
        self.probe, self.probe_passes = probe, probe_passes
        #: the probe's median just before each entry was timed (entries timed with this probe only)
        self.probes: dict[str, float] = {}
        #: entries (and call overheads, by input shape) measured while other processes kept the
        #: cores busy: used, never saved
        self.volatile: set[str] = set()
        #: (when, cores) of the last measurement of other processes' load, and whether it was reported
        self._host_load: tuple[float, float | None] | None = None
        self._busy_reported = False
        #: the probe name and figures the cache file holds (read back by ``use_probe``)
        self._stored_probes: tuple[str | None, dict[str, float]] = (None, {})
        #: wall and CPU seconds this instance spent timing entries and call overheads (a search's
        #: clock leaves them out: they depend on what an earlier job left in the cache)
        self.timing_seconds = [0.0, 0.0]
        self._timing_depth = 0
        self._load()

    @contextlib.contextmanager
    def _timing(self) -> Iterator[None]:
        """Count the block's seconds in ``timing_seconds`` (once where timings nest)."""
        self._timing_depth += 1
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self._timing_depth -= 1
            if self._timing_depth == 0:
                self.timing_seconds[0] += time.perf_counter() - wall
                self.timing_seconds[1] += time.process_time() - cpu

    def use_probe(self, probe: HostProbe) -> None:
        """Gate the timing of new entries by ``probe`` from now on; the probe figures stored with the
        entries timed under the same probe are read back (and kept when the table is saved)."""
        self.probe = probe
        name, stored = self._stored_probes
        if name == probe.name:
            self.probes = {**stored, **self.probes}

    # ------------------------------------------------------------------ cache file
    def _load(self) -> None:
        if not self.path.is_file():
            return
        try:
            data = json.loads(self.path.read_text())
            if data.get("format") != FORMAT or data.get("version") != VERSION:
                raise ValueError("not a segnas latency table of this version")
            if data.get("context") != self.context:
                raise ValueError(f"measured for {data.get('context')}, not {self.context}")
            self.entries = {str(k): float(v) for k, v in data["entries"].items()}
            self.overheads = {str(k): float(v) for k, v in data.get("overheads", {}).items()}
            self._stored_probes = (data.get("probe"), {str(k): float(v) for k, v in data.get("probes", {}).items()
                                                       if k in self.entries})
            if self.probe is not None:
                self.use_probe(self.probe)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            warnings.warn(f"{self.path}: latency table unusable ({exc}); rebuilding it", SegnasWarning, stacklevel=2)
            self.entries, self.overheads = {}, {}

    def save(self) -> None:
        entries = {k: v for k, v in self.entries.items() if k not in self.volatile}
        overheads = {k: v for k, v in self.overheads.items() if k not in self.volatile}
        payload = {"format": FORMAT, "version": VERSION, "context": self.context,
                   "overheads": overheads, "entries": entries}
        if self.probe is not None:
            payload.update(probe=self.probe.name, probes={k: v for k, v in self.probes.items() if k in entries})
        atomic_write_text(self.path, json.dumps(payload, indent=1, sort_keys=True))

    # ------------------------------------------------------------------ measuring
    def _time_module(self, module: nn.Module, shape: tuple[int, int, int, int]) -> float:
        x = torch.randn(*shape).numpy()
        with pinned_threads(self.threads):
            run = prepare(self.backend, module.eval(), shape, self.threads, self.device)
            times = time_callable(lambda: run(x), warmup=3, min_runs=self.min_runs, min_time_s=self.min_time_s)
        times.sort()
        return times[len(times) // 2]

    def call_overhead(self, shape: tuple[int, int, int, int]) -> float:
        """Fixed cost of one inference call for an input of ``shape``, cached (measured on a busy
        host: for this job only, as busy table entries are; it is taken off every entry)."""
        key = "x".join(map(str, shape))
        if key not in self.overheads:
            with self._timing():
                if is_busy(self.host_load()):
                    self.volatile.add(key)
                with torch.random.fork_rng():
                    self.overheads[key] = self._time_module(_CallOverhead(), shape)
                self.save()
        return self.overheads[key]

    def _measure(self, key: OpKey) -> float:
        # Measuring draws random weights and inputs: keep the caller's RNG stream untouched, so
        # that a job gives the same result whether its table was cached or not.
        with torch.random.fork_rng():
            raw = self._time_module(key.build(), key.input_shape)
        return max(raw - self.call_overhead(key.input_shape), 0.0)

    def lookup(self, key: OpKey, save: bool = True) -> float:
        """Latency (ms, call overhead excluded) of one operator, measured now if not in the table."""
        name = key.to_str()
        if name not in self.entries:
            with self._timing():
                if self.probe is not None:
                    self.probes[name] = self.probe()
                self.entries[name] = self._measure(key)
                self.measured += 1
                if save:
                    self.save()
        return self.entries[name]

    def unsteady(self, keys: Iterable[OpKey]) -> list[OpKey]:
        """The entries of ``keys`` timed while the probe ran over ``STEADY_TOLERANCE`` above its
        ``reference_probe`` over the table (none without a probe)."""
        if not self.probes:
            return []
        limit = reference_probe(self.probes.values()) * (1 + STEADY_TOLERANCE)
        return list({k.to_str(): k for k in keys if self.probes.get(k.to_str(), 0.0) > limit}.values())

    def retime_unsteady(self, keys: Iterable[OpKey]) -> None:
        """Time again, up to ``probe_passes`` times, the entries of ``keys`` that ``unsteady`` names;
        an entry keeps the timing whose probe ran fastest."""
        keys = list(keys)
        for _ in range(self.probe_passes if self.probe is not None else 0):
            for key in self.unsteady(keys):
                with self._timing():
                    name, probe = key.to_str(), self.probe()
                    value = self._measure(key)
                if probe < self.probes[name]:
                    self.entries[name], self.probes[name] = value, probe

    def missing(self, keys: Iterable[OpKey]) -> list[OpKey]:
        seen, out = set(), []
        for k in keys:
            s = k.to_str()
            if s not in self.entries and s not in seen:
                seen.add(s)
                out.append(k)
        return out

    def ensure(self, keys: Iterable[OpKey], progress: bool = True) -> int:
        """Measure every key not yet in the table (saving as it goes); returns how many were new."""
        todo = self.missing(keys)
        others = self.host_load() if todo else None
        keep = not is_busy(others)
        if not keep and not self._busy_reported:  # once per job: a search asks for new entries per candidate
            self._busy_reported = True
            warnings.warn(f"latency table: other processes keep {others:.1f} cores busy; the operators measured "
                          "now are used by this job only, not saved (measure on a quiet machine, or set "
                          "SEGNAS_IGNORE_LOAD=1 to keep them anyway)", SegnasWarning, stacklevel=2)
        with progress_bar(progress and bool(todo)) as bar:
            task = bar.add_task(f"latency table ({self.backend})", total=len(todo), info="") if bar else None
            for i, key in enumerate(todo):
                self.lookup(key, save=keep and (i % 20 == 19))
                if not keep:
                    self.volatile.add(key.to_str())
                if bar is not None:
                    bar.update(task, advance=1, info=key.op)
        if todo:
            self.retime_unsteady(todo)
        if todo and keep:
            self.save()
        return len(todo)

    def host_load(self) -> float | None:
        """Cores other processes keep busy (``other_processes_cores``: half a second of sampling). A
        busy reading stands for ``LOAD_RECHECK_S`` seconds (a search asks per candidate); a quiet one
        is taken again each time, so that entries are only kept when the host was quiet just before."""
        now = time.monotonic()
        last = self._host_load
        if last is None or not is_busy(last[1]) or now - last[0] > LOAD_RECHECK_S:
            self._host_load = (now, other_processes_cores())
        return self._host_load[1]

    def __len__(self) -> int:
        return len(self.entries)
