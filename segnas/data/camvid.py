"""CamVid in the SegNet layout: ``{split}.txt`` list files, or ``{split}/`` + ``{split}annot/`` folders.

11 classes; label 11 (Unlabelled/void) is ignored.
"""

from __future__ import annotations

from pathlib import Path

from segnas.data.base import IGNORE_INDEX, ClassInfo, LabelMapper, PairDataset, list_images, read_pair_list
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
    if not root.is_dir():
        raise SegnasError(f"{root}: CamVid root folder not found")
    list_file = root / f"{split}.txt"
    if list_file.is_file():
        return read_pair_list(list_file, root)
    images = list_images(root / split)
    annot = root / f"{split}annot"
    if not annot.is_dir():
        raise SegnasError(f"{annot}: label folder not found (expected {split}.txt or {split}annot/)")
    return [(p, annot / p.name) for p in images]


class CamVid(PairDataset):
    @staticmethod
    def has_split(root: str | Path | None, split: str, **options) -> bool:
        """Whether ``root`` holds ``split`` (its list file, or its image folder), e.g. ``test.txt``."""
        return root is not None and ((Path(root) / f"{split}.txt").is_file() or (Path(root) / split).is_dir())

    def __init__(self, root: str | Path | None, split: str = "train", transform: Compose | None = None,
                 cache: bool = False, **options) -> None:
        if options:
            raise SegnasError(f"camvid: unknown option(s) {', '.join(sorted(options))}; CamVid takes none")
        if root is None:
            raise SegnasError("camvid: a data root is required (--data-root)")
        root = Path(root)
        super().__init__(camvid_pairs(root, split), CAMVID_CLASSES, LabelMapper(CAMVID_MAPPING),
                         transform=transform, cache=cache, name=f"camvid[{split}] at {root}")
