"""FasterSeg on CamVid on this CPU: search → derive → train teacher → train student with KD.

    python benchmarks/fasterseg/fasterseg_camvid.py                       # decoupled (FasterSeg), full pipeline
    python benchmarks/fasterseg/fasterseg_camvid.py --mode coupled --pretrained RUNDIR --final-steps 0
    python benchmarks/fasterseg/fasterseg_camvid.py --resume RUNDIR       # continue a killed job (the same
                                                                          # command without it does too)

The search runs on whole training images resized to --search-size (120x160 by default: a quarter
of the 480x360 deployment size on each side, to fit a 2-core CPU); latencies are those of the
deployment size --size on ONNX Runtime with 2 threads, from the operator table. Teacher and
student (distilled from the teacher) are then trained at 360x480 for --final-steps optimizer steps
each at batch 8 in fp32 (the same training on every CPU; the search then runs in fp32 too), so the
student's val mIoU compares with the networks ``train_camvid.py --steps <same>`` trained
(results/<model>_steps<N>.json);
``--final-minutes`` gives a CPU-time budget instead (machine- and load-dependent). Both derived
architectures are saved in the result.

``--mode coupled`` is the ablation: one coupled latency term instead of FasterSeg's three
decoupled ones. ``--pretrained`` starts its search from the decoupled run's pre-trained supernet,
so the two searches differ only in the latency regularization.
Saves results/<mode>.json (decoupled, coupled).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import (baselines, camvid_root, machine, results_dir, resumed_search, save_result,  # noqa: E402
                    steps_baselines)

RESULTS = results_dir(__file__)

from segnas.config.io import load_config, save_config  # noqa: E402
from segnas.config.search import SearchSettings  # noqa: E402
from segnas.cost import measure_latency  # noqa: E402
from segnas.jobs.search import search_job, settings_class  # noqa: E402
from segnas.spaces import read_arch_file  # noqa: E402
from segnas.spaces.multires import MULTIRES, MultiResArch  # noqa: E402


def arch_stats(arch: MultiResArch) -> dict:
    """What a derived network is made of: operators, mean width ratio, branch paths."""
    ops = Counter(op for b in arch.branches for op in b.ops)
    ratios = [arch.width_ratios[w] for b in arch.branches for w in b.widths]
    return {"ops": dict(ops), "mean_width_ratio": round(sum(ratios) / max(len(ratios), 1), 3),
            "branches": [{"end_scale": 8 * 2 ** b.last, "cells": len(b)} for b in arch.branches]}


def search_trace(run_dir: Path) -> list[dict]:
    """Per search epoch: λ, the derived student's predicted latency and the supernet's head mIoUs."""
    keep = ("epoch", "epoch_s", "lambda", "student_latency_ms", "teacher_latency_ms", "arch1_miou_02", "arch1_miou_12")
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: r[k] for k in keep if k in r} | {"phase": r["phase"]} for r in rows]


def remeasure(mode: str, threads: int) -> None:
    """Time the student of results/<mode>.json again; adds ``student_remeasured_ms``."""
    path = RESULTS / f"{mode}.json"
    result = json.loads(path.read_text())
    run_dir = Path(result["run_dir"])
    net = MULTIRES.build(MULTIRES.arch_from_dict(read_arch_file(run_dir / "student.json")["arch"]), 11).eval()
    h, w = result["size"]
    ms = measure_latency(net, (1, 3, h, w), result["backend"], threads, min_time_s=5.0).median_ms
    result.pop("benchmark", None), result.pop("date", None), result.pop("machine", None)
    save_result(mode, {**result, "student_remeasured_ms": ms,
                       "student_remeasured_vs_target": ms / result["target_ms"] - 1.0}, RESULTS)
    print(f"student {ms:.2f} ms vs target {result['target_ms']} ms ({100 * (ms / result['target_ms'] - 1):+.1f}%)")


def settings(args: argparse.Namespace) -> SearchSettings:
    """The search job's settings for these arguments."""
    return settings_class("fasterseg").model_validate({
        "method": "fasterseg", "job": f"bench-fasterseg-{args.mode}",
        "data": {"name": "camvid", "root": str(camvid_root()), "crop_size": args.size, "scale": [0.75, 1.5],
                 "batch_size": 8},
        "latency": {"target_ms": args.target_ms, "size": args.size, "backend": "onnxruntime", "threads": args.threads},
        "search_size": args.search_size,
        "fasterseg": {"space": {"layers": args.layers, "base_width": args.base_width}, "mode": args.mode,
                      "pretrain_epochs": args.pretrain_epochs, "pretrained": args.pretrained,
                      "search_epochs": args.search_epochs, "arch_lr": args.arch_lr,
                      "pretrain_random_widths": 2 if args.official_widths else 1,
                      "search_extremes": args.official_widths},
        "final": final_budget(args), "bf16": bf16(args), "threads": args.threads, "out_dir": args.out_dir})


def bf16(args: argparse.Namespace) -> bool:
    """bf16 for the CPU-time budget (as the cpu-short baselines trained); fp32 for a step budget (the
    same training on every CPU). One setting of the search job: the supernet search follows it."""
    return bool(args.final_minutes) or not args.final_steps


def final_budget(args: argparse.Namespace) -> dict:
    """The final trainings' budget: --final-minutes of CPU time when given, else --final-steps (0: none)."""
    if args.final_minutes:
        return {"minutes": args.final_minutes, "epochs": 10000, "budget_clock": "cpu", "overrides": {"bf16": True}}
    return ({"steps": args.final_steps, "epochs": None, "overrides": {"bf16": False}} if args.final_steps
            else {"epochs": 0})


def figures(summary: dict) -> dict:
    """The search job's summary (``search_result.json``) as this benchmark's result fields."""
    nets = summary["networks"]
    student, teacher = nets["student"], nets["teacher"]
    return {"search_seconds": summary["search_wall_seconds"], "search_cpu_seconds": summary["search_cpu_seconds"],
            **{k: summary[k] for k in ("size", "backend", "target_ms")},
            "student_measured_ms": student["measured_ms"], "student_latency_vs_target": student["latency_vs_target"],
            "student_params": student["params"], "student_gflops": student["gflops"],
            "teacher_params": teacher["params"],
            "training": {name: net["training"] for name, net in nets.items() if "training" in net},
            "run_dir": summary["run_dir"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="360x480")
    ap.add_argument("--search-size", default="120x160")
    ap.add_argument("--target-ms", type=float, default=20.0)
    ap.add_argument("--mode", choices=["decoupled", "coupled"], default="decoupled")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--base-width", type=int, default=8)
    ap.add_argument("--pretrain-epochs", type=int, default=4)
    ap.add_argument("--search-epochs", type=int, default=8)
    ap.add_argument("--arch-lr", type=float, default=3e-3,
                    help="10x FasterSeg's 3e-4: the CPU search has ~200 architecture steps, not thousands")
    ap.add_argument("--pretrained", default=None, help="search run whose pre-trained supernet to start from")
    ap.add_argument("--official-widths", action="store_true",
                    help="the official width passes (two random widths in pre-training, the widest and narrowest "
                         "in every search step): fasterseg's defaults; the recorded results ran without them")
    ap.add_argument("--final-steps", type=int, default=800, help="optimizer steps of each final training (0: none)")
    ap.add_argument("--final-minutes", type=float, default=0.0,
                    help="a CPU-time budget instead of --final-steps (machine- and load-dependent; 0: steps)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-dir", default="runs")
    ap.add_argument("--resume", default=None)
    ap.add_argument("--train", default=None, metavar="RUN",
                    help="finished search run (of --mode) to train now with this budget per network")
    ap.add_argument("--remeasure", action="store_true",
                    help="only time the saved student again (on a quiet machine) and add it to the result file")
    args = ap.parse_args()
    if args.remeasure:
        return remeasure(args.mode, args.threads)
    if args.train:  # same run, its training settings replaced by this budget
        args.resume = args.train
        path = Path(args.train) / "config.yaml"
        run_cfg = load_config(settings_class("fasterseg"), path)
        final = run_cfg.final.model_copy(update={"steps": None, "minutes": None, **final_budget(args)})
        save_config(run_cfg.model_copy(update={"final": final, "bf16": bf16(args)}), path)
    summary = figures(search_job(None, resume=args.resume, echo=print) if args.resume
                      else resumed_search(settings(args)))  # the same command again continues a cut run
    run_dir = Path(summary["run_dir"])
    archs = {n: MULTIRES.arch_from_dict(read_arch_file(run_dir / f"{n}.json")["arch"]) for n in ("teacher", "student")}
    training = summary.get("training", {})
    same_budget = (baselines(args.final_minutes, cpu=machine()["cpu"]) if args.final_minutes
                   else steps_baselines(args.final_steps) if args.final_steps else {})
    out = {"mode": args.mode, "settings": vars(args), **summary,
           "student_arch": arch_stats(archs["student"]), "teacher_arch": arch_stats(archs["teacher"]),
           "student_arch_file": read_arch_file(run_dir / "student.json"),
           "teacher_arch_file": read_arch_file(run_dir / "teacher.json"),
           "search_trace": search_trace(run_dir),
           "student_val_miou": training.get("student", {}).get("final", {}).get("val_miou"),
           "teacher_val_miou": training.get("teacher", {}).get("final", {}).get("val_miou"),
           "baselines_same_budget": same_budget}
    path = save_result(args.mode, out, RESULTS)
    print(f"search {summary['search_seconds'] / 60:.1f} min; student {summary['student_measured_ms']:.2f} ms vs "
          f"target {args.target_ms:.2f} ms ({100 * summary['student_latency_vs_target']:+.1f}%), "
          f"val mIoU {out['student_val_miou']} (teacher {out['teacher_val_miou']}); saved {path}")
    for name, b in out["baselines_same_budget"].items():
        print(f"  {name}: {b['latency_ms']} ms, val mIoU {b['val_miou']:.4f} ({b['budget']})")


if __name__ == "__main__":
    main()
