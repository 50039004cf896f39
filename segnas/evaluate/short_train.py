"""Ground truth for training-free search: sampled architectures trained from scratch under one
fixed, short budget (CPU-minutes or optimizer steps), with their latency, parameters and FLOPs.

``evaluate_arch`` is the short-training evaluator: a pure, picklable function of one item
``{"space", "arch", "settings"}`` that any ``segnas.parallel`` executor can run. Each item trains in
its own folder ``<settings.out_dir>/<item key>/`` so that a killed evaluation resumes from its last
epoch. ``settings`` holds:

- ``data``: the data section of a training job (``DataConfig`` fields), required;
- ``minutes``: training budget counted on the CPU clock, which buys different training on another CPU;
  ``max_steps``: a budget in optimizer steps, the same on every machine (either, both, or neither:
  then ``epochs`` alone ends training);
- ``epochs`` (default 10000), ``seed`` (0), ``threads`` (training threads, None: the process's);
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

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from segnas.config.io import build_config, merged
from segnas.config.recipes import RUN_STAND_INS, load_recipe, refuse_run_fields
from segnas.config.train import DataConfig, TrainConfig
from segnas.cost import LatencyModel, count_flops, count_parameters, measure_latency
from segnas.cost.machine import cpu_model
from segnas.data import dataset_classes
from segnas.engine.device import describe_device
from segnas.errors import SegnasError, TrainingDiverged
from segnas.evaluate.base import Evaluator
from segnas.parallel import default_key
from segnas.spaces.base import Architecture, SearchSpace, resolve_space, save_arch
from segnas.training import train_job
from segnas.training.cached import resumable_training

#: The training recipe of every ground-truth network: the ``cpu-short`` recipe (``segnas/recipes``)
#: without its data settings (the ground-truth settings give the data), evaluated once, at the end
#: of the budget.
GROUNDTRUTH_RECIPE: dict[str, Any] = {**{k: v for k, v in load_recipe("cpu-short").items() if k != "data"},
                                      "eval_every": 10**9, "progress": False}
#: Settings that do not change a result (left out of an item's key).
_NOT_IN_KEY = ("out_dir", "device", "record_latency")


def make_item(space: str | SearchSpace, arch: Architecture | dict[str, Any],
              settings: dict[str, Any]) -> dict[str, Any]:
    """The evaluator's input for one architecture (JSON-serializable)."""
    space = resolve_space(space)
    data = arch.to_dict() if hasattr(arch, "to_dict") else dict(arch)
    return {"space": space.name, "arch": data, "settings": dict(settings)}


def item_key(item: dict[str, Any]) -> str:
    """A stable key of an item: everything its result depends on (not where it runs)."""
    settings = {k: v for k, v in item["settings"].items() if k not in _NOT_IN_KEY}
    return default_key({"space": item["space"], "arch": item["arch"], "settings": settings})


def training_recipe(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``GROUNDTRUTH_RECIPE`` with ``overrides`` (TrainConfig fields) merged in, nested mappings too."""
    return merged(GROUNDTRUTH_RECIPE, overrides or {})


def check_training_recipe(overrides: dict[str, Any], where: str) -> None:
    """Refuse, naming ``where``, ``training_recipe`` overrides that set the run (the evaluator does)
    or make no valid training together with the recipe."""
    refuse_run_fields(overrides, where)
    build_config(TrainConfig, merged(RUN_STAND_INS, training_recipe(overrides)), where)


def train_config(item: dict[str, Any], arch_path: Path, out_dir: Path) -> TrainConfig:
    """The ``TrainConfig`` that trains one item's architecture from scratch."""
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


def evaluate_arch(item: dict[str, Any]) -> dict[str, Any]:
    """Train ``item["arch"]`` from scratch under the item's budget; its val mIoU and costs.

    Returns ``{"space", "arch", "val_miou", "val_pixel_acc", "latency_ms", "latency_source",
    "params", "gflops", "train_minutes", "epochs", "steps", "minutes", "max_steps", "size", "cpu", "device",
    "bf16"}`` (JSON-serializable).
    Resumes the item's earlier, killed training if its folder holds one.
    """
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
        save_arch(arch_path, space, arch)
    result = train_job(cfg, resume=resumable_training(folder, cfg))  # a killed item may resume elsewhere

    data = s["data"]
    size = s.get("size") or data.get("crop_size") or data.get("base_size")
    if size is None:
        raise SegnasError("groundtruth settings: give 'size' (H, W) for latency and FLOPs")
    h, w = int(size[0]), int(size[1])
    num_classes = dataset_classes(DataConfig.model_validate(data)).num_classes
    net = space.build(arch, num_classes).eval()
    source = s.get("latency", "table")
    backend = s.get("backend", "onnxruntime")
    if not s.get("record_latency", True):
        latency = None
    elif source == "table":
        model = LatencyModel.create(backend, (h, w), threads=s.get("latency_threads"),
                                    min_runs=int(s.get("table_min_runs", 20)),
                                    min_time_s=float(s.get("table_min_time_s", 0.3)))
        latency = model.predict(space, arch, num_classes)
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


def evaluate_or_diverged(item: dict[str, Any]) -> dict[str, Any]:
    """``evaluate_arch``'s record, or for a network whose training diverged under the item's recipe
    ``{"space", "arch", "val_miou": None, "diverged": reason}``: a ground truth or a search records it
    as not trainable and goes on (a resumed run does not train it again)."""
    try:
        return evaluate_arch(item)
    except TrainingDiverged as exc:
        return {"space": item["space"], "arch": item["arch"], "val_miou": None, "diverged": str(exc)}


class TrainEvaluator(Evaluator):
    """Scores an architecture by ``evaluate_arch``: a short training from scratch under ``settings``
    (the ground-truth item settings above); the score is the val mIoU. Nothing to set up per worker."""

    def __init__(self, space: str, settings: dict[str, Any]) -> None:
        super().__init__()
        self.space = resolve_space(space)
        self.settings = dict(settings)

    def evaluate(self, arch: dict[str, Any]) -> dict[str, Any]:
        record = evaluate_or_diverged(make_item(self.space, arch, self.settings))
        return {"score": record["val_miou"], **record}  # a diverged candidate failed: score None
