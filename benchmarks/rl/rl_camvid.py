"""The RL search (auxiliary cells, Nekrasov et al.) on CamVid on this CPU, against random search.

    python benchmarks/rl/rl_camvid.py [--candidates 60] [--target-ms T] [--teacher CKPT] [--final-steps 800]
    python benchmarks/rl/rl_camvid.py --smoke --out-dir /tmp/r --results-dir /tmp/r   # minutes: checks the script

Every search draws children of the ``encdec`` space and scores them with the same child evaluator
(``segnas.evaluate.rl.ChildEvaluator``: decoder on cached features, progressive termination,
end-to-end fine-tuning, Polyak averaging, KD from ``--teacher``) from one pre-trained encoder
(cached), under the same budget of ``--candidates`` children, on the ask/tell loop of the search
job. Reported (``<results-dir>/<name>.json`` and a plot ``<name>.png``, default
``benchmarks/rl/results/rl_camvid``; saved after every search, ``complete`` false until the best child
is trained, so a cut run leaves what it has and resumes):

- best reward so far vs number of children and vs child CPU-time, for the controller (PPO) and for
  random search (the same evaluator, termination included), seeds 0 and 1;
- children per CPU-hour; the fraction of child compute progressive termination saved (terminated
  children × the mean stage-2 CPU time of the children that ran it, over what all would have cost);
- ablations at the same budget (seed 0): without auxiliary cells, without KD, without Polyak;
- the best child of the PPO search (seed 0) trained with train_camvid.py's recipe for ``--final-steps``
  steps (fp32), ``--train-seeds`` seeds: from scratch, as the other methods' networks (it joins
  their equal-steps table), and from the children's pre-trained encoder (``model.init``, as in the
  paper: training the other networks do not get): val mIoU, latency (ONNX Runtime, 360x480, 2
  threads), params, GFLOPs.

Without ``--teacher`` a teacher is trained first: ``--teacher-model`` with train_camvid.py's recipe
for ``--teacher-steps`` steps, once (``<out-dir>/rl-teacher-<model>-<key>``: a killed training
continues, a finished one is reused by the next run with the same settings). The target defaults to the median predicted latency of 200 random
children (so about half the space is reachable).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402
from train_camvid import config as train_config  # noqa: E402
from train_camvid import train_seeds  # noqa: E402

from segnas.config.train import DataConfig  # noqa: E402
from segnas.cost import LatencyModel, count_flops, count_parameters, measure_latency  # noqa: E402
from segnas.data import dataset_classes  # noqa: E402
from segnas.evaluate.rl import ChildEvaluator, ChildSettings, EncoderSettings, pretrained_encoder  # noqa: E402
from segnas.search.asktell import AskTellLoop  # noqa: E402
from segnas.search.strategies.rl import RLSearch, RLSettings, TerminationSettings  # noqa: E402
from segnas.spaces.base import Architecture, get_space, save_arch  # noqa: E402
from segnas.training.cached import trained_once, training_key  # noqa: E402
from segnas.utils import atomic_write_text  # noqa: E402

RESULTS = common.results_dir(__file__)
SMOKE_DATA = {"name": "synthetic", "options": {"size": [64, 96], "length": 12}, "crop_size": [64, 96],
              "batch_size": 2, "eval_batch_size": 2}
SMOKE_SPACE = {"encoder_width": 0.25, "width": 8}
SMOKE_CHILD = {"stage1_images": 6, "stage1_steps": 3, "stage1_batch": 3, "stage2_steps": 2, "stage2_batch": 2}
#: Smoke runs have 4 children: the threshold applies from the second, so progressive termination triggers.
SMOKE_TERMINATION = {"warmup": 1}


class RandomChildren(RLSearch):
    """Random search over the same space with the same evaluator: children drawn uniformly, the
    controller never consulted nor trained (the termination average is still kept, as the evaluator
    needs it)."""

    def ask(self) -> Architecture:
        return self.space.sample(self.rng)

    def learn(self, decisions, rewards) -> None:
        pass


def data_settings(args: argparse.Namespace) -> DataConfig:
    if args.smoke:
        return DataConfig.model_validate(SMOKE_DATA)
    return DataConfig.model_validate({"name": "camvid", "root": str(common.camvid_root()), "crop_size": args.crop,
                                      "scale": [0.75, 1.5], "batch_size": 8})


def termination(args: argparse.Namespace) -> dict[str, Any]:
    return TerminationSettings(**(SMOKE_TERMINATION if args.smoke else {})).model_dump()


def same_search(run_dir: Path, described: dict[str, Any]) -> None:
    """Keep what a search's run folder was started with (``search.json``); a later run of this script
    continues the folder only with the same settings (it is keyed by name, kind and seed alone)."""
    path = run_dir / "search.json"
    described = json.loads(json.dumps(described))  # as it reads back
    if path.is_file():
        before = json.loads(path.read_text())
        if before != described:
            changed = sorted(k for k in described if before.get(k) != described[k])
            sys.exit(f"{run_dir}: started with other settings ({', '.join(changed)} differ: {path}); "
                     "give another --name or --out-dir")
        return
    atomic_write_text(path, json.dumps(described, indent=1))  # a new folder, or one started before this record


def search(kind: str, seed: int, child: dict[str, Any], ctx: dict[str, Any], args: argparse.Namespace) -> dict:
    """One search of ``args.candidates`` children; its curve, compute and best child."""
    space, latency, data = ctx["space"], ctx["latency"], ctx["data"]
    settings = RLSettings(space_options=ctx["space_options"], candidates=args.candidates,
                          child={**ctx["child"], **child}, controller={"agent": "ppo"},
                          termination=termination(args))
    strategy = RLSearch() if kind == "ppo" else RandomChildren()
    strategy.begin(space, seed, settings)
    options = {**ctx["space_options"], **({"encoder_weights": str(ctx["encoder"])} if ctx["encoder"] else {})}
    evaluator = ChildEvaluator("encdec", options, data, settings.child, ctx["classes"], seed)
    strategy.evaluator, strategy.target_ms = evaluator, latency.target_ms
    strategy._sync_threshold()
    run_dir = Path(args.out_dir) / f"bench-rl-{ctx['name']}-{kind}-seed{seed}"
    same_search(run_dir, {"kind": kind, "seed": seed, "settings": settings.model_dump(mode="json"),
                          "target_ms": latency.target_ms, "latency": latency.describe(),
                          "data": data.model_dump(mode="json"), "encoder": str(ctx["encoder"])})
    outcome = AskTellLoop(strategy, evaluator, lambda a: latency.predict(space, a, ctx["classes"]), latency.target_ms,
                          candidates=args.candidates, workers=args.workers, executor=args.executor,
                          run_dir=run_dir, progress=not args.smoke, echo=print).run()
    records = [json.loads(x)["result"] for x in (run_dir / "candidates.jsonl").read_text().splitlines()
               if "result" in json.loads(x)]
    cpu = np.cumsum([r["cpu_seconds"] for r in records]).tolist()
    best, curve = -1.0, []
    for n, (r, c) in enumerate(zip(records, cpu), 1):
        best = max(best, r["score"] or 0.0)
        curve.append({"n": n, "best": round(best, 4), "cpu_s": round(c, 1)})
    ran2 = [r["stage2"]["cpu_seconds"] for r in records if r["stage2"]]
    cut = sum(r["terminated"] for r in records)
    saved = cut * (statistics.mean(ran2) if ran2 else 0.0)
    top = outcome.best
    return {"kind": kind, "seed": seed, "run_dir": str(run_dir), "curve": curve, "children": len(records),
            "children_per_cpu_hour": round(len(records) / max(cpu[-1] / 3600, 1e-9), 1),
            "terminated": cut, "termination_saved_fraction": round(saved / (cpu[-1] + saved), 4) if cpu else 0.0,
            "best_reward": round(top.score, 4), "best_latency_ms": round(top.latency_ms, 3),
            "best_arch": top.arch.to_dict(), "rejected_infeasible": outcome.rejected,
            "rejected_degenerate": outcome.degenerate}


def plot(out: dict[str, Any], path: Path) -> None:
    """Best reward so far against children and against child CPU-hours, every search of ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    searches = [(f"{r['kind']} seed {r['seed']}", r) for r in out["runs"]]
    searches += [(f"ppo {name.replace('_', ' ')}", r) for name, r in out["ablations"].items()]
    for label, r in searches:
        style = "-" if r["kind"] == "ppo" else "--"
        best = [c["best"] for c in r["curve"]]
        axes[0].step([c["n"] for c in r["curve"]], best, style, where="post", label=label)
        axes[1].step([c["cpu_s"] / 3600 for c in r["curve"]], best, style, where="post", label=label)
    for ax, x in zip(axes, ("children", "child CPU-hours")):
        ax.set_xlabel(x)
        ax.set_ylabel("best reward so far")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    common.save_figure(fig, path, dpi=90)


def save(out: dict[str, Any], args: argparse.Namespace) -> Path:
    path = common.save_result(args.name, out, args.results_dir)
    plot(out, Path(args.results_dir) / f"{args.name}.png")
    return path


def final_training(arch: dict, ctx: dict, args: argparse.Namespace) -> dict:
    """The best child trained with train_camvid.py's recipe for ``--final-steps`` steps, once per
    ``--train-seeds`` seed: from scratch (``scratch``: the other methods' final training, so it joins
    their equal-steps table) and from the children's pre-trained encoder (``encoder_init``: the
    paper's setting, training the other networks do not get); then its latency, params and GFLOPs.
    Resumable: each training continues its newest run."""
    space = get_space("encdec", **ctx["space_options"])
    a = space.arch_from_dict(arch)
    path = Path(args.out_dir) / f"bench-rl-{ctx['name']}-best.json"
    save_arch(path, space, a)
    out: dict[str, Any] = {"steps": args.final_steps, "batch_size": 8, "precision": "fp32",
                           "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": common.machine()}
    out["scratch"] = train_seeds(str(path), args.out_dir, args.final_steps, args.train_seeds, smoke=args.smoke)
    if ctx["encoder"]:
        out["encoder_init"] = train_seeds(str(path), args.out_dir, args.final_steps, args.train_seeds,
                                          smoke=args.smoke, recipe={"model": {"init": str(ctx["encoder"])}},
                                          variant="encoder-init")
    net = space.build(a, ctx["classes"]).eval()
    h, w = ctx["size"]
    ms = measure_latency(net, (1, 3, h, w), "onnxruntime", 2, min_time_s=0.5 if args.smoke else 5.0).median_ms
    return out | {"latency_ms": round(ms, 3), "params": count_parameters(net),
                  "gflops": round(count_flops(net, (1, 3, h, w)).gflops, 3)}


def teacher_checkpoint(ctx: dict, args: argparse.Namespace) -> str:
    if args.teacher:
        return args.teacher
    cfg = train_config(60.0, args.out_dir, args.teacher_model)
    update = {"time_budget_min": None, "max_steps": args.teacher_steps, "bf16": False, "job": "bench-rl-teacher",
              "progress": not args.smoke}
    if args.smoke:
        update.update(data=ctx["data"], eval_every=1, channels_last=False, model=cfg.model.model_copy(
            update={"options": {"width": 0.5}}))
    teacher = cfg.model_copy(update=update)  # trained once per settings, resumed when killed, then reused
    folder = Path(args.out_dir) / f"rl-teacher-{args.teacher_model}-{training_key(teacher)}"
    return str(trained_once(teacher, folder, f"teacher {args.teacher_model}", echo=print))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=60)
    ap.add_argument("--target-ms", type=float, default=None)
    ap.add_argument("--size", default="360x480", help="deployment size of the latency")
    ap.add_argument("--crop", default="360x480", help="children's training crop")
    ap.add_argument("--encoder-steps", type=int, default=2000)
    ap.add_argument("--encoder-weights", default=None, help="encoder weights instead of pre-training")
    ap.add_argument("--teacher", default=None, help="trained teacher checkpoint (default: train one)")
    ap.add_argument("--teacher-model", default="ddrnet_23_slim")
    ap.add_argument("--teacher-steps", type=int, default=2000)
    ap.add_argument("--final-steps", type=int, default=800)
    ap.add_argument("--train-seeds", type=int, default=2, help="training seeds of the best child's final training")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--executor", default="process")
    ap.add_argument("--out-dir", default="runs")
    ap.add_argument("--results-dir", default=str(RESULTS))
    ap.add_argument("--name", default="rl_camvid")
    ap.add_argument("--smoke", action="store_true", help="tiny synthetic data and space: checks the script")
    args = ap.parse_args()
    if args.smoke:
        args.candidates, args.size, args.crop = 4, "64x96", "64x96"
        args.encoder_steps, args.final_steps, args.teacher_steps, args.teacher_model = 2, 2, 2, "fast_scnn"
        args.name = args.name if args.name != "rl_camvid" else "rl_camvid_smoke"
    elif not common.camvid_root().is_dir():
        sys.exit(f"CamVid not found at {common.camvid_root()} (set SEGNAS_CAMVID)")
    data = data_settings(args)
    size = tuple(int(x) for x in args.size.split("x"))
    space_options = SMOKE_SPACE if args.smoke else {}
    space = get_space("encdec", **space_options)
    classes = dataset_classes(data).num_classes
    latency = LatencyModel.create("onnxruntime", size, threads=2, min_runs=2 if args.smoke else 20,
                                  min_time_s=0.0 if args.smoke else 0.3)
    if args.target_ms is None:
        rng = np.random.default_rng(0)
        times = [latency.predict(space, space.sample(rng), classes) for _ in range(20 if args.smoke else 200)]
        args.target_ms = round(float(np.median(times)), 2)
    latency.target_ms = args.target_ms
    encoder = pretrained_encoder(data, space.encoder, space.encoder_width,
                                 EncoderSettings(weights=args.encoder_weights, steps=args.encoder_steps), echo=print,
                                 root=Path(args.out_dir) / "rl-smoke-encoder" if args.smoke else None)
    ctx = {"space": space, "space_options": space_options, "latency": latency, "data": data, "classes": classes,
           "encoder": encoder, "size": size, "name": args.name.replace("_", "-"),
           "child": {**(SMOKE_CHILD if args.smoke else {}), "teacher": None}}
    ctx["child"]["teacher"] = teacher_checkpoint(ctx, args)
    out: dict[str, Any] = {"target_ms": args.target_ms, "settings": vars(args), "space_options": space_options,
                           "latency": f"onnxruntime, 2 threads, {size}", "encoder": str(encoder),
                           "child": ChildSettings(**ctx["child"]).model_dump(mode="json"),
                           "termination": termination(args), "complete": False, "runs": [], "ablations": {}}
    # seed 0 of both searches first, then seed 1, then the ablations; the result is saved after each
    # search, marked incomplete until the best child's final training is in (a cut run resumes)
    for seed in (0, 1):
        for kind in ("ppo", "random"):
            out["runs"].append(search(kind, seed, {}, ctx, args))
            save(out, args)
    for name, child in (("no_aux", {"aux_weight": 0.0}), ("no_kd", {"kd_weight": 0.0}),
                        ("no_polyak", {"polyak": False})):
        out["ablations"][name] = search("ppo", 0, child, {**ctx, "name": f"{ctx['name']}-{name}"}, args)
        save(out, args)
    best = out["runs"][0]
    out["best_child"] = {"reward": best["best_reward"], "arch": best["best_arch"],
                         **(final_training(best["best_arch"], ctx, args) if args.final_steps else {})}
    out["complete"] = True
    path = save(out, args)
    for r in out["runs"] + list(out["ablations"].values()):
        print(f"{r['kind']} seed {r['seed']}: best reward {r['best_reward']} after {r['children']} children, "
              f"{r['children_per_cpu_hour']} children/CPU-hour, termination saved "
              f"{100 * r['termination_saved_fraction']:.1f}% ({r['terminated']} cut)")
    print(f"best child: {out['best_child']}; saved {path}")


if __name__ == "__main__":
    main()
