"""SSR on CamVid on this CPU: search with the SSR loss and shrinking, the same search without the
SSR loss (the discretization-gap ablation), then the found network trained.

    python benchmarks/ssr/ssr_camvid.py [--target-ms T] [--final-steps 800] [--pretrained RUN]

Search on whole training images resized to --search-size (120x160: a quarter of 480x360 on each
side); latencies are those of --size on ONNX Runtime, 2 threads, from the operator table. The
space is SSR's joint space at reduced width for a 2-core CPU (stages of 32 and 64 channels with
3 and 5 slots; dilations 1, 2, 4, 8; full or half resolution; fact or dwfact blocks; widths 1,
0.75, 0.5 of the stage). The target defaults to 40% of the way from the cheapest to the most
expensive network of the space, as predicted by the table. Architecture Adam at LR 0.1, 50x the
released 2e-3, because a CPU search epoch here has ~25 architecture steps where the paper's have
hundreds; L2 decay of α 1e-5 (the released 1e-3 on a loss scaled by 100).

Run A uses the SSR loss; run B starts from A's pre-trained supernet with the SSR loss off, same
seed and epoch cap. Both log, per search epoch, the val mIoU of the soft supernet and of its
argmax network on the same weights (the discretization gap), seconds per epoch and the candidates
left. A's network is then trained with benchmarks/training/train_camvid.py's recipe for --final-steps
optimizer steps with --train-seeds seeds (the equal-steps comparison of the training study), or with
--final-minutes for a CPU-time budget instead. Saves results/<name>.json with both architectures.
The same command again reads back each finished search of the same settings and continues a cut one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import camvid_root, results_dir, resumed_search, save_result  # noqa: E402
from train_camvid import config as train_config, train_seeds  # noqa: E402

from segnas.config.search import SearchSettings  # noqa: E402
from segnas.cost import LatencyModel  # noqa: E402
from segnas.jobs import train_job  # noqa: E402
from segnas.jobs.search import settings_class  # noqa: E402
from segnas.search.strategies.ssr import joint_space  # noqa: E402
from segnas.spaces import read_arch_file  # noqa: E402
from segnas.spaces.joint import Candidate  # noqa: E402

SPACE = {"channels": [32, 64], "slots": [3, 5], "stem_channels": 16, "decoder_width": 32,
         "dilations": [1, 2, 4, 8], "width_ratios": [1.0, 0.75, 0.5]}


def space_range(cfg: SearchSettings, classes: int = 11) -> tuple[float, float]:
    """Predicted latency of the cheapest (all skip) and most expensive network of the space."""
    space = joint_space(cfg.ssr.space)
    latency = LatencyModel.from_settings(cfg.latency, cfg.deployment_size(), cfg.threads)
    widest = [space.make_arch([[cand.slot(space.widths(s)[0], space.widths(s)[0])] * n
                               for s, n in enumerate(space.slots)]) for cand in space.candidates()[1:]]
    cheapest = space.make_arch([[Candidate("skip").slot()] * n for n in space.slots])
    latency.ensure([k for arch in [cheapest, *widest] for k in space.latency_keys(arch, classes, latency.size)])
    return (latency.predict(space, cheapest, classes),
            max(latency.predict(space, arch, classes) for arch in widest))


def figures(summary: dict) -> dict:
    """A search job's summary (``search_result.json``) as this benchmark's per-run fields (a run of
    the former SSR job already has them)."""
    if "networks" not in summary:
        return summary
    arch = summary["networks"]["arch"]
    return {"search_seconds": summary["search_wall_seconds"], "search_cpu_seconds": summary["search_cpu_seconds"],
            "converged": summary["details"]["converged"], **{k: summary[k] for k in ("size", "backend", "target_ms")},
            **{k: arch[k] for k in ("measured_ms", "latency_vs_target", "params", "gflops")},
            "run_dir": summary["run_dir"]}


def settings(data: dict) -> SearchSettings:
    """The search job's settings of this benchmark (a hook for smoke runs on other data)."""
    return settings_class("ssr").model_validate(data)


def trace(run_dir: Path) -> list[dict]:
    keep = ("phase", "epoch", "epoch_s", "soft_miou", "argmax_miou", "gap", "expected_cost", "derived_latency_ms",
            "active_ops", "active_mid", "active_out", "single")
    return [{k: r[k] for k in keep if k in r} for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="360x480")
    ap.add_argument("--search-size", default="120x160")
    ap.add_argument("--target-ms", type=float, default=None)
    ap.add_argument("--pretrain-epochs", type=int, default=1)
    ap.add_argument("--search-epochs", type=int, default=12, help="cap; the search ends once the space is one network")
    ap.add_argument("--arch-lr", type=float, default=0.1)
    ap.add_argument("--final-steps", type=int, default=800, help="optimizer steps of each final training (0: none)")
    ap.add_argument("--train-seeds", type=int, default=2, help="final trainings, seeds 0, 1, ...")
    ap.add_argument("--final-minutes", type=float, default=0.0,
                    help="a CPU-time budget instead of --final-steps (machine- and load-dependent; 0: steps)")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-dir", default="runs")
    ap.add_argument("--name", default="main", help="result id")
    ap.add_argument("--pretrained", default=None,
                    help="search run whose pre-trained supernet run A starts from (skips pre-training)")
    ap.add_argument("--reuse", nargs=2, metavar=("SSR_RUN", "NO_SSR_RUN"), default=None,
                    help="finished search runs to report and train instead of searching again")
    ap.add_argument("--lr", type=float, default=0.08, help="final training LR (train_camvid.py's recipe: 0.08)")
    ap.add_argument("--clip-grad-norm", type=float, default=5.0, help="final training only")
    args = ap.parse_args()
    base = {"method": "ssr", "job": f"bench-{args.name.replace('_', '-')}",
            "data": {"name": "camvid", "root": str(camvid_root()), "crop_size": args.size, "scale": [0.75, 1.5],
                     "batch_size": 8},
            "latency": {"target_ms": args.target_ms, "size": args.size, "backend": args.backend,
                        "threads": args.threads},
            "search_size": args.search_size, "final": {"epochs": 0}, "bf16": True, "threads": args.threads,
            "out_dir": args.out_dir,
            "ssr": {"space": SPACE, "pretrain_epochs": args.pretrain_epochs, "search_epochs": args.search_epochs,
                    "arch_lr": args.arch_lr, "pretrained": args.pretrained}}
    lo, hi = space_range(settings(base))
    target = args.target_ms or round(lo + 0.4 * (hi - lo), 1)
    print(f"space latency range {lo:.1f}–{hi:.1f} ms; target {target} ms")
    base["latency"]["target_ms"] = target
    runs = {}
    for name, update in (("ssr", {}), ("no_ssr", {"ssr_weights": [0, 0, 0]})):
        if name == "no_ssr":
            update["pretrained"] = args.pretrained or runs["ssr"]["run_dir"]
        if args.reuse:
            run_dir = args.reuse[0] if name == "ssr" else args.reuse[1]
            summary = {**json.loads((Path(run_dir) / "search_result.json").read_text()), "run_dir": run_dir}
        else:
            job = base["job"] + ("-off" if name == "no_ssr" else "")
            summary = resumed_search(settings({**base, "job": job, "ssr": {**base["ssr"], **update}}))
        summary = figures(summary)
        found = read_arch_file(Path(summary["run_dir"]) / "arch.json")
        runs[name] = {**summary, "trace": trace(Path(summary["run_dir"])),
                      "arch_predicted_ms": found["predicted_latency_ms"], "space": found["space"], "arch": found["arch"]}
    searches = {n: [r for r in runs[n]["trace"] if r["phase"] == "search"] for n in runs}
    k = min(len(v) for v in searches.values())
    out = {"target_ms": target, "space_latency_range_ms": [lo, hi], "settings": vars(args), "space": SPACE,
           "runs": runs,
           "gap_at_equal_epochs": {"epoch": k, **{n: searches[n][k - 1].get("gap") for n in searches}},
           "final_gap": {n: searches[n][-1].get("gap") for n in searches}}
    arch = Path(runs["ssr"]["run_dir"]) / "arch.json"
    optim = {"clip_grad_norm": args.clip_grad_norm, "lr": args.lr}
    if args.final_steps and not args.final_minutes:
        runs["ssr"].update(train_seeds(str(arch), args.out_dir, args.final_steps, args.train_seeds, optim=optim))
        out["final_training"] = {"steps": args.final_steps, "batch_size": 8, "precision": "fp32",
                                 "seeds": list(range(args.train_seeds)), **optim}
    if args.final_minutes:
        cfg = train_config(args.final_minutes, args.out_dir, str(arch))
        cfg.optim.clip_grad_norm = args.clip_grad_norm
        cfg.optim.lr = args.lr
        result = train_job(cfg, echo=print)
        out["training"] = {"run_dir": result.run_dir, "clip_grad_norm": args.clip_grad_norm, "lr": args.lr,
                           "train_minutes": round(result.train_seconds / 60, 2),
                           "final_val_miou": round(result.final["val_miou"], 4),
                           "best_val_miou": round(result.best_miou, 4)}
    path = save_result(args.name, out, results_dir(__file__))
    a = runs["ssr"]
    print(f"SSR: search {a['search_seconds'] / 60:.1f} min, converged {a['converged']}; network "
          f"{a['measured_ms']:.2f} ms vs target {target} ms ({100 * a['latency_vs_target']:+.1f}%); "
          f"val mIoU {out.get('training', {}).get('final_val_miou') or a.get('val_miou_mean')}")
    for n, rows in searches.items():
        print(f"  {n}: epoch s {[r['epoch_s'] for r in rows]}; gap {[round(r.get('gap', 0), 4) for r in rows]}")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
