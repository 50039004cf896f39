"""Proxy discovery against a null: what τ does it reach on the training networks when their mIoU is
shuffled, i.e. when there is nothing to find?

    python benchmarks/proxy_discovery/proxy_discovery_null.py --groundtruth benchmarks/groundtruth/data/groundtruth_multires_camvid.jsonl

Genetic programming tries thousands of expressions and keeps the one with the highest Kendall τ on
~30 training networks, where a single τ has a standard error of about 0.13. The best of many
therefore scores well by chance alone. For each of ``--splits`` random splits (the same splits and
settings as ``proxies_camvid.py``) this runs discovery once on the real mIoU and ``--shuffles``
times on randomly permuted mIoU, and reports train and held-out τ of each. A discovery that has
found real signal reaches a train τ above the shuffled runs' and keeps a held-out τ above 0;
one that has only fitted noise does neither. ``--cv-folds`` runs the cross-validated discovery of
``proxies_camvid.py --cv-folds`` instead (the shuffled runs cross-validate on shuffled mIoU too).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402
from proxies_camvid import discovery_arguments, run_discoveries, split_seeds  # noqa: E402

from segnas.jobs.proxy import proxy_batches  # noqa: E402
from segnas.proxies.discovery import DiscoveredProxy, layer_stats  # noqa: E402
from segnas.evaluate.records import load_groundtruth_runs, untrained_net  # noqa: E402
from segnas.metrics.ranking import rank_correlations, split_indices  # noqa: E402


def main() -> None:
    ap = discovery_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--shuffles", type=int, default=3, help="shuffled-mIoU discoveries per split")
    ap.add_argument("--name", default="null", help="result id")
    args = ap.parse_args()

    records = load_groundtruth_runs(args.groundtruth)
    batches, num_classes = proxy_batches("camvid", args.data_root or str(common.camvid_root()), "train",
                                         args.images, args.batch_size, args.size, args.seed)
    stats = [layer_stats(untrained_net(r, num_classes, args.seed), batches, seed=args.seed) for r in records]
    mious = [float(r["val_miou"]) for r in records]
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    seeds = split_seeds(args)
    parts = [split_indices(len(records), args.train_fraction, seed) for seed in seeds]
    jobs = []  # per split: the real mIoU, then --shuffles permutations of it
    for k, (train, held) in enumerate(parts):
        real = [mious[i] for i in train]
        for targets in [real] + [rng.permutation(real).tolist() for _ in range(args.shuffles)]:
            jobs.append({"train": train, "targets": targets, "seed": seeds[k]})
    found = iter(run_discoveries(jobs, stats, records, args))

    def outcome(found_proxy: DiscoveredProxy, held: list[int]) -> dict:
        """Train τ (against the targets it was discovered on) and held-out τ (against the real mIoU)."""
        values = [found_proxy.evaluate(stats[i]) for i in held]
        return {"train_tau": found_proxy.train_tau, "expression": found_proxy.expression,
                "held_out_tau": rank_correlations(values, [mious[i] for i in held])["kendall_tau"]}

    rows = []
    for k, (train, held) in enumerate(parts):
        real = outcome(next(found), held)
        shuffled = [outcome(next(found), held) for _ in range(args.shuffles)]
        rows.append({"split_seed": seeds[k], "real": real, "shuffled": shuffled})
        null_train = ", ".join(f"{s['train_tau']:+.3f}" for s in shuffled)
        null_held = ", ".join(f"{s['held_out_tau']:+.3f}" for s in shuffled)
        print(f"split {k}: real train τ {real['train_tau']:+.3f} held-out {real['held_out_tau']:+.3f}; shuffled "
              f"train τ {null_train}, held-out {null_held}", flush=True)

    def summary(key: str) -> dict:
        real = [r["real"][key] for r in rows]
        null = [s[key] for r in rows for s in r["shuffled"]]
        return {"real_mean": float(np.mean(real)), "real_std": float(np.std(real)),
                "shuffled_mean": float(np.mean(null)), "shuffled_std": float(np.std(null)),
                "shuffled_max": float(np.max(null))}

    out = {"groundtruth": [common.relative(p) for p in args.groundtruth], "networks": len(records),
           "settings": {k: getattr(args, k) for k in ("images", "train_fraction", "splits", "shuffles", "population",
                                                      "generations", "seed", "cv_folds", "workers")}
           | {"size": list(args.size)},
           "discovery_seconds": round(time.perf_counter() - t0, 1),
           "train_tau": summary("train_tau"), "held_out_tau": summary("held_out_tau"), "splits": rows}
    path = common.save_result(args.name, out, common.results_dir(__file__))
    t, h = out["train_tau"], out["held_out_tau"]
    print(f"train τ: real {t['real_mean']:+.3f}±{t['real_std']:.3f}, shuffled {t['shuffled_mean']:+.3f}±"
          f"{t['shuffled_std']:.3f}; held-out τ: real {h['real_mean']:+.3f}, shuffled {h['shuffled_mean']:+.3f}; "
          f"saved {path}")


if __name__ == "__main__":
    main()
