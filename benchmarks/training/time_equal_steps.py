"""Every network of the equal-steps table timed in one interleaved session, so that their latencies
compare (this machine's speed drifts by up to 1.4x between sessions; a study's own timing is of
its own window).

    python benchmarks/training/time_equal_steps.py [--steps 800]      # on an otherwise idle machine

The networks are those the README's equal-steps table lists (``readme_tables.same_steps_rows``):
zoo networks by name, found ones from the architectures their results embed, all with CamVid's 11
classes, on ONNX Runtime at 360x480 with 2 threads (block-interleaved rounds, ``measure_latency_interleaved``).
Saves ``results/timing_steps<N>.json``; the table then shows these latencies.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import results_dir, save_result  # noqa: E402
from readme_tables import load_manifest, same_steps_rows  # noqa: E402

from segnas.cost.latency import measure_latency_interleaved  # noqa: E402
from segnas.spaces.base import build_from_arch  # noqa: E402
from segnas.zoo import build_model  # noqa: E402

CLASSES = 11


def build(network):
    """A zoo name or an architecture mapping ``{"space", "arch"}``, with CamVid's classes."""
    return build_model(network, CLASSES) if isinstance(network, str) else build_from_arch(network, CLASSES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--min-time-s", type=float, default=6.0, help="seconds of timing per network")
    ap.add_argument("--results-dir", default=str(results_dir(__file__)))
    args = ap.parse_args()
    rows = same_steps_rows(load_manifest(), args.steps)
    if not rows:
        sys.exit(f"no network has an equal-steps result of {args.steps} steps yet")
    nets = {f"{r['study']}: {r['name']}": build(r["network"]) for r in rows}
    session = measure_latency_interleaved(nets, (1, 3, 360, 480), "onnxruntime", 2, min_runs=30,
                                          min_time_s=args.min_time_s)
    out = {"timed_table_steps": args.steps, "latency": "onnxruntime, 2 threads, 360x480, one interleaved session",
           "networks": [{"study": r["study"], "name": r["name"], "median_ms": session[key].median_ms,
                         "round_medians_ms": session[key].round_medians_ms} for r, key in zip(rows, nets)]}
    path = save_result(f"timing_steps{args.steps}", out, args.results_dir)
    for key, result in session.items():
        print(f"{key}: {result.median_ms:.2f} ms")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
