"""Cityscapes in the official layout, fine annotations, 19 train classes.

    root/leftImg8bit/{split}/{city}/{name}_leftImg8bit.png
    root/gtFine/{split}/{city}/{name}_gtFine_labelIds.png

Label ids are mapped to train ids with the official table from ``cityscapesscripts``
(``cityscapesscripts.helpers.labels``): every label id in the table is declared, the ones with
train id 255/-1 or ``ignoreInEval`` map to 255 (ignore); any other value is an error naming the
file and the values.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from segnas.data.base import IGNORE_INDEX, ClassInfo, LabelMapper, PairDataset, root_folder
from segnas.data.transforms import Compose
from segnas.errors import SegnasError

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
MODES = ("fine",)


def _official_labels():
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError:
        raise SegnasError(
            "cityscapes: the official label table needs the 'cityscapesscripts' package "
            "(pip install cityscapesscripts)"
        ) from None
    return labels


@lru_cache(maxsize=None)
def cityscapes_mapping() -> dict[int, int]:
    """``labelId -> trainId`` for every label id of the official table (255 = ignore)."""
    mapping: dict[int, int] = {}
    for lab in _official_labels():
        if lab.id < 0:  # 'license plate' (id -1) never appears in labelIds images
            continue
        ignored = lab.ignoreInEval or lab.trainId in (255, -1) or lab.trainId < 0
        mapping[lab.id] = IGNORE_INDEX if ignored else int(lab.trainId)
    return mapping


@lru_cache(maxsize=None)
def cityscapes_classes() -> ClassInfo:
    """The 19 train classes' names and colours, in train-id order."""
    by_train_id = {}
    for lab in _official_labels():
        if lab.ignoreInEval or lab.trainId in (255, -1) or lab.trainId < 0:
            continue
        by_train_id.setdefault(int(lab.trainId), lab)
    ids = sorted(by_train_id)
    if ids != list(range(len(ids))):
        raise SegnasError(f"cityscapes: official train ids are not contiguous: {ids}")
    return ClassInfo(
        names=tuple(by_train_id[i].name for i in ids),
        colors=tuple(tuple(int(c) for c in by_train_id[i].color) for i in ids),
    )


def cityscapes_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """Every (image, labelIds) pair of ``split``, sorted by city then name."""
    root_folder(root, "Cityscapes", "leftImg8bit/ and gtFine/")
    image_dir = root / "leftImg8bit" / split
    label_dir = root / "gtFine" / split
    if not image_dir.is_dir():
        raise SegnasError(f"{image_dir}: image folder not found (expected leftImg8bit/{split}/<city>/)")
    if not label_dir.is_dir():
        raise SegnasError(f"{label_dir}: label folder not found (expected gtFine/{split}/<city>/)")
    pairs = []
    for image in sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}")):
        if image.name.startswith("."):  # (a hidden file: macOS's ._ copies among them)
            continue
        city = image.parent.name
        name = image.name[: -len(IMAGE_SUFFIX)]
        label = label_dir / city / f"{name}{LABEL_SUFFIX}"
        if not label.is_file():
            train_ids = " (segnas reads the labelIds maps, not labelTrainIds)" \
                if (label_dir / city / f"{name}_gtFine_labelTrainIds.png").is_file() else ""
            raise SegnasError(f"{label}: label file not found for image {image}{train_ids}")
        pairs.append((image, label))
    return pairs


#: The split whose public labels are blank (every pixel ignored): nothing to score or learn.
BLANK_SPLIT = "test"


class Cityscapes(PairDataset):
    """Cityscapes fine annotations mapped to the 19 train classes (255 = ignore)."""

    @staticmethod
    def has_split(root: str | Path | None, split: str, **options: Any) -> bool:
        """Whether ``root`` holds labels of ``split``; never ``BLANK_SPLIT``."""
        return root is not None and split != BLANK_SPLIT and (Path(root) / "gtFine" / split).is_dir()

    def __init__(self, root: str | Path | None, split: str = "train", transform: Compose | None = None,
                 cache: bool = False, mode: str = "fine", **options: Any) -> None:
        if options:
            raise SegnasError(
                f"cityscapes: unknown option(s) {', '.join(sorted(options))}; the only option is mode"
            )
        if mode not in MODES:
            raise SegnasError(f"cityscapes: mode {mode!r} is not supported; choose one of {', '.join(MODES)}")
        if root is None:
            raise SegnasError("cityscapes: a data root is required (data.root; --data-root)")
        if split == BLANK_SPLIT:
            raise SegnasError(f"cityscapes: the {BLANK_SPLIT} split's public labels are blank (every pixel ignored): "
                              "nothing to score or learn; use train and val (or a split of your own labelled images)")
        root = Path(root)
        pairs = cityscapes_pairs(root, split)
        super().__init__(pairs, cityscapes_classes(), LabelMapper(cityscapes_mapping()),
                         transform=transform, cache=cache, name=f"cityscapes[{split}] at {root}")
        self.root = root
        self.split = split
        self.mode = mode
