"""Predicted vs measured whole-network latency for random architectures of a search space.

    python benchmarks/latency_predictor.py [--space multires] [--n 32] [--sizes 360x480 512x1024]

For each size: builds (or reuses) the operator latency table on ONNX Runtime CPU, predicts every
architecture's latency from it (sum of operator entries + one call overhead), measures the whole
exported network on the same runtime, and reports the median absolute relative error and
Spearman's ρ. Targets: error ≤ 10%, ρ ≥ 0.95. Saves results/latency_predictor.{json,png}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, save_result  # noqa: E402

from segnas.cost import LatencyTable, measure_latency, predict_latency  # noqa: E402
from segnas.spaces import get_space  # noqa: E402
from segnas.utils import parse_size  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="multires")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--sizes", nargs="+", default=["360x480", "512x1024"])
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    space = get_space(args.space)
    rng = np.random.default_rng(args.seed)
    archs = [space.sample(rng) for _ in range(args.n)]
    summary, points = [], []
    for size_text in args.sizes:
        size = parse_size(size_text)
        shape = (1, 3, *size)
        table = LatencyTable(args.backend, threads=args.threads)
        t0 = time.perf_counter()
        keys = [space.latency_keys(a, 19, size) for a in archs]
        new = table.ensure([k for ks in keys for k in ks])
        table_s = time.perf_counter() - t0
        pred, meas = [], []
        for i, (arch, ks) in enumerate(zip(archs, keys)):
            p = predict_latency(ks, table, shape).total_ms
            m = measure_latency(space.build(arch, 19), shape, args.backend, args.threads, min_time_s=2.0).median_ms
            pred.append(p)
            meas.append(m)
            points.append({"size": size_text, "arch": i, "predicted_ms": p, "measured_ms": m})
            print(f"{size_text} arch {i:2d}: predicted {p:8.2f} ms, measured {m:8.2f} ms ({100 * (p - m) / m:+.1f}%)")
        err = [abs(p - m) / m for p, m in zip(pred, meas)]
        rho = float(spearmanr(pred, meas).statistic)
        summary.append({"size": size_text, "backend": args.backend, "n": len(archs),
                        "median_abs_rel_error": statistics.median(err), "spearman": rho,
                        "mean_signed_rel_error": statistics.mean((p - m) / m for p, m in zip(pred, meas)),
                        "table_entries_measured": new, "table_build_s": round(table_s, 1),
                        "measured_ms_range": [min(meas), max(meas)]})
        print(f"{size_text}: median |error| {100 * summary[-1]['median_abs_rel_error']:.1f}%, Spearman {rho:.3f}, "
              f"{new} new table entries in {table_s:.0f} s")
    plot(points, RESULTS / "latency_predictor.png")
    path = save_result("latency_predictor", {"space": args.space, "threads": args.threads, "seed": args.seed,
                                             "summary": summary, "points": points})
    print(f"saved {path}")


def plot(points: list[dict], path: Path) -> None:
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
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
