"""The final-training recipe, one change at a time: val and cross-sequence mIoU at equal steps.

    python benchmarks/training/recipe_camvid.py                          # every variant, 2 seeds, 2700 steps
    python benchmarks/training/recipe_camvid.py --steps 800 --seeds 1    # a screening pass
    python benchmarks/training/recipe_camvid.py --variants current,blur_noise --teacher CKPT
    python benchmarks/training/recipe_camvid.py --variants current,boundary --screen-variants strong_jitter
    python benchmarks/training/recipe_camvid.py --smoke --out-dir /tmp/r --results-dir /tmp/r   # checks the script

Each variant is the ``cpu-short`` recipe (``segnas/recipes/cpu-short.yaml``, train_camvid.py's) with
one change (``VARIANTS``), or a combination given as ``--variants a+b``. Every network (Fast-SCNN and
``--found``, a searched architecture: by default the GAS network of ``benchmarks/gas/results``) is
trained from scratch for ``--steps`` optimizer steps at batch 8 in fp32 (2700 steps: 60 CPU-minutes
of Fast-SCNN on the quiet 2-core Xeon, where 800 steps took 17.5 CPU-minutes), once per seed, with
CamVid training sequence ``--holdout`` (0006R0, 101 frames) left out of training and scored after it:
the cross-sequence mIoU, the streets no network saw. Val (sequence 0016E5) shares its street with
204 training images and flatters every recipe.

``accumulate2`` doubles the images per optimizer step (and the compute): it answers whether a larger
batch helps, not which recipe is best per CPU-hour. ``kd`` distils ``--teacher-model`` (default
DDRNet-23-slim) trained once with the same recipe for ``--teacher-steps`` (default twice ``--steps``)
and cached (``loss.teacher_model``), or the checkpoint ``--teacher``.

``--screen-variants`` are trained with the first seed only, beside the full ablation of
``--variants``: their rows say so and the goal is judged on the full rows only. The first network of
``--models`` carries the ablation; ``--other-variants`` (e.g. ``current``) limits the others to the
recipes they are to be shown with.

``--device cuda --workers W`` trains W networks at once on a GPU (the same steps in true fp32; each
run records its device): a screen of every variant fits a lent GPU machine's short window.

Saves ``<results-dir>/recipe_camvid_steps<N>.json``: per network and variant the runs, val and
cross-sequence mIoU mean ± std, per-class IoU of both; prints the ablation table. Every training
continues (or reads back) the newest run of its job: a killed benchmark loses no finished training.
The finished trainings' records go to ``--data-dir`` (``benchmarks/training/data``, committed), so a
screen cut short continues on the next machine from what it finished.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import BENCHMARKS, camvid_root, results_dir, save_result  # noqa: E402
from train_camvid import seeds_summary, train_for_steps  # noqa: E402

from segnas.config.io import merged  # noqa: E402
from segnas.data import build_dataset  # noqa: E402
from segnas.parallel import run_all  # noqa: E402
from segnas.spaces.base import get_space, save_arch  # noqa: E402

RESULTS = results_dir(__file__)

#: Thin and rare CamVid classes, the ones short trainings leave near zero.
RARE = ["Pole", "SignSymbol", "Pedestrian", "Bicyclist", "Fence"]

#: One change each to the current recipe (nested TrainConfig fields).
VARIANTS: dict[str, dict[str, Any]] = {
    "current": {},
    "median_frequency": {"loss": {"class_weights": "median_frequency"}},
    "label_smoothing": {"loss": {"label_smoothing": 0.1}},
    "focus_crops": {"data": {"focus_classes": RARE, "focus_prob": 0.5}},
    "blur_noise": {"data": {"blur_prob": 0.3, "noise_std": 0.03}},
    "strong_jitter": {"data": {"jitter": 0.5}},  # brightness, contrast, saturation ±50% (current ±30%)
    "wider_scale": {"data": {"scale": [0.5, 2.0]}},
    "cosine": {"optim": {"schedule": "cosine"}},
    "no_ohem": {"loss": {"kind": "ce"}},
    "boundary": {"loss": {"boundary_weight": 1.0}},
    "multi_crop": {"data": {"crop_fractions": [1.0, 0.75, 0.5]}},
    "swa": {"ema_decay": None, "swa_start": 0.75, "swa_lr": 0.01},  # instead of the EMA
    "accumulate2": {"accumulate_batches": 2},
    "kd": {"loss": {"kd_weight": 1.0, "kd_temperature": 1.0}},  # the teacher from --teacher(-model)
}


def variant_recipe(name: str, teacher: dict[str, Any]) -> dict[str, Any]:
    """The changes of ``name`` (``a+b``: both), the ``teacher`` loss settings filled in for ``kd``."""
    recipe: dict[str, Any] = {}
    for part in name.split("+"):
        if part not in VARIANTS:
            sys.exit(f"--variants: unknown variant {part!r} (known: {', '.join(VARIANTS)})")
        change = VARIANTS[part]
        if part == "kd":
            change = merged(change, {"loss": teacher})
        recipe = merged(recipe, change)
    return recipe


def found_arch(path: str | None, out_dir: str) -> str:
    """An arch file of the searched network: ``path``, else GAS's (GGM on) written from its result."""
    if path:
        return path
    result = json.loads((BENCHMARKS / "gas" / "results" / "gas_camvid.json").read_text())
    space = get_space("cells")
    folder = Path(out_dir) / "gas_on"
    folder.mkdir(parents=True, exist_ok=True)
    save_arch(folder / "arch.json", space, space.arch_from_dict(result["runs"]["on"]["arch"]))
    return str(folder / "arch.json")


def frames_with_class(holdout: str) -> dict[str, int]:
    """In how many frames of the held-out sequence each class appears: a class seen in few frames
    (and pixels) gives a noisy IoU, which moves the cross-sequence mean."""
    data = build_dataset("camvid", str(camvid_root()), "holdout", None, holdout=holdout, cache=False)
    counts = [0] * data.num_classes
    for i in range(len(data)):
        present = np.unique(data.load_arrays(i)[1])
        for c in present[present < data.num_classes]:
            counts[int(c)] += 1
    return {"frames": len(data), **dict(zip(data.classes.names, counts))}


def train_item(item: dict[str, Any]) -> dict[str, Any]:
    """One training of the screen: ``item`` names the network, variant, recipe, seed and device."""
    return train_for_steps(item["model"], item["out_dir"], item["steps"], item["seed"], item["smoke"], item["holdout"],
                           recipe=item["recipe"], variant=item["variant"], device=item["device"])


def row(model: str, variant: str, trained: dict[str, Any]) -> dict[str, Any]:
    """One network's result under one variant; a searched network (an arch file) carries its
    architecture, so that the result names a network anyone can build."""
    runs = trained["training"]
    out = {"model": model, "variant": variant, **{k: v for k, v in trained.items() if k != "training"},
           "training": runs}
    if model.endswith(".json"):
        data = json.loads(Path(model).read_text())
        out["arch"] = {"space": data["space"], "arch": data["arch"]}
    for key in ("val_per_class_iou", "holdout_per_class_iou"):  # a class absent from a split has no IoU (NaN)
        if all(key in r for r in runs):
            out[key] = {c: round(statistics.mean(v), 4) if (v := [r[key][c] for r in runs if math.isfinite(r[key][c])])
                        else None for c in runs[0][key]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2700)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--holdout", default="0006R0")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated; a+b combines two")
    ap.add_argument("--screen-variants", default="", help="variants trained with the first seed only (a screen)")
    ap.add_argument("--teacher", default=None, help="checkpoint the kd variant distils (instead of --teacher-model)")
    ap.add_argument("--teacher-model", default="ddrnet_23_slim", help="network the kd variant distils, trained once")
    ap.add_argument("--teacher-steps", type=int, default=None, help="its optimizer steps (default: 2 x --steps)")
    ap.add_argument("--found", default=None, help="arch file of the searched network (default: GAS's)")
    ap.add_argument("--models", default="fast_scnn,found", help="zoo names, 'found', or arch files")
    ap.add_argument("--other-variants", default=None,
                    help="the variants the networks after the first in --models train with (default: all of "
                         "--variants and --screen-variants): the first network carries the ablation")
    ap.add_argument("--out-dir", default="runs")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parent / "data"),
                    help="where the finished trainings' records go (committed: a screen continues on another machine)")
    ap.add_argument("--results-dir", default=str(RESULTS))
    ap.add_argument("--device", default="cpu", help="cpu, or cuda: where the networks train")
    ap.add_argument("--workers", type=int, default=1, help="trainings at once (a process each; 1 on a 2-core CPU)")
    ap.add_argument("--smoke", action="store_true", help="synthetic data, 2 steps: checks the script")
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.seeds, args.holdout = 2, 1, None
    teacher = ({"teacher": str(Path(args.teacher).resolve())} if args.teacher else
               {"teacher_model": args.teacher_model, "teacher_steps": args.teacher_steps or 2 * args.steps})
    def names(text: str) -> list[str]:  # in order, each once
        return list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))

    variants = names(args.variants)
    screened = [v for v in names(args.screen_variants) if v not in variants]
    variants += screened
    recipes = {v: variant_recipe(v, teacher) for v in variants}  # every variant checked before training
    models = [found_arch(args.found, args.out_dir) if m == "found" else m for m in args.models.split(",")]
    others = names(args.other_variants) if args.other_variants is not None else variants
    unknown = [v for v in others if v not in variants]
    if unknown:
        sys.exit(f"--other-variants: {', '.join(unknown)} not in --variants or --screen-variants")

    def trains(model: str, variant: str) -> bool:  # the first network every variant, the others theirs
        return model == models[0] or variant in others

    name = f"recipe_camvid_steps{args.steps}"
    # every first seed before any second one: a window that ends early still screens every variant
    items = [{"model": model, "variant": variant.replace("+", "-"), "recipe": recipe, "seed": seed,
              "steps": args.steps, "out_dir": args.out_dir, "smoke": args.smoke, "holdout": args.holdout,
              "device": args.device}
             for seed in range(args.seeds) for model in models for variant, recipe in recipes.items()
             if (seed == 0 or variant not in screened) and trains(model, variant)]
    runs = run_all(train_item, items, executor="process" if args.workers > 1 else "inline", workers=args.workers,
                   threads_per_worker=None if args.device != "cpu" else max(1, (os.cpu_count() or 2) // args.workers),
                   progress=not args.smoke,
                   results_path=Path(args.out_dir if args.smoke else args.data_dir) / f"{name}_trainings.jsonl",
                   key=lambda it: f"{it['model']}|{it['variant']}|{json.dumps(it['recipe'], sort_keys=True)}|"
                                  f"{it['seed']}|{it['steps']}|{it['holdout']}|{it['smoke']}")
    rows = [row(model, variant, seeds_summary([r for it, r in zip(items, runs)
                                               if it["model"] == model and it["variant"] == variant.replace("+", "-")]))
            | {"seeds": 1 if variant in screened else args.seeds}
            for model in models for variant in recipes if trains(model, variant)]
    presence = frames_with_class(args.holdout) if args.holdout else None
    save_result(name, {"steps": args.steps, "seeds": args.seeds, "holdout": args.holdout, "rare_classes": RARE,
                       "holdout_frames_with_class": presence,
                       "batch_size": 8,
                       "precision": "fp32", "devices": sorted({r["device"] for r in runs}),
                       "variants": {v: recipes[v] for v in variants}, "rows": rows}, Path(args.results_dir))
    print(f"| network | variant | val mIoU | cross-sequence ({args.holdout}) mIoU |")
    for r in rows:
        val = f"{100 * r['val_miou_mean']:.1f} ± {100 * r['val_miou_std']:.1f}"
        held = (f"{100 * r['holdout_miou_mean']:.1f} ± {100 * r['holdout_miou_std']:.1f}"
                if "holdout_miou_mean" in r else "-")
        print(f"| {Path(r['model']).parent.name if r['model'].endswith('.json') else r['model']} | {r['variant']} "
              f"| {val} | {held} |")
    print(f"saved {Path(args.results_dir) / (name + '.json')}")


if __name__ == "__main__":
    main()
