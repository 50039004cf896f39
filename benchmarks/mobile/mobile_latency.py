"""Latency prediction on the ``mobile`` space: predicted (operator table) vs measured whole-network
latency of random members and Fast-SCNN, at two resolutions.

    python benchmarks/mobile/mobile_latency.py [--n 32] [--rounds 3] [--sizes 360x480 512x1024]   # quiet machine
    python benchmarks/mobile/mobile_latency.py --smoke                                            # seconds: checks the script

The method of ``latency_model/latency_predictor.py`` (multires): ``--n`` networks sampled with
``spread`` (spanning the space's latency range) plus Fast-SCNN (``MOBILE_FAST_SCNN``, reported on
its own too), CamVid's 11 classes; for each size the ONNX Runtime operator table (``--threads``) is
built or reused, every network's latency predicted from it (sum of operator entries + one call
overhead) and the exported network timed in ``--rounds`` interleaved rounds (median kept).
Targets, as for ``multires``: median |relative error| <= 10% and Spearman's rho >= 0.95 at each
size. Run it on a quiet machine: timing noise lowers both. ``--smoke`` uses 3 small networks at
two small sizes, a throw-away table and one short round: it measures nothing worth keeping.
Saves results/mobile_latency.json (``--smoke``: results/mobile_latency_smoke.json).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import interleaved_rounds, results_dir, save_figure, save_result  # noqa: E402

from segnas.cost import LatencyTable, predict_latency  # noqa: E402
from segnas.spaces.mobile import MOBILE, MOBILE_FAST_SCNN, MobileSpace  # noqa: E402
from segnas.utils import parse_size  # noqa: E402

CLASSES = 11
TARGETS = {"median_abs_rel_error": 0.10, "spearman": 0.95}
#: --smoke: a narrow space of small networks.
SMOKE_SPACE = MobileSpace(stem_widths=((8,), (8, 16), (16,)), stage_widths=((16,), (16, 24), (24,), (24, 32), (32,)),
                          stage_depths=((0, 1), (1, 2), (0, 1), (1, 2), (0, 1)), fusion_widths=(16, 24))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="random members (Fast-SCNN is added)")
    ap.add_argument("--sizes", nargs="+", default=["360x480", "512x1024"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per network")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results-dir", default=str(results_dir(__file__)))
    ap.add_argument("--smoke", action="store_true", help="3 small networks, small sizes, a throw-away table")
    args = ap.parse_args()
    space = SMOKE_SPACE if args.smoke else MOBILE
    if args.smoke:
        args.n, args.sizes, args.rounds = 3, ["64x96", "96x128"], 2
    rng = np.random.default_rng(args.seed)
    archs = [space.sample(rng, spread=True) for _ in range(args.n)] + ([] if args.smoke else [MOBILE_FAST_SCNN])
    names = [f"arch{i}" for i in range(args.n)] + ([] if args.smoke else ["fast_scnn"])
    with tempfile.TemporaryDirectory() as scratch:
        table_path = Path(scratch) / "table.json" if args.smoke else None  # smoke entries never reach the cache
        summary, points = [], []
        for size_text in args.sizes:
            size = parse_size(size_text)
            shape = (1, 3, *size)
            table = LatencyTable("onnxruntime", threads=args.threads, path=table_path,
                                 **({"min_runs": 2, "min_time_s": 0.0} if args.smoke else {}))
            t0 = time.perf_counter()
            keys = [space.latency_keys(a, CLASSES, size) for a in archs]
            new = table.ensure([k for ks in keys for k in ks])
            table_s = time.perf_counter() - t0
            pred = [predict_latency(ks, table, shape).total_ms for ks in keys]
            rounds = interleaved_rounds([space.build(a, CLASSES) for a in archs], shape, "onnxruntime", args.threads,
                                        args.rounds)
            meas = [statistics.median(r[i] for r in rounds) for i in range(len(archs))]
            for name, a, p, m, i in zip(names, archs, pred, meas, range(len(archs))):
                points.append({"size": size_text, "network": name, "predicted_ms": p, "measured_ms": m,
                               "rounds_ms": [r[i] for r in rounds], "arch": a.to_dict()})
                print(f"{size_text} {name:9s}: predicted {p:8.2f} ms, measured {m:8.2f} ms ({100 * (p - m) / m:+.1f}%)")
            err = [abs(p - m) / m for p, m in zip(pred, meas)]
            rho = float(spearmanr(pred, meas).statistic)
            row = {"size": size_text, "n": len(archs), "median_abs_rel_error": statistics.median(err), "spearman": rho,
                   "mean_signed_rel_error": statistics.mean((p - m) / m for p, m in zip(pred, meas)),
                   "repeatability_spearman": float(spearmanr(rounds[0], rounds[1]).statistic)
                   if len(rounds) > 1 else None,
                   "table_entries_measured": new, "table_build_s": round(table_s, 1),
                   "measured_ms_range": [min(meas), max(meas)]}
            if not args.smoke:
                row["fast_scnn"] = {"predicted_ms": pred[-1], "measured_ms": meas[-1]}
            row["meets_targets"] = (row["median_abs_rel_error"] <= TARGETS["median_abs_rel_error"]
                                    and rho >= TARGETS["spearman"])
            summary.append(row)
            print(f"{size_text}: median |error| {100 * row['median_abs_rel_error']:.1f}%, Spearman {rho:.3f} "
                  f"(round-to-round {row['repeatability_spearman']}), {new} new table entries in {table_s:.0f} s; "
                  f"targets {'met' if row['meets_targets'] else 'NOT met'}")
    name = "mobile_latency_smoke" if args.smoke else "mobile_latency"
    out = {"space": "mobile", "backend": "onnxruntime", "threads": args.threads, "seed": args.seed,
           "smoke": args.smoke, "targets": TARGETS, "summary": summary, "points": points}
    path = save_result(name, out, args.results_dir)
    plot(points, path.with_suffix(".png"))
    print(f"saved {path}")


def plot(points: list[dict], path: Path) -> None:
    """Predicted against measured latency, log-log, one colour per size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for size in sorted({p["size"] for p in points}):
        sel = [p for p in points if p["size"] == size]
        ax.scatter([p["measured_ms"] for p in sel], [p["predicted_ms"] for p in sel], s=14, label=size)
    lo = min(min(p["measured_ms"], p["predicted_ms"]) for p in points)
    hi = max(max(p["measured_ms"], p["predicted_ms"]) for p in points)
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="measured latency (ms)", ylabel="predicted latency (ms)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


if __name__ == "__main__":
    main()
