"""Zero-cost proxies against CamVid ground truth: every classic proxy and a discovered one, ranked
against trained val mIoU on a held-out split.

    python benchmarks/proxy_discovery/proxies_camvid.py            # after benchmarks/groundtruth/proxy_groundtruth.py

Each ground-truth network (``benchmarks/groundtruth/data/groundtruth_<space>_camvid.jsonl``) is built untrained
with initialization seed ``--seed`` and scored by every registered proxy on ``--images`` fixed
CamVid training images at ``--size``; its per-layer statistics are measured on the same images.
Scores are cached in ``benchmarks/proxy_discovery/data/proxy_scores_<space>_camvid.jsonl`` (a killed run resumes;
``--scores-only`` fills the cache while the ground truth is still growing).

The architectures are split at random (``--train-fraction``, seed ``--seed``) into a training part,
on which DEAP's genetic programming evolves a proxy expression (``segnas proxy discover``'s
algorithm), and a held-out part on which Kendall τ-b and Spearman ρ of every proxy are reported.
Because a held-out τ on ~30 networks is noisy (±0.1), discovery is repeated on ``--splits``
different random splits; the table gives split 0 and the mean over splits. With ``--cv-folds K``
each split's discovery first picks its size penalty (parsimony) by K-fold cross-validation on its
training networks only (``segnas.proxies.cross_validation``), then evolves on all of them. With
``--members K`` each split evolves K expressions (other seeds) and the discovered proxy is their
ensemble (``segnas.proxies.ensemble``); member 0 alone is the ``discovered_single`` row. With
``--inits R`` every proxy, classic and discovered, is scored as its mean over R weight
initializations (a network's score at one draw of weights is itself noisy); discovery evolves on
the first initialization's statistics, which keeps its cost, or with ``--evolve-on-inits`` on the
mean over all R (R times the evolution time). Signs
are as the proxies define them (higher = predicted better): a proxy that ranks backwards gets a negative τ.
With ``--extra-train`` further networks, trained fewer times than the ``--groundtruth`` ones (e.g. the
networks of the seed-0 file that have no repeats), join every split's training part and never its
held-out part: discovery learns from more networks while every held-out τ is measured exactly as
without them. The classic proxies are not scored on them (they only rank the held-out networks).
A fairer baseline sits beside them, ``selected_classic``: on each split, the classic proxy whose score, with
either sign, ranks the training networks best, scored on the held-out ones (``select_classic``).

Saves ``results/<name>.json`` (``--name``, default the next free ``dNN``), the scatter plot
``results/<name>.png`` and the expression found on split 0, ``results/<name>_proxy.json`` (reload it
with ``segnas proxy score -p`` or ``segnas search saswot --proxy``; ``results/proxy.json`` is the
current one, the proxy the SasWOT study searches with).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402

from segnas.errors import SegnasError  # noqa: E402
from segnas.jobs.proxy import init_stats, proxy_batches, scored_on  # noqa: E402
from segnas.parallel import default_key, run_all  # noqa: E402
from segnas.parallel.store import ResultStore  # noqa: E402
from segnas.proxies import score  # noqa: E402
from segnas.proxies.cross_validation import as_numpy, discovery_task  # noqa: E402
from segnas.proxies.discovery import ALGORITHM_VERSION, DiscoveredProxy  # noqa: E402
from segnas.proxies.ensemble import ProxyEnsemble, bagged_indices, check_bag_fraction, member_seeds  # noqa: E402
from segnas.proxies.graph import EXTRA_TERMINALS, canonical_extras  # noqa: E402
from segnas.spaces.base import arch_key  # noqa: E402
from segnas.evaluate.records import load_groundtruth_runs, untrained_net  # noqa: E402
from segnas.metrics.ranking import rank_correlations, split_indices  # noqa: E402
from segnas.utils import parse_size  # noqa: E402

DATA = common.BENCHMARKS / "groundtruth" / "data"  # the ground-truth files (benchmarks/groundtruth)
SCORES = Path(__file__).resolve().parent / "data"  # the cache of classic proxy scores
RESULTS = common.results_dir(__file__)


def next_id() -> str:
    """The next free result id ``dNN``."""
    taken = [int(p.stem[1:]) for p in RESULTS.glob("d[0-9][0-9].json")]
    return f"d{max(taken, default=0) + 1:02d}"


#: The classic proxies (2019–2021) that discovery is compared with.
CLASSIC = ("fisher", "flops", "grad_norm", "grasp", "jacob_cov", "nwot", "params", "snip", "synflow", "zen")


def score_key(record: dict, batches: list, seed: int, names: tuple[str, ...] = CLASSIC) -> str:
    """Cache key of one network's scores by the proxies ``names``: its architecture (not its training
    budget, so ground truths that trained the same architectures share scores), the seed, the
    proxies and the images."""
    return default_key({"space": record["space"], "arch": record["arch"], "seed": seed, "proxies": sorted(names),
                        "images": [list(b[0].shape) for b in batches]})


def proxy_scores(records: list[dict], batches: list, num_classes: int, seed: int, cache: Path,
                   names: tuple[str, ...] = CLASSIC) -> list[dict]:
    """The proxies ``names`` (default the classic ones) of every record's untrained network (value
    and seconds), cached by ``score_key``."""
    store = ResultStore(cache)
    out = []
    for i, r in enumerate(records):
        key = score_key(r, batches, seed, names)
        if key not in store:
            net = untrained_net(r, num_classes, seed)
            row = {}
            for name in sorted(names):
                t0 = time.perf_counter()
                row[name] = score(name, net, batches, seed=seed)
                row[f"{name}_s"] = time.perf_counter() - t0
            store.add(key, row)
            print(f"proxies {i + 1}/{len(records)}: " + ", ".join(f"{n} {row[n]:.3g}" for n in sorted(names)),
                  flush=True)
        out.append(store[key])
    store.close()
    return out


def correlations(values: list[float], mious: list[float], idx: list[int]) -> dict:
    c = rank_correlations([values[i] for i in idx], [mious[i] for i in idx])
    return {"kendall_tau": c["kendall_tau"], "spearman_rho": c["spearman_rho"]}


def select_classic(classic: dict[str, list[float]], mious: list[float], train: list[int]) -> dict:
    """The classic proxy, with either sign, that ranks the training networks best (|τ|): the
    baseline a user could pick from the same networks discovery learns from. Several classics rank
    backwards here (fisher, grad_norm, snip), so this is a stronger baseline than any proxy as defined."""
    taus = {n: correlations(v, mious, train)["kendall_tau"] for n, v in classic.items()}
    name = max(taus, key=lambda n: abs(np.nan_to_num(taus[n])))
    sign = 1.0 if taus[name] >= 0 else -1.0
    return {"proxy": name, "sign": sign, "train_tau": sign * taus[name], "values": [sign * x for x in classic[name]]}


def scatter(path: Path, columns: dict[str, list[float]], mious: list[float], train: list[int], held: list[int],
            taus: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(columns)
    cols = 4
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    y = np.array(mious) * 100
    for ax, name in zip(axes.flat, names):
        x = np.array(columns[name], dtype=float)
        mags = np.abs(x[np.isfinite(x) & (x != 0)])
        ax.scatter(x[train], y[train], s=10, c="0.7", label="train split")
        ax.scatter(x[held], y[held], s=14, c="tab:blue" if name != "discovered" else "tab:red", label="held-out")
        if mags.size and mags.max() > 1e3 * mags.min():  # spans decades: log-like axis
            ax.set_xscale("symlog", linthresh=float(mags.min()))
        ax.set_title(f"{name}: held-out τ {taus[name]:+.2f}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_ylabel("val mIoU (%)", fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    common.save_figure(fig, path, dpi=110)


def discovery_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ground truth, proxy images, splits and GP settings (shared with proxy_discovery_null.py)."""
    ap.add_argument("--groundtruth", nargs="+", default=[str(DATA / "groundtruth_multires_camvid.jsonl")],
                    help="ground-truth file(s); several: training repeats, mIoU averaged per architecture")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--images", type=int, default=8, help="CamVid training images the proxies see")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", type=parse_size, default=(180, 240), help="image size the proxies see (HxW)")
    ap.add_argument("--train-fraction", type=float, default=0.5)
    ap.add_argument("--splits", type=int, default=5, help="random train/held-out splits to repeat discovery on")
    ap.add_argument("--population", type=int, default=64)
    ap.add_argument("--generations", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split-seed", type=int, default=None,
                    help="split k (and its GP seeds) draws from split-seed + k (default --seed): fresh splits "
                         "check a configuration chosen on others without re-measuring any statistic")
    ap.add_argument("--workers", type=int, default=2, help="discoveries run at once (processes; 1 = in this process)")
    ap.add_argument("--cv-folds", type=int, default=0,
                    help="choose discovery's parsimony by this many-fold cross-validation inside the training split "
                         "(segnas.proxies.cross_validation; 0 = plain discovery, parsimony 0)")
    ap.add_argument("--extra-terminals", nargs="+", default=[], choices=sorted(EXTRA_TERMINALS),
                    help="expressions may also read GA (the activations' loss gradients) and/or R (layer resolution)")
    ap.add_argument("--network-ops", action="store_true",
                    help="expressions may combine whole-network values (layer sums/means) with arithmetic")
    return ap


def split_seeds(args: argparse.Namespace) -> list[int]:
    """The seed of each train/held-out split (and of its GP runs): --split-seed (default --seed) + k."""
    first = args.seed if args.split_seed is None else args.split_seed
    return [first + k for k in range(args.splits)]


def run_discoveries(jobs: list[dict], stats: list, records: list[dict], args: argparse.Namespace) -> list[DiscoveredProxy]:
    """One discovery per job (``train`` indices, their ``targets``, ``seed``, optional ``held``
    indices whose real mIoU is reported), run ``--workers`` at a time in processes through
    ``segnas.parallel`` (1 torch thread each) and cached under ``runs/`` so a killed benchmark
    resumes: plain, or with parsimony chosen by ``--cv-folds``-fold cross-validation on ``train``."""
    options = {"population": args.population, "generations": args.generations}
    if getattr(args, "extra_terminals", None):
        options["extra_terminals"] = list(canonical_extras(args.extra_terminals))
    if getattr(args, "network_ops", False):
        options["network_ops"] = True
    # statistics of several initializations per network (--evolve-on-inits) evolve something else
    evolve_inits = {"inits": args.inits} if getattr(args, "evolve_on_inits", False) and args.inits > 1 else {}
    stats = as_numpy(stats)
    items = []
    for job in jobs:
        held = job.get("held") or []
        key = default_key({"archs": [records[i]["key"] for i in job["train"]], "job": job, "cv_folds": args.cv_folds,
                           "options": options, "images": args.images, "size": list(args.size), "stats_seed": args.seed,
                           "held_mious": [records[i]["val_miou"] for i in held], "algorithm": ALGORITHM_VERSION,
                           **evolve_inits})
        items.append({"key": key, "stats": [stats[i] for i in job["train"]], "targets": job["targets"],
                      "cv_folds": args.cv_folds, "options": options | {"seed": job["seed"]},
                      "validation": ([stats[i] for i in held], [records[i]["val_miou"] for i in held]) if held else None})
    cache = common.ROOT / "runs" / "benchmark_cache" / "proxy_discovery.jsonl"
    cache.parent.mkdir(parents=True, exist_ok=True)
    found = run_all(discovery_task, items, executor="process" if args.workers > 1 else "inline",
                    workers=args.workers, results_path=cache, key=lambda item: item["key"], progress=True)
    return [DiscoveredProxy.from_dict(f) for f in found]


def main() -> None:
    ap = discovery_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--name", default=None, help="result id (default: the next free dNN)")
    ap.add_argument("--proxy-out", default=None,
                    help="where the expression found on split 0 goes (default results/<name>_proxy.json)")
    ap.add_argument("--members", type=int, default=1,
                    help="expressions evolved per split (seeds segnas.proxies.ensemble.member_seeds); more than 1: "
                         "the discovered proxy is their ensemble, and member 0 alone is reported as discovered_single")
    ap.add_argument("--inits", type=int, default=1,
                    help="score every proxy, classic and discovered, as its mean over this many weight "
                         "initializations (seeds --seed ..); discovery itself evolves on the first")
    ap.add_argument("--evolve-on-inits", action="store_true",
                    help="discovery evolves on the mean over the --inits initializations too")
    ap.add_argument("--bag-fraction", type=float, default=1.0,
                    help="with --members > 1, each member evolves on its own random fraction of the training "
                         "networks (drawn with its seed; bagging); the ensemble is still fitted on all of them")
    ap.add_argument("--extra-train", nargs="+", default=[],
                    help="ground-truth file(s) of further networks for discovery's training part only (those "
                         "not in --groundtruth; several files: mIoU averaged, networks in all of them)")
    ap.add_argument("--scores-only", action="store_true",
                    help="only score the ground truth found so far with the classic proxies (fills the cache)")
    args = ap.parse_args()
    args.name = args.name or next_id()
    args.proxy_out = args.proxy_out or str(RESULTS / f"{args.name}_proxy.json")
    try:
        check_bag_fraction(args.bag_fraction, args.members)
    except SegnasError as exc:
        ap.error(str(exc))

    records = load_groundtruth_runs(args.groundtruth)
    main_keys = {arch_key(r["arch"]) for r in records}
    extra = [r for r in load_groundtruth_runs(args.extra_train) if arch_key(r["arch"]) not in main_keys] \
        if args.extra_train else []
    root = args.data_root or str(common.camvid_root())
    batches, num_classes = proxy_batches("camvid", root, "train", args.images, args.batch_size, args.size, args.seed)
    space = records[0]["space"]
    print(f"{len(records)} {space} networks from {args.groundtruth}; proxies on {args.images} images at "
          f"{args.size[0]}x{args.size[1]}" + (f"; {len(extra)} more for training from {args.extra_train}" if extra else ""))
    R = args.inits
    scores = [proxy_scores(records, batches, num_classes, args.seed + j, SCORES / f"proxy_scores_{space}_camvid.jsonl")
              for j in range(R)]
    if args.scores_only:
        return
    t0 = time.perf_counter()
    # every network at R initializations; discovery evolves on the first one's statistics, or on all
    eval_stats = [init_stats(r, num_classes, batches, args.seed, R) for r in records + extra]
    stats_s = (time.perf_counter() - t0) / len(eval_stats)
    stats = [s[0] for s in eval_stats] if R > 1 and not args.evolve_on_inits else eval_stats
    mious = [float(r["val_miou"]) for r in records + extra]  # the extra networks come last
    extra_idx = list(range(len(records), len(records) + len(extra)))
    classic = {name: [float(np.mean([init[i][name] for init in scores])) for i in range(len(records))]
               for name in CLASSIC}

    t0 = time.perf_counter()
    seeds = split_seeds(args)
    parts = [split_indices(len(records), args.train_fraction, seed) for seed in seeds]
    K = args.members
    jobs = []
    for k, (train, held) in enumerate(parts):
        for seed in member_seeds(seeds[k], K):
            bag = [train[i] for i in bagged_indices(len(train), args.bag_fraction, seed)] + extra_idx
            jobs.append({"train": bag, "held": held, "targets": [mious[i] for i in bag], "seed": seed})
    discovered = run_discoveries(jobs, stats, records + extra, args)
    discovery_s = time.perf_counter() - t0
    splits = []
    for k, (train, held) in enumerate(parts):
        members = discovered[k * K:(k + 1) * K]
        found = members[0] if K == 1 else ProxyEnsemble.from_members(
            members, [eval_stats[i] for i in train + extra_idx], [mious[i] for i in train + extra_idx],
            validation=([eval_stats[i] for i in held], [mious[i] for i in held]),
            settings={"members": K, "member_seeds": member_seeds(seeds[k], K),
                      "population": args.population, "generations": args.generations})
        values = [found.evaluate(s) for s in eval_stats]
        held_corr = {n: correlations(v, mious, held) for n, v in classic.items()}
        if K > 1:
            held_corr["discovered_single"] = correlations([members[0].evaluate(s) for s in eval_stats], mious, held)
        held_corr["discovered"] = correlations(values, mious, held)
        best_classic = max(classic, key=lambda n: np.nan_to_num(held_corr[n]["kendall_tau"], nan=-2))
        selected = select_classic(classic, mious, train)
        held_corr["selected_classic"] = correlations(selected.pop("values"), mious, held)
        splits.append({"split_seed": seeds[k], "train": train, "expression": found.expression,
                       "selected_classic": selected,
                       "cross_validation": found.settings.get("cross_validation"),
                       "train_tau": found.train_tau, "held_out": held_corr, "held_out_indices": held,
                       "members": [{"expression": m.expression, "train_tau": m.train_tau, "held_out_tau": m.val_tau}
                                   for m in members] if K > 1 else None,
                       "best_classic": best_classic,
                       "discovered_values": values, "found": found})
        print(f"split {k}: discovered held-out τ {held_corr['discovered']['kendall_tau']:+.3f} "
              f"(train τ {found.train_tau:+.3f}); best classic {best_classic} "
              f"{held_corr[best_classic]['kendall_tau']:+.3f}; {found.expression}", flush=True)

    first = splits[0]
    first["found"].settings["scored_on"] = scored_on("camvid", "train", args.images, args.size, args.seed, R)
    first["found"].save(args.proxy_out)
    names = list(CLASSIC) + ["selected_classic"] + (["discovered_single"] if K > 1 else []) + ["discovered"]
    table = []
    for n in names:
        taus = [s["held_out"][n]["kendall_tau"] for s in splits]
        rhos = [s["held_out"][n]["spearman_rho"] for s in splits]
        table.append({
            "proxy": n, "held_out_tau": first["held_out"][n]["kendall_tau"],
            "held_out_rho": first["held_out"][n]["spearman_rho"],
            "mean_tau_over_splits": float(np.nanmean(taus)), "std_tau_over_splits": float(np.nanstd(taus)),
            "mean_rho_over_splits": float(np.nanmean(rhos)),
            "all_tau": rank_correlations(classic[n], mious[:len(records)])["kendall_tau"] if n in classic else None,
            "seconds_per_net": R * float(np.mean([s[f"{n}_s"] for s in scores[0]])) if n in classic else
            stats_s if n == "discovered" else None,
        })
    best_classic = max((r for r in table if r["proxy"] in classic), key=lambda r: r["held_out_tau"])
    disc = table[-1]
    def mean_margin_over(baseline) -> float:  # baseline(split) -> the proxy discovery is compared with
        return float(np.mean([s["held_out"]["discovered"]["kendall_tau"] - s["held_out"][baseline(s)]["kendall_tau"]
                              for s in splits]))

    mean_margin = mean_margin_over(lambda s: s["best_classic"])
    selected_margin = mean_margin_over(lambda s: "selected_classic")
    print(f"\n{'proxy':16s} {'τ held-out':>10s} {'ρ held-out':>10s} {'τ mean±std (splits)':>20s} {'s/net':>6s}")
    for r in table:
        secs = f"{r['seconds_per_net']:6.2f}" if r["seconds_per_net"] is not None else "      "
        print(f"{r['proxy']:16s} {r['held_out_tau']:+10.3f} {r['held_out_rho']:+10.3f} "
              f"{r['mean_tau_over_splits']:+13.3f}±{r['std_tau_over_splits']:.3f} {secs}")
    goal = {"margin_over_best_classic": disc["held_out_tau"] - best_classic["held_out_tau"],
            "mean_margin_over_splits": mean_margin, "best_classic": best_classic["proxy"],
            "mean_margin_over_selected_classic": selected_margin,
            "met": bool(disc["held_out_tau"] - best_classic["held_out_tau"] >= 0.1 and disc["held_out_tau"] >= 0.5),
            # the same goal on the mean over the splits: split 0 alone is one draw of 60 held-out networks
            "met_on_split_mean": bool(mean_margin >= 0.1 and disc["mean_tau_over_splits"] >= 0.5)}
    print(f"\ndiscovered (split 0): {first['expression']}\n"
          f"held-out τ {disc['held_out_tau']:+.3f} vs best classic {best_classic['proxy']} "
          f"{best_classic['held_out_tau']:+.3f} (margin {goal['margin_over_best_classic']:+.3f}; mean margin over "
          f"{len(splits)} splits {mean_margin:+.3f}; over the classic chosen with its sign on the training "
          f"networks {selected_margin:+.3f}); goal (margin ≥ 0.1 and τ ≥ 0.5) "
          f"{'met' if goal['met'] else 'NOT met'} on split 0, {'met' if goal['met_on_split_mean'] else 'NOT met'} on "
          f"the mean over the splits (τ {disc['mean_tau_over_splits']:+.3f}, margin {mean_margin:+.3f})")

    png = RESULTS / f"{args.name}.png"
    scatter(png, {**classic, "discovered": first["discovered_values"][:len(records)]}, mious[:len(records)],
            first["train"], first["held_out_indices"],
            {r["proxy"]: r["held_out_tau"] for r in table})
    path = common.save_result(args.name, {
        "groundtruth": [common.relative(p) for p in args.groundtruth],
        "training_runs_per_network": len(args.groundtruth), "networks": len(records), "space": space,
        "extra_train": {"files": [common.relative(p) for p in args.extra_train], "networks": len(extra),
                        "training_runs_per_network": len(args.extra_train)} if extra else None,
        "settings": {"images": args.images, "size": list(args.size), "seed": args.seed, "split_seeds": seeds,
                     "train_fraction": args.train_fraction, "splits": args.splits, "population": args.population,
                     "generations": args.generations, "cv_folds": args.cv_folds, "members": K, "inits": R,
                     "bag_fraction": args.bag_fraction,
                     "evolve_on_inits": args.evolve_on_inits, "extra_terminals": list(canonical_extras(args.extra_terminals)),
                     "network_ops": args.network_ops,
                     "workers": args.workers},
        "discovery_seconds": round(discovery_s, 1),
        "table": table, "goal": goal,
        "splits": [{k: v for k, v in s.items() if k not in ("found", "discovered_values", "train", "held_out_indices")}
                   | {"train_size": len(s["train"]) + len(extra), "held_out_size": len(s["held_out_indices"])}
                   for s in splits],
        "discovered": {"expression": first["expression"], "file": common.relative(args.proxy_out),
                       "history": discovered[0].history},
        "plot": png.name,
    }, RESULTS)
    print(f"saved {path} and {png}")


if __name__ == "__main__":
    main()
