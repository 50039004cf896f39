"""CamVid in the SegNet layout: ``{split}.txt`` list files, or ``{split}/`` + ``{split}annot/`` folders.

11 classes; label 11 (Unlabelled/void) is ignored.

Option ``holdout`` (a sequence name, e.g. ``0006R0``): CamVid's val images all come from sequence
0016E5, which also supplies 204 of the 367 training images, so val overstates how a network does on
streets it never saw. With ``holdout`` the ``train`` split leaves out every frame of that sequence
(frames are named ``<sequence>_<frame>``) and the split ``holdout`` is exactly those frames: a
cross-sequence validation set. Other splits are unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segnas.data.base import IGNORE_INDEX, ClassInfo, LabelMapper, PairDataset, list_images, read_pair_list, root_folder
from segnas.data.transforms import Compose
from segnas.errors import SegnasError

CAMVID_CLASSES = ClassInfo(
    names=("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
           "Pedestrian", "Bicyclist"),
    colors=((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
            (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)),
)
CAMVID_MAPPING = {**{i: i for i in range(11)}, 11: IGNORE_INDEX}


def camvid_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """Find a split's pairs from ``{split}.txt`` if present, else from the two folders."""
    root_folder(root, "CamVid", "train/, trainannot/, ...")
    list_file = root / f"{split}.txt"
    if list_file.is_file():
        return read_pair_list(list_file, root)
    if not (root / split).is_dir():
        raise SegnasError(f"camvid: no split {split!r} at {root} (no {split}.txt, no {split}/ folder); its splits: "
                          f"{', '.join(camvid_splits(root)) or 'none (is this the CamVid folder?)'}")
    images = list_images(root / split)
    annot = root / f"{split}annot"
    if not annot.is_dir():
        raise SegnasError(f"{annot}: label folder not found (expected {split}.txt or {split}annot/)")
    return [(p, annot / p.name) for p in images]


def camvid_splits(root: Path) -> list[str]:
    """The splits a CamVid folder has: its ``NAME.txt`` lists and ``NAME/`` folders beside ``NAMEannot/``."""
    lists = {p.stem for p in root.glob("*.txt")}
    folders = {p.name for p in root.iterdir() if p.is_dir() and (root / f"{p.name}annot").is_dir()}
    return sorted(lists | folders)


#: The split a ``holdout`` sequence is taken from, and the name of the split it becomes.
HOLDOUT_SOURCE, HOLDOUT_SPLIT = "train", "holdout"


def sequence_of(path: Path) -> str:
    """The sequence a CamVid frame belongs to (``0006R0_007740.png`` -> ``0006R0``)."""
    return path.name.split("_", 1)[0]


def holdout_pairs(root: Path, split: str, holdout: str) -> list[tuple[Path, Path]]:
    """``split``'s pairs with the ``holdout`` sequence taken out of ``train`` (``HOLDOUT_SPLIT``: only it)."""
    if split not in (HOLDOUT_SOURCE, HOLDOUT_SPLIT):
        return camvid_pairs(root, split)
    pairs = camvid_pairs(root, HOLDOUT_SOURCE)
    sequences = sorted({sequence_of(p) for p, _ in pairs})
    if holdout not in sequences:
        raise SegnasError(f"camvid: holdout {holdout!r} is not a sequence of the {HOLDOUT_SOURCE} split "
                          f"(its sequences: {', '.join(sequences)})")
    if len(sequences) == 1:
        raise SegnasError(f"camvid: holdout {holdout!r} is the only sequence of the {HOLDOUT_SOURCE} split; "
                          "nothing would be left to train on")
    keep = split == HOLDOUT_SPLIT
    return [(p, a) for p, a in pairs if (sequence_of(p) == holdout) == keep]


class CamVid(PairDataset):
    @staticmethod
    def has_split(root: str | Path | None, split: str, **options: Any) -> bool:
        """Whether ``root`` holds ``split`` (its list file, or its image folder), e.g. ``test.txt``;
        ``holdout`` exists where the ``holdout`` option is set."""
        if split == HOLDOUT_SPLIT and options.get("holdout"):
            split = HOLDOUT_SOURCE
        return root is not None and ((Path(root) / f"{split}.txt").is_file() or (Path(root) / split).is_dir())

    def __init__(self, root: str | Path | None, split: str = "train", transform: Compose | None = None,
                 cache: bool = False, holdout: str | None = None, **options: Any) -> None:
        if options:
            raise SegnasError(f"camvid: unknown option(s) {', '.join(sorted(options))}; CamVid takes 'holdout'")
        if root is None:
            raise SegnasError("camvid: a data root is required (data.root; --data-root)")
        root = Path(root)
        if holdout is None and split == HOLDOUT_SPLIT:
            raise SegnasError(f"camvid: split {HOLDOUT_SPLIT!r} needs the option holdout (a {HOLDOUT_SOURCE} "
                              "sequence, e.g. 0006R0)")
        pairs = camvid_pairs(root, split) if holdout is None else holdout_pairs(root, split, str(holdout))
        name = f"camvid[{split}{f', without {holdout}' if holdout and split == HOLDOUT_SOURCE else ''}] at {root}"
        super().__init__(pairs, CAMVID_CLASSES, LabelMapper(CAMVID_MAPPING), transform=transform, cache=cache,
                         name=name)
