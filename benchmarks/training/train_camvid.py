"""A network trained from scratch on CamVid train (360x480) on this CPU; val mIoU vs training time.

    python benchmarks/training/train_camvid.py                 # Fast-SCNN, 60 training-minutes, results/fast_scnn_60min.json
    python benchmarks/training/train_camvid.py --model stdc1_seg   # any zoo name or arch.json: results/<name>_<minutes>min.json
    python benchmarks/training/train_camvid.py --resume RUNDIR # continue a killed run
    python benchmarks/training/train_camvid.py --name NAME --time-only   # then, on a quiet machine: its latency here

The same recipe and budget serve every network (zoo baselines and searched ones) so that their
val mIoUs compare.

The LR schedule runs on the time budget (evaluation time excluded), so the run ends on time.
Training time is counted as process CPU time / 2 threads, i.e. the wall time the run takes on
an otherwise idle 2-core machine. That is not proof against sharing the cores: two 2-thread trainings at
once on the 2-core Xeon took 6x the CPU time per epoch of one alone (their threads spin while they wait),
so train one network at a time.
Prints val mIoU, per-class IoU, seconds per epoch, peak RSS, and when 50% val mIoU was first seen.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import camvid_root, machine, peak_rss_mb, results_dir, save_result  # noqa: E402

RESULTS = results_dir(__file__)

from segnas.config import TrainConfig  # noqa: E402
from segnas.config.io import merged  # noqa: E402
from segnas.config.recipes import load_recipe  # noqa: E402
from segnas.data.camvid import CAMVID_CLASSES  # noqa: E402
from segnas.engine.device import describe_device, resolve_device  # noqa: E402
from segnas.jobs import train_job  # noqa: E402
from segnas.spaces import read_arch_file  # noqa: E402
from segnas.spaces.base import arch_key  # noqa: E402
from segnas.training.cached import resumable_training  # noqa: E402
from segnas.utils import atomic_write_text  # noqa: E402


def config(minutes: float, out_dir: str, model: str = "fast_scnn") -> TrainConfig:
    """The ``cpu-short`` recipe on CamVid train at 360x480 crops, for ``minutes`` of CPU time."""
    source = {"name": None, "arch": model} if model.endswith(".json") else {"name": model}
    return TrainConfig.model_validate(merged(load_recipe("cpu-short"), {
        "job": f"bench-{Path(model).stem}-camvid",
        "data": {"name": "camvid", "root": str(camvid_root()), "crop_size": "360x480"},
        "model": source,
        "epochs": 10000, "time_budget_min": minutes, "budget_clock": "cpu", "eval_every": 5,
        "threads": 2, "seed": 0, "out_dir": out_dir,
    }))


#: Synthetic data for the benchmarks' ``--smoke`` modes: seconds per training, measures nothing.
SMOKE_DATA = {"name": "synthetic", "options": {"size": [64, 96], "length": 8}, "crop_size": [64, 96], "batch_size": 2}


def train_for_steps(model: str, out_dir: str, steps: int, seed: int, smoke: bool = False,
                    holdout: str | None = None, optim: dict | None = None, recipe: dict | None = None,
                    variant: str | None = None, device: str = "cpu") -> dict:
    """This recipe for ``steps`` optimizer steps in fp32 (the same training on every CPU) with
    training seed ``seed``; ``model`` is a zoo name or an arch file. ``smoke``: on ``SMOKE_DATA``.
    ``holdout``: a CamVid training sequence left out of training and scored after it (the EMA weights
    of the last step) as a cross-sequence validation set. Continues (or reads back) the newest run
    of the same job and budget under ``out_dir``. ``optim``: changes to the recipe's optimizer settings
    (e.g. a gradient-norm clip a network needs). ``recipe``: changes to any training settings (nested
    ``TrainConfig`` fields), a run of its own job named by ``variant``. ``device``: where it computes
    (a GPU trains the same steps in true fp32; the device is recorded, not part of the job)."""
    cfg = config(60.0, out_dir, model)
    if recipe:
        if not variant:
            raise ValueError("train_for_steps: a recipe change needs a variant name (its runs are its own job)")
        cfg = TrainConfig.model_validate(merged(cfg.model_dump(mode="json"), recipe))
        # the job names the change itself too: a variant whose settings change never reads back old runs
        variant += "-" + hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:6]
    # an arch file by its folder and its network: a changed network at the same path is a new job
    tag = (f"{Path(model).parent.name}-{hashlib.sha1(arch_key(read_arch_file(model)['arch']).encode()).hexdigest()[:6]}"
           if model.endswith(".json") else model)
    update = {"time_budget_min": None, "max_steps": steps, "bf16": False, "seed": seed, "device": device,
              "job": f"{cfg.job}-{tag}" + (f"-{variant}" if variant else "") + (f"-without-{holdout}" if holdout else "")
              + f"-seed{seed}",
              "progress": not smoke}
    if holdout:
        update["data"] = cfg.data.model_copy(update={"options": {**cfg.data.options, "holdout": holdout}})
    if optim:
        update["optim"] = cfg.optim.model_copy(update=optim)
    if smoke:
        update.update(data=cfg.data.model_validate({**SMOKE_DATA, "eval_batch_size": 2}), eval_every=1,
                      channels_last=False)
    cfg = cfg.model_copy(update=update)
    # a run of other settings (steps, optimizer, data) is not continued: this one starts afresh
    earlier = None if smoke else resumable_training(out_dir, cfg, update["job"], print)
    if earlier is not None:
        print(f"continuing {earlier} (finished runs are read back)")
    result = train_job(cfg, resume=earlier, echo=print)  # continued on cfg's device
    on_gpu = resolve_device(device).type == "cuda"
    wall = result.epochs_wall_seconds
    out = {"seed": seed, "device": describe_device(device), "run_dir": result.run_dir, "steps": result.final.get("step"),
           "epochs": result.epochs_done,  # a GPU's time: the wall clock (the CPU clock counts the driving process)
           "train_gpu_seconds" if on_gpu else "train_cpu_seconds": round(wall if on_gpu else result.train_seconds, 1),
           "train_wall_seconds": round(wall, 1),
           "final_val_miou": round(result.final["val_miou"], 4), "best_val_miou": round(result.best_miou, 4),
           "val_per_class_iou": {n: round(v, 4) for n, v in zip(CAMVID_CLASSES.names, result.final["val_iou"])}}
    if holdout and not smoke:
        from segnas.jobs.evaluate import eval_job

        metrics, _ = eval_job(Path(result.run_dir) / "checkpoints" / "last.pt", "camvid", str(camvid_root()),
                              "holdout", options={"holdout": holdout}, progress=False)
        out["holdout_miou"] = round(metrics.miou, 4)
        out["holdout_per_class_iou"] = {n: round(v, 4) for n, v in zip(CAMVID_CLASSES.names, metrics.iou)}
    return out


def train_seeds(model: str, out_dir: str, steps: int, seeds: int, smoke: bool = False,
                holdout: str | None = None, optim: dict | None = None, recipe: dict | None = None,
                variant: str | None = None, device: str = "cpu") -> dict:
    """``train_for_steps`` once per seed 0..seeds-1 (on ``device``): the runs, and the mean and std of
    their final val mIoU (and of the held-out sequence's, with ``holdout``)."""
    return seeds_summary([train_for_steps(model, out_dir, steps, s, smoke, holdout, optim, recipe, variant, device)
                          for s in range(seeds)])


def seeds_summary(runs: list[dict]) -> dict:
    """The runs of one network and recipe over seeds, and the mean and std of their final val mIoU
    (and of the held-out sequence's, where scored)."""
    out = {"training": runs}
    for key, name in (("final_val_miou", "val_miou"), ("holdout_miou", "holdout_miou")):
        values = [t[key] for t in runs if key in t]
        if values:
            out |= {f"{name}_mean": round(statistics.mean(values), 4),
                    f"{name}_std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}
    return out


def steps_result(model: str, steps: int, seeds: int, out_dir: str, holdout: str | None = None) -> dict:
    """``model`` trained ``seeds`` times for ``steps`` steps (``train_seeds``), with its parameter
    count and, for an arch file, the architecture itself (the result stays reproducible without runs/)."""
    from segnas.cost import count_parameters
    from segnas.training.models import resolve_model

    net, _ = resolve_model(model, num_classes=len(CAMVID_CLASSES.names))
    out = {"model": model, "steps": steps, "batch_size": 8, "precision": "fp32", "params": count_parameters(net)}
    if model.endswith(".json"):
        out["arch"] = json.loads(Path(model).read_text())
    if holdout:
        out["holdout"] = holdout
    return out | train_seeds(model, out_dir, steps, seeds, holdout=holdout)


def network_of(result: dict):
    """The network a result file reports (its embedded architecture when it has one), 11 classes."""
    from segnas.spaces.base import build_from_arch
    from segnas.training.models import resolve_model

    if "arch" in result:
        return build_from_arch(result["arch"], len(CAMVID_CLASSES.names))
    return resolve_model(result["model"], num_classes=len(CAMVID_CLASSES.names))[0]


def time_result(name: str, results: Path) -> None:
    """Add this machine's latency of a result file's network (CamVid's 11 classes) to the file."""
    from segnas.cost import measure_latency

    path = results / f"{name}.json"
    if not path.is_file():
        sys.exit(f"{path}: no such result; train first (without --time-only)")
    result = json.loads(path.read_text())
    net = network_of(result)
    ms = measure_latency(net, (1, 3, 360, 480), "onnxruntime", 2, min_time_s=5.0).median_ms
    result |= {"latency_ms": ms, "latency": f"ONNX Runtime, 360x480, 2 threads, {machine()['cpu']}"}
    atomic_write_text(path, json.dumps(result, indent=2))
    print(f"{result['model']}: {ms:.2f} ms; saved {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="training-time budget")
    ap.add_argument("--out-dir", default="runs")
    ap.add_argument("--resume", default=None, help="run directory to continue")
    ap.add_argument("--model", default="fast_scnn", help="zoo name or arch.json")
    ap.add_argument("--steps", type=int, default=None,
                    help="same-budget mode: this many optimizer steps (batch 8, fp32) instead of --minutes, once per "
                         "seed; result <model>_steps<N>.json with mean and std")
    ap.add_argument("--seeds", type=int, default=2, help="training seeds in --steps mode")
    ap.add_argument("--holdout", default=None,
                    help="--steps mode: leave this CamVid training sequence (e.g. 0006R0) out of training and "
                         "report its mIoU beside val (cross-sequence); result <model>_steps<N>_without_<SEQ>")
    ap.add_argument("--name", default=None, help="result id (default <model>_<minutes>min or <model>_steps<N>)")
    ap.add_argument("--results-dir", default=str(RESULTS), help="where the result file goes")
    ap.add_argument("--time-only", action="store_true",
                    help="only time the result file's network on this machine (ONNX Runtime, 360x480, 2 threads; "
                         "run it on a quiet machine) and add latency_ms to the file")
    args = ap.parse_args()
    tag = Path(args.model).parent.name if args.model.endswith(".json") else args.model
    name = args.name or (f"{tag}_steps{args.steps}" + (f"_without_{args.holdout}" if args.holdout else "")
                         if args.steps else f"{tag}_{args.minutes:g}min")
    results = Path(args.results_dir)
    if args.time_only:
        time_result(name, results)
        return
    if not camvid_root().is_dir():
        sys.exit(f"CamVid not found at {camvid_root()} (set SEGNAS_CAMVID)")
    if args.steps:
        out = steps_result(args.model, args.steps, args.seeds, args.out_dir, args.holdout)
        path = save_result(name, out, results)
        print(f"{name}: val mIoU {out['val_miou_mean']:.4f} ± {out['val_miou_std']:.4f} over {args.seeds} seeds, "
              f"{args.steps} steps each; saved {path}")
        return
    cfg = config(args.minutes, args.out_dir, args.model)
    result = train_job(cfg, resume=args.resume, echo=print)
    evals = [r for r in result.history if "val_miou" in r]
    first50 = next((r for r in evals if r["val_miou"] >= 0.5), None)
    epoch_s = [r["epoch_s"] for r in result.history]
    final = result.final
    out = {
        "model": args.model,
        "settings": cfg.model_dump(mode="json"),
        "run_dir": result.run_dir,
        "epochs": result.epochs_done,
        "train_minutes": round(result.train_seconds / 60, 2),
        "seconds_per_epoch_median": round(statistics.median(epoch_s), 2),
        "final_val_miou": round(final["val_miou"], 4),
        "best_val_miou": round(result.best_miou, 4),
        "best_epoch": result.best_epoch,
        "final_val_pixel_acc": round(final["val_pixel_acc"], 4),
        "per_class_iou": {n: round(v, 4) for n, v in zip(CAMVID_CLASSES.names, final["val_iou"])},
        "first_50_miou_at_train_minutes": round(first50["train_s"] / 60, 2) if first50 else None,
        "curve": [{"epoch": r["epoch"], "train_min": round(r["train_s"] / 60, 2), "val_miou": round(r["val_miou"], 4)}
                  for r in evals],
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    path = save_result(name, out, results)
    print(f"final val mIoU {out['final_val_miou']:.4f} (best {out['best_val_miou']:.4f} @ epoch {out['best_epoch']}) "
          f"after {out['train_minutes']} train-min, {out['epochs']} epochs, {out['seconds_per_epoch_median']} s/epoch, "
          f"peak RSS {out['peak_rss_mb']} MB; 50% first at {out['first_50_miou_at_train_minutes']} min")
    for n, v in out["per_class_iou"].items():
        print(f"  {n:12s} {v:.4f}")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
