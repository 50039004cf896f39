"""FasterSeg on CamVid on this CPU: search → derive → train teacher → train student with KD.

    python benchmarks/fasterseg_camvid.py [--target-ms 25] [--mode decoupled|coupled] [--resume RUNDIR]

The search runs on training images resized to --search-size (half resolution by default, as
FasterSeg searched at half size); latency is that of the deployment size --size on ONNX Runtime
with 2 threads, from the operator table. The student's measured latency is compared with the
target and its val mIoU with the zoo networks trained by benchmarks/train_camvid.py under the
same budget (results/train_camvid*.json). ``--mode coupled`` is the ablation with one coupled
latency term instead of FasterSeg's three decoupled ones.
Saves results/fasterseg_camvid_<mode>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, camvid_root, save_result  # noqa: E402

from segnas.config.search import SearchConfig  # noqa: E402
from segnas.cost import measure_latency  # noqa: E402
from segnas.jobs.search import fasterseg_job  # noqa: E402
from segnas.zoo import build_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="360x480")
    ap.add_argument("--search-size", default="180x240")
    ap.add_argument("--target-ms", type=float, default=None, help="default: Fast-SCNN's latency here")
    ap.add_argument("--mode", choices=["decoupled", "coupled"], default="decoupled")
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--base-width", type=int, default=8)
    ap.add_argument("--pretrain-epochs", type=int, default=5)
    ap.add_argument("--search-epochs", type=int, default=10)
    ap.add_argument("--final-minutes", type=float, default=60.0, help="training budget per network")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-dir", default="runs")
    ap.add_argument("--resume", default=None)
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    target = args.target_ms
    if target is None:
        target = measure_latency(build_model("fast_scnn", 11), (1, 3, h, w), "onnxruntime", args.threads,
                                 min_time_s=3.0).median_ms
        print(f"target: Fast-SCNN's latency, {target:.2f} ms")
    cfg = SearchConfig.model_validate({
        "job": f"bench-fasterseg-{args.mode}",
        "data": {"name": "camvid", "root": str(camvid_root()), "crop_size": args.size, "scale": [0.75, 1.5],
                 "batch_size": 8},
        "space": {"layers": args.layers, "base_width": args.base_width},
        "latency": {"target_ms": target, "size": args.size, "backend": "onnxruntime", "threads": args.threads,
                    "mode": args.mode},
        "search_size": args.search_size, "pretrain_epochs": args.pretrain_epochs,
        "search_epochs": args.search_epochs, "final_minutes": args.final_minutes, "final_epochs": 10000,
        "bf16": True, "threads": args.threads, "out_dir": args.out_dir})
    summary = fasterseg_job(None if args.resume else cfg, resume=args.resume, echo=print)
    baselines = {}
    for f in sorted(RESULTS.glob("train_camvid*.json")):
        r = json.loads(f.read_text())
        baselines[r.get("model", "fast_scnn")] = {"val_miou": r["final_val_miou"], "train_minutes": r["train_minutes"]}
    student = summary.get("training", {}).get("student", {})
    out = {"mode": args.mode, "target_ms": target, **summary, "baselines_same_budget": baselines,
           "student_val_miou": student.get("final", {}).get("val_miou")}
    path = save_result(f"fasterseg_camvid_{args.mode}", out)
    print(f"search {summary['search_seconds'] / 60:.1f} min; student {summary['student_measured_ms']:.2f} ms vs "
          f"target {target:.2f} ms ({100 * summary['student_latency_vs_target']:+.1f}%), "
          f"val mIoU {out['student_val_miou']}; saved {path}")


if __name__ == "__main__":
    main()
