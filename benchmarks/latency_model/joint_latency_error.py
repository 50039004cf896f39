"""Where the latency predictor goes wrong on the `joint` space: predicted vs measured latency of
networks built from one block kind at a time.

    python benchmarks/latency_model/joint_latency_error.py [--size 360x480] [--rounds 5]

Space: the one benchmarks/ssr/ssr_camvid.py searches. Networks: every slot skipped (stem, downsamplers
and decoder only), then every slot filled with one candidate at full width (fact / dwfact, dilation
1 or 8, full or half resolution), then the network SSR found (results/ssr_camvid.json) and a few
random ones. For a one-kind network, (its latency − the all-skip latency) / number of slots is what
one block really costs inside a network; the table's entry for that block is set beside it. All
networks are timed on ONNX Runtime (2 threads) in interleaved rounds; medians are kept.
Saves results/joint_latency_error.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import BENCHMARKS, interleaved_rounds, save_result  # noqa: E402
from ssr_camvid import SPACE  # noqa: E402

from segnas.cost import LatencyTable, predict_latency  # noqa: E402
from segnas.spaces import read_arch_file  # noqa: E402
from segnas.spaces.joint import JOINT, Candidate, JointSpace  # noqa: E402
from segnas.utils import parse_size  # noqa: E402

KINDS = [Candidate("fact", 1, False), Candidate("fact", 8, False), Candidate("fact", 1, True),
         Candidate("dwfact", 1, False), Candidate("dwfact", 8, False), Candidate("dwfact", 1, True)]


def kind_name(c: Candidate) -> str:
    return f"{c.op} d{c.dilation} {'half' if c.half else 'full'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="360x480")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--random", type=int, default=6, help="random networks of the space besides the one-kind ones")
    args = ap.parse_args()
    size = parse_size(args.size)
    shape = (1, 3, *size)
    space = JointSpace(**SPACE)
    full = [space.widths(s)[0] for s in range(len(space.slots))]
    archs = {"all skip": space.make_arch([[Candidate("skip").slot()] * n for n in space.slots])}
    for c in KINDS:
        archs[kind_name(c)] = space.make_arch([[c.slot(full[s], full[s])] * n for s, n in enumerate(space.slots)])
    ssr = BENCHMARKS / "ssr" / "results" / "main.json"
    if ssr.is_file():
        arch_file = Path(json.loads(ssr.read_text())["runs"]["ssr"]["run_dir"]) / "arch.json"
        if arch_file.is_file():
            archs["SSR network"] = JOINT.arch_from_dict(read_arch_file(arch_file)["arch"])
    rng = np.random.default_rng(0)
    for i in range(args.random):
        archs[f"random {i}"] = space.sample(rng, spread=True)
    table = LatencyTable(args.backend, threads=args.threads)
    keys = {n: space.latency_keys(a, 11, size) for n, a in archs.items()}
    table.ensure([k for ks in keys.values() for k in ks])
    pred = {n: predict_latency(ks, table, shape).total_ms for n, ks in keys.items()}
    rounds = interleaved_rounds([space.build(a, 11) for a in archs.values()], shape, args.backend, args.threads,
                                args.rounds)
    meas = {n: statistics.median(r[i] for r in rounds) for i, n in enumerate(archs)}
    slots = sum(space.slots)
    one_kind = {kind_name(c) for c in KINDS}
    rows = []
    for n in archs:
        row = {"network": n, "predicted_ms": pred[n], "measured_ms": meas[n],
               "error": (pred[n] - meas[n]) / meas[n]}
        if n in one_kind:
            row["block_predicted_ms"] = (pred[n] - pred["all skip"]) / slots
            row["block_measured_ms"] = (meas[n] - meas["all skip"]) / slots
        rows.append(row)
        extra = (f"; per block: table {row['block_predicted_ms']:.3f} ms, in network {row['block_measured_ms']:.3f} ms"
                 if "block_predicted_ms" in row else "")
        print(f"{n:18s} predicted {pred[n]:6.2f} ms, measured {meas[n]:6.2f} ms ({100 * row['error']:+.0f}%){extra}")
    path = save_result("joint", {"size": args.size, "backend": args.backend, "threads": args.threads,
                                               "space": SPACE, "rounds": args.rounds,
                                               "call_overhead_ms": table.call_overhead(shape), "rows": rows})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
