"""Ground truth for proxy search: sampled architectures trained from scratch on CamVid on this CPU.

    python benchmarks/groundtruth/proxy_groundtruth.py --n 60 --minutes 8 --executor process --workers 2 \
        --longer-minutes 24 --longer-subset 12

Samples ``--n`` distinct ``multires`` architectures spread over the latency range (CPU-sized
space: ``--layers 8 --base-width 8``), predicts each one's latency from the operator table at
``--latency-size`` (built here, once, before any training starts, so that timings are not taken
beside a training run), and trains each from scratch with ``benchmarks/training/train_camvid.py``'s recipe
for ``--minutes`` of training time counted on the CPU clock (process CPU time / training threads,
so waiting for a core does not shorten it; one thread per worker keeps the cores from being
oversubscribed), scoring val mIoU once at the end. Results go to
``benchmarks/groundtruth/data/groundtruth_<space>_<data>.jsonl``, one line per network as it finishes; a killed
run resumes (finished networks are skipped, a network killed mid-training continues from
its last epoch in ``--out-dir``).

``--repeat-seeds`` trains every network again with other training seeds, into
``groundtruth_<space>_<data>_seed<k>.jsonl``: the τ between two seeds measures the ground truth's own
noise, from which ``noise_ceiling_tau`` gives the best τ any proxy could reach, and the per-network
mean over seeds is a less noisy ground truth (``benchmarks/proxy_discovery/proxies_camvid.py --groundtruth`` takes
all the files).

``--steps`` gives a budget in optimizer steps instead, which means the same on every machine (a
CPU-minute budget buys different training on another CPU, so files trained under one are only
extended on the CPU that made them).

``--device cuda`` trains on a GPU (fp32 stays fp32: TF32 is off), and ``--no-latency`` takes latency
from the short-budget file instead of measuring it: together they add seeds or the longer budget to
a finished step-budget file on a GPU machine, with the networks' keys unchanged. A larger ``--n`` there
adds new networks (``sample_archs`` draws the same first ones for a seed) without a latency; a
later run on the CPU of the short-budget file, without ``--no-latency``, predicts theirs and fills it in.

Then ``--longer-subset`` of them, evenly spread over the short-budget mIoU ranking, train for
``--longer-minutes`` into ``groundtruth_<space>_<data>_long.jsonl``; Kendall τ and Spearman ρ
between short- and long-budget mIoU tell how far the short budget's ranking can be trusted as
ground truth. Prints and saves ``benchmarks/groundtruth/results/<name>.json`` (default ``steps<N>``, or ``cpu<M>min``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

from segnas.cost import LatencyTable  # noqa: E402
from segnas.cost.machine import cpu_model  # noqa: E402
from segnas.errors import SegnasError  # noqa: E402
from segnas.spaces.base import arch_key  # noqa: E402
from segnas.evaluate.records import check_one_cpu, fill_latency, load_groundtruth  # noqa: E402
from segnas.config.train import DataConfig  # noqa: E402
from segnas.cost import LatencyModel  # noqa: E402
from segnas.data import dataset_classes  # noqa: E402
from segnas.metrics.ranking import noise_ceiling_tau, rank_correlations  # noqa: E402
from segnas.evaluate.groundtruth import run_groundtruth, sample_archs  # noqa: E402
from segnas.parallel import TaskResources  # noqa: E402
from segnas.evaluate.short_train import training_recipe  # noqa: E402
from segnas.spaces import get_space  # noqa: E402
from segnas.spaces.multires import MultiResSpace  # noqa: E402
from segnas.utils import parse_size  # noqa: E402


def make_space(args: argparse.Namespace):
    if args.space == "multires":
        return MultiResSpace(layers=args.layers, base_width=args.base_width)
    return get_space(args.space)


def data_section(data: str, root: str | None, crop_size, base_size=None, batch_size: int = 8,
                 options: dict | None = None) -> dict:
    """The data section every ground-truth network trains with."""
    root = root or (str(common.camvid_root()) if data == "camvid" else None)
    return {"name": data, "root": root, "crop_size": list(crop_size),
            "base_size": list(base_size) if base_size else None, "scale": [0.75, 1.5], "jitter": 0.3,
            "batch_size": batch_size, "eval_batch_size": 4, "options": options or {}}


def spread_subset(results: list[dict], k: int) -> list[int]:
    """Indices of ``k`` results evenly spaced over the ranking by val mIoU (lowest to highest)."""
    order = sorted(range(len(results)), key=lambda i: results[i]["val_miou"])
    if k >= len(order):
        return order
    picks = [order[round(j * (len(order) - 1) / (k - 1))] for j in range(k)] if k > 1 else [order[len(order) // 2]]
    return sorted(set(picks))


def latency_of_records(path: Path, archs: list) -> list[float | None]:
    """Each architecture's latency from the ground-truth file at ``path`` (``--no-latency``); None for
    networks without one there (new networks trained on another machine: ``fill_latency`` adds it)."""
    by_arch = {arch_key(r["arch"]): r.get("latency_ms") for r in load_groundtruth(path)} if path.is_file() else {}
    return [by_arch.get(arch_key(a)) for a in archs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60, help="architectures to sample and train")
    ap.add_argument("--minutes", type=float, default=8.0, help="short training budget (CPU-clock minutes)")
    ap.add_argument("--longer-minutes", type=float, default=None, help="longer budget (default 3x --minutes)")
    ap.add_argument("--steps", type=int, default=None,
                    help="budget in optimizer steps instead of CPU-minutes: the same on every machine "
                         "(files get a _steps<N> suffix)")
    ap.add_argument("--longer-steps", type=int, default=None, help="longer step budget (default 3x --steps)")
    ap.add_argument("--longer-subset", type=int, default=12, help="architectures retrained at the longer budget")
    ap.add_argument("--executor", choices=["inline", "process", "ray"], default="inline")
    ap.add_argument("--ray-address", default=None, help="Ray cluster (host:port of its head, or auto); "
                    "default: a local Ray")
    ap.add_argument("--task-gpus", type=float, default=0.0, help="GPUs each training reserves on Ray")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None,
                    help="training threads per network (default: cores / workers)")
    ap.add_argument("--space", default="multires")
    ap.add_argument("--layers", type=int, default=8, help="multires: cells per branch at most")
    ap.add_argument("--base-width", type=int, default=8, help="multires: base width")
    ap.add_argument("--data", default="camvid")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--data-options", default="{}", help="JSON keyword arguments of the dataset")
    ap.add_argument("--size", type=parse_size, default=(360, 480), help="training crop HxW")
    ap.add_argument("--base-size", type=parse_size, default=None, help="resize images to HxW first (reduced size)")
    ap.add_argument("--latency-size", type=parse_size, default=None, help="HxW for latency/FLOPs (default: trained size)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--latency-threads", type=int, default=None)
    ap.add_argument("--no-latency", action="store_true",
                    help="measure no latency here: take it from the records of the short-budget file (for a run "
                         "on another machine that adds seeds, networks or the longer budget); networks new there "
                         "get theirs from a later run without this flag")
    ap.add_argument("--fill-latency", action="store_true",
                    help="only predict the latency of the short-budget file's networks that lack one, then stop "
                         "(trains nothing)")
    ap.add_argument("--device", default="cpu",
                    help="where networks train: cpu, cuda, auto (not part of a network's key: a step budget "
                         "means the same training on either; fp32 stays fp32 on a GPU)")
    ap.add_argument("--table-min-runs", type=int, default=20)
    ap.add_argument("--table-min-time-s", type=float, default=0.3)
    ap.add_argument("--train", default="{}", help="JSON overrides of the training recipe")
    ap.add_argument("--seed", type=int, default=0, help="sampling and training seed")
    ap.add_argument("--repeat-seeds", type=int, default=0,
                    help="train every network again with this many other training seeds (seed+1, ...)")
    ap.add_argument("--out-dir", default="runs/groundtruth", help="per-network training folders")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parent / "data"), help="where the JSONL files go")
    ap.add_argument("--results-dir", default=str(common.results_dir(__file__)))
    ap.add_argument("--name", default=None, help="result id (default steps<N>, or cpu<M>min)")
    args = ap.parse_args()
    if args.data == "camvid" and not Path(args.data_root or common.camvid_root()).is_dir():
        sys.exit(f"CamVid not found at {args.data_root or common.camvid_root()} (set SEGNAS_CAMVID)")
    train = json.loads(args.train)
    if args.steps:  # a step budget replaces the CPU-minute one; fp32, as bf16 is native on some CPUs only
        train = {"bf16": False, **train}
        budget, longer_budget = {"minutes": None, "max_steps": args.steps}, {
            "minutes": None, "max_steps": args.longer_steps or 3 * args.steps}
        unit, short_amount, longer = "steps", args.steps, longer_budget["max_steps"]
        suffix = f"_steps{args.steps}"
    else:
        longer = args.longer_minutes or 3 * args.minutes
        budget, longer_budget = {"minutes": args.minutes}, {"minutes": longer}
        unit, short_amount, suffix = "CPU-clock minutes", args.minutes, ""
    threads = args.threads or max(1, (os.cpu_count() or 2) // (args.workers if args.executor != "inline" else 1))

    space = make_space(args)
    data_dir = Path(args.data_dir)
    stem = f"groundtruth_{space.name}_{args.data}{suffix}"
    short_path = data_dir / f"{stem}.jsonl"
    long_path = data_dir / f"{stem}_long.jsonl"
    repeat_paths = [data_dir / f"{stem}_seed{seed}.jsonl"
                    for seed in range(args.seed + 1, args.seed + 1 + args.repeat_seeds)]
    try:
        check_one_cpu({str(p): load_groundtruth(p) for p in [short_path, long_path, *repeat_paths] if p.is_file()},
                      this_cpu=cpu_model())
    except SegnasError as exc:
        sys.exit(str(exc))
    data = data_section(args.data, args.data_root, args.size, args.base_size, args.batch_size,
                        json.loads(args.data_options))
    lat_size = tuple(args.latency_size or args.base_size or args.size)
    archs = sample_archs(space, args.n, seed=args.seed)
    num_classes = dataset_classes(DataConfig.model_validate(data)).num_classes
    table = LatencyTable(args.backend, threads=args.latency_threads, min_runs=args.table_min_runs,
                         min_time_s=args.table_min_time_s)
    settings = {"data": data, **budget, "size": list(lat_size), "latency": "table",
                "backend": args.backend, "latency_threads": table.threads,
                "table_min_runs": args.table_min_runs, "table_min_time_s": args.table_min_time_s,
                "threads": threads, "seed": args.seed, "out_dir": args.out_dir, "train": train,
                "device": args.device, "record_latency": not args.no_latency}
    if args.no_latency and args.fill_latency:
        sys.exit("--fill-latency predicts latency here: it cannot go with --no-latency")
    if args.no_latency:
        if not args.steps:
            sys.exit("--no-latency needs a --steps budget (a CPU-minute budget trains only on the CPU that began it)")
        lats = latency_of_records(short_path, archs)
        print(f"{len(archs)} {space.name} architectures, latency from {short_path} "
              f"({sum(lat is None for lat in lats)} without one: a run here without --no-latency fills it in)")
    else:
        model = LatencyModel(table, lat_size)
        lats = [model.predict(space, a, num_classes) for a in archs]
        print(f"{len(archs)} {space.name} architectures, predicted {min(lats):.1f}-{max(lats):.1f} ms at "
              f"{lat_size[0]}x{lat_size[1]} ({args.backend}, {table.threads} threads)")
        filled = fill_latency(short_path, {arch_key(a): lat for a, lat in zip(archs, lats)}, f"table:{args.backend}")
        if filled or args.fill_latency:
            print(f"{short_path}: latency predicted here for {filled} networks trained under --no-latency")
        if args.fill_latency:
            return

    resources = TaskResources(cpus=threads, gpus=args.task_gpus)  # what each training reserves on Ray
    print(f"training each for {short_amount} {unit} ({threads} threads, {args.executor} x{args.workers})"
          f" -> {short_path}")
    short = run_groundtruth(space, archs, settings, results_path=short_path, executor=args.executor,
                            ray_address=args.ray_address, resources=resources,
                            workers=args.workers, progress=True)
    repeats = []
    for seed, path in zip(range(args.seed + 1, args.seed + 1 + args.repeat_seeds), repeat_paths):
        print(f"training seed {seed}: every network again -> {path}")
        repeats.append((path, run_groundtruth(space, archs, {**settings, "seed": seed}, results_path=path,
                                              executor=args.executor, ray_address=args.ray_address,
                                              resources=resources, workers=args.workers, progress=True)))

    # a network whose training diverged under the recipe (in any run) has no place in the rankings
    trained = [i for i, r in enumerate(short) if r["val_miou"] is not None
               and all(rep[i]["val_miou"] is not None for _, rep in repeats)]
    diverged = sorted(set(range(len(short))) - set(trained))
    if diverged:
        print(f"{len(diverged)} networks diverged under the recipe and are left out: indices {diverged}")
    if len(trained) < 2:
        raise SystemExit(f"{short_path}: {len(trained)} of {len(short)} networks trained without diverging; "
                         "change --train (e.g. a lower optim.lr)")
    subset = ([trained[j] for j in spread_subset([short[i] for i in trained], args.longer_subset)]
              if args.longer_subset > 0 else [])
    long = []
    if subset:
        print(f"retraining {len(subset)} of them for {longer} {unit} -> {long_path}")
        long = run_groundtruth(space, [archs[i] for i in subset], {**settings, **longer_budget},
                               results_path=long_path, executor=args.executor,
                               ray_address=args.ray_address, resources=resources, workers=args.workers,
                               progress=True)

    miou = [short[i]["val_miou"] for i in trained]
    runs = [miou] + [[rep[i]["val_miou"] for i in trained] for _, rep in repeats]
    mean_miou = np.mean(runs, axis=0).tolist()
    # how well one training run ranks like another: the ground truth's own noise
    seed_vs_seed = [{**rank_correlations(runs[i], runs[j]), "seeds": [args.seed + i, args.seed + j]}
                    for i in range(len(runs)) for j in range(i + 1, len(runs))]
    seed_tau = float(np.mean([c["kendall_tau"] for c in seed_vs_seed])) if seed_vs_seed else float("nan")
    precisions = {r["bf16"] for r in short if "bf16" in r}
    # networks trained elsewhere under --no-latency have no latency until a run here fills it in
    known = [(m, lats[i]) for m, i in zip(miou, trained) if lats[i] is not None]
    both = [(i, j) for j, (i, r) in enumerate(zip(subset, long)) if r["val_miou"] is not None]
    corr_budget = (rank_correlations([short[i]["val_miou"] for i, _ in both], [long[j]["val_miou"] for _, j in both])
                   if len(both) > 1 else None)
    mean_by_index = dict(zip(trained, mean_miou))
    out = {
        "space": space.name, "space_settings": {"layers": args.layers, "base_width": args.base_width}
        if space.name == "multires" else {},
        "data": args.data, "batch_size": args.batch_size, "train_size": list(args.base_size or args.size), "crop_size": list(args.size),
        "budget": {**({"short_steps": args.steps, "long_steps": longer} if args.steps else
                      {"short_minutes": args.minutes, "long_minutes": longer,
                       "clock": "cpu (process CPU time / training threads)"}), "threads": threads,
                   "recipe": training_recipe(train), "bf16_used": precisions.pop() if len(precisions) == 1 else None},
        "latency": {"size": list(lat_size), "backend": args.backend, "threads": table.threads},
        "n": len(short), "diverged": diverged, "files": {"short": str(short_path), "long": str(long_path) if subset else None,
                                 "repeats": [str(p) for p, _ in repeats]},
        # where each file's networks trained (records older than the field trained on the CPU)
        "devices": {name: sorted({r.get("device", "cpu") for r in recs}) for name, recs in
                    [("short", short), ("long", long), *((p.name, rep) for p, rep in repeats)] if recs},
        "val_miou_range": [min(miou), max(miou)],
        # latency predicted on this machine (a record's latency_ms is from the machine that trained it)
        "latency_ms_range": [min(lat for _, lat in known), max(lat for _, lat in known)] if known else None,
        "short_vs_long": corr_budget,
        "seed_vs_seed": seed_vs_seed,
        "mean_of_seeds_vs_long": rank_correlations([mean_by_index[i] for i, _ in both],
                                                   [long[j]["val_miou"] for _, j in both])
        if repeats and len(both) > 1 else None,
        "noise_ceiling_tau": ({"single_run": noise_ceiling_tau(seed_tau, 1),
                               f"mean_of_{len(runs)}_runs": noise_ceiling_tau(seed_tau, len(runs))}
                              if repeats else None),
        "miou_vs_latency": rank_correlations(*zip(*known)) if len(known) > 1 else None,
        "miou_vs_params": rank_correlations(miou, [short[i]["params"] for i in trained]),
        "subset": [{"index": i, "short_miou": round(short[i]["val_miou"], 4),
                    "long_miou": round(r["val_miou"], 4) if r["val_miou"] is not None else None,
                    "latency_ms": round(lats[i], 2) if lats[i] is not None else None}
                   for i, r in zip(subset, long)],
    }
    name = args.name or (f"steps{args.steps}" if args.steps else f"cpu{args.minutes:g}min")
    path = common.save_result(name, out, args.results_dir)
    print(f"val mIoU {min(miou):.4f}-{max(miou):.4f} after {short_amount} {unit}")
    for c in out["seed_vs_seed"]:
        print(f"seed {c['seeds'][0]} vs seed {c['seeds'][1]}: Kendall tau {c['kendall_tau']:.3f}, "
              f"Spearman rho {c['spearman_rho']:.3f}")
    if corr_budget:
        print(f"short vs {longer} {unit} on {corr_budget['n']} networks: Kendall tau {corr_budget['kendall_tau']:.3f}, "
              f"Spearman rho {corr_budget['spearman_rho']:.3f}")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
