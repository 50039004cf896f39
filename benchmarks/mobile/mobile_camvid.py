"""Searching the ``mobile`` space on CamVid: SasWOT, random search, (``--methods ... saswot_trained``)
SasWOT in NSGA-II mode with its --train-top front members trained --train-steps steps and the best
val mIoU winning, and (``supernet``) the weight-sharing search, under Fast-SCNN's latency; their
winners vs Fast-SCNN trained with the same step budget.

    python benchmarks/mobile/mobile_camvid.py [--target-ms T] [--candidates 1000] [--final-steps 800]   # quiet machine
    python benchmarks/mobile/mobile_camvid.py --smoke --results-dir /tmp/r   # seconds, synthetic data: checks the script

The target defaults to Fast-SCNN's latency at --size (360x480) predicted as the searches predict
their candidates' (the ONNX Runtime operator table with the space's learned correction, --threads 2):
the searched networks must be as fast as the hand-designed one. Each
method is a ``segnas search`` job (``segnas.jobs.search.search_job``, no final training) over the
default ``mobile`` space scoring up to --candidates untrained networks with --proxy (default: nwot,
the proxy that ranked this space's 60-network ground truth best in the proxy comparison
``compare_mobile_d1``, held-out Kendall τ +0.29; the proxy discovered on ``mobile`` did not beat it
and the one discovered on ``multires`` was not validated here), rejecting candidates predicted slower than
the target, within --time-limit-min of wall time on --workers processes. Reported per search:
candidates scored, search CPU-minutes (this process and its workers) and wall minutes, the
winner's predicted and measured latency, parameters, GFLOPs and architecture.

Then the winners and Fast-SCNN (the zoo's) are trained from scratch with ``train_camvid.py``'s
recipe for --final-steps optimizer steps at batch 8 in fp32 (the same on every CPU; as
``gas/gas_camvid.py``), once per training seed (--train-seeds, default 2), val mIoU mean ± std.
Saves <results-dir>/<name>.json (default benchmarks/mobile/results/mobile_camvid.json).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import camvid_root, results_dir, resumed_search, save_result  # noqa: E402
from train_camvid import SMOKE_DATA, train_seeds  # noqa: E402

from segnas.config.search import LatencyTarget  # noqa: E402
from segnas.cost import LatencyModel, count_flops, count_parameters, measure_latency  # noqa: E402
from segnas.jobs.search import make_settings  # noqa: E402
from segnas.spaces import read_arch_file  # noqa: E402
from segnas.spaces.mobile import MOBILE, MOBILE_FAST_SCNN, MobileSpace  # noqa: E402
from segnas.utils import parse_size  # noqa: E402
from segnas.zoo import build_model  # noqa: E402

CLASSES = 11
METHODS = ("saswot", "random", "saswot_trained", "supernet")
#: The smoke mode's data and space: seconds per search on synthetic images.
SMOKE_SPACE = {"stem_widths": [[8], [8, 16], [16]], "stage_widths": [[16], [16, 24], [24], [24, 32], [32]],
               "stage_depths": [[0, 1], [1, 2], [0, 1], [1, 2], [0, 1]], "fusion_widths": [16, 24]}

#: Command-line options: flag, type, default, help.
OPTIONS: list[tuple[str, type, object, str | None]] = [
    ("--size", str, "360x480", "deployment size the latency is for"),
    ("--target-ms", float, None, "latency target (default: Fast-SCNN's, predicted from the table)"),
    ("--proxy", str, "nwot", "proxy name or discovered proxy file"),
    ("--images", int, 8, "CamVid training images the proxy sees"),
    ("--score-size", str, "180x240", "their size"),
    ("--candidates", int, 1000, "candidates each search scores"),
    ("--population", int, 50, "SasWOT's population"),
    ("--sample-size", int, 10, "SasWOT's tournament size"),
    ("--time-limit-min", float, 30.0, "wall-time limit of each search"),
    ("--train-top", int, 4, "saswot_trained: the NSGA-II front members trained briefly (the best val mIoU wins)"),
    ("--train-steps", int, 900, "saswot_trained: their short training's optimizer steps"),
    ("--supernet-epochs", int, 40, "the weight-sharing search's supernet training (at --score-size)"),
    ("--inplace-distill", float, 0.0, "its in-place distillation weight"),
    ("--pretrained", str, None, "search this earlier supernet run instead of training one"),
    ("--workers", int, 2, None),
    ("--final-steps", int, 800, "optimizer steps of each final training (0: none)"),
    ("--train-seeds", int, 2, "final trainings per network (seeds 0, 1, ...)"),
    ("--device", str, "cpu", "where the final trainings compute (cuda: the same steps in fp32 on a GPU)"),
    ("--seed", int, 0, "search seed"),
    ("--threads", int, 2, None),
    ("--out-dir", str, "runs", "parent folder of the run directories"),
    ("--results-dir", str, str(results_dir(__file__)), "where the result file goes"),
    ("--name", str, "mobile_camvid", "result file name"),
]


def search_settings(method: str, args: argparse.Namespace, target_ms: float):
    """The ``segnas search METHOD`` job over the ``mobile`` space (no final training)."""
    scoring = {"proxy": args.proxy, "images": args.images, "size": list(parse_size(args.score_size))}
    if args.smoke:
        scoring["batch_size"] = 2
    section = {"space": "mobile", "space_options": SMOKE_SPACE if args.smoke else {}, "candidates": args.candidates}
    if method in ("saswot", "saswot_trained"):
        section.update(scoring=scoring, population=args.population)
        if method == "saswot_trained":  # NSGA-II; the front's first members trained briefly, the best wins
            section.update(mode="nsga2", top_k=max(args.train_top, 1), nsga2={"train_top": args.train_top} | (
                {"train": {"steps": 2 if args.smoke else args.train_steps}} if args.train_top else {}))
        else:
            section.update(sample_size=args.sample_size)
    elif method == "supernet":
        training = {"pretrained": args.pretrained} if args.pretrained else {  # a pre-trained supernet is not trained
            "epochs": 1 if args.smoke else args.supernet_epochs, "inplace_distill": args.inplace_distill}
        section.update(**training, population=args.population, sample_size=args.sample_size,
                       **({"meta_val_images": 2, "calibration_images": 2} if args.smoke else {}))
    else:
        section.update(evaluator={"kind": "proxy", "proxy": scoring})
    data = SMOKE_DATA if args.smoke else {"name": "camvid", "root": str(camvid_root())}
    latency = {"target_ms": target_ms, "size": args.size, "backend": "onnxruntime", "threads": args.threads}
    if args.smoke:
        latency.update(table_min_runs=2, table_min_time_s=0.0, calibration_networks=0)  # no correction: seconds
    kind = "saswot" if method == "saswot_trained" else method
    return make_settings(kind, {
        "job": f"bench-mobile-{method}", "data": data, "latency": latency, "minutes": args.time_limit_min,
        "search_size": list(parse_size(args.score_size)) if method == "supernet" else None,
        "workers": 1 if args.smoke else args.workers, "executor": "inline" if args.smoke else "process",
        "seed": args.seed, "threads": args.threads, "out_dir": args.out_dir, "progress": not args.smoke,
        "final": {"epochs": 0}, kind: section})


def search(method: str, args: argparse.Namespace, target_ms: float, latency: LatencyModel) -> dict:
    """One search's figures and its winner (a finished search of the same settings is read back, a
    cut one continued: ``common.resumed_search``)."""
    summary = resumed_search(search_settings(method, args, target_ms), latency)
    run = Path(summary["run_dir"])
    net, details = summary["networks"]["arch"], summary["details"]
    return {"run_dir": str(run), "candidates_scored": details["candidates_scored"],
            "rejected_infeasible": details.get("rejected_infeasible"), "stopped": details.get("stopped"),
            "search_cpu_minutes": round(summary["search_cpu_seconds"] / 60, 2),
            "search_wall_minutes": round(summary["search_wall_seconds"] / 60, 2),
            "predicted_ms": net["predicted_ms"], "measured_ms": net["measured_ms"],
            "latency_vs_target": net["latency_vs_target"], "params": net["params"], "gflops": net["gflops"],
            "score": details.get("score"), "trained_finalists": details.get("trained"),
            "arch": read_arch_file(run / "arch.json")["arch"]}


def trained(record: dict, model: str, args: argparse.Namespace) -> None:
    """Train ``model`` once per seed into ``record`` (runs, mean and std of the final val mIoU)."""
    record.update(train_seeds(model, args.out_dir, args.final_steps, args.train_seeds, args.smoke, device=args.device))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, kind, default, text in OPTIONS:
        ap.add_argument(flag, type=kind, default=default, help=text)
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=["saswot", "random"],
                    help="searches to run (supernet: train the space's supernet first, about 40 CPU-minutes)")
    ap.add_argument("--smoke", action="store_true",
                    help="synthetic data, a small space, a few candidates and steps: checks the script, measures nothing")
    args = ap.parse_args()
    scratch = None
    if args.smoke:
        scratch = tempfile.TemporaryDirectory()
        os.environ["SEGNAS_CACHE"] = scratch.name  # the smoke's rough latency entries never reach the real table
        args.size, args.score_size, args.images, args.proxy = "64x96", "32x48", 2, "nwot"
        args.candidates, args.population, args.sample_size = 4, 2, 2
        args.final_steps = min(args.final_steps, 2)
        args.name = args.name if args.name != "mobile_camvid" else "mobile_camvid_smoke"
    elif not camvid_root().is_dir():
        sys.exit(f"CamVid not found at {camvid_root()} (set SEGNAS_CAMVID)")
    size = parse_size(args.size)
    latency = LatencyModel.create("onnxruntime", size, threads=args.threads,
                                  **({"min_runs": 2, "min_time_s": 0.0} if args.smoke else {}))
    space = MobileSpace(**SMOKE_SPACE) if args.smoke else MOBILE
    if not args.smoke:  # the searches judge candidates by the corrected prediction: so is Fast-SCNN's target
        latency.calibrate(MOBILE, CLASSES, LatencyTarget.model_fields["calibration_networks"].default, echo=print)
    fast = {"predicted_ms": latency.predict(MOBILE, MOBILE_FAST_SCNN, CLASSES),
            "predicted_table_ms": latency.predict_table(MOBILE, MOBILE_FAST_SCNN, CLASSES)}
    # the smoke's small networks are far faster than Fast-SCNN: its target is 1.5x one of them
    smoke_target = 1.5 * latency.predict(space, space.sample(np.random.default_rng(0)), CLASSES) if args.smoke else None
    target = args.target_ms or round(smoke_target or fast["predicted_ms"], 2)
    latency.target_ms = target
    zoo_net = build_model("fast_scnn", CLASSES).eval()
    fast.update(measured_ms=measure_latency(zoo_net, latency.input_shape, "onnxruntime", args.threads,
                                            min_time_s=0.2 if args.smoke else 5.0).median_ms,
                params=count_parameters(zoo_net), gflops=count_flops(zoo_net, latency.input_shape).gflops)
    print(f"Fast-SCNN: {fast['predicted_ms']:.2f} ms predicted, {fast['measured_ms']:.2f} ms measured; "
          f"target {target} ms")
    runs = {m: search(m, args, target, latency) for m in args.methods}
    if args.final_steps:
        for r in runs.values():
            trained(r, str(Path(r["run_dir"]) / "arch.json"), args)
        trained(fast, "fast_scnn", args)
    out = {"target_ms": target, "size": list(size), "latency": latency.describe(), "settings": vars(args),
           "final_training": {"steps": args.final_steps, "batch_size": 2 if args.smoke else 8, "precision": "fp32",
                              "seeds": list(range(args.train_seeds))},
           "fast_scnn": fast, "searches": runs}
    path = save_result(args.name, out, args.results_dir)
    for name, r in [*runs.items(), ("fast_scnn", fast)]:
        extra = f"; {r['candidates_scored']} candidates, {r['search_cpu_minutes']} CPU-min" if name in runs else ""
        print(f"{name}: {r['measured_ms']:.2f} ms measured, {r['params'] / 1e6:.2f} M params{extra}; "
              f"val mIoU {r.get('val_miou_mean')} ± {r.get('val_miou_std')}")
    print(f"saved {path}")
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()
