"""A copy of CamVid's train and val splits resized once, for machines it must be carried to.

    python benchmarks/groundtruth/camvid_resized_copy.py ../shared/data/camvid .gpu/camvid --size 180,240

The 360x480 originals (122 MB) exceed what travels to a lent GPU machine (64 MiB). Training with
``--base-size 180,240`` resizes every image first anyway; this does that resize here with the same
function (``segnas.data.transforms.resize_pair``: bilinear image, nearest labels) and stores the
result as PNG. The only difference a network then sees is the image's rounding to 8 bits (at most
0.5/255); the resize on the machine is the identity. Raw label values are kept, so the copy is read
like the original (same list files, same label mapping).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segnas.data.base import read_image, read_label
from segnas.data.camvid import camvid_pairs
from segnas.data.transforms import resize_pair
from segnas.errors import SegnasError
from segnas.utils import parse_size


def resized_copy(src: Path, dst: Path, size: tuple[int, int], splits=("train", "val")) -> dict[str, int]:
    """Write ``dst/{split}/``, ``dst/{split}annot/`` and ``dst/{split}.txt``; pairs per split."""
    counts = {}
    for split in splits:
        (dst / split).mkdir(parents=True, exist_ok=True)
        (dst / f"{split}annot").mkdir(parents=True, exist_ok=True)
        lines = []
        for img_path, label_path in camvid_pairs(src, split):
            image = torch.from_numpy(read_image(img_path)).permute(2, 0, 1).float().div_(255.0)
            image, label = resize_pair(image, torch.from_numpy(read_label(label_path)), size)
            pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(dst / split / img_path.name, optimize=True)
            Image.fromarray(label.numpy().astype(np.uint8)).save(dst / f"{split}annot" / label_path.name)
            lines.append(f"{split}/{img_path.name} {split}annot/{label_path.name}")
        (dst / f"{split}.txt").write_text("\n".join(lines) + "\n")
        counts[split] = len(lines)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--size", type=parse_size, default=(180, 240), help="HxW, as --base-size will be")
    args = ap.parse_args()
    try:
        print(resized_copy(args.src, args.dst, tuple(args.size)))
    except SegnasError as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
