"""Does the ``mobile`` supernet rank the space's members where the zero-cost proxies cannot?

    python benchmarks/mobile/mobile_supernet.py      # about an hour on 2 cores; resumable (same command)
    python benchmarks/mobile/mobile_supernet.py --smoke --results-dir /tmp/r   # seconds, synthetic data

Trains the ``mobile`` space's weight-sharing supernet as ``segnas search supernet`` does (the one-shot
engine's sandwich rule: the largest, the smallest and --sandwich-random random members each step) on
CamVid's training split less its meta-validation part, at the ground truth's size (--size, whole
images resized, the ground truth's augmentation), then scores every network of the ``mobile``
ground truth (--groundtruth: its 60 networks trained 300 steps with training seeds 0 and 1; the
target is the mean over the files, and with several files also the first alone, the target of the
proxy comparison's table) with the weight-sharing evaluator:
its slices of the weights, BatchNorm statistics re-estimated on --calibration-images training
images, mIoU on --score-images images of the validation split (the ground truth's own metric) and
of the meta-validation part (what the search scores on). Reported: Kendall τ and Spearman ρ against
the ground truth on all networks and on the held-out halves of the proxy comparison's splits
(``proxy_discovery/results/compare_mobile_d1.json``, whose table gives every proxy's τ on the same
halves), the parameter count's τ on them, supernet training time and steps, seconds per network
scored. The training resumes from its run folder (--run-dir, default --out-dir/--name) and the
scores already taken are kept (``scores.json`` there), so the same supernet is judged against
another ground truth in seconds. Saves <results-dir>/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402
from mobile_camvid import SMOKE_SPACE  # noqa: E402
from proxy_groundtruth import data_section  # noqa: E402
from train_camvid import SMOKE_DATA  # noqa: E402

from segnas.cost import count_parameters  # noqa: E402
from segnas.data import meta_split  # noqa: E402
from segnas.engine.rundir import RunDir  # noqa: E402
from segnas.evaluate.records import load_groundtruth_runs  # noqa: E402
from segnas.evaluate.supernet import SupernetEvaluator  # noqa: E402
from segnas.jobs.search import make_settings  # noqa: E402
from segnas.metrics.ranking import rank_correlations, split_indices  # noqa: E402
from segnas.search.oneshot.data import search_train_set  # noqa: E402
from segnas.search.oneshot.engine import OneShotEngine, SearchSchedule  # noqa: E402
from segnas.spaces.base import arch_key  # noqa: E402
from segnas.spaces.mobile import MOBILE, MobileSpace  # noqa: E402
from segnas.utils import atomic_write_text, parse_size  # noqa: E402

GT_FILES = [common.BENCHMARKS / "groundtruth" / "data" / f"groundtruth_mobile_camvid_steps300{suffix}.jsonl"
            for suffix in ("", "_seed1")]
PROXY_TABLE = common.BENCHMARKS / "proxy_discovery" / "results" / "compare_mobile_d1.json"
CLASSES = 11


def held_out_taus(scores: list[float], mious: list[float], parts: list[tuple[list[int], list[int]]]) -> dict:
    """Kendall τ on each split's held-out networks: mean, std, min and max."""
    taus = [rank_correlations([scores[i] for i in held], [mious[i] for i in held])["kendall_tau"]
            for _, held in parts]
    return {"mean": float(np.mean(taus)), "std": float(np.std(taus)), "min": float(np.min(taus)),
            "max": float(np.max(taus)), "splits": len(taus)}


def judged(values: list[float], targets: dict[str, list[float]], parts: list[tuple[list[int], list[int]]]) -> dict:
    """Rank correlations of ``values`` with each target, on all networks and on the held-out halves."""
    return {name: {**rank_correlations(values, t), "held_out_tau": held_out_taus(values, t, parts)}
            for name, t in targets.items()}


def proxy_rows(path: Path) -> dict[str, float]:
    """The proxy comparison's held-out τ (mean over its splits) by row name."""
    if not path.is_file():
        return {}
    return {row["proxy"]: row["mean_tau"] for row in json.loads(path.read_text()).get("table", [])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groundtruth", nargs="+", default=[str(f) for f in GT_FILES],
                    help="ground-truth files (the same networks with other training seeds: their mean is the target)")
    ap.add_argument("--size", type=parse_size, default=(180, 240), help="training and scoring size (the ground truth's)")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--sandwich-random", type=int, default=2)
    ap.add_argument("--inplace-distill", type=float, default=0.0,
                    help="weight of the largest member's predictions in the smaller members' loss (BigNAS)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--meta-val-fraction", type=float, default=0.15)
    ap.add_argument("--calibration-images", type=int, default=80)
    ap.add_argument("--score-images", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out-dir", default="runs/mobile_supernet")
    ap.add_argument("--name", default="supernet_rank")
    ap.add_argument("--run-dir", default=None, help="the supernet's run folder (default: --out-dir/--name); "
                    "another result of the same supernet (e.g. against another ground truth) names it")
    ap.add_argument("--results-dir", default=None)
    ap.add_argument("--smoke", action="store_true", help="synthetic data, a small space, 4 networks: checks the script")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = Path(args.results_dir) if args.results_dir else common.results_dir(__file__)

    if args.smoke:
        space = MobileSpace(**SMOKE_SPACE)
        rng = np.random.default_rng(0)
        records = [{"arch": space.sample(rng).to_dict(), "val_miou": float(v)} for v in rng.uniform(size=8)]
        data = {**SMOKE_DATA, "options": {**SMOKE_DATA["options"], "length": 8}}
        args.epochs, args.calibration_images, args.score_images = 1, 2, 2
        args.name = args.name if args.name != "supernet_rank" else "supernet_rank_smoke"  # never the real run's folder
    else:
        space = MOBILE
        records = load_groundtruth_runs(args.groundtruth)
        data = data_section("camvid", None, args.size, args.size, args.batch_size)
    settings = make_settings("supernet", {"data": data, "seed": args.seed, "device": args.device,
                                          "supernet": {"space": "mobile"}})
    train = search_train_set(settings)
    meta_train, meta_val = meta_split(len(train), args.meta_val_fraction, args.seed)
    run = RunDir(args.run_dir or Path(args.out_dir) / args.name)
    schedule = SearchSchedule(pretrain_epochs=args.epochs, search_epochs=0, batch_size=settings.data.batch_size,
                              weight_lr=args.lr, sandwich_random=args.sandwich_random,
                              inplace_distill=args.inplace_distill, device=args.device,
                              seed=args.seed, progress=not args.smoke)
    engine = OneShotEngine(space.supernet(CLASSES, tuple(args.size)), Subset(train, meta_train), schedule, run,
                           echo=print)
    engine.resume_if_possible()
    engine.fit()
    trained = {"epochs": args.epochs, "steps": engine.step, "seconds": round(engine.loop.elapsed, 1),
               "meta_train_images": len(meta_train), "meta_val_images": len(meta_val),
               "sandwich_random": args.sandwich_random, "inplace_distill": args.inplace_distill, "lr": args.lr,
               "batch_size": settings.data.batch_size}
    print(f"supernet: {trained}")

    cache_file = run.path / "scores.json"
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    out = {"groundtruth": [Path(f).name for f in args.groundtruth] if not args.smoke else ["smoke"],
           "networks": len(records),
           "size": list(args.size), "supernet": trained, "space": "mobile", "scores": {}}
    # the mean over the ground-truth files, and with several files the first alone (the proxy table's target)
    targets = {"mean": [float(r["val_miou"]) for r in records]}
    if len(args.groundtruth) > 1 and not args.smoke:
        targets["first_run"] = [float(r["val_miou_runs"][0]) for r in records]
    st = (json.loads(PROXY_TABLE.read_text())["settings"] if PROXY_TABLE.is_file() and not args.smoke
          else {"train_fraction": 0.5, "split_seeds": range(5)})
    parts = [split_indices(len(records), st["train_fraction"], s) for s in st["split_seeds"]]
    params = [count_parameters(space.build(space.arch_from_dict(r["arch"]), CLASSES)) for r in records]
    out["params"] = judged(params, targets, parts)
    for split, held in (("val", None), ("meta_val", meta_val)):
        if split == "val" and args.smoke:
            continue
        evaluator = SupernetEvaluator("mobile", engine.pretrained_path, CLASSES, tuple(args.size), settings.data,
                                      SMOKE_SPACE if args.smoke else None, tuple(args.size), args.score_images,
                                      args.calibration_images, seed=args.seed, meta_val=held)
        evaluator.setup()
        scores, seconds = [], []
        for r in records:
            key = (f"{split}:{args.score_images}:{args.calibration_images}:{args.seed}:{args.size[0]}x{args.size[1]}:"
                   f"{arch_key(r['arch'])}")  # a score depends on these as well as on the supernet
            if key not in cache:
                t0 = time.perf_counter()
                cache[key] = evaluator.evaluate(r["arch"])["score"]
                cache[f"{key}:seconds"] = time.perf_counter() - t0
                atomic_write_text(cache_file, json.dumps(cache))
            scores.append(cache[key])
            seconds.append(cache[f"{key}:seconds"])
        out["scores"][split] = {**judged(scores, targets, parts), "images": len(evaluator.val),
                                "seconds_per_network": float(np.median(seconds)), "scores": scores}
        corr = out["scores"][split]["mean"]
        print(f"scored on {split}: τ {corr['kendall_tau']:.3f}, ρ {corr['spearman_rho']:.3f}, "
              f"held-out τ {corr['held_out_tau']['mean']:.3f}")
    out["proxies_held_out_tau"] = proxy_rows(PROXY_TABLE) if not args.smoke else {}
    out["split_parts"] = len(parts)
    corr = out["params"]["mean"]
    print(f"parameters: τ {corr['kendall_tau']:.3f}, held-out τ {corr['held_out_tau']['mean']:.3f}")
    print(f"saved {common.save_result(args.name, out, results)}")


if __name__ == "__main__":
    main()
