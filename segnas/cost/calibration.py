"""A learned correction of the operator table's whole-network prediction, fitted on measured
networks of one space, at one input size, on one runtime and machine.

The table predicts a network as the sum of its operators' entries plus one call overhead. Inside a
network an operator can cost more or less than alone (caches stay warm, the runtime fuses an
operator with its neighbours, or runs element-wise glue — residual adds, concatenations — that no
entry times). How much differs from one operator kind to another, and from space to space. The
correction learns it from a few dozen measured networks:

    measured − overhead  ≈  Σ_g (1 + d_g)·T_g  +  c·N  +  m·M  +  b

where T_g is the sum of the table entries of the network's operators of kind g (``OpKey.op``, and
the stride when not 1), N their number, M the megabytes of their inputs and b a constant. N and M
stand for what the runtime runs differently inside a network (``benchmarks/latency_model/
fusions.py`` counts the kernels): a unit timed alone converts its input to the runtime's blocked
layout and its output back (ONNX Runtime's ReorderInput/ReorderOutput, OpenVINO's Reorder: one
pass over each tensor), which consecutive units inside a network skip; and the network runs glue
between units that no entry times (residual Adds, Concats, upsampling; OpenVINO fuses the adds into
their convolutions), whose cost grows with the tensors passed along. It is fitted by robust (Huber) least squares on *relative* errors (each network's equation is
divided by its measured latency, so a 5 ms network counts as much as a 50 ms one) with a ridge
penalty pulling every d_g, c and b towards 0 — with little data the correction stays close to the
table — and every scale 1 + d_g kept within [``MIN_SCALE``, ``MAX_SCALE``]. The ridge strength is chosen by leave-one-out error on the calibration networks, which is
also recorded as the correction's expected error.

Corrections are cached next to the latency table (same context: backend, threads, device,
machine), one per space (name and version), input size and number of classes.
"""

from __future__ import annotations

import json
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Protocol, Sequence

import numpy as np
from torch import nn

from segnas.cost.latency import (measure_latency_gated, measure_latency_interleaved, reference_probe, steady_median,
                                 steady_rounds)
from segnas.cost.predictor import Prediction
from segnas.errors import SegnasError, SegnasWarning
from segnas.nn.ops import OpKey
from segnas.utils import atomic_write_text

FORMAT = "segnas-latency-corrections"
VERSION = 1
#: ridge strengths tried by leave-one-out (relative-error units)
RIDGE_GRID = (1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0)
#: the range of the scale (1 + d_g) of an operator kind: inside a network a kind costs between half
#: and twice what it costs alone (wider scales fit the noise of a few dozen timings: on the `cells`
#: space an unbounded fit priced pooling at 6x its table entries); the per-operator and
#: per-megabyte terms carry what is not proportional to the entries
MIN_SCALE, MAX_SCALE = 0.5, 2.0
#: the ridge strength chosen is the strongest whose leave-one-out error is within this of the best
#: (a weaker ridge must earn its extra freedom)
RIDGE_TOLERANCE = 0.005
#: relative error beyond which a calibration network counts linearly, not quadratically (Huber)
HUBER = 0.05
HUBER_ITERATIONS = 4
#: the corrected operators' time is never below this share of the table's
FLOOR = 0.25


def op_kind(key: OpKey) -> str:
    """The kind of an operator: its name, and its stride when not 1."""
    return key.op if key.stride == 1 else f"{key.op}|s{key.stride}"


@dataclass
class LatencyCorrection:
    """A fitted correction (module docstring); ``apply`` maps a table prediction to corrected ms."""

    kinds: list[str]
    scale: dict[str, float]            # 1 + d_g per operator kind (kinds unseen in calibration: 1)
    per_op_ms: float                   # c
    per_mb_ms: float                   # m
    intercept_ms: float                # b
    ridge: float
    networks: int                      # calibration networks it was fitted on
    loo_median_abs_error: float        # leave-one-out median |relative error| on them
    table_median_abs_error: float      # the uncorrected table's on the same networks
    info: dict[str, Any] = field(default_factory=dict)

    def apply(self, prediction: Prediction) -> float:
        """Corrected latency (ms) of a table prediction."""
        sums = kind_sums(prediction)
        ops = sum(self.scale.get(k, 1.0) * ms for k, ms in sums.items())
        body = (ops + self.per_op_ms * len(prediction.per_op) + self.per_mb_ms * input_megabytes(prediction)
                + self.intercept_ms)
        return float(prediction.overhead_ms + max(body, FLOOR * prediction.ops_ms))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatencyCorrection":
        return cls(**data)


def kind_sums(prediction: Prediction) -> dict[str, float]:
    """Table ms of a prediction's operators summed per operator kind."""
    sums: dict[str, float] = {}
    for key, ms in prediction.per_op:
        kind = op_kind(key)
        sums[kind] = sums.get(kind, 0.0) + ms
    return sums


def input_megabytes(prediction: Prediction) -> float:
    """Megabytes (fp32) of the inputs of a prediction's operators."""
    return 4 * sum(key.cin * key.h * key.w for key, _ in prediction.per_op) / 1e6


#: the shared columns after the per-kind ones: operators, input megabytes, constant
SHARED = ("per_op_ms", "per_mb_ms", "intercept_ms")


def _design(predictions: Sequence[Prediction], kinds: list[str]) -> np.ndarray:
    rows = []
    for p in predictions:
        sums = kind_sums(p)
        rows.append([sums.get(k, 0.0) for k in kinds] + [float(len(p.per_op)), input_megabytes(p), 1.0])
    return np.asarray(rows, dtype=np.float64)


def _solve(x: np.ndarray, residual: np.ndarray, weight: np.ndarray, ridge: float, lower: np.ndarray,
           upper: np.ndarray) -> np.ndarray:
    """argmin_θ Σ_i ρ(w_i(x_i·θ − r_i)) + ridge·|θ|², ``lower`` ≤ θ ≤ ``upper``: bounded ridge least squares with
    the Huber loss ρ (quadratic up to ``HUBER`` relative error, linear beyond), by iteratively
    reweighted least squares — one network timed during a burst of load must not pull the fit."""
    from scipy.optimize import lsq_linear

    xw, rw = x * weight[:, None], residual * weight
    robust = np.ones(len(rw))
    theta = np.zeros(x.shape[1])
    for _ in range(HUBER_ITERATIONS):
        sw = np.sqrt(robust)
        a = np.vstack([xw * sw[:, None], np.sqrt(ridge) * np.eye(x.shape[1])])
        b = np.concatenate([rw * sw, np.zeros(x.shape[1])])
        theta = lsq_linear(a, b, bounds=(lower, upper)).x
        err = np.abs(xw @ theta - rw)
        robust = np.minimum(1.0, HUBER / np.maximum(err, 1e-12))
    return theta


def fit_correction(predictions: Sequence[Prediction], measured_ms: Sequence[float],
                   info: dict[str, Any] | None = None) -> LatencyCorrection:
    """Fit a correction on table ``predictions`` of networks whose measured latencies are ``measured_ms``."""
    if len(predictions) != len(measured_ms) or len(predictions) < 4:
        raise SegnasError(f"latency correction: needs ≥ 4 networks with a measurement each, got {len(predictions)} "
                          f"and {len(measured_ms)} (latency.calibration_networks, or a space with more networks)")
    kinds = sorted({k for p in predictions for k in kind_sums(p)})
    measured = np.asarray(measured_ms, dtype=np.float64)
    x = _design(predictions, kinds)
    base = np.asarray([p.ops_ms + p.overhead_ms for p in predictions])
    residual = measured - base                      # what θ must explain (Σ d_g·T_g + c·N + m·M + b)
    weight = 1.0 / measured                         # relative errors
    # Columns are scaled to unit relative size, so one ridge strength suits every column.
    norm = np.maximum(np.abs(x * weight[:, None]).mean(axis=0), 1e-12)
    xs = x / norm
    lower = np.concatenate([np.full(len(kinds), MIN_SCALE - 1.0), np.full(len(SHARED), -np.inf)]) * norm
    upper = np.concatenate([np.full(len(kinds), MAX_SCALE - 1.0), np.full(len(SHARED), np.inf)]) * norm

    def loo_errors(ridge: float) -> list[float]:
        errs = []
        for i in range(len(measured)):
            keep = np.arange(len(measured)) != i
            theta = _solve(xs[keep], residual[keep], weight[keep], ridge, lower, upper)
            errs.append(abs(base[i] + xs[i] @ theta - measured[i]) / measured[i])
        return errs

    scored = [(statistics.median(loo_errors(r)), r) for r in RIDGE_GRID]
    best = min(err for err, _ in scored)
    loo, ridge = max(((err, r) for err, r in scored if err <= best + RIDGE_TOLERANCE), key=lambda er: er[1])
    theta = _solve(xs, residual, weight, ridge, lower, upper) / norm
    table_err = median_abs_error(base, measured)
    return LatencyCorrection(kinds=kinds, scale={k: 1.0 + float(d) for k, d in zip(kinds, theta)},
                             per_op_ms=float(theta[-3]), per_mb_ms=float(theta[-2]), intercept_ms=float(theta[-1]),
                             ridge=ridge,
                             networks=len(measured), loo_median_abs_error=float(loo),
                             table_median_abs_error=float(table_err), info=dict(info or {}))


def correction_key(space: str, version: int, size: Sequence[int], num_classes: int) -> str:
    return f"{space}@v{version}/{int(size[0])}x{int(size[1])}/{num_classes}classes"


class HasLatencyKeys(Protocol):
    """What the latency model and its calibration need of a search space (``segnas.spaces.SearchSpace``
    has it): the table's operator keys of a network, random networks, and the built network."""

    name: ClassVar[str]
    version: ClassVar[int]

    def latency_keys(self, arch: Any, num_classes: int, input_size: tuple[int, int]) -> list[OpKey]: ...

    def sample(self, rng: Any, spread: bool = False) -> Any: ...

    def build(self, arch: Any, num_classes: int) -> Any: ...

    def key(self, arch: Any) -> str: ...


class MeasurementStore(Protocol):
    """Where measured networks are kept by architecture key, so a killed measurement resumes
    (``segnas.parallel.ResultStore`` is one)."""

    def __contains__(self, key: str) -> bool: ...

    def __getitem__(self, key: str) -> Any: ...

    def add(self, key: str, result: Any) -> None: ...


class CorrectionCache:
    """Fitted corrections of one measurement context, in one JSON file beside its latency table,
    with the measured networks of calibrations in progress (``measurements``)."""

    def __init__(self, path: str | Path | None, context: dict[str, Any]) -> None:
        self.path = Path(path) if path is not None else None  # None: in memory only
        self.context = context
        self.entries: dict[str, LatencyCorrection] = {}
        #: corrections kept for this process only (``put(persist=False)``): never written
        self.transient: dict[str, LatencyCorrection] = {}
        self.measured: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                if data.get("format") != FORMAT or data.get("version") != VERSION or data.get("context") != context:
                    raise ValueError("another format, version or measurement context")
                self.entries = {k: LatencyCorrection.from_dict(v) for k, v in data["entries"].items()}
                self.measured = {k: dict(v) for k, v in data.get("measured", {}).items()}
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                warnings.warn(f"{self.path}: latency corrections unusable ({exc}); they will be refitted",
                              SegnasWarning, stacklevel=2)
                self.entries, self.measured = {}, {}

    def get(self, key: str) -> LatencyCorrection | None:
        """The correction of ``key``: this process's own or held one first (a comparison's jobs keep
        predicting with the one its checks fitted, whatever another process caches meanwhile)."""
        return self.transient.get(key) or self.entries.get(key)

    def hold(self, key: str, correction: LatencyCorrection) -> None:
        """Use a correction another process fitted, in memory only: nothing is written."""
        self.transient[key] = correction

    def put(self, key: str, correction: LatencyCorrection, persist: bool = True) -> None:
        """Keep a fitted correction (its calibration's measurements are dropped, from the file too);
        ``persist`` False: for this process only (the next job calibrates again, measuring afresh:
        measurements taken on a busy machine are not reused)."""
        measured = self.measured.pop(key, None) is not None
        if persist:
            self.entries[key] = correction
            self.transient.pop(key, None)
        else:
            self.transient[key] = correction
        if persist or measured:
            self._save()

    def measurements(self, key: str, keep: Callable[[], bool] = lambda: True) -> MeasurementStore:
        """The networks measured so far for the calibration ``key``; each one added is saved when
        ``keep()`` (the host is quiet), else held for this process only."""
        cache = self
        held: dict[str, Any] = {}

        class Store:
            def __contains__(self, arch: str) -> bool:
                return arch in held or arch in cache.measured.get(key, {})

            def __getitem__(self, arch: str) -> Any:
                return held[arch] if arch in held else cache.measured[key][arch]

            def add(self, arch: str, result: Any) -> None:
                if keep():
                    cache.measured.setdefault(key, {})[arch] = result
                    cache._save()
                else:
                    held[arch] = result

        return Store()

    def _save(self) -> None:
        if self.path is None:
            return
        payload = {"format": FORMAT, "version": VERSION, "context": self.context,
                   "entries": {k: v.to_dict() for k, v in sorted(self.entries.items())}, "measured": self.measured}
        atomic_write_text(self.path, json.dumps(payload, indent=1))


@dataclass(frozen=True)
class HeldCorrections:
    """Corrections one process fitted for its own jobs alone (on a busy host: not cached), to hand to
    those jobs so that they all predict with the same ones: a comparison's, before its searches.
    ``context`` is the measurement context they were fitted in; another one's model takes none."""

    context: dict[str, Any]
    corrections: dict[str, LatencyCorrection]

    @classmethod
    def of(cls, cache: CorrectionCache) -> "HeldCorrections":
        """The corrections ``cache`` keeps for this process only."""
        return cls(cache.context, dict(cache.transient))

    def lend(self, cache: CorrectionCache) -> None:
        """Let ``cache`` use these corrections, in memory only, when it is of the same context."""
        if cache.context == self.context:
            for key, correction in self.corrections.items():
                cache.hold(key, correction)

    def to_dict(self) -> dict[str, Any]:
        return {"context": self.context, "corrections": {k: c.to_dict() for k, c in self.corrections.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HeldCorrections":
        return cls(data["context"], {k: LatencyCorrection.from_dict(c) for k, c in data["corrections"].items()})


def calibration_archs(space: HasLatencyKeys, n: int, seed: int = 0) -> list[Any]:
    """``n`` distinct random architectures of ``space``: alternately spread over the latency range
    and uniform, so the correction sees both the extremes and the typical networks."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: list[Any] = []
    for attempt in range(20 * n):
        if len(out) == n:
            break
        arch = space.sample(rng, spread=attempt % 2 == 0)
        key = space.key(arch)
        if key not in seen:
            seen.add(key)
            out.append(arch)
    return out


def median_abs_error(predicted: Iterable[float], measured: Iterable[float]) -> float:
    return float(statistics.median(abs(p - m) / m for p, m in zip(predicted, measured)))


def measure_networks(space: HasLatencyKeys, archs: Sequence[Any], num_classes: int,
                     input_shape: tuple[int, int, int, int],
                     backend: str, threads: int, store: MeasurementStore | None = None, chunk: int = 8,
                     min_time_s: float = 0.3, rounds: int = 3, progress: bool = True,
                     probe: nn.Module | None = None, retries: int = 1) -> list[float]:
    """Measured latency of every architecture (ms), each in the quietest state of the machine seen.

    Networks are timed ``chunk`` at a time in one interleaved session of at least ``rounds`` rounds,
    each a block of ≥ ``min_time_s`` seconds per network. Without a ``probe``: the lowest of a
    network's per-round medians (a load that comes and goes only ever adds time; on a shared 2-core
    machine a disturbed round measured up to 3x the others). With a ``probe`` (a fixed network, the
    same module for every chunk): a probe-gated session (``measure_latency_gated``), for a host that
    changes speed by itself (a cloud VM); every network's figure is then the median of its rounds
    whose probe ran within the tolerance over the reference probe of all networks measured
    (``measured_figures``), one state of the machine for all: each session waits for the state of
    the sessions before it, and the networks still without a round in the final state are timed
    again in up to ``retries`` more sessions (their rounds added). With a ``store``, finished networks
    are kept by architecture key (with the architecture, its per-round medians and probes, and the
    seconds spent per network) and skipped on a rerun."""
    from segnas.progress import progress_bar

    keys = [space.key(a) for a in archs]
    todo = [i for i, k in enumerate(keys) if store is None or k not in store]
    records: dict[str, dict[str, Any]] = {k: store[k] for k in keys if store is not None and k in store}

    def session(group: list[int], again: bool) -> None:
        models = {keys[i]: space.build(archs[i], num_classes).eval() for i in group}
        t0 = time.perf_counter()
        if probe is None:
            results = measure_latency_interleaved(models, input_shape, backend, threads, warmup=3,
                                                  min_runs=3 * rounds, min_time_s=min_time_s * rounds, rounds=rounds)
        else:
            seen = [p for r in records.values() for p in r.get("probes_ms") or []]
            results = measure_latency_gated(models, input_shape, probe, backend, threads, block_runs=3,
                                            block_time_s=min_time_s, min_rounds=rounds, earlier_probes=seen)
        seconds = (time.perf_counter() - t0) / len(group)
        for i in group:
            result = results[keys[i]]
            before = records[keys[i]] if again else {"rounds_ms": [], "probes_ms": [], "seconds": 0.0}
            rounds_ms = before["rounds_ms"] + list(result.round_medians_ms)
            records[keys[i]] = {"measured_ms": min(rounds_ms), "rounds_ms": rounds_ms,
                                "probes_ms": before["probes_ms"] + list(result.round_probe_ms or []),
                                "seconds": round(before["seconds"] + seconds, 2), "arch": archs[i].to_dict()}
            if store is not None:
                store.add(keys[i], records[keys[i]])

    def unsteady() -> list[int]:
        state = reference_state([records[k] for k in keys])
        if state is None:
            return []
        return [i for i, k in enumerate(keys)
                if not steady_rounds(records[k]["rounds_ms"], records[k]["probes_ms"], state)]

    with progress_bar(progress and bool(todo)) as bar:
        task = bar.add_task(f"measuring {space.name} networks", total=len(todo), info="") if bar else None
        for start in range(0, len(todo), chunk):
            group = todo[start:start + chunk]
            session(group, again=False)
            if bar is not None:
                bar.update(task, advance=len(group))
    for _ in range(retries if probe is not None else 0):
        again = unsteady()
        for start in range(0, len(again), chunk):
            session(again[start:start + chunk], again=True)
    return measured_figures([records[k] for k in keys])


def reference_state(records: Sequence[dict[str, Any]]) -> float | None:
    """The ``reference_probe`` over measured networks' rounds, where every record has its rounds'
    probes (a gated measurement), else None."""
    if not records or not all(r.get("probes_ms") for r in records):
        return None
    return reference_probe(p for r in records for p in r["probes_ms"])


def measured_figures(records: Sequence[dict[str, Any]]) -> list[float]:
    """Each measured network's figure (ms): where every record has its rounds' probes, the median of
    its rounds whose probe ran within the tolerance over the ``reference_state`` of all of them
    (``steady_median``: one state of the machine for all networks, whichever session timed them), and
    for a network without such a round the median of its rounds; else its quietest round (``measured_ms``)."""
    state = reference_state(records)
    if state is None:
        return [float(r["measured_ms"]) for r in records]
    out = []
    for r in records:
        steady = steady_median(r["rounds_ms"], r["probes_ms"], state)
        out.append(float(steady if steady is not None else statistics.median(r["rounds_ms"])))
    return out
