"""SasWOT on CamVid on this CPU: training-free search with the discovered proxy, then the winner trained.

    python benchmarks/saswot/saswot_camvid.py --target-ms 28          # after benchmarks/proxy_discovery/proxies_camvid.py

A ``segnas search saswot`` job (regularized evolution, ``segnas.jobs.search.search_job``, no final
training) over the ground truth's space (``multires``, CPU-sized as in ``proxy_groundtruth.py``) scores
up to ``--candidates`` untrained networks with the
proxy (default: the expression ``proxies_camvid.py`` discovered, on the images and size it was
discovered with), rejecting every candidate whose latency predicted at 360x480 on ONNX Runtime
exceeds ``--target-ms``, for at most ``--time-limit-min`` minutes of wall time on ``--workers``
processes. Run it on a quiet machine: the candidates per minute is the point.

The winner is then timed (ONNX Runtime, 360x480, 2 threads) and trained twice:
- under the ground truth's short budget (``--gt-minutes`` at the ground truth's size, 1 thread), to
  place it among the ground-truth networks that meet the same target; the CPU-minute ground truth
  is tied to the CPU that trained it, so elsewhere use ``--gt-steps 300`` instead: the winner is
  trained once per training seed of the step-budget ground truth (``--gt-steps-files``, recipe of
  ``proxy_groundtruth.py --steps``) and its seed-mean mIoU placed among those networks' seed means,
  "meeting the target" judged by latency predicted on this machine's table, as in the search;
- with ``train_camvid.py``'s recipe for ``--final-steps`` optimizer steps at 360x480, once per
  ``--train-seeds`` seed, to compare with every network given the same steps (the training study's
  equal-steps table); or for ``--final-minutes`` CPU-minutes instead (machine- and load-dependent),
  against the zoo trained under that budget.
Saves ``results/<name>.json``. The same command again reads back its finished search (same settings,
newest under --out-dir) or continues a cut one, so a killed run trains the same winner.

    python benchmarks/saswot/saswot_camvid.py --time inits1 nsga2     # on an otherwise idle machine

times the winners of those results, and Fast-SCNN beside them, in one probe-gated session
(``measure_latency_gated``, the comparison's measurement), so their latencies and budget use
compare; each result gets the session's figures (``winner_session``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402
from proxy_groundtruth import data_section  # noqa: E402
from train_camvid import config as train_config, train_seeds  # noqa: E402

from segnas.cost import LatencyModel, count_flops, count_parameters, measure_latency  # noqa: E402
from segnas.cost.latency import measure_latency_gated  # noqa: E402
from segnas.evaluate.proxy import proxy_scored_on  # noqa: E402
from segnas.evaluate.records import load_groundtruth, load_groundtruth_runs  # noqa: E402
from segnas.evaluate.short_train import evaluate_arch, make_item  # noqa: E402
from segnas.jobs import train_job  # noqa: E402
from segnas.jobs.search import make_settings  # noqa: E402
from segnas.spaces import read_arch_file, save_arch  # noqa: E402
from segnas.spaces.multires import MultiResSpace  # noqa: E402
from segnas.utils import parse_size  # noqa: E402

GT_DATA = common.BENCHMARKS / "groundtruth" / "data"  # the ground-truth files (benchmarks/groundtruth)
GT_FILE = GT_DATA / "groundtruth_multires_camvid.jsonl"
RESULTS = common.results_dir(__file__)


def steps_files(steps: int) -> list[Path]:
    """The step-budget ground truth's training-seed files (seed 0 first, no longer-budget subset)."""
    data = GT_DATA
    return [data / f"groundtruth_multires_camvid_steps{steps}.jsonl",
            *sorted(data.glob(f"groundtruth_multires_camvid_steps{steps}_seed*.jsonl"),
                    key=lambda f: int(f.stem.rsplit("seed", 1)[1]))]


def gt_steps_files(args: argparse.Namespace) -> list[str]:
    """``--gt-steps-files``, else every committed file of the ``--gt-steps`` ground truth (seed order)."""
    return args.gt_steps_files or [str(f) for f in steps_files(args.gt_steps)]


def groundtruth_placement(records: list[dict], target_ms: float, winner_miou: float) -> dict:
    """Where the winner's short-budget mIoU falls among ground-truth networks that meet the target."""
    feasible = sorted(r["val_miou"] for r in records if r["val_miou"] is not None and r["latency_ms"] <= target_ms)
    if not feasible:
        return {"feasible_networks": 0}
    return {"feasible_networks": len(feasible), "feasible_median_miou": float(np.median(feasible)),
            "feasible_best_miou": feasible[-1],
            "winner_percentile": 100.0 * sum(m <= winner_miou for m in feasible) / len(feasible)}


def steps_placement(space, arch, args, latency: LatencyModel, run: Path) -> dict:
    """Train the winner for ``--gt-steps`` steps with each training seed of the step-budget ground
    truth and place its seed-mean mIoU among the ground-truth networks that meet the target (by
    latency predicted by ``latency``, the search's own table), each also a mean over those seeds."""
    files = gt_steps_files(args)
    records = load_groundtruth_runs(files)
    data = data_section("camvid", None, args.gt_size, args.gt_size, 8)
    settings = {"data": data, "minutes": None, "max_steps": args.gt_steps, "size": list(args.size), "threads": 2,
                "train": {"bf16": False}, "out_dir": str(run / "groundtruth-steps"), "record_latency": False,
                "device": args.device}
    runs = []
    for seed in range(len(files)):
        r = evaluate_arch(make_item(space, arch, {**settings, "seed": seed}))
        runs.append(r["val_miou"])
        print(f"winner, {args.gt_steps} steps, training seed {seed}: val mIoU {100 * r['val_miou']:.1f}%", flush=True)
    for r in records:
        r["latency_ms"] = latency.predict(space, space.arch_from_dict(r["arch"]), 11)
    winner = float(np.mean(runs))
    return {"steps": args.gt_steps, "files": [Path(f).name for f in files], "val_miou_runs": runs,
            "val_miou": winner, "latency": "predicted on this machine's table (the search's)",
            **groundtruth_placement(records, args.target_ms, winner)}


def search_settings(args: argparse.Namespace):
    """The ``segnas search saswot`` job of these arguments (no final training: trained below). The
    initializations are resolved here as the job would (``--inits``, else the proxy file's; the
    finalists over ``--final-inits``, else the proxy file's) so that config.yaml names them."""
    seen = proxy_scored_on(args.proxy).get("inits")
    return make_settings("saswot", {
        "job": "bench-saswot", "data": {"name": "camvid", "root": str(common.camvid_root())},
        "latency": {"target_ms": args.target_ms, "size": list(args.size), "backend": "onnxruntime", "threads": 2,
                    "probe": args.probe or None},
        "minutes": args.time_limit_min, "workers": args.workers, "executor": "process", "seed": args.seed,
        "out_dir": args.out_dir, "progress": False, "final": {"epochs": 0},
        "saswot": {"space": "multires", "space_options": {"layers": args.layers, "base_width": args.base_width},
                   "scoring": {"proxy": args.proxy, "images": args.images, "size": list(args.score_size),
                               "inits": args.inits or seen or 1},
                   "candidates": args.candidates, "population": args.population,
                   "final_inits": (seen or 0) if args.final_inits is None else args.final_inits, "mode": args.mode,
                   **({"sample_size": args.sample_size} if args.mode == "evolution"
                      else {"nsga2": {"winner": args.winner_rule}})}})


def search_record(run: Path) -> dict:
    """A finished search run's figures under this benchmark's result names (from its config.yaml,
    search_result.json and arch.json)."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    result = json.loads((run / "search_result.json").read_text())
    section, details = cfg["saswot"], result["details"]
    scoring, rescored = section["scoring"], "final_score" in details
    settings = {"space": section["space"], "data": cfg["data"]["name"], "split": scoring["split"],
                "images": scoring["images"], "score_size": scoring["size"], "population": section["population"],
                "sample_size": section["sample_size"], "seed": cfg["seed"], "proxy_seed": scoring["proxy_seed"],
                "inits": scoring["inits"], "final_inits": section["final_inits"] if rescored else 0,
                "top_k": section["top_k"], "workers": cfg["workers"],
                "time_limit_s": cfg["minutes"] and 60.0 * cfg["minutes"]}
    return {**{k: details[k] for k in ("candidates_scored", "seconds", "rejected_infeasible", "duplicates", "stopped")},
            "final_inits": settings["final_inits"],
            # the search's wall time after its loop: the finalists' rescoring (0 without one)
            "final_seconds": round(result["search_wall_seconds"] - details["seconds"], 3) if rescored else 0.0,
            "settings": settings, "proxy": scoring["proxy"], "proxy_score": details["score"],
            "final_proxy_score": details.get("final_score"),
            "predicted_latency_ms": result["networks"]["arch"]["predicted_ms"],
            "search_measured_ms": result["networks"]["arch"].get("measured_ms"),
            "mode": details.get("mode", "evolution"), "budget_use": details.get("budget_use"),
            "winner_rule": details.get("winner_rule"), "front_size": len(details.get("front") or []) or None,
            "finalists": len(details.get("top") or []) or None}


def final_training(arch_file: Path, args: argparse.Namespace) -> dict:
    """``train_camvid.py``'s recipe for ``--final-steps`` steps, once per ``--train-seeds`` seed, the
    ``--holdout`` sequence left out and scored; resumable (each seed's run continues)."""
    holdout = args.holdout or None
    out = {"steps": args.final_steps, "batch_size": 8, "precision": "fp32", "holdout": holdout,
           "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": common.machine(),
           **train_seeds(str(arch_file), args.out_dir, args.final_steps, args.train_seeds, holdout=holdout,
                         device=args.device)}
    print(f"trained {args.train_seeds} x {args.final_steps} steps: val mIoU "
          f"{100 * out['val_miou_mean']:.1f} ± {100 * out['val_miou_std']:.1f}%"
          + (f", {holdout} {100 * out['holdout_miou_mean']:.1f} ± {100 * out['holdout_miou_std']:.1f}%" if holdout else ""))
    return out


def retrain(args: argparse.Namespace) -> None:
    """``--retrain NAME``: the final trainings of an earlier result's winner (its architecture is in
    the result: the search's run folder need not exist), added to that result."""
    path = RESULTS / f"{args.retrain}.json"
    if not path.is_file():
        sys.exit(f"--retrain: {path} not found")
    out = json.loads(path.read_text())
    space = result_space(out)
    arch_file = Path(args.out_dir) / f"saswot-{args.retrain}-winner" / "arch.json"
    arch_file.parent.mkdir(parents=True, exist_ok=True)
    save_arch(arch_file, space, space.arch_from_dict(out["winner"]))
    out["final_training"] = final_training(arch_file, args)
    print(f"saved {common.save_result(args.retrain, out, RESULTS)}")  # its own date and machine kept


def result_space(result: dict) -> MultiResSpace:
    """The space a result's search ran in (its winner is an architecture of it)."""
    return MultiResSpace(layers=result["space"]["layers"], base_width=result["space"]["base_width"])


def time_winners(names: list[str], size: tuple[int, int]) -> None:
    """``--time``: the winners of results ``names`` and Fast-SCNN timed in one probe-gated session."""
    from segnas.zoo import build_model

    results = {}
    for name in names:
        path = RESULTS / f"{name}.json"
        if not path.is_file():
            sys.exit(f"--time: {path} not found")
        results[name] = json.loads(path.read_text())
    fast_scnn = build_model("fast_scnn", 11).eval()  # timed beside the winners, and the session's probe
    nets = {"fast_scnn": fast_scnn}
    for name, r in results.items():
        space = result_space(r)
        nets[name] = space.build(space.arch_from_dict(r["winner"]), 11).eval()
    session = measure_latency_gated(nets, (1, 3, *size), fast_scnn, "onnxruntime", 2,
                                    block_time_s=0.5, min_rounds=8, min_steady=3)
    figures = {n: res.steady_ms if res.steady_ms is not None else res.median_ms for n, res in session.items()}
    stamp = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": common.machine(), "size": list(size),
             "how": "ONNX Runtime, 2 threads, one probe-gated session (probe: fast_scnn)",
             "fast_scnn_ms": figures["fast_scnn"], "with": sorted(results)}
    for name, r in results.items():
        r["winner_session"] = stamp | {"ms": figures[name]}
        common.save_result(name, r, RESULTS)  # the result keeps its own date and machine
        print(f"{name}: {figures[name]:.2f} ms ({100 * figures[name] / r['target_ms']:.0f}% of {r['target_ms']:g} ms)")
    print(f"fast_scnn: {figures['fast_scnn']:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target-ms", type=float, default=28.0, help="latency target at --size (ONNX Runtime)")
    ap.add_argument("--proxy", default=str(common.BENCHMARKS / "proxy_discovery" / "results" / "proxy.json"),
                    help="proxy name or discovered proxy file (default: the proxy discovery study's current one)")
    ap.add_argument("--candidates", type=int, default=1000)
    ap.add_argument("--time-limit-min", type=float, default=15.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--population", type=int, default=50)
    ap.add_argument("--sample-size", type=int, default=10)
    ap.add_argument("--images", type=int, default=8, help="CamVid training images the proxy sees")
    ap.add_argument("--score-size", type=parse_size, default=(180, 240))
    ap.add_argument("--size", type=parse_size, default=(360, 480), help="deployment size (latency)")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--base-width", type=int, default=8)
    ap.add_argument("--groundtruth", default=str(GT_FILE))
    ap.add_argument("--gt-size", type=parse_size, default=(180, 240), help="ground truth's training size")
    ap.add_argument("--gt-minutes", type=float, default=2.0, help="ground truth's short budget (0: skip)")
    ap.add_argument("--gt-steps", type=int, default=0, help="place the winner in the step-budget ground truth "
                    "with this many steps instead (0: skip)")
    ap.add_argument("--gt-steps-files", nargs="+", default=None,
                    help="its files, training seeds 0, 1, ... in order (default: every benchmarks/groundtruth/data one of "
                         "that budget)")
    ap.add_argument("--inits", type=int, default=None, help="initializations per candidate (default: the proxy file's)")
    ap.add_argument("--final-inits", type=int, default=None,
                    help="rescore the 10 best over this many (default: the proxy file's when --inits is lower)")
    ap.add_argument("--final-steps", type=int, default=800, help="optimizer steps of each final training (0: none)")
    ap.add_argument("--train-seeds", type=int, default=2, help="final trainings, seeds 0, 1, ...")
    ap.add_argument("--holdout", default="0006R0", help="CamVid training sequence left out of the final trainings "
                    "and scored after them (cross-sequence mIoU, as in `segnas compare`; '' for none)")
    ap.add_argument("--final-minutes", type=float, default=0.0,
                    help="a CPU-time budget instead of --final-steps (machine- and load-dependent; 0: steps)")
    ap.add_argument("--reuse", default=None, help="run folder of a finished `segnas search saswot` job to train "
                    "(its earlier quiet-machine timing and step-budget placement in the result file are kept)")
    ap.add_argument("--device", default="cpu", help="where the final trainings compute (cuda: the same steps in fp32)")
    ap.add_argument("--retrain", default=None, metavar="NAME",
                    help="no search: give the winner of results/NAME.json the final trainings (--final-steps x "
                         "--train-seeds, --holdout) and add them to that result")
    ap.add_argument("--time", nargs="+", default=None, metavar="NAME",
                    help="no search: time the winners of results/NAME.json and Fast-SCNN in one session")
    ap.add_argument("--mode", choices=["evolution", "nsga2"], default="evolution",
                    help="evolution: maximize the proxy under the target; nsga2: proxy and latency (budget use)")
    ap.add_argument("--winner-rule", choices=["budget", "knee", "score"], default="budget",
                    help="nsga2: how the winner is picked from the Pareto front")
    ap.add_argument("--probe", default="fast_scnn",
                    help="latency table entries timed with this probe network (a host that changes speed by itself "
                         "gets its entries retimed in one state of the host); '' for none")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default="runs")
    ap.add_argument("--name", default="main", help="result id")
    args = ap.parse_args()
    if args.time:
        return time_winners(args.time, args.size)
    if not common.camvid_root().is_dir():
        sys.exit(f"CamVid not found at {common.camvid_root()} (set SEGNAS_CAMVID)")
    if args.retrain:
        return retrain(args)
    space = MultiResSpace(layers=args.layers, base_width=args.base_width)
    h, w = args.size
    run = Path(args.reuse) if args.reuse else Path(common.resumed_search(search_settings(args))["run_dir"])
    search = search_record(run)
    arch_file = run / "arch.json"
    arch = space.arch_from_dict(read_arch_file(arch_file)["arch"])
    net = space.build(arch, 11).eval()
    earlier = json.loads((RESULTS / f"{args.name}.json").read_text()) if args.reuse and \
        (RESULTS / f"{args.name}.json").is_file() else {}
    if earlier.get("run_dir") == str(run):  # keep the timing taken right after the (quiet) search
        measured = earlier["winner_measured_ms"]
    else:
        measured = measure_latency(net, (1, 3, h, w), "onnxruntime", 2, min_time_s=5.0).median_ms
    print(f"winner: predicted {search['predicted_latency_ms']:.2f} ms, measured {measured:.2f} ms "
          f"(target {args.target_ms} ms); {search['candidates_scored']} candidates in {search['seconds'] / 60:.1f} min")
    out = {
        "target_ms": args.target_ms, "size": [h, w], "proxy": search["proxy"], "run_dir": str(run),
        "space": {"name": space.name, "layers": args.layers, "base_width": args.base_width},
        "search": {k: search[k] for k in ("candidates_scored", "seconds", "rejected_infeasible", "duplicates",
                                          "stopped", "final_inits", "final_seconds", "settings", "mode", "budget_use",
                                          "winner_rule", "front_size", "finalists")}
        | {"candidates_per_minute": 60.0 * search["candidates_scored"] / max(search["seconds"], 1e-9),
           "best_proxy_score": search["proxy_score"], "final_proxy_score": search["final_proxy_score"]},
        "winner_predicted_ms": search["predicted_latency_ms"], "winner_measured_ms": measured,
        "winner_measured_at_search_ms": search["search_measured_ms"],
        "winner_vs_target": measured / args.target_ms - 1.0, "winner_params": count_parameters(net),
        "winner_gflops": count_flops(net, (1, 3, h, w)).gflops, "winner": arch.to_dict(),
        "complete": False,  # until every part asked for is in (each save below adds one)
    }
    common.save_result(args.name, out, RESULTS)

    if args.gt_minutes:
        records = load_groundtruth(args.groundtruth)
        data = data_section("camvid", None, args.gt_size, args.gt_size, 8)
        settings = {"data": data, "minutes": args.gt_minutes, "size": [h, w], "threads": 1, "seed": 0,
                    "out_dir": str(run / "groundtruth-budget")}
        gt = evaluate_arch(make_item(space, arch, settings))
        out["groundtruth_budget"] = {"minutes": args.gt_minutes, "val_miou": gt["val_miou"],
                                     **groundtruth_placement(records, args.target_ms, gt["val_miou"])}
        print(f"at the ground truth's {args.gt_minutes}-min budget: {100 * gt['val_miou']:.1f}% "
              f"(feasible ground truth: {out['groundtruth_budget']})")
        common.save_result(args.name, out, RESULTS)
    if args.gt_steps:
        files = [Path(f).name for f in gt_steps_files(args)]
        kept = earlier.get("groundtruth_steps") if earlier.get("run_dir") == str(run) else None
        same = kept and kept.get("steps") == args.gt_steps and kept.get("files") == files
        latency = LatencyModel.create("onnxruntime", args.size, args.target_ms, threads=2)  # the search job's table
        out["groundtruth_steps"] = kept if same else steps_placement(space, arch, args, latency, run)
        print(f"at the ground truth's {args.gt_steps}-step budget: {100 * out['groundtruth_steps']['val_miou']:.1f}% "
              f"(feasible ground truth: {out['groundtruth_steps']})")
        common.save_result(args.name, out, RESULTS)
    if args.final_steps and not args.final_minutes:
        out["final_training"] = final_training(arch_file, args)
    if args.final_minutes:
        result = train_job(train_config(args.final_minutes, args.out_dir, str(arch_file)), echo=print)
        out["training"] = {"run_dir": result.run_dir, "train_minutes": round(result.train_seconds / 60, 2),
                           "final_val_miou": round(result.final["val_miou"], 4),
                           "best_val_miou": round(result.best_miou, 4)}
        out["baselines_same_budget"] = common.baselines(args.final_minutes, cpu=common.machine()["cpu"])
        print(f"trained {out['training']['train_minutes']} min: val mIoU {100 * result.final['val_miou']:.1f}%")
        for name, b in sorted(out["baselines_same_budget"].items(), key=lambda x: x[1]["latency_ms"] or 0):
            print(f"  {name}: {100 * b['val_miou']:.1f}% at {b['latency_ms']} ms")
    path = common.save_result(args.name, {**out, "complete": True}, RESULTS)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
