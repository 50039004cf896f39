"""Does the embedded synthetic dataset tell good architectures from poor ones?

Trains a tiny network (Fast-SCNN at width 0.25) and a strong one (Fast-SCNN at width 1.0) with the
demo's recipe for the same training-time budget on the synthetic street scenes, and reports both
val mIoUs (and per-class IoU, where thin classes such as Pole show the gap).

    python benchmarks/synthetic_data/synthetic_separation.py [--minutes 5] [--size 128x160]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import results_dir, save_result  # noqa: E402

from segnas.cost import count_parameters  # noqa: E402
from segnas.data.camvid import CAMVID_CLASSES  # noqa: E402
from segnas.jobs import train_job  # noqa: E402
from segnas.jobs.demo import demo_config  # noqa: E402
from segnas.utils import parse_size  # noqa: E402
from segnas.zoo import build_model  # noqa: E402

NETWORKS = {"tiny": {"width": 0.25}, "strong": {"width": 1.0}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="training budget per network (CPU-time clock)")
    ap.add_argument("--size", default="128x160")
    ap.add_argument("--out-dir", default="runs")
    args = ap.parse_args()
    size = parse_size(args.size)
    rows = {}
    for label, options in NETWORKS.items():
        cfg = demo_config(args.minutes, size, args.out_dir, threads=2)
        cfg = cfg.model_copy(update={"job": f"bench-synthetic-{label}", "budget_clock": "cpu", "progress": False,
                                     "model": cfg.model.model_copy(update={"options": options})})
        result = train_job(cfg, echo=print)
        final = result.final
        rows[label] = {
            "model": f"fast_scnn width {options['width']}",
            "params": count_parameters(build_model("fast_scnn", 11, **options)),
            "val_miou": round(final["val_miou"], 4),
            "best_val_miou": round(result.best_miou, 4),
            "epochs": result.epochs_done,
            "per_class_iou": {n: round(v, 4) for n, v in zip(CAMVID_CLASSES.names, final["val_iou"])},
        }
        print(f"{label}: {rows[label]['model']}, {rows[label]['params']:,} params, val mIoU {final['val_miou']:.4f}")
    gap = rows["strong"]["val_miou"] - rows["tiny"]["val_miou"]
    path = save_result("main", {
        "size": list(size), "minutes_per_network": args.minutes, "clock": "process CPU time / 2 threads",
        "networks": rows, "miou_gap": round(gap, 4)}, results_dir(__file__))
    print(f"strong - tiny = {100 * gap:.1f} mIoU points; saved {path}")


if __name__ == "__main__":
    main()
