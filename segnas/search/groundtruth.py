"""Ground truth for training-free search: sampled architectures trained from scratch under one
fixed, short budget (CPU-minutes or optimizer steps), with their latency, parameters and FLOPs.

``evaluate_arch`` is the evaluator of DESIGN's contract: a pure, picklable function of one item
``{"space", "arch", "settings"}`` that any ``segnas.parallel`` executor can run. Each item trains in
its own folder ``<settings.out_dir>/<item key>/`` so that a killed evaluation resumes from its last
epoch. ``settings`` holds:

- ``data``: the data section of a training job (``DataConfig`` fields), required;
- ``minutes``: training budget counted on the CPU clock, which buys different training on another CPU;
  ``max_steps``: a budget in optimizer steps, the same on every machine (either, both, or neither:
  then ``epochs`` alone ends training);
- ``epochs`` (default 10000), ``seed`` (0), ``threads`` (training threads, None: torch's);
- ``size``: [H, W] the latency and FLOPs are for (default: the data's crop or base size);
- ``latency``: ``"table"`` (predicted from the operator latency table, default) or ``"measured"``;
  ``backend`` (onnxruntime), ``latency_threads``, ``table_min_runs``, ``table_min_time_s``;
- ``train``: overrides of the training recipe (``GROUNDTRUTH_RECIPE``: TrainConfig fields);
- ``out_dir``: where the per-item run folders go (default ``runs/groundtruth``);
- ``device``: where to train (``cpu``, default, ``cuda``, ``auto``); ``record_latency``: false leaves
  ``latency_ms`` out (None), for repeats whose latency the first run already gave. These two, like
  ``out_dir``, say where and how an item runs, not what is trained: they are not in its key, so a
  network trained on a GPU counts as done for the same settings on a CPU and the other way round.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from segnas.errors import SegnasError
from segnas.parallel import default_key, load_results

#: The training recipe of every ground-truth network (``benchmarks/train_camvid.py``'s, evaluated
#: once, at the end of the budget).
GROUNDTRUTH_RECIPE: dict[str, Any] = {
    "optim": {"name": "sgd", "lr": 0.08, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "poly",
              "warmup_iters": 100},
    "loss": {"kind": "ohem", "ohem_thresh": 0.7, "ohem_min_kept": 100000, "aux_weight": 0.4},
    "ema_decay": 0.998, "bf16": True, "channels_last": True, "eval_every": 10**9, "progress": False,
}
#: Settings that do not change a result (left out of an item's key).
_NOT_IN_KEY = ("out_dir", "device", "record_latency")


def resolve_space(space: Any) -> Any:
    """A space object from a registered name, or the object itself."""
    if isinstance(space, str):
        from segnas.spaces import get_space

        return get_space(space)
    for attr in ("name", "sample", "mutate", "build", "arch_from_dict"):
        if not hasattr(space, attr):
            raise SegnasError(f"space: {space!r} lacks {attr!r}; expected a space name or a search space object")
    return space


def arch_key(arch: Any) -> str:
    """A canonical string of an architecture (its sorted JSON), for deduplication and caching."""
    data = arch.to_dict() if hasattr(arch, "to_dict") else arch
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def sample_archs(space: Any, n: int, seed: int = 0, max_tries: int | None = None) -> list[Any]:
    """``n`` distinct architectures of ``space`` drawn with ``sample(rng, spread=True)`` (so they
    span the latency range), in draw order; deterministic for ``seed``."""
    space = resolve_space(space)
    if n < 1:
        raise SegnasError(f"sample_archs: n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    max_tries = max_tries or 100 * n
    seen: set[str] = set()
    out = []
    for _ in range(max_tries):
        arch = space.sample(rng, spread=True)
        k = arch_key(arch)
        if k not in seen:
            seen.add(k)
            out.append(arch)
            if len(out) == n:
                return out
    raise SegnasError(f"sample_archs: only {len(out)} distinct architectures in {max_tries} draws (asked for {n})")


def predicted_latency_ms(space: Any, arch: Any, table: Any, num_classes: int, size: Sequence[int]) -> float:
    """Latency of ``arch`` at ``size`` (H, W), batch 1, composed from the operator latency ``table``."""
    from segnas.cost import predict_latency

    h, w = int(size[0]), int(size[1])
    keys = resolve_space(space).latency_keys(arch, num_classes, (h, w))
    return float(predict_latency(keys, table, (1, 3, h, w)).total_ms)


def latency_function(space: Any, table: Any, num_classes: int, size: Sequence[int]) -> Callable[[Any], float]:
    """``arch -> ms`` predicted from ``table`` (see ``predicted_latency_ms``)."""
    space = resolve_space(space)
    return lambda arch: predicted_latency_ms(space, arch, table, num_classes, size)


# ------------------------------------------------------------------------------ evaluator
def make_item(space: Any, arch: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The evaluator's input for one architecture (JSON-serializable)."""
    space = resolve_space(space)
    data = arch.to_dict() if hasattr(arch, "to_dict") else dict(arch)
    return {"space": space.name, "arch": data, "settings": dict(settings)}


def item_key(item: dict[str, Any]) -> str:
    """A stable key of an item: everything its result depends on (not where it runs)."""
    settings = {k: v for k, v in item["settings"].items() if k not in _NOT_IN_KEY}
    return default_key({"space": item["space"], "arch": item["arch"], "settings": settings})


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def training_recipe(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``GROUNDTRUTH_RECIPE`` with ``overrides`` (TrainConfig fields) merged in, nested mappings too."""
    return _merge(GROUNDTRUTH_RECIPE, overrides or {})


def train_config(item: dict[str, Any], arch_path: Path, out_dir: Path):
    """The ``TrainConfig`` that trains one item's architecture from scratch."""
    from pydantic import ValidationError

    from segnas.config.train import TrainConfig

    s = item["settings"]
    if "data" not in s:
        raise SegnasError("groundtruth settings: missing field 'data' (the data section of a training job)")
    fields = training_recipe(s.get("train"))
    fields.update({
        "job": "groundtruth", "data": s["data"], "model": {"name": None, "arch": str(arch_path)},
        "epochs": int(s.get("epochs", 10000)), "time_budget_min": s.get("minutes"), "budget_clock": "cpu",
        "max_steps": s.get("max_steps"),
        "threads": s.get("threads"), "seed": int(s.get("seed", 0)), "out_dir": str(out_dir),
        "device": s.get("device", "cpu"),
    })
    try:
        return TrainConfig.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise SegnasError(f"groundtruth settings: {where}: {err['msg']}") from None


def _existing_run(folder: Path) -> Path | None:
    runs = sorted(p for p in folder.iterdir() if (p / "config.yaml").is_file()) if folder.is_dir() else []
    return runs[-1] if runs else None


def dataset_num_classes(data: dict[str, Any]) -> int:
    """Number of classes of the dataset a data section (``DataConfig`` fields) names."""
    from segnas.data import build_dataset

    split = data.get("train_split", "train")
    return int(build_dataset(data.get("name", "synthetic"), data.get("root"), split, None, cache=False,
                             **(data.get("options") or {})).num_classes)


def evaluate_arch(item: dict[str, Any]) -> dict[str, Any]:
    """Train ``item["arch"]`` from scratch under the item's budget; its val mIoU and costs.

    Returns ``{"space", "arch", "val_miou", "val_pixel_acc", "latency_ms", "latency_source",
    "params", "gflops", "train_minutes", "epochs", "steps", "minutes", "max_steps", "size", "cpu", "device",
    "bf16"}`` (JSON-serializable).
    Resumes the item's earlier, killed training if its folder holds one.
    """
    from segnas.cost import LatencyTable, count_flops, count_parameters, measure_latency
    from segnas.cost.machine import cpu_model
    from segnas.engine.device import describe_device
    from segnas.jobs.train import train_job
    from segnas.spaces import write_arch_file

    for field in ("space", "arch", "settings"):
        if field not in item:
            raise SegnasError(f"groundtruth item: missing field {field!r} (expected space, arch, settings)")
    space = resolve_space(item["space"])
    arch = space.arch_from_dict(item["arch"])
    s = item["settings"]
    folder = Path(s.get("out_dir", "runs/groundtruth")) / f"{space.name}-{item_key(item)}"
    arch_path = folder / "arch.json"
    cfg = train_config(item, arch_path, folder)
    if not arch_path.is_file():
        write_arch_file(arch_path, space.name, space.version, arch.to_dict())
    result = train_job(cfg, resume=_existing_run(folder), device=cfg.device)  # a killed item may resume elsewhere

    data = s["data"]
    size = s.get("size") or data.get("crop_size") or data.get("base_size")
    if size is None:
        raise SegnasError("groundtruth settings: give 'size' (H, W) for latency and FLOPs")
    h, w = int(size[0]), int(size[1])
    num_classes = dataset_num_classes(data)
    net = space.build(arch, num_classes).eval()
    source = s.get("latency", "table")
    backend = s.get("backend", "onnxruntime")
    if not s.get("record_latency", True):
        latency = None
    elif source == "table":
        table = LatencyTable(backend, threads=s.get("latency_threads"), min_runs=int(s.get("table_min_runs", 20)),
                             min_time_s=float(s.get("table_min_time_s", 0.3)))
        latency = predicted_latency_ms(space, arch, table, num_classes, (h, w))
    elif source == "measured":
        latency = float(measure_latency(net, (1, 3, h, w), backend, threads=s.get("latency_threads")).median_ms)
    else:
        raise SegnasError(f"groundtruth settings: latency must be 'table' or 'measured', got {source!r}")
    final = result.final
    if "val_miou" not in final:
        raise SegnasError("groundtruth settings: data.val_split is needed to score the trained network")
    return {
        "space": space.name, "arch": arch.to_dict(),
        "val_miou": float(final["val_miou"]), "val_pixel_acc": float(final.get("val_pixel_acc", float("nan"))),
        "latency_ms": latency, "latency_source": f"{source}:{backend}" if latency is not None else None,
        "params": int(count_parameters(net)), "gflops": float(count_flops(net, (1, 3, h, w)).gflops),
        "train_minutes": round(result.train_seconds / 60.0, 4), "epochs": int(result.epochs_done),
        "steps": int(final.get("step", 0)), "minutes": s.get("minutes"), "max_steps": s.get("max_steps"),
        "size": [h, w],
        # a CPU-minute budget buys different training on another CPU: repeats must match this
        "cpu": cpu_model(), "device": describe_device(cfg.device), "bf16": result.bf16,
    }


def run_groundtruth(space: Any, archs: Sequence[Any], settings: dict[str, Any], *, results_path: str | Path | None,
                    executor: str = "inline", workers: int = 1, progress: bool = False,
                    threads_per_worker: int | None = 1) -> list[dict[str, Any]]:
    """``evaluate_arch`` of every architecture through ``segnas.parallel.run_all`` (resumable via
    ``results_path``); results in input order."""
    from segnas.parallel import run_all

    items = [make_item(space, a, settings) for a in archs]
    return run_all(evaluate_arch, items, executor=executor, workers=workers, results_path=results_path,
                   key=item_key, progress=progress, threads_per_worker=threads_per_worker)


def load_groundtruth(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ground-truth JSONL file (each ``evaluate_arch``'s result plus its ``key``),
    sorted by key, so that their order does not depend on the order parallel workers finished in."""
    path = Path(path)
    if not path.is_file():
        raise SegnasError(f"{path}: ground-truth file not found")
    return [{"key": k, **v} for k, v in sorted(load_results(path).items())]


def fill_latency(path: str | Path, latency_by_arch: dict[str, float], source: str) -> int:
    """Give the records of the ground-truth file ``path`` that have no ``latency_ms`` (networks trained
    on another machine without measuring it) their latency from ``latency_by_arch`` (``arch_key`` ->
    ms, predicted on the machine the latencies are for), with ``latency_source`` ``source``. Rewrites
    the file atomically, records in their order; returns how many were filled."""
    from segnas.utils import atomic_write_text

    results = load_results(path)
    filled = 0
    for rec in results.values():
        k = arch_key(rec["arch"])
        if rec.get("latency_ms") is None and k in latency_by_arch:
            rec["latency_ms"], rec["latency_source"] = float(latency_by_arch[k]), source
            filled += 1
    if filled:
        atomic_write_text(path, "".join(json.dumps({"key": k, "result": r}) + "\n" for k, r in results.items()))
    return filled


def record_cpus(records: Sequence[dict[str, Any]]) -> set[str]:
    """The CPUs that ground-truth ``records`` under a CPU-minute budget were trained on (records
    older than the ``cpu`` field name none; a step budget means the same on any CPU)."""
    return {r["cpu"] for r in records if r.get("cpu") and r.get("minutes")}


def check_one_cpu(files: dict[str, Sequence[dict[str, Any]]], this_cpu: str | None = None) -> None:
    """Raise if the CPU-minute records of ``files`` (name -> records) were trained on more than one
    CPU, or on another one than ``this_cpu``: a CPU-minute budget buys different training on each."""
    cpus = {cpu: name for name, records in files.items() for cpu in record_cpus(records)}
    if this_cpu is not None and cpus and set(cpus) != {this_cpu}:
        other = sorted(set(cpus) - {this_cpu})
        raise SegnasError(f"{cpus[other[0]]}: trained on {', '.join(other)}, but this machine is {this_cpu}: a "
                          "CPU-minute budget buys different training here (use --steps, or another --data-dir)")
    if len(cpus) > 1:
        raise SegnasError(f"{', '.join(files)}: trained on different CPUs ({', '.join(sorted(cpus))}); a CPU-minute "
                          "budget buys different training on each, so the runs are not repeats")


def load_groundtruth_runs(paths: str | Path | Sequence[str | Path]) -> list[dict[str, Any]]:
    """The records of the first ground-truth file, with ``val_miou`` the mean over every file that
    trained the same architecture (repeats with other training seeds) and ``val_miou_runs`` the
    single runs. Architectures missing from any file, or without a val mIoU in one, are left out."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise SegnasError("no ground-truth file given")
    files = [load_groundtruth(p) for p in paths]
    check_one_cpu(dict(zip(map(str, paths), files)))
    if len({r["bf16"] for records in files for r in records if "bf16" in r}) > 1:
        raise SegnasError(f"{', '.join(map(str, paths))}: some networks trained in bf16, others in fp32; "
                          "train them all in one precision")
    first = [r for r in files[0] if r.get("val_miou") is not None]
    by_arch = [{arch_key(r["arch"]): r["val_miou"] for r in records if r.get("val_miou") is not None}
               for records in files[1:]]
    out = []
    for r in first:
        k = arch_key(r["arch"])
        runs = [float(r["val_miou"])] + [m[k] for m in by_arch if k in m]
        if len(runs) == len(paths):
            out.append({**r, "val_miou": float(np.mean(runs)), "val_miou_runs": runs})
    if not out:
        raise SegnasError(f"{', '.join(map(str, paths))}: no architecture has a val_miou in every file")
    return out


def untrained_net(record: dict[str, Any], num_classes: int, seed: int = 0) -> Any:
    """The network of a ground-truth record (``space``, ``arch``), initialized from ``seed`` (the
    caller's RNG state is left as it was)."""
    import torch

    space = resolve_space(record["space"])
    arch = space.arch_from_dict(record["arch"])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return space.build(arch, num_classes)


def split_indices(n: int, train_fraction: float = 0.5, seed: int = 0) -> tuple[list[int], list[int]]:
    """A seeded random split of ``range(n)`` into (train, held-out) positions, the training part
    ``round(train_fraction * n)`` long (at least 3)."""
    if not 0 < train_fraction < 1:
        raise SegnasError(f"train_fraction must be between 0 and 1, got {train_fraction}")
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_train = max(3, int(round(train_fraction * n)))
    return order[:n_train], order[n_train:]


def rank_correlations(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Kendall τ (tau-b) and Spearman ρ between two equally long score lists (NaN when undefined)."""
    from segnas.proxies.discovery import rank_correlations as tau_rho

    if len(a) != len(b):
        raise SegnasError(f"rank_correlations: lists of different length ({len(a)} vs {len(b)})")
    if len(a) < 2:
        return {"kendall_tau": float("nan"), "spearman_rho": float("nan"), "n": len(a)}
    tau, rho = tau_rho(a, b)
    return {"kendall_tau": tau, "spearman_rho": rho, "n": len(a)}


def noise_ceiling_tau(seed_vs_seed_tau: float, runs: int = 1) -> float:
    """Kendall τ that a perfect proxy (one that knew every network's expected mIoU) would reach against
    the mean of ``runs`` training runs, given the τ between two single runs.

    Model: each run's mIoU = expected mIoU + independent Gaussian noise. Under bivariate normality
    τ = (2/π)·asin(r), so the run-to-run correlation r = sin(π·τ/2); the mean of k runs has
    reliability R = k·r / (1 + (k−1)·r) (Spearman–Brown) and correlates with the expectation at √R.
    """
    if runs < 1:
        raise SegnasError(f"runs must be >= 1, got {runs}")
    if math.isnan(seed_vs_seed_tau):
        return float("nan")
    r = math.sin(math.pi * max(seed_vs_seed_tau, 0.0) / 2)
    reliability = runs * r / (1 + (runs - 1) * r) if r > 0 else 0.0
    return 2 / math.pi * math.asin(math.sqrt(reliability))
