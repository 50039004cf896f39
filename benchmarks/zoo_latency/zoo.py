"""Every zoo network on this machine: params, GFLOPs, latency, FPS, fraction of the matmul peak.

    python benchmarks/zoo_latency/zoo.py [--sizes 360x480 512x1024] [--backends onnxruntime eager] [--threads 2]

This is the table the search methods have to beat. 19 classes (Cityscapes head) for comparability
with the published figures; batch 1; fp32.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import results_dir, save_result  # noqa: E402

from segnas.jobs.bench import bench_job  # noqa: E402
from segnas.utils import parse_size  # noqa: E402
from segnas.zoo import MODELS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["360x480", "512x1024"])
    ap.add_argument("--backends", nargs="+", default=["onnxruntime", "eager"])
    ap.add_argument("--models", nargs="+", default=sorted(MODELS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=3.0, help="seconds of timed runs per measurement")
    args = ap.parse_args()
    rows = []
    for size in args.sizes:
        measured = bench_job(args.models, parse_size(size), args.backends, args.threads, 19,
                             min_time_s=args.min_time, echo=print)
        for r in measured:
            print(f"{r['model']:>16s} {r['backend']:>12s} {size} {r['median_ms']:8.2f} ms  {r['fps']:7.1f} FPS  "
                  f"{r['gflops']:6.2f} GFLOPs  {100 * r['fraction_of_peak']:5.1f}% of peak")
        rows += measured
    path = save_result("main", {"threads": args.threads, "classes": 19, "rows": rows}, results_dir(__file__))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
