"""Predicted vs measured whole-network latency for random architectures of a search space.

    python benchmarks/latency_model/latency_predictor.py [--space multires] [--n 32] [--rounds 5] [--sizes 360x480 512x1024]

For each size: builds (or reuses) the operator latency table on ONNX Runtime CPU, predicts every
architecture's latency from it (sum of operator entries + one call overhead), measures the whole
exported network on the same runtime, and reports the median absolute relative error and
Spearman's ρ. Targets: error ≤ 10%, ρ ≥ 0.95. Saves results/latency_predictor.{json,png}
(``--sampling uniform``: results/latency_predictor_uniform.{json,png}).

Whole networks are timed in --rounds interleaved rounds (every network once per round, so slow
drifts of the machine hit all alike) and the median is kept; Spearman's ρ between two rounds of
the same networks is reported as the repeatability ceiling that no predictor can beat.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import results_dir, save_result  # noqa: E402

RESULTS = results_dir(__file__)

from segnas.cost import LatencyTable, predict_latency  # noqa: E402
from segnas.cost.backends import pinned_threads, prepare  # noqa: E402
from segnas.cost.latency import time_callable  # noqa: E402
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
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per network")
    ap.add_argument("--sampling", choices=["uniform", "spread"], default="spread",
                    help="uniform widths, or a per-network width cap first (spans the latency range)")
    args = ap.parse_args()
    space = get_space(args.space)
    rng = np.random.default_rng(args.seed)
    archs = [space.sample(rng, spread=args.sampling == "spread") for _ in range(args.n)]
    summary, points = [], []
    for size_text in args.sizes:
        size = parse_size(size_text)
        shape = (1, 3, *size)
        table = LatencyTable(args.backend, threads=args.threads)
        t0 = time.perf_counter()
        keys = [space.latency_keys(a, 19, size) for a in archs]
        new = table.ensure([k for ks in keys for k in ks])
        table_s = time.perf_counter() - t0
        pred = [predict_latency(ks, table, shape).total_ms for ks in keys]
        rounds = measure_interleaved([space.build(a, 19) for a in archs], shape, args.backend, args.threads,
                                     args.rounds)
        meas = [statistics.median(r[i] for r in rounds) for i in range(len(archs))]
        for i, (p, m) in enumerate(zip(pred, meas)):
            points.append({"size": size_text, "arch": i, "predicted_ms": p, "measured_ms": m,
                           "rounds_ms": [r[i] for r in rounds]})
            print(f"{size_text} arch {i:2d}: predicted {p:8.2f} ms, measured {m:8.2f} ms ({100 * (p - m) / m:+.1f}%)")
        err = [abs(p - m) / m for p, m in zip(pred, meas)]
        rho = float(spearmanr(pred, meas).statistic)
        ceiling = float(spearmanr(rounds[0], rounds[1]).statistic) if len(rounds) > 1 else float("nan")
        summary.append({"size": size_text, "backend": args.backend, "n": len(archs), "sampling": args.sampling,
                        "median_abs_rel_error": statistics.median(err), "spearman": rho,
                        "mean_signed_rel_error": statistics.mean((p - m) / m for p, m in zip(pred, meas)),
                        "repeatability_spearman": ceiling,
                        "table_entries_measured": new, "table_build_s": round(table_s, 1),
                        "measured_ms_range": [min(meas), max(meas)]})
        print(f"{size_text}: median |error| {100 * summary[-1]['median_abs_rel_error']:.1f}%, Spearman {rho:.3f} "
              f"(round-to-round {ceiling:.3f}), {new} new table entries in {table_s:.0f} s")
    name = f"{args.space}_{args.sampling}"
    plot(points, RESULTS / f"{name}.png")
    path = save_result(name, {"space": args.space, "threads": args.threads, "seed": args.seed,
                                             "summary": summary, "points": points}, RESULTS)
    print(f"saved {path}")


def measure_interleaved(models, shape, backend: str, threads: int, rounds: int) -> list[list[float]]:
    """Median latency of every model in each of ``rounds`` rounds, models interleaved per round."""
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    with pinned_threads(threads):
        runners = [prepare(backend, m, shape, threads) for m in models]
        out = []
        for _ in range(rounds):
            out.append([statistics.median(time_callable(lambda: run(x), warmup=3, min_runs=10, min_time_s=1.0))
                        for run in runners])
    return out


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
