"""INT8 against float on ONNX Runtime: every zoo network's latency, and a trained network's mIoU.

    python benchmarks/int8/int8_camvid.py --checkpoint RUN    # RUN: a CamVid training, e.g.
    segnas train --model fast_scnn --data camvid --data-root CAMVID --recipe cpu-short --steps 800 \\
        --size 360x480 --seed 0 --set data.options.holdout=0006R0 --out-dir runs
    python benchmarks/int8/int8_camvid.py --latency-only      # the zoo's latency alone

Latency: every zoo network (its weights as built: speed does not depend on them) exported at
360x480 with 11 classes and quantized as ``segnas export --int8`` quantizes (static, QDQ, calibrated
on 16 CamVid train images), its float and int8 graphs timed in turns in one session
(``runners_interleaved``: medians over 3 rounds). Accuracy: the checkpoint exported by
``export_job(..., int8=...)``, which is what ``segnas export --int8`` runs (calibrated on 64 images of
its own training data), and both graphs scored on CamVid val and on the training street it was
trained without (``holdout``), at the size it trained at. Saves ``results/int8_camvid.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import camvid_root, results_dir, save_result  # noqa: E402

from segnas.cost.backends import onnxruntime_runner  # noqa: E402
from segnas.cost.export import export_onnx  # noqa: E402
from segnas.cost.latency import runners_interleaved  # noqa: E402
from segnas.cost.quantize import OnnxNetwork, quantize_onnx  # noqa: E402
from segnas.data import build_dataset, eval_transforms  # noqa: E402
from segnas.engine.evaluate import evaluate  # noqa: E402
from segnas.jobs.bench import Int8Settings, export_job, network_source  # noqa: E402
from segnas.training.models import load_trained  # noqa: E402
from segnas.zoo import MODELS, build_model  # noqa: E402

SIZE = (360, 480)


def zoo_latency(models: list[str], threads: int, calibration: int, seconds: float) -> list[dict]:
    """Float and int8 median ms of every zoo network at SIZE, timed in one interleaved session each."""
    train = build_dataset("camvid", str(camvid_root()), "train", eval_transforms(SIZE))
    step = max(len(train) // calibration, 1)
    images = [train[i][0][None].numpy() for i in range(0, step * calibration, step)]
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in models:
            fp32, int8 = Path(work) / f"{name}.onnx", Path(work) / f"{name}.int8.onnx"
            export_onnx(build_model(name, 11).eval(), fp32, (1, 3, *SIZE))
            quantize_onnx(fp32, int8, iter(images))
            timed = runners_interleaved({"fp32": onnxruntime_runner(fp32, threads, "cpu"),
                                         "int8": onnxruntime_runner(int8, threads, "cpu")}, (1, 3, *SIZE),
                                        "onnxruntime", threads, min_runs=30, min_time_s=seconds)
            row = {"model": name, "fp32_ms": timed["fp32"].median_ms, "int8_ms": timed["int8"].median_ms}
            row["speedup"] = row["fp32_ms"] / row["int8_ms"]
            print(f"{name:>22s}  fp32 {row['fp32_ms']:7.2f} ms  int8 {row['int8_ms']:7.2f} ms  {row['speedup']:.2f}x")
            rows.append(row)
    return rows


def accuracy(checkpoint: str, threads: int, out_dir: Path) -> dict:
    """The checkpoint's float and int8 graphs scored on val and its held-out street."""
    source = network_source(checkpoint)
    state = load_trained(source)[2]
    data = state["config"]["data"]
    options = dict(data.get("options") or {})
    size = tuple(data["base_size"] or data["crop_size"])  # (CamVid's images are all 360x480: crops of their size)
    fp32, int8 = out_dir / "model.onnx", out_dir / "model.int8.onnx"
    export_job(source, fp32, size, progress=False, echo=print)
    export_job(source, int8, size, progress=False, echo=print, int8=Int8Settings())
    splits = ["val"] + (["holdout"] if options.get("holdout") else [])
    scores = {}
    for split in splits:
        dataset = build_dataset(data["name"], data["root"], split, eval_transforms(size), **options)
        for label, path in (("fp32", fp32), ("int8", int8)):
            metrics = evaluate(OnnxNetwork(path, threads), dataset, len(dataset.classes.names), batch_size=1)
            scores[f"{split}_{label}"] = {"miou": metrics.miou, "iou": metrics.iou, "images": len(dataset)}
            print(f"{split} {label}: mIoU {100 * metrics.miou:.1f}% ({len(dataset)} images)")
    return {"checkpoint": source, "model": state["config"]["model"], "size": list(size),
            "steps": state["config"].get("max_steps"), "epoch": state.get("epoch"),
            "classes": list(dataset.classes.names), "holdout": options.get("holdout"), "scores": scores}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="a CamVid training's run folder or checkpoint (its val and holdout mIoU)")
    ap.add_argument("--latency-only", action="store_true")
    ap.add_argument("--models", nargs="+", default=sorted(MODELS), help="zoo networks timed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calibration-images", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per graph and network")
    args = ap.parse_args()
    if not args.latency_only and not args.checkpoint:
        ap.error("give --checkpoint (or --latency-only)")
    result: dict = {"size": list(SIZE), "threads": args.threads, "classes": 11}
    with tempfile.TemporaryDirectory() as work:
        if args.checkpoint:
            result["accuracy"] = accuracy(args.checkpoint, args.threads, Path(work))
    result["latency"] = zoo_latency(args.models, args.threads, args.calibration_images, args.seconds)
    print(f"saved {save_result('int8_camvid', result, results_dir(__file__))}")


if __name__ == "__main__":
    main()
