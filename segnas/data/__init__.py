"""Datasets by name, each a ``SegmentationDataset``: it yields (image float32 CHW normalized,
mask int64 HW, 255 = ignore)."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any, Callable

from segnas.config.train import DataConfig
from segnas.data.base import IGNORE_INDEX, ClassInfo, PairDataset, SegmentationDataset, Transform, meta_split
from segnas.data.transforms import eval_transforms, train_transforms
from segnas.data.validate import DataReport, validate_dataset, validate_split
from segnas.errors import SegnasError
from segnas.registry import NAME, load_plugins, plugin_hint, plugin_table, qualified

#: Datasets by name (``data.name``): segnas's own as ``module:Class`` (imported when used), a
#: plugin's as the class it registered (``register_dataset``).
DATASETS: dict[str, str | type] = plugin_table({
    "camvid": "segnas.data.camvid:CamVid",
    "cityscapes": "segnas.data.cityscapes:Cityscapes",
    "folder": "segnas.data.folder:FolderDataset",
    "synthetic": "segnas.data.synthetic:SyntheticStreets",
})

#: What every dataset class answers (``SegmentationDataset``): checked as a plugin registers one.
DATASET_MEMBERS = ("__len__", "__getitem__", "load_arrays", "has_split")


def register_dataset(name: str) -> Callable[[type], type]:
    """Class decorator: make a dataset of your own a ``data.name``, as segnas's are (a plugin's
    module registers it when imported, in every process that looks it up: ``registry``). The class
    follows ``SegmentationDataset``: built as ``cls(root, split=..., transform=..., cache=...,
    **options)`` (its other arguments are its ``data.options``), with ``classes``, samples, decoded
    arrays and a static ``has_split``."""
    def register(cls: type) -> type:
        if not isinstance(cls, type):
            raise SegnasError(f"register_dataset({name!r}): decorates a class, got {cls!r}")
        if not NAME.fullmatch(name):
            raise SegnasError(f"register_dataset: {name!r} is not a name of lower-case letters, digits and _")
        taken = DATASETS.get(name)
        taken = qualified(taken) if isinstance(taken, type) else str(taken).replace(":", ".") if taken else None
        if taken is not None and taken != qualified(cls):  # (a plugin module imported twice registers once)
            raise SegnasError(f"register_dataset: {name!r} is already {taken}")
        missing = [m for m in DATASET_MEMBERS if not callable(getattr(cls, m, None))]
        if missing:
            raise SegnasError(f"register_dataset({name!r}): {qualified(cls)} lacks {', '.join(missing)} (a dataset "
                              "follows segnas.data.SegmentationDataset)")
        DATASETS[name] = cls
        return cls

    return register


def dataset_class(name: str) -> type:
    """Look a dataset class up by registry name (a plugin's too)."""
    if name not in DATASETS:
        load_plugins()
    if name not in DATASETS:
        raise SegnasError(f"dataset: unknown name {name!r}; choose one of {', '.join(sorted(DATASETS))} "
                          f"(or {plugin_hint()})")
    target = DATASETS[name]
    if isinstance(target, type):
        return target
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def dataset_options(name: str) -> tuple[dict[str, Any], bool]:
    """The options dataset ``name`` takes (``data.options``) with their defaults
    (``inspect.Parameter.empty`` for none), and whether it takes others too (it checks them itself)."""
    params = inspect.signature(dataset_class(name).__init__).parameters.values()
    named = {p.name: p.default for p in params if p.name not in ("self", "root", "split", "transform", "cache")
             and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def build_dataset(name: str, root: str | Path | None, split: str, transform: Transform | None = None,
                  cache: bool = False, **options: Any) -> SegmentationDataset:
    """Instantiate dataset ``name`` for ``split`` (e.g. train/val) under ``root``."""
    cls = dataset_class(name)
    takes, others = dataset_options(name)
    unknown = sorted(set(options) - set(takes))
    if unknown and not others:
        raise SegnasError(f"data.options: {name} has no option {unknown[0]!r} (its options: "
                          f"{', '.join(takes) or 'none'})")
    try:
        return cls(root, split=split, transform=transform, cache=cache, **options)
    except TypeError as exc:  # an option of a value the dataset cannot take (without options: a defect, raised)
        if not options:
            raise
        raise SegnasError(f"data.options: {name}: {exc} (the options given: {options})") from None


CACHE_LIMIT_BYTES = 2 * 1024**3


def open_split(name: str, root: str | Path | None, split: str, transform: Transform | None = None,
               cache: bool | None = None, options: dict[str, Any] | None = None) -> SegmentationDataset:
    """Like ``build_dataset``; ``cache=None`` keeps decoded samples in memory when the whole split
    would take under 2 GB (CamVid: ~190 MB; Cityscapes train: ~18 GB, so not cached)."""
    options = options or {}
    if cache is None:
        probe = build_dataset(name, root, split, None, cache=False, **options)
        image, mask = probe.load_arrays(0)
        cache = len(probe) * (image.nbytes + mask.nbytes) < CACHE_LIMIT_BYTES
    return build_dataset(name, root, split, transform, cache=cache, **options)


def open_data(cfg: DataConfig, split: str | None = None, transform: Transform | None = None,
              cache: bool | None | str = "settings") -> SegmentationDataset:
    """The one data opener of every job: split ``split`` (default ``cfg.train_split``) of the dataset
    a data settings section names, with ``transform``; ``cache`` defaults to the section's."""
    return open_split(cfg.name, cfg.root, split or cfg.train_split, transform,
                      cfg.cache if cache == "settings" else cache, cfg.options)


def has_split(cfg: DataConfig, split: str) -> bool:
    """Whether the dataset a data settings section names has a labelled split ``split`` (e.g. a
    ``test.txt`` list in the CamVid layout); its files are not checked here."""
    return bool(dataset_class(cfg.name).has_split(cfg.root, split, **cfg.options))


def dataset_classes(cfg: DataConfig) -> ClassInfo:
    """The classes (names, colours, count) of the dataset a data settings section names (reads no image)."""
    return build_dataset(cfg.name, cfg.root, cfg.train_split, None, cache=False, **cfg.options).classes


__all__ = ["open_data", "dataset_classes", "dataset_options", "has_split", "open_split", "IGNORE_INDEX", "ClassInfo",
           "PairDataset",
           "SegmentationDataset", "meta_split", "DATASETS", "build_dataset", "dataset_class", "register_dataset",
           "train_transforms", "eval_transforms", "validate_dataset", "validate_split", "DataReport"]
