"""The one latency model: a target on one runtime, thread count and input size, the operator table
measured for them, and the predicted latency of any architecture of any space.

Every strategy, evaluator and the ground-truth runner predict latency through ``LatencyModel``:
``predict(space, arch, num_classes)`` sums the table entries of the space's ``latency_keys`` and adds
one runtime call overhead (``segnas.cost.predictor``), then applies the space's learned correction
when one has been fitted (``calibrate``; ``segnas.cost.calibration``); one-shot supernets compose
their differentiable expected latency from ``op_latencies`` and ``call_overhead`` (the table), and
their derived networks are checked against the corrected prediction.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Sequence

from torch import nn

from segnas.config.search import NO_LATENCY_SIZE, LatencyTarget
from segnas.cost.calibration import (CorrectionCache, HasLatencyKeys, LatencyCorrection, calibration_archs,
                                     correction_key, fit_correction, measure_networks)
from segnas.cost.latency import HostProbe
from segnas.cost.machine import busiest, is_busy, other_processes_cores
from segnas.cost.predictor import Prediction, predict_latency
from segnas.cost.table import LOAD_RECHECK_S, LatencyTable, OperatorCosts
from segnas.cost.table import VERSION as TABLE_VERSION
from segnas.errors import SegnasError
from segnas.nn.ops import OpKey
from segnas.progress import Echo


def space_id(space: HasLatencyKeys) -> str:
    """The space's name and a hash of its settings (a space with other settings holds other
    networks, so it gets its own correction)."""
    options = {k: v for k, v in sorted(vars(space).items()) if not k.startswith("_")}
    digest = hashlib.sha256(json.dumps(options, default=str).encode()).hexdigest()[:8]
    return f"{space.name}@{digest}"


class LatencyModel:
    """Latency (ms) at batch 1 and ``size`` (H, W) on ``table``'s runtime, with an optional target."""

    def __init__(self, table: LatencyTable | OperatorCosts, size: Sequence[int], target_ms: float | None = None,
                 probe: nn.Module | None = None, probe_name: str | None = None) -> None:
        if len(size) != 2 or min(int(s) for s in size) < 1:
            raise SegnasError(f"latency.size: expected H, W >= 1, got {list(size)}")
        if target_ms is not None and not target_ms > 0:
            raise SegnasError(f"latency.target_ms: must be > 0, got {target_ms}")
        self.table = table
        self.size = (int(size[0]), int(size[1]))
        self.target_ms = target_ms
        #: the probe of probe-gated timing (``LatencySettings.probe``): the table's (``HostProbe``)
        #: and the calibration's networks use it; None: unprobed
        self.probe = probe
        measured = isinstance(table, LatencyTable)
        if probe is not None and measured and table.probe is None:
            table.use_probe(HostProbe(probe, (1, 3, *self.size), table.backend, table.threads, table.device,
                                      name=probe_name or type(probe).__name__))
        # corrections are cached beside a measured table; made-up costs keep theirs in memory
        self.corrections = CorrectionCache(table.path.with_name(table.path.stem + ".corrections.json")
                                           if measured else None,  # fitted on one table version's entries
                                           {**table.context, "table_version": TABLE_VERSION} if measured else {})

    def shared(self) -> dict[str, Any]:
        """What this model measured and fitted (table entries, call overheads, corrections), for
        another process to ``adopt``: rank 0 of a ``torchrun`` job times, the others take its figures."""
        measured = isinstance(self.table, LatencyTable)
        return {"entries": dict(self.table.entries) if measured else {},
                "overheads": dict(self.table.overheads) if measured else {},
                "corrections": {**self.corrections.entries, **self.corrections.transient}}

    def adopt(self, shared: dict[str, Any]) -> None:
        """Use another process's figures (``shared``) in memory; nothing is written to the cache."""
        if isinstance(self.table, LatencyTable):
            self.table.entries.update(shared["entries"])
            self.table.overheads.update(shared["overheads"])
        for key, correction in shared["corrections"].items():
            self.corrections.hold(key, correction)

    @classmethod
    def create(cls, backend: str = "onnxruntime", size: Sequence[int] = (360, 480), target_ms: float | None = None,
               threads: int | None = None, device: str = "cpu", min_runs: int = 20,
               min_time_s: float = 0.3, probe: nn.Module | None = None,
               probe_name: str | None = None) -> "LatencyModel":
        """A model over the cached table of ``backend`` with ``threads`` on this machine."""
        table = LatencyTable(backend, threads=threads, device=device, min_runs=min_runs, min_time_s=min_time_s)
        return cls(table, size, target_ms, probe=probe, probe_name=probe_name)

    @classmethod
    def from_settings(cls, settings: LatencyTarget, default_size: Sequence[int] | None = None,
                      threads: int | None = None, probe: nn.Module | None = None) -> "LatencyModel":
        """The model a job's ``latency`` section describes (size: ``settings.size``, else
        ``default_size``; threads: ``settings.threads``, else ``threads``); ``probe``: the network
        ``settings.probe`` names, built by the caller."""
        size = settings.size or default_size
        if size is None:
            raise SegnasError(NO_LATENCY_SIZE)
        return cls.create(settings.backend, size, settings.target, settings.threads or threads,
                          min_runs=settings.table_min_runs, min_time_s=settings.table_min_time_s, probe=probe,
                          probe_name=settings.probe)

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
        return f"{self.backend}, {self.threads} thread{'s' * (self.threads != 1)}, input {self.size[0]}x{self.size[1]}"

    # ------------------------------------------------------------------ operators
    def op_latencies(self, keys: list[OpKey]) -> list[float]:
        """Table entries (ms, call overhead excluded) of ``keys``, measuring the missing ones (their
        seconds counted in ``timing_seconds``)."""
        self.ensure(keys, progress=False)
        return [self.table.lookup(k, save=False) for k in keys]

    def call_overhead(self) -> float:
        """The runtime's fixed cost per call at this model's input shape (ms)."""
        return self.table.call_overhead(self.input_shape)

    def ensure(self, keys: list[OpKey], progress: bool = True) -> int:
        """Measure every missing table entry up front (with a progress bar); returns how many."""
        return self.table.ensure(keys, progress=progress)

    @property
    def timing_seconds(self) -> list[float]:
        """Wall and CPU seconds its table spent timing entries met for the first time (a search's
        clock leaves them out: they depend on what an earlier job left in the cache); a list the
        table updates in place."""
        return self.table.timing_seconds if isinstance(self.table, LatencyTable) else [0.0, 0.0]

    # ------------------------------------------------------------------ networks
    def explain(self, space: HasLatencyKeys, arch: Any, num_classes: int) -> Prediction:
        """The table's prediction with its per-operator breakdown, and the corrected one
        (``corrected_ms``) when the space has a fitted correction."""
        pred = predict_latency(space.latency_keys(arch, num_classes, self.size), self.table, self.input_shape)
        correction = self.correction(space, num_classes)
        if correction is not None:
            pred.corrected_ms = correction.apply(pred)
        return pred

    def predict(self, space: HasLatencyKeys, arch: Any, num_classes: int) -> float:
        """Predicted latency (ms) of ``arch`` of ``space`` with a ``num_classes`` head: corrected when
        the space has a fitted correction (``calibrate``), else the table's sum."""
        return float(self.explain(space, arch, num_classes).best_ms)

    def predict_table(self, space: HasLatencyKeys, arch: Any, num_classes: int) -> float:
        """The table's prediction alone (sum of operator entries + call overhead)."""
        return float(self.explain(space, arch, num_classes).total_ms)

    # ------------------------------------------------------------------ learned correction
    def _correction_key(self, space: HasLatencyKeys, num_classes: int) -> str:
        return correction_key(space_id(space), space.version, self.size, num_classes)

    def correction(self, space: HasLatencyKeys, num_classes: int) -> LatencyCorrection | None:
        """The fitted correction of ``space`` at this size and head, if it has been calibrated."""
        return self.corrections.get(self._correction_key(space, num_classes))

    def calibrate(self, space: HasLatencyKeys, num_classes: int, networks: int = 32, progress: bool = True,
                  echo: Echo | None = None, min_time_s: float = 0.3) -> LatencyCorrection:
        """Fit (or read from the cache) the correction of ``space``: measure ``networks`` random
        networks of it whole on this runtime, fill their table entries, fit. A killed calibration
        resumes: measured networks are kept in the cache file until the fit replaces them.
        ``min_time_s``: seconds each network is timed per session (3 sessions)."""
        key = self._correction_key(space, num_classes)
        cached = self.corrections.get(key)
        if cached is not None and cached.networks >= networks:
            return cached
        say = echo or (lambda message: None)
        say(f"latency: calibrating the {space.name} space's correction on {networks} measured networks "
            f"({self.describe()}); cached for later jobs")
        t0 = time.perf_counter()
        busy = [other_processes_cores()]
        read_at = [time.monotonic()]

        def quiet() -> bool:
            """Whether the host is quiet (read again at most every LOAD_RECHECK_S): a network measured
            on a busy host is not kept for a resumed calibration."""
            if time.monotonic() - read_at[0] > LOAD_RECHECK_S:
                read_at[0] = time.monotonic()
                busy.append(other_processes_cores())
            return not is_busy(busy[-1])

        archs = calibration_archs(space, networks, seed=0)
        measured = measure_networks(space, archs, num_classes, self.input_shape, self.backend, self.threads,
                                    store=self.corrections.measurements(key, keep=quiet), min_time_s=min_time_s,
                                    progress=progress, probe=self.probe)
        keys = [space.latency_keys(a, num_classes, self.size) for a in archs]
        self.ensure([k for ks in keys for k in ks], progress=progress)
        predictions = [predict_latency(ks, self.table, self.input_shape) for ks in keys]
        busy.append(other_processes_cores())
        others = busiest(*busy)
        fitted = fit_correction(predictions, measured, info={"seconds": round(time.perf_counter() - t0, 1),
                                                             "other_processes_cores": others})
        loaded = is_busy(others)
        if loaded:
            say(f"latency: warning: other processes kept {others:.1f} cores busy while the {space.name} space was "
                "calibrated; its correction is used by this job only, not cached (calibrate on a quiet machine)")
        self.corrections.put(key, fitted, persist=not loaded)
        say(f"latency: {space.name} correction fitted in {fitted.info['seconds']:.0f} s; median |error| on its "
            f"networks (leave-one-out) {100 * fitted.loo_median_abs_error:.1f}%, table alone "
            f"{100 * fitted.table_median_abs_error:.1f}%")
        return fitted
