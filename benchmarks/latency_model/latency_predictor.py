"""Predicted vs measured whole-network latency in every registered space, before and after the
learned correction (``segnas.cost.calibration``).

    python benchmarks/latency_model/latency_predictor.py measure [--spaces all] [--sizes 360x480 512x1024] [--n 200] [--fresh-table]
    python benchmarks/latency_model/latency_predictor.py report  [--calibration 32] [--previous RESULT]

``measure`` draws --n distinct random networks per space (``calibration_archs``: alternately
spread over the latency range and uniform), fills the operator table for them (--fresh-table:
times their entries again; with a probe, entries timed in a slow state of the host are timed
again), then measures each whole network on the runtime (ONNX Runtime, 2 threads) in sessions
of 8 networks gated by a probe (``--probe``, default Fast-SCNN: a short block of it before every
block of ≥ 0.3 s of a network, at least 3 rounds; every figure the median of a network's rounds in
one state of the host over all sessions, ``segnas.cost.latency.reference_probe``: each session
waits for the state of the sessions before it, and networks still without a round in it are timed
again once; ``--probe none``: 3 rounds, the quietest round's median), in an order that alternates
calibration and held-out networks, and appends it to ``<store-dir>/<space>_<HxW>.jsonl`` (default
runs/latency_predictor/) — resumable, a rerun measures only what is missing (and times again the
networks without a round in the reference state). ``report`` reads those files and the operator
table of this machine.
Run it on an otherwise idle machine: on 2 cores any other process slows ONNX Runtime's 2 threads. ``report`` splits each space's networks into the first
--calibration (the networks ``LatencyModel.calibrate`` would measure: same sampler, same seed) and
the rest, held apart; fits the correction on the calibration networks only, and reports on the
held-out ones, before and after the correction: median |relative error|, Spearman ρ and the share
within ±10%. Goal: ≥ 90% within ±10% and ρ ≥ 0.95 in every space. The time to calibrate a new
machine: the measured seconds of the calibration networks, plus their table entries at the
seconds per entry that ``measure`` took to time entries here (``<store-dir>/<space>_<HxW>.table.json``),
plus the fit.
Saves results/<--name>.{json,png} (default latency_predictor).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import results_dir, save_figure, save_result  # noqa: E402

RESULTS = results_dir(__file__)
CLASSES = 19

from segnas.cost import LatencyTable, predict_latency  # noqa: E402
from segnas.cost.calibration import (calibration_archs, fit_correction, input_megabytes,  # noqa: E402
                                     kind_sums, measure_networks, measured_figures, reference_state)
from segnas.cost.latency import HostProbe, steady_rounds  # noqa: E402
from segnas.parallel.store import ResultStore  # noqa: E402
from segnas.spaces import get_space, list_spaces  # noqa: E402
from segnas.utils import atomic_write_text, parse_size  # noqa: E402


def store_path(args: argparse.Namespace, space: str, size: str) -> Path:
    return Path(args.store_dir) / f"{space}_{size}.jsonl"


def table_timing_path(args: argparse.Namespace, space: str, size: str) -> Path:
    return Path(args.store_dir) / f"{space}_{size}.table.json"


def probe_network(args: argparse.Namespace) -> torch.nn.Module | None:
    """The fixed network timed before every block of the gated sessions (``--probe``), or None."""
    if args.probe == "none":
        return None
    from segnas.training import resolve_model

    return resolve_model(args.probe, CLASSES)[0].eval()


#: The input of the probe timed before every table entry (any fixed size tells the host's state).
TABLE_PROBE_SHAPE = (1, 3, 180, 240)


def measure(args: argparse.Namespace) -> None:
    probe = probe_network(args)
    host = None if probe is None else HostProbe(probe, TABLE_PROBE_SHAPE, args.backend, args.threads, name=args.probe)
    table = LatencyTable(args.backend, threads=args.threads, probe=host)
    for size_text in args.sizes:
        size = parse_size(size_text)
        for name in args.spaces:
            space = get_space(name)
            archs = calibration_archs(space, args.n, seed=args.seed)
            keys = [k for a in archs for k in space.latency_keys(a, CLASSES, size)]
            if args.fresh_table:  # entries timed now, in the same quiet window as the networks
                for k in keys:
                    table.entries.pop(k.to_str(), None)
            t0 = time.perf_counter()
            new = table.ensure(keys)
            t1 = time.perf_counter()
            if new:  # what timing table entries costs on this machine, for the time to calibrate
                atomic_write_text(table_timing_path(args, name, size_text),
                                  json.dumps({"entries": new, "seconds": round(t1 - t0, 1)}))
            # calibration and held-out networks alternate, so a drift of the machine hits both alike
            c = min(args.calibration, len(archs))
            order = [a for pair in zip(archs[:c], archs[c:2 * c]) for a in pair] + archs[2 * c:]
            order += [a for a in archs[:c] if a not in order]
            store = ResultStore(store_path(args, name, size_text))
            measure_networks(space, order, CLASSES, (1, 3, *size), args.backend, args.threads, store=store,
                             progress=True, probe=probe)
            store.close()
            print(f"{name} {size_text}: {new} table entries timed in {t1 - t0:.0f} s, {len(archs)} networks "
                  f"measured in {time.perf_counter() - t1:.0f} s", flush=True)


def report(args: argparse.Namespace) -> None:
    table = LatencyTable(args.backend, threads=args.threads)
    summary, points = [], []
    for size_text in args.sizes:
        size = parse_size(size_text)
        for name in args.spaces:
            path = store_path(args, name, size_text)
            if not path.is_file():
                continue
            space = get_space(name)
            store = ResultStore(path)
            archs = [a for a in calibration_archs(space, args.n, seed=args.seed) if space.key(a) in store]
            if len(archs) <= args.calibration + 4:
                print(f"{name} {size_text}: only {len(archs)} networks measured; skipped")
                continue
            rec = [store[space.key(a)] for a in archs]
            keys = [space.latency_keys(a, CLASSES, size) for a in archs]
            table.ensure([k for ks in keys for k in ks])
            calib_keys = {k.to_str() for ks in keys[:args.calibration] for k in ks}
            pred = [predict_latency(ks, table, (1, 3, *size)) for ks in keys]
            meas = measured_figures(rec)  # the steady rounds of a gated measurement, else the quietest
            c = args.calibration
            t_fit = time.perf_counter()
            corr = fit_correction(pred[:c], meas[:c])
            fit_s = time.perf_counter() - t_fit
            held_p = [p.total_ms for p in pred[c:]]
            corrected = [corr.apply(p) for p in pred]
            held_c = corrected[c:]
            held_m = meas[c:]
            rows = {}
            for label, values in (("table", held_p), ("corrected", held_c)):
                err = [(p - m) / m for p, m in zip(values, held_m)]
                rows[label] = {"median_abs_rel_error": statistics.median(map(abs, err)),
                               "within_10pct": float(np.mean([abs(e) <= 0.10 for e in err])),
                               "spearman": float(spearmanr(values, held_m).statistic),
                               "mean_signed_rel_error": statistics.mean(err)}
            state = reference_state(rec)
            twice = [pair for r in rec if len(pair := repeat_pair(r, state)) == 2]
            ceiling = float(spearmanr([a for a, _ in twice], [b for _, b in twice]).statistic)
            timing = table_timing_path(args, name, size_text)
            per_entry = (lambda t: t["seconds"] / t["entries"])(json.loads(timing.read_text())) if timing.is_file() else None
            summary.append({
                "space": name, "size": size_text, "backend": args.backend, "threads": args.threads,
                "networks": len(archs), "calibration_networks": c, "held_out_networks": len(archs) - c,
                **{f"{label}_{k}": v for label, row in rows.items() for k, v in row.items()},
                "repeatability_spearman": ceiling,
                # the same networks timed twice (rounds 1 and 2): how many agree within ±10%
                "repeatability_within_10pct": float(np.mean([abs(b / a - 1) <= 0.10 for a, b in twice])),
                "repeatability_networks": len(twice), "probed": all(r.get("probes_ms") for r in rec),
                "measured_ms_range": [min(meas), max(meas)],
                # a new machine: measure the calibration networks, time their table entries, fit
                "calibration_network_seconds": round(sum(r["seconds"] for r in rec[:c]), 1),
                "calibration_table_entries": len(calib_keys), "table_seconds_per_entry": per_entry,
                "calibration_seconds": round(sum(r["seconds"] for r in rec[:c]) + len(calib_keys) * (per_entry or 0)
                                             + fit_s, 1),
                "correction": corr.to_dict()})
            for i, (a, p, pc, m) in enumerate(zip(archs, pred, corrected, meas)):  # with the correction's inputs
                points.append({"space": name, "size": size_text, "key": space.key(a),
                               "role": "calibration" if i < c else "held_out",
                               "rounds_ms": [round(x, 3) for x in rec[i]["rounds_ms"]],
                               "probes_ms": [round(x, 3) for x in rec[i].get("probes_ms") or []],
                               "table_ms": p.total_ms, "corrected_ms": pc, "measured_ms": m,
                               "overhead_ms": p.overhead_ms, "operators": len(p.per_op),
                               "input_mb": input_megabytes(p), "kind_ms": kind_sums(p)})
            if args.previous:
                summary[-1].update(across_sessions(args.previous, points[-len(archs):], c))
            s = summary[-1]
            print(f"{name:9s} {size_text}: table |err| {100 * s['table_median_abs_rel_error']:.1f}%, "
                  f"±10% {100 * s['table_within_10pct']:.0f}%, ρ {s['table_spearman']:.3f} → corrected "
                  f"{100 * s['corrected_median_abs_rel_error']:.1f}%, ±10% {100 * s['corrected_within_10pct']:.0f}%, "
                  f"ρ {s['corrected_spearman']:.3f} ({s['held_out_networks']} held out; calibration "
                  f"{s['calibration_seconds'] / 60:.1f} min)")
    plot(points, RESULTS / f"{args.name}.png")
    path = save_result(args.name, {"seed": args.seed, "summary": summary, "points": points}, RESULTS)
    print(f"saved {path}")


def across_sessions(previous: str, here: list[dict[str, Any]], calibration: int) -> dict[str, Any]:
    """The networks that result ``previous`` (another session) also measured, matched by key: how
    far the two sessions' measurements are apart, and how each session's correction predicts the
    other session's measurement of the networks held out in both. ``here``: this session's points of
    one space and size, calibration networks first."""
    old = json.loads((RESULTS / f"{previous}.json").read_text())
    space, size = here[0]["space"], here[0]["size"]
    before = {p["key"]: p for p in old["points"] if p["space"] == space and p["size"] == size and "key" in p}
    if not before:
        raise SystemExit(f"--previous {previous}: no networks of {space} {size} with their keys")
    shared = [(p, before[p["key"]]) for p in here if p["key"] in before]
    if len(shared) < 4:
        return {"previous": {"result": previous, "date": old["date"], "networks": len(shared)}}
    ratio = [p["measured_ms"] / q["measured_ms"] - 1 for p, q in shared]
    held = [(p, q) for p, q in shared if p["role"] == "held_out" and q["role"] == "held_out"]

    def within(pred: list[float], meas: list[float]) -> float | None:
        return float(np.mean([abs(x / m - 1) <= 0.10 for x, m in zip(pred, meas)])) if pred else None

    return {"previous": {"result": previous, "date": old["date"], "machine": old["machine"], "networks": len(shared),
                         "figures_within_10pct": figures_across(shared),
                         "measured_within_10pct": float(np.mean([abs(r) <= 0.10 for r in ratio])),
                         "measured_spearman": float(spearmanr([q["measured_ms"] for _, q in shared],
                                                              [p["measured_ms"] for p, _ in shared]).statistic),
                         "measured_median_abs_rel_diff": statistics.median(map(abs, ratio)),
                         # a correction calibrated in one session, used in the other (networks held out in both)
                         "held_out_networks": len(held),
                         "its_correction_here_within_10pct": within([q["corrected_ms"] for _, q in held],
                                                                    [p["measured_ms"] for p, _ in held]),
                         "this_correction_there_within_10pct": within([p["corrected_ms"] for p, _ in held],
                                                                      [q["measured_ms"] for _, q in held])}}


#: Figures of a network's timing rounds that might repeat better from one session to the next than the
#: probe rule's (``measured_figures``): compared across sessions by ``figures_across``.
ROUND_FIGURES = {
    "fastest round": min,
    "fast mode": lambda r: statistics.median([x for x in r if x <= 1.1 * min(r)]),  # rounds within 10% of it
    "median round": statistics.median,
}


def figures_across(shared: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, float] | None:
    """For networks timed in two sessions (this session's point, the earlier one's): the share whose
    figure agrees within ±10%, for each of ``ROUND_FIGURES`` (the probe rule's: ``measured_within_10pct``)."""
    if not all(p.get("rounds_ms") and q.get("rounds_ms") for p, q in shared):
        return None
    return {name: float(np.mean([abs(figure(p["rounds_ms"]) / figure(q["rounds_ms"]) - 1) <= 0.10 for p, q in shared]))
            for name, figure in ROUND_FIGURES.items()}


def repeat_pair(record: dict[str, Any], state: float | None) -> list[float]:
    """Two timings of one network for the repeatability ceiling: its first two rounds, or in a gated
    measurement (``state``: the reference probe of all) its first two steady rounds (fewer when it has fewer)."""
    if state is None:
        return record["rounds_ms"][:2]
    return steady_rounds(record["rounds_ms"], record["probes_ms"], state)[:2]


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({p["size"] for p in points})
    fig, axes = plt.subplots(len(sizes), 2, figsize=(9, 4.5 * len(sizes)), squeeze=False)
    for row, size in zip(axes, sizes):
        for ax, field in zip(row, ("table_ms", "corrected_ms")):
            for space in sorted({p["space"] for p in points}):
                sel = [p for p in points if p["size"] == size and p["space"] == space and p.get("role") != "calibration"]
                ax.scatter([p["measured_ms"] for p in sel], [p[field] for p in sel], s=8, label=space)
            lo = min(p["measured_ms"] for p in points if p["size"] == size)
            hi = max(p["measured_ms"] for p in points if p["size"] == size)
            ax.plot([lo, hi], [lo, hi], "k--", lw=1)
            ax.plot([lo, hi], [1.1 * lo, 1.1 * hi], "k:", lw=0.8)
            ax.plot([lo, hi], [0.9 * lo, 0.9 * hi], "k:", lw=0.8)
            ax.set(xscale="log", yscale="log", xlabel="measured (ms)",
                   ylabel=f"{field.split('_')[0]} prediction (ms)", title=f"{size}, held-out networks")
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("phase", choices=["measure", "report"])
    ap.add_argument("--spaces", nargs="+", default=["all"])
    ap.add_argument("--n", type=int, default=200, help="networks per space and size")
    ap.add_argument("--calibration", type=int, default=32, help="networks the correction is fitted on")
    ap.add_argument("--sizes", nargs="+", default=["360x480", "512x1024"])
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--probe", default="fast_scnn",
                    help="zoo network or arch file timed before every block to tell the host's state (a cloud VM "
                         "changes speed by itself); every figure from one state of the host; none: quietest round")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store-dir", default="runs/latency_predictor",
                    help="where the measured networks are kept (one resumable JSONL per space and size)")
    ap.add_argument("--name", default="latency_predictor", help="report: result id (results/NAME.json and .png)")
    ap.add_argument("--previous", default=None,
                    help="report: a result id measured in another session; for the networks both measured (by key) "
                         "adds how far the two sessions' measurements are apart, and how each correction predicts the "
                         "other session")
    ap.add_argument("--fresh-table", action="store_true",
                    help="measure: time the networks' table entries again (in the same session as the networks)")
    args = ap.parse_args()
    if args.spaces == ["all"]:
        args.spaces = list_spaces()
    (measure if args.phase == "measure" else report)(args)


if __name__ == "__main__":
    main()
