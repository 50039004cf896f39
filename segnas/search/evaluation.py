"""The evaluator a sample-based search scores its candidates with, from its settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segnas.config.search import EvaluatorSettings, ProxyEvaluatorSettings, SupernetEvaluatorSettings
from segnas.cost.memory import check_inference_size
from segnas.data import build_dataset, validate_split
from segnas.errors import SegnasError
from segnas.evaluate.base import Evaluator
from segnas.evaluate.proxy import (ProxyEvaluator, check_proxy, check_proxy_images, proxy_scored_on,
                                   scoring_setup)
from segnas.evaluate.short_train import TrainEvaluator, check_training_recipe
from segnas.evaluate.supernet import SupernetEvaluator
from segnas.search.base import SearchContext
from segnas.spaces.base import SearchSpace, WeightSharingSupernet


def proxy_evaluator(ps: ProxyEvaluatorSettings, space: SearchSpace, ctx: SearchContext,
                    init_seed: int | None = None) -> ProxyEvaluator:
    """Scoring by a proxy: images, size and initializations default to what a discovered proxy file
    was discovered on (a notice when they differ), else 8 images at 128x160 and 1 initialization
    (``evaluate.proxy.scoring_setup``)."""
    seen = proxy_scored_on(ps.proxy)
    images, size, inits = scoring_setup(seen, ps.images, ps.size, ps.inits)
    now = {"data": ctx.settings.data.name, "images": images, "size": list(size) if size else None, "inits": inits}
    diff = {k: (seen[k], v) for k, v in now.items() if k in seen and seen[k] != v}
    if seen.get("spaces") and space.name not in seen["spaces"]:
        diff = {"space": (", ".join(seen["spaces"]), space.name), **diff}
    if diff:
        def shown(key: str, value: Any) -> Any:
            return "native" if key == "size" and value is None else value

        ctx.echo(f"note: {ps.proxy} was discovered on " + ", ".join(f"{k} {shown(k, a)}" for k, (a, _) in diff.items())
                 + "; this search scores on " + ", ".join(f"{k} {shown(k, b)}" for k, (_, b) in diff.items()))
    seed = ctx.settings.seed
    return ProxyEvaluator(space, ps.proxy, data=ctx.settings.data, split=ps.split, images=images,
                          batch_size=ps.batch_size, size=size, data_seed=seed, proxy_seed=ps.proxy_seed,
                          init_seed=seed if init_seed is None else init_seed, inits=inits)


def check_proxy_settings(ps: ProxyEvaluatorSettings, where: str, ctx: SearchContext | None = None) -> None:
    """Refuse an unknown proxy, or fewer images than it needs, naming the fields under ``where``;
    with ``ctx``, also a split the dataset lacks, more images than that split holds, and a scoring
    size too large for memory."""
    check_proxy(ps.proxy, f"{where}.proxy (--proxy)")
    seen = proxy_scored_on(ps.proxy)
    images, size, _ = scoring_setup(seen, ps.images, ps.size, ps.inits)
    check_proxy_images(ps.proxy, images, ps.batch_size, f"{where}.images")
    if ctx is None:
        return
    data = ctx.settings.data
    try:
        held = len(build_dataset(data.name, data.root, ps.split, None, cache=False, **data.options))
    except SegnasError as exc:
        raise SegnasError(f"{where}.split: {exc}") from None
    if size is None:  # the images' own (a proxy discovered at theirs): one size, checked for memory below
        report = validate_split(data.name, data.root, ps.split, data.options, False)
        if report.other_size is not None:
            (h1, w1), (h2, w2) = report.max_size, report.other_size
            raise SegnasError(f"{where}.size: {ps.proxy} was discovered at its images' own size, but the {ps.split!r} "
                              f"images differ in size ({h1}x{w1}, {h2}x{w2}); set {where}.size to one size")
        size = report.max_size
    # (a batch's statistics are frozen by one forward pass over it: proxies.common.freeze_batch_stats)
    check_inference_size(size, ctx.num_classes, f"{where}.size", min(ps.batch_size, images))
    if images > held:
        source = "" if ps.images else " (what its proxy file was discovered on)" if seen.get("images") else " (the default)"
        raise SegnasError(f"{where}.images: {images} images{source}, but split {ps.split!r} holds {held}; "
                          f"set {where}.images to {held} or fewer")


def check_evaluator(es: EvaluatorSettings, where: str, space: SearchSpace, ctx: SearchContext) -> None:
    """Refuse an evaluator setting that would fail only once the search runs (an unknown proxy, a
    missing supernet checkpoint, a space whose supernet cannot run a member, a bad training recipe),
    naming the field under ``where`` (e.g. ``random.evaluator``)."""
    if es.kind == "proxy":
        check_proxy_settings(es.proxy, f"{where}.proxy", ctx)
    elif es.kind == "train":
        check_training_recipe(es.train.recipe, f"{where}.train.recipe")
    elif es.kind == "supernet":
        if es.supernet.checkpoint is None:
            raise SegnasError(f"{where}.supernet.checkpoint: give a one-shot search run directory or checkpoint")
        supernet_checkpoint(es.supernet.checkpoint)
        if not isinstance(space.supernet(ctx.num_classes, ctx.latency.size), WeightSharingSupernet):
            raise SegnasError(f"{where}.kind: the supernet of space {space.name!r} cannot run a chosen architecture "
                              "(no select()); use the proxy or short-training evaluator, or a space such as mobile")


def train_evaluator(space: SearchSpace, ctx: SearchContext, steps: int, recipe: dict[str, Any]) -> TrainEvaluator:
    """Scoring by a short training from scratch (``steps`` optimizer steps, the ground-truth recipe
    with ``recipe`` overrides), each candidate's run kept under the search's run directory. Each
    training keeps the threads of the process it runs in: the search's (``threads``) when inline,
    one per pool worker, ``task_cpus`` on Ray (``segnas.parallel``)."""
    s = ctx.settings
    settings = {"data": s.data.model_dump(mode="json"), "max_steps": steps, "seed": s.seed, "threads": None,
                "size": list(ctx.latency.size), "backend": ctx.latency.backend, "train": recipe,
                "out_dir": str(ctx.run.path / "candidates"), "device": s.device}
    return TrainEvaluator(space.name, settings)


def supernet_checkpoint(path: str | Path) -> Path:
    """A one-shot run's supernet checkpoint (its last search state, else its pre-trained one), or
    ``path`` itself when it is a file."""
    path = Path(path)
    if path.is_file():
        return path
    for name in ("search_last.pt", "pretrained.pt"):
        if (path / "checkpoints" / name).is_file():
            return path / "checkpoints" / name
    raise SegnasError(f"{path}: no supernet checkpoint (checkpoints/search_last.pt or pretrained.pt)")


def supernet_evaluator(ss: SupernetEvaluatorSettings, space: SearchSpace, space_options: dict[str, Any],
                       ctx: SearchContext) -> SupernetEvaluator:
    """Scoring by weight sharing in the supernet of a one-shot run over the same space."""
    if ss.checkpoint is None:
        raise SegnasError("evaluator.supernet.checkpoint: give a one-shot search run directory or checkpoint")
    return SupernetEvaluator(space.name, supernet_checkpoint(ss.checkpoint), ctx.num_classes, ctx.latency.size,
                             ctx.settings.data, space_options, ss.size or ctx.settings.search_size, ss.val_images,
                             ss.calibration_images, seed=ctx.settings.seed)


def build_evaluator(es: EvaluatorSettings, space: SearchSpace, ctx: SearchContext,
                    space_options: dict[str, Any] | None = None) -> Evaluator:
    if es.kind == "proxy":
        return proxy_evaluator(es.proxy, space, ctx)
    if es.kind == "supernet":
        return supernet_evaluator(es.supernet, space, space_options or {}, ctx)
    return train_evaluator(space, ctx, es.train.steps, es.train.recipe)
