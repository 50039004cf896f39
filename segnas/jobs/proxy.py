"""Zero-cost proxy jobs: score networks without training, discover a proxy from ground truth, and
the ground truth they are judged against."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from segnas.config.train import options_data
from segnas.cost.memory import check_inference_size
from segnas.data import eval_transforms, open_data
from segnas.errors import SegnasError
from segnas.evaluate.proxy import (NATIVE, check_proxy, check_proxy_images, fixed_batches, proxy_scored_on,
                                   scoring_setup)
from segnas.evaluate.records import load_groundtruth_runs, untrained_net
from segnas.metrics.ranking import split_indices
from segnas.progress import Echo
from segnas.proxies import PROXIES, score
from segnas.proxies.aggregate import resolve_aggregate
from segnas.proxies.common import check_inits
from segnas.proxies.cross_validation import fold_indices, run_discovery
from segnas.proxies.discovery import layer_stats
from segnas.proxies.ensemble import score_expression
from segnas.proxies.ensemble import check_bag_fraction, discover_ensemble
from segnas.proxies.graph import canonical_extras
from segnas.spaces.base import resolve_space
from segnas.training.models import resolve_model
from segnas.utils import atomic_write_text, check_output_file, parse_size_or_native


def proxy_batches(data: str, root: str | None, split: str, images: int, batch_size: int,
                  size: Sequence[int] | None, seed: int = 0,
                  options: Mapping[str, Any] | None = None) -> tuple[list, int]:
    """A fixed, seeded choice of ``images`` images of a split of dataset ``data`` (with its
    ``options``, as ``data.options``), resized to ``size``, in batches; returns (batches, number of
    classes)."""
    if images < 1:
        raise SegnasError(f"--images: must be >= 1, got {images}")
    check_inference_size(tuple(size) if size else None, 1, "--size", batch_size)
    dc = options_data(data, root, options=options)
    dataset = open_data(dc, split, eval_transforms(tuple(size) if size else None))
    return fixed_batches(dataset, images, batch_size, seed, "--images", "--size"), dataset.num_classes


def scored_on(data: str, split: str, images: int, size: Sequence[int] | None, seed: int,
              inits: int = 1, options: Mapping[str, Any] | None = None,
              spaces: Sequence[str] = ()) -> dict[str, Any]:
    """What a discovered proxy's statistics were measured on (kept in its file, so that a search can
    score candidates the same way): images, and ``inits`` weight initializations (seeds ``seed + j``);
    the dataset's options where some were given; the spaces of its ground truth's networks."""
    return {"data": data, "split": split, "images": int(images), "size": list(size) if size else None,
            "seed": int(seed), "inits": int(inits), **({"data_options": dict(options)} if options else {}),
            **({"spaces": sorted(spaces)} if spaces else {})}


def init_stats(record: dict[str, Any], num_classes: int, batches: Sequence, seed: int, inits: int = 1) -> Any:
    """``layer_stats`` of a ground-truth record's untrained network at initialization seed ``seed``;
    with ``inits`` > 1 a list of them at seeds ``seed .. seed + inits - 1`` (also the statistics'
    sampling seeds), whose proxy values are averaged (``segnas.proxies.graph.NetStats``)."""
    stats = [layer_stats(untrained_net(record, num_classes, seed + j), batches, seed=seed + j)
             for j in range(check_inits(inits))]
    return stats[0] if inits == 1 else stats


def discovered_settings(proxies: Sequence[str]) -> dict[str, Any]:
    """What the proxy files among ``proxies`` were discovered on (as ``proxy_scored_on`` records
    it: images, size, inits), each where every file records the same value."""
    seen = [s for s in (proxy_scored_on(p) for p in proxies if Path(p).is_file()) if s]
    agreed = {}
    for key in ("images", "size", "inits"):
        values = [s.get(key, KeyError) for s in seen]
        if values and values[0] is not KeyError and all(v == values[0] for v in values):
            agreed[key] = values[0]
    return agreed


def check_seed(seed: int) -> None:
    """A seed numpy takes: refused in one line otherwise, before any work."""
    if seed < 0:
        raise SegnasError(f"--seed: must be >= 0, got {seed}")


def proxy_score_job(models: Sequence[str], proxies: Sequence[str], data: str, root: str | None = None,
                    split: str = "train", images: int | None = None, batch_size: int = 8,
                    size: str | None = None, seed: int = 0, inits: int | None = None,
                    data_options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Score untrained networks (zoo names or arch.json files; weights initialized from ``seed``)
    with registered proxies, saved proxy expressions (``.json`` paths) or rank aggregates
    (``az_nas``, ``rank_log(a,b)``, ``rank_mean(a,b)``: the networks ranked among themselves, so at
    least two); with ``inits`` > 1 each score is the mean over initializations
    ``seed .. seed + inits - 1`` (also the proxies' seeds). An aggregate's time is its components'.
    ``images``, ``size`` (HxW; "native": the images' own) and ``inits`` not given are what the proxy
    files were discovered on, else the defaults (``evaluate.proxy.scoring_setup``). ``data_options``:
    the dataset's options, as ``data.options`` (a search's images are drawn with its own)."""
    check_seed(seed)
    for p in proxies:
        check_proxy(p)
    given = None if size is None else parse_size_or_native(size, "--size") or NATIVE
    images, size, inits = scoring_setup(discovered_settings(proxies), images, given, inits)
    check_inits(inits)
    for p in proxies:
        check_proxy_images(p, images, batch_size, "--images")
    aggregates = {p: resolve_aggregate(p) for p in proxies if p not in PROXIES and not Path(p).is_file()}
    if aggregates and len(models) < 2:
        raise SegnasError(f"proxy {next(iter(aggregates))}: a rank aggregate ranks networks among themselves; "
                          "give at least two")
    direct = [p for p in proxies if p not in aggregates]
    components = [c for agg in aggregates.values() for c in agg.components]
    measured = list(dict.fromkeys(direct + components))
    batches, num_classes = proxy_batches(data, root, split, images, batch_size, size, seed, data_options)
    for source in models:  # every network is found before any is scored
        if Path(source).is_dir() or Path(source).suffix.lower() == ".pt":
            raise SegnasError(f"{source}: trained weights; a proxy scores a network untrained, at its initialization "
                              "(give its zoo name or architecture file, e.g. the arch.json of a search's run)")
        resolve_model(source, num_classes)
    rows = []
    for source in models:
        row: dict[str, Any] = {}
        values: dict[str, list[float]] = {p: [] for p in measured}
        for s in range(seed, seed + inits):
            torch.manual_seed(s)
            net, row["model"] = resolve_model(source, num_classes)
            for p in measured:
                t1 = time.perf_counter()
                values[p].append(score(p, net, batches, seed=s) if p in PROXIES else
                                 score_expression(p, net, batches, seed=s))
                row[f"{p}_s"] = row.get(f"{p}_s", 0.0) + time.perf_counter() - t1
        for p in measured:
            row[p] = float(sum(values[p]) / inits)
        rows.append(row)
    for name, agg in aggregates.items():
        for row, value in zip(rows, agg.combine([{c: row[c] for c in agg.components} for row in rows])):
            row[name], row[f"{name}_s"] = value, sum(row[f"{c}_s"] for c in agg.components)
    for row in rows:
        for p in proxies:
            row[f"{p}_s"] = round(row[f"{p}_s"], 3)
    return [{"model": row["model"], **{k: row[k] for p in proxies for k in (p, f"{p}_s")}} for row in rows]


def proxy_discover_job(groundtruth: str | Path | list[str | Path], out: str | Path, data: str, root: str | None = None,
                       split: str = "train", images: int = 8, batch_size: int = 8, size: str | None = "128x160",
                       train_fraction: float = 0.5, population: int = 64, generations: int = 20, seed: int = 0,
                       cv_folds: int = 0, members: int = 1, inits: int = 1, extra_terminals: Sequence[str] = (),
                       network_ops: bool = False, bag_fraction: float = 1.0,
                       data_options: Mapping[str, Any] | None = None,
                       echo: Echo | None = None) -> dict[str, Any]:
    """Evolve a proxy expression on a training split of a ground-truth file (architectures with their
    trained val mIoU; several files: repeats averaged per architecture), report Kendall τ on the
    held-out rest, save the expression to ``out``. ``cv_folds`` ≥ 2 picks discovery's parsimony by
    cross-validation inside the training split (``segnas.proxies.cross_validation``); ``members`` > 1
    evolves that many expressions and saves their ensemble (``segnas.proxies.ensemble``), each on its
    own random ``bag_fraction`` of the training networks when that is below 1; ``inits`` > 1
    measures every network at that many initializations and evolves on the mean values (``init_stats``);
    ``extra_terminals`` lets expressions read those statistics too (``GA``, ``R``) and ``network_ops``
    combine whole-network values. ``data_options``: the dataset's options (``data.options``), kept in
    the file's ``scored_on``."""
    check_seed(seed)
    echo = echo or (lambda m: None)
    if members < 1:
        raise SegnasError(f"--members: expected ≥ 1, got {members}")
    check_bag_fraction(bag_fraction, members)  # before the statistics, which take long
    records = load_groundtruth_runs(groundtruth)
    if len(records) < 6:
        raise SegnasError(f"{groundtruth}: {len(records)} architectures with a val_miou; discovery needs at least 6")
    train, held = split_indices(len(records), train_fraction, seed)
    # the evolution's settings and the output, checked before the statistics (minutes)
    check_output_file(out, "--out")
    summary_file = check_output_file(Path(out).with_suffix(".summary.json"), "--out (its summary)")
    canonical_extras(extra_terminals)
    if population < 2 or generations < 0:
        raise SegnasError(f"--population, --generations: expected ≥ 2 and ≥ 0, got {population} and {generations}")
    if cv_folds:
        fold_indices(len(train), cv_folds, seed)  # enough training networks for the folds
    size = parse_size_or_native(size, "--size")
    batches, num_classes = proxy_batches(data, root, split, images, batch_size, size, seed, data_options)
    stats = []
    for i, r in enumerate(records):
        stats.append(init_stats(r, num_classes, batches, seed, inits))
        echo(f"statistics {i + 1}/{len(records)}")
    mious = [r["val_miou"] for r in records]
    options = dict(
        cv_folds=cv_folds, population=population, generations=generations, seed=seed,
        extra_terminals=extra_terminals, network_ops=network_ops,
        validation=([stats[i] for i in held], [mious[i] for i in held]) if len(held) >= 3 else None,
        callback=lambda rec: echo(f"generation {rec.get('generation', '?')}: train τ {rec['best_tau']:.3f}"
                                  + (f", held-out τ {rec['val_tau']:.3f}" if rec.get("val_tau") is not None else "")),
        on_candidate=lambda row: echo(f"cross-validation {row['settings']}: mean τ {row['mean_tau']:.3f}"))
    train_stats, train_mious = [stats[i] for i in train], [mious[i] for i in train]
    if members > 1:
        found = discover_ensemble(train_stats, train_mious, members=members, bag_fraction=bag_fraction,
                                  on_member=lambda j, m: echo(
            f"member {j + 1}/{members}: train τ {m.train_tau:.3f}"
            + (f", held-out τ {m.val_tau:.3f}" if m.val_tau is not None else "") + f"; {m.expression}"),
            **options)
    else:
        found = run_discovery(train_stats, train_mious, **options)
    spaces = {resolve_space(r["space"]).name for r in records}
    found.settings["scored_on"] = scored_on(data, split, images, size, seed, inits, data_options, spaces)
    summary = {"expression": found.expression, "train_tau": found.train_tau, "held_out_tau": found.val_tau,
               "held_out_rho": found.val_rho, "parsimony": found.settings.get("parsimony"), "train_archs": len(train),
               "held_out_archs": len(held), "out": str(out)}
    atomic_write_text(summary_file, json.dumps(summary, indent=2))
    found.save(out)  # (last: the proxy file is there only when the discovery is complete)
    return summary
