"""GAS on CamVid on this CPU: the GCN-guided module (GGM) on vs off from one pre-trained supernet.

Both searches have the same search budget; both derived networks are measured against the target
and trained with the same step budget and two training seeds.

    python benchmarks/gas/gas_camvid.py [--target-ms T] [--pretrained RUN] [--final-steps 800]
    python benchmarks/gas/gas_camvid.py --reuse OFF_RUN ON_RUN        # report and train finished searches
    python benchmarks/gas/gas_camvid.py --smoke --results-dir /tmp/r  # a seconds-long check on synthetic data

Searches on whole training images resized to --search-size (120x160: a quarter of 480x360 on each
side, as the FasterSeg and SSR benchmarks); latencies are those of --size (360x480) on ONNX Runtime
with 2 threads, from the operator table. The space is ``cells`` with its defaults (7 cells over
1/4 → 1/32, 3 nodes of 2 edges each, 8 operators). The space's learned latency correction is
calibrated first (32 measured networks, cached); the target defaults to --target-fraction of the
way from the fastest to the slowest network whose edges all carry one operator, as predicted (corrected).
Each search adapts λ on the corrected prediction of its derived networks.

Run "off" (GGM off) pre-trains the supernet (or starts from --pretrained) and searches; run "on"
(GGM on) starts its search from the same pre-trained supernet (``gas.pretrained``) with the same
seed, epochs and λ. (The GGM adds nothing while α is uniform, so pre-training would be the same
with it on anyway.) For each derived network: predicted (table, corrected) and measured latency vs the target,
parameters, GFLOPs, distinct cells, cells that differ from the other run's, the architecture
itself (both networks timed again in one interleaved session at the end); then training from scratch with train_camvid.py's recipe for --final-steps optimizer steps
at batch 8 (fp32: the same on every CPU), once per training seed, val mIoU mean ± std.
Saves <results-dir>/<name>.json (default benchmarks/gas/results/gas_camvid.json). The same command
again reads back the finished searches of the same settings under --out-dir, continues a cut one
and each cut training (a killed run redoes nothing it finished).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import camvid_root, results_dir, resumed_search, save_result  # noqa: E402
from train_camvid import SMOKE_DATA, train_seeds  # noqa: E402

from segnas.config.search import SearchSettings  # noqa: E402
from segnas.cost import LatencyModel  # noqa: E402
from segnas.cost.latency import measure_latency_interleaved  # noqa: E402
from segnas.jobs.search import settings_class  # noqa: E402
from segnas.spaces import read_arch_file  # noqa: E402
from segnas.spaces.cells import CellsArch, CellsSpace, Edge  # noqa: E402
from segnas.zoo import build_model  # noqa: E402

#: The smoke mode's space: seconds per search on synthetic images (``SMOKE_DATA``).
SMOKE_SPACE = {"layout": [1, 1, 1, 1], "channels": [4, 8, 8, 8], "nodes": 2, "stem_channels": 4, "decoder_width": 8}


#: Command-line options: flag, type, default, help.
OPTIONS: list[tuple[str, type, object, str | None]] = [
    ("--size", str, "360x480", "deployment size the latency is for"),
    ("--search-size", str, "120x160", "whole training images resized to this for the search"),
    ("--target-ms", float, None, "latency target (default: see --target-fraction)"),
    ("--target-fraction", float, 0.4, "default target: this far from the fastest to the slowest one-operator network"),
    ("--pretrain-epochs", int, 10, None),
    ("--search-epochs", int, 20, None),
    ("--arch-lr", float, 3e-3, None),
    ("--latency-weight", float, 0.5, "starting λ (adapted per epoch)"),
    ("--ggm-gamma", float, 0.5, None),
    ("--pretrained", str, None, "search run whose pre-trained supernet both searches start from (skips pre-training)"),
    ("--final-steps", int, 800, "optimizer steps of each final training (0: none)"),
    ("--train-seeds", int, 2, "final trainings per network (seeds 0, 1, ...)"),
    ("--seed", int, 0, "search seed"),
    ("--backend", str, "onnxruntime", None),
    ("--threads", int, 2, None),
    ("--out-dir", str, "runs", "parent folder of the run directories"),
    ("--results-dir", str, str(results_dir(__file__)), "where the result file goes"),
    ("--name", str, "gas_camvid", "result file name"),
]


def space_range(space: CellsSpace, latency: LatencyModel, classes: int) -> tuple[float, float]:
    """Predicted latency of the fastest and the slowest network whose edges all carry one operator
    (node i reading states 0 and i + 1)."""
    archs = [space.make_arch([tuple(tuple(Edge(op, s) for s in sorted({0, i + 1})[:space.kept(i)])
                                    for i in range(space.nodes))] * space.num_cells) for op in space.choices]
    latency.ensure([k for a in archs for k in space.latency_keys(a, classes, latency.size)])
    times = [latency.predict(space, a, classes) for a in archs]
    return min(times), max(times)


def base_settings(args: argparse.Namespace) -> dict:
    data = SMOKE_DATA if args.smoke else {"name": "camvid", "root": str(camvid_root()), "crop_size": args.size,
                                          "scale": [0.75, 1.5], "batch_size": 8}
    latency = {"target_ms": args.target_ms, "size": args.size, "backend": args.backend, "threads": args.threads,
               "calibration_networks": 32}
    if args.smoke:
        latency.update(table_min_runs=2, table_min_time_s=0.0, calibration_networks=0)
    return {"method": "gas", "job": f"bench-{args.name.replace('_', '-')}", "data": data, "latency": latency,
            "search_size": None if args.smoke else args.search_size, "final": {"epochs": 0}, "threads": args.threads,
            "seed": args.seed, "out_dir": args.out_dir, "progress": not args.smoke,
            "gas": {"space": SMOKE_SPACE if args.smoke else {}, "pretrain_epochs": args.pretrain_epochs,
                    "search_epochs": args.search_epochs, "arch_lr": args.arch_lr,
                    "latency_weight": args.latency_weight, "ggm_gamma": args.ggm_gamma}}


def settings(data: dict) -> SearchSettings:
    return settings_class("gas").model_validate(data)


def figures(summary: dict) -> dict:
    """One search's result fields from its summary (``search_result.json``) and run directory."""
    run = Path(summary["run_dir"])
    net = summary["networks"]["arch"]
    keep = ("phase", "epoch", "epoch_s", "lambda", "expected_latency_ms", "derived_latency_ms", "distinct_cells",
            "ggm_shift", "on_target")
    records = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    trace = [{k: r[k] for k in keep if k in r} for r in records]
    arch = read_arch_file(run / "arch.json")
    return {"run_dir": str(run), "search_seconds": summary["search_wall_seconds"],
            "search_cpu_seconds": summary["search_cpu_seconds"],
            "epoch_seconds_sum": round(sum(r.get("epoch_s", 0.0) for r in trace), 1),  # whole search, resumed or not
            **{k: net.get(k) for k in ("predicted_ms", "predicted_table_ms", "measured_ms", "latency_vs_target", "params",
                                       "gflops")},
            **{k: summary["details"][k] for k in ("ggm", "picked", "distinct_cells", "cell_changes", "lambda")},
            "arch": arch["arch"], "trace": trace}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, kind, default, text in OPTIONS:
        ap.add_argument(flag, type=kind, default=default, help=text)
    ap.add_argument("--reuse", nargs=2, metavar=("OFF_RUN", "ON_RUN"), default=None,
                    help="finished GGM-off and GGM-on search runs to report and train instead of searching")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny synthetic data and space, a few epochs and steps: checks the script, measures nothing")
    args = ap.parse_args()
    if args.smoke:
        args.size, args.pretrain_epochs, args.search_epochs, args.arch_lr = "64x96", 1, 2, 0.05
        args.final_steps = min(args.final_steps, 4)
        args.name = args.name if args.name != "gas_camvid" else "gas_camvid_smoke"
    elif not camvid_root().is_dir():
        sys.exit(f"CamVid not found at {camvid_root()} (set SEGNAS_CAMVID)")
    base = base_settings(args)
    cfg = settings(base)
    latency = LatencyModel.from_settings(cfg.latency, cfg.deployment_size(), cfg.threads)
    classes = 11
    space = CellsSpace(**base["gas"]["space"])
    if cfg.latency.calibration_networks:
        latency.calibrate(space, classes, cfg.latency.calibration_networks, echo=print)
    lo, hi = space_range(space, latency, classes)
    target = args.target_ms or round(lo + args.target_fraction * (hi - lo), 2)
    base["latency"]["target_ms"] = latency.target_ms = target
    print(f"one-operator networks {lo:.2f}–{hi:.2f} ms; target {target} ms")

    runs: dict[str, dict] = {}
    for name, ggm in (("off", False), ("on", True)):
        job = f"{base['job']}-{name}"
        if args.reuse:
            run_dir = args.reuse[0 if name == "off" else 1]
            summary = {**json.loads((Path(run_dir) / "search_result.json").read_text()), "run_dir": run_dir}
        else:
            pretrained = args.pretrained or (runs["off"]["run_dir"] if name == "on" else None)
            section = {**base["gas"], "ggm": ggm, "pretrained": pretrained}
            summary = resumed_search(settings({**base, "job": job, "gas": section}), latency)
        runs[name] = figures(summary)
    archs = {n: CellsArch.from_dict(r["arch"]) for n, r in runs.items()}
    differ = sum(a != b for a, b in zip(archs["off"].cells, archs["on"].cells))
    # Both networks (and Fast-SCNN, a reference) timed again in one interleaved session (each search
    # timed its own network at its end, in whatever load the machine had then): the latencies
    # reported below, beside what this run's latency model (its table and correction: fresh ones
    # when SEGNAS_CACHE points at an empty folder) predicts for them now. A table measured when the
    # machine ran at another speed predicts another machine: compare predictions and measurements
    # of one window.
    nets = {n: space.build(a, classes) for n, a in archs.items()} | {"fast_scnn": build_model("fast_scnn", classes)}
    session = measure_latency_interleaved(nets, latency.input_shape, latency.backend, latency.threads, min_runs=30,
                                          min_time_s=6.0)
    for name, r in runs.items():
        r["measured_at_search_end_ms"] = r.get("measured_at_search_end_ms", r["measured_ms"])
        r["measured_ms"] = session[name].median_ms
        r["latency_vs_target"] = r["measured_ms"] / target - 1.0
        r["predicted_now_ms"] = latency.predict(space, archs[name], classes)
        r["predicted_table_now_ms"] = latency.predict_table(space, archs[name], classes)
    for name, r in runs.items():
        if args.final_steps:
            r.update(train_seeds(str(Path(r["run_dir"]) / "arch.json"), args.out_dir, args.final_steps,
                                 args.train_seeds, args.smoke))
    out = {"target_ms": target, "one_operator_range_ms": [lo, hi], "settings": vars(args),
           "fast_scnn_measured_ms": session["fast_scnn"].median_ms,
           "latency": f"{latency.backend}, {latency.threads} threads, {cfg.deployment_size()}",
           "final_training": {"steps": args.final_steps, "batch_size": base["data"]["batch_size"], "precision": "fp32",
                              "seeds": list(range(args.train_seeds))},
           "search_wall_hours_both_runs": round(sum(r["search_seconds"] for r in runs.values()) / 3600, 3),
           "cells_differing_between_runs": differ, "runs": runs}
    path = save_result(args.name, out, args.results_dir)
    for name, r in runs.items():
        print(f"GGM {name}: search {r['search_seconds'] / 60:.1f} min; {r['measured_ms']:.2f} ms measured, "
              f"{r['predicted_now_ms']:.2f} predicted now ({r['predicted_table_now_ms']:.2f} by the table alone; "
              f"{r['predicted_ms']:.2f} during the search) vs target {target} ms "
              f"({100 * r['latency_vs_target']:+.1f}%); "
              f"{r['params'] / 1e6:.2f} M params, {r['gflops']:.2f} GFLOPs; {r['distinct_cells']} distinct cells; "
              f"val mIoU {r.get('val_miou_mean')} ± {r.get('val_miou_std')}")
    print(f"Fast-SCNN in the same session: {out['fast_scnn_measured_ms']:.2f} ms")
    print(f"cells that differ between the two networks: {differ} of {len(archs['on'].cells)}; saved {path}")


if __name__ == "__main__":
    main()
