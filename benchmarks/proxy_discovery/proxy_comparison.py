"""Every zero-cost proxy on one CamVid ground truth: the classic ones, the recent ones (ZiCo, MeCo,
SWAP, AZ-NAS's four), rank aggregates of them, and the discovered proxy, on the same held-out splits.

    python benchmarks/proxy_discovery/proxy_comparison.py --discovery d17

Reads the discovery result ``results/<discovery>.json`` for everything that defines the comparison:
its ground-truth files (networks and their mean val mIoU over training seeds), the images, size and
initialization seed the proxies score on, and its split seeds (``split_indices`` of the same
networks). Each proxy is scored on every network's untrained weights at ``--inits`` initializations
(seeds ``seed ..``; default 1) and averaged; classic scores come from ``proxies_camvid.py``'s cache,
recent ones are cached beside them (a killed run resumes). SWAP counts distinct activation patterns
and saturates at 2^images on the 8 images the others see, so it is also scored on ``--swap-images``
(default 32). The rank aggregates rank all the ground-truth networks together (no labels are used);
Kendall τ-b and Spearman ρ are then taken on each split's held-out networks, like every other
proxy. The selected aggregates are chosen on each split's training networks (greedy forward
selection over every single proxy, either direction, up to 4) and scored on its held-out ones, as
discovery is. The discovered proxy's row is the discovery result's own (scored at its own initializations).

Saves ``results/compare_<discovery>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from proxies_camvid import CLASSIC, RESULTS, SCORES, proxy_scores, correlations  # noqa: E402

from segnas.evaluate.records import load_groundtruth_runs  # noqa: E402
from segnas.jobs.proxy import proxy_batches  # noqa: E402
from segnas.metrics.ranking import split_indices  # noqa: E402
from segnas.proxies.aggregate import aggregate_ranks  # noqa: E402
from segnas.proxies.az_nas import AZ_PROXIES  # noqa: E402

#: The recent proxies (2023–2024); AZ-NAS's complexity term is FLOPs, the classic ``flops``.
RECENT = ("zico", "meco", "swap", "az_expressivity", "az_progressivity", "az_trainability")
#: Rank aggregates reported (name: components, kind).
AGGREGATES: dict[str, tuple[tuple[str, ...], str]] = {
    "az_nas": (tuple(AZ_PROXIES), "log"),
    "rank_log(zico,meco,swap_many)": (("zico", "meco", "swap_many"), "log"),
    "rank_log(recent)": (("zico", "meco", "swap_many", "az_expressivity", "az_progressivity", "az_trainability"), "log"),
    "rank_mean(recent)": (("zico", "meco", "swap_many", "az_expressivity", "az_progressivity", "az_trainability"),
                          "mean"),
    "rank_log(grasp,zico,meco)": (("grasp", "zico", "meco"), "log"),
}


def select_aggregate(columns: dict[str, list[float]], mious: list[float], train: list[int], kind: str,
                     most: int = 4) -> tuple[list[str], list[str]]:
    """Greedy forward selection of a rank aggregate on the training networks only: add the proxy (in
    either direction: several rank backwards here) that raises the aggregate's Kendall τ on ``train``
    most, up to ``most`` proxies, while τ rises. Returns (chosen names, those ranked lower-is-better):
    the aggregate a user could pick from the networks discovery learns from."""
    chosen: list[str] = []
    lower: list[str] = []
    best = -np.inf
    while len(chosen) < most:
        step = None
        for name in columns:
            if name in chosen:
                continue
            for backwards in (False, True):
                parts = {p: columns[p] for p in [*chosen, name]}
                flipped = [*lower, name] if backwards else lower
                tau = correlations(aggregate_ranks(parts, kind, lower_is_better=flipped), mious, train)["kendall_tau"]
                if np.isfinite(tau) and tau > best + 1e-9:
                    best, step = tau, (name, backwards)
        if step is None:
            break
        chosen.append(step[0])
        if step[1]:
            lower.append(step[0])
    return chosen, lower


def scores_at(records: list[dict], batches: list, num_classes: int, seeds: list[int], space: str,
              names: tuple[str, ...], suffix: str = "") -> dict[str, tuple[list[float], float]]:
    """Each proxy of ``names`` per network (mean over ``seeds``) and its mean seconds per network."""
    rows = [proxy_scores(records, batches, num_classes, s, SCORES / f"proxy_scores_{space}_camvid.jsonl", names)
            for s in seeds]
    return {n + suffix: ([float(np.mean([init[i][n] for init in rows])) for i in range(len(records))],
                         len(seeds) * float(np.mean([r[f"{n}_s"] for r in rows[0]]))) for n in names}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--discovery", default="d17", help="the discovery result whose ground truth and splits are used")
    ap.add_argument("--inits", type=int, default=1, help="initializations each proxy score is averaged over")
    ap.add_argument("--swap-images", type=int, default=32, help="images SWAP also scores on (it saturates at 2^images)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--results-dir", default=str(RESULTS))
    args = ap.parse_args()
    disc = json.loads((RESULTS / f"{args.discovery}.json").read_text())
    st = disc["settings"]
    files = [str(common.BENCHMARKS.parent / f) for f in disc["groundtruth"]]
    records = load_groundtruth_runs(files)
    space = records[0]["space"]
    mious = [float(r["val_miou"]) for r in records]
    root = args.data_root or str(common.camvid_root())
    size = tuple(st["size"])
    batches, num_classes = proxy_batches("camvid", root, "train", st["images"], 8, size, st["seed"])
    many, _ = proxy_batches("camvid", root, "train", args.swap_images, 8, size, st["seed"])
    seeds = [st["seed"] + j for j in range(args.inits)]
    print(f"{len(records)} networks, {args.inits} initialization(s), {st['images']} images at {size[0]}x{size[1]}")
    columns = {**scores_at(records, batches, num_classes, seeds, space, CLASSIC),
               **scores_at(records, batches, num_classes, seeds, space, RECENT),
               **scores_at(records, many, num_classes, seeds, space, ("swap",), "_many")}
    columns["az_complexity"] = columns["flops"]
    for name, (parts, kind) in AGGREGATES.items():
        columns[name] = (aggregate_ranks({p: columns[p][0] for p in parts}, kind),  # type: ignore[arg-type]
                         sum(columns[p][1] for p in parts))
    parts = [split_indices(len(records), st["train_fraction"], s["split_seed"]) for s in disc["splits"]]
    single = {n: v for n, (v, _) in columns.items() if n not in AGGREGATES and n not in ("az_complexity", "swap")}
    selected = {}
    for kind in ("log", "mean"):
        name = f"rank_{kind}(selected on each split's training networks)"
        splits = []
        for train, held in parts:
            chosen, lower = select_aggregate(single, mious, train, kind)
            values = aggregate_ranks({p: single[p] for p in chosen}, kind, lower_is_better=lower)
            splits.append({"components": chosen, "lower_is_better": lower, **correlations(values, mious, held)})
        selected[name] = splits
    table = []
    for name, splits in selected.items():
        taus = [c["kendall_tau"] for c in splits]
        table.append({"proxy": name, "kind": "selected rank aggregate", "mean_tau": float(np.nanmean(taus)),
                      "std_tau": float(np.nanstd(taus)), "min_tau": float(np.nanmin(taus)),
                      "mean_rho": float(np.nanmean([c["spearman_rho"] for c in splits])),
                      "seconds_per_net": round(float(np.mean([sum(columns[p][1] for p in c["components"])
                                                              for c in splits])), 3),
                      "per_split": splits})
    for name, (values, seconds) in columns.items():
        if name == "az_complexity":  # the flops row
            continue
        per_split = [correlations(values, mious, held) for _, held in parts]
        taus = [c["kendall_tau"] for c in per_split]
        table.append({"proxy": name, "kind": kind_of(name), "mean_tau": float(np.nanmean(taus)),
                      "std_tau": float(np.nanstd(taus)), "min_tau": float(np.nanmin(taus)),
                      "mean_rho": float(np.nanmean([c["spearman_rho"] for c in per_split])),
                      "seconds_per_net": round(seconds, 3)})
    found = next(r for r in disc["table"] if r["proxy"] == "discovered")
    taus = [s["held_out"]["discovered"]["kendall_tau"] for s in disc["splits"]]
    table.append({"proxy": "discovered", "kind": "discovered", "mean_tau": found["mean_tau_over_splits"],
                  "std_tau": found["std_tau_over_splits"], "min_tau": float(min(taus)),
                  "mean_rho": found["mean_rho_over_splits"], "seconds_per_net": found["seconds_per_net"],
                  "inits": st["inits"]})
    table.sort(key=lambda r: -r["mean_tau"])
    for r in table:
        print(f"{r['proxy']:32s} τ {r['mean_tau']:+.3f} ± {r['std_tau']:.3f} (min {r['min_tau']:+.3f})  "
              f"ρ {r['mean_rho']:+.3f}  {r['seconds_per_net']:.2f} s/net")
    path = common.save_result(f"compare_{args.discovery}", {
        "discovery": args.discovery, "groundtruth": disc["groundtruth"], "networks": len(records), "space": space,
        "settings": {"images": st["images"], "swap_images": args.swap_images, "size": list(size), "seed": st["seed"],
                     "inits": args.inits, "split_seeds": [s["split_seed"] for s in disc["splits"]],
                     "train_fraction": st["train_fraction"]},
        "aggregates": {n: {"components": list(p), "kind": k} for n, (p, k) in AGGREGATES.items()},
        "table": table}, args.results_dir)
    print(f"saved {path}")


def kind_of(name: str) -> str:
    if name in CLASSIC:
        return "classic"
    if name in AGGREGATES:
        return "rank aggregate"
    return "recent"


if __name__ == "__main__":
    main()
