"""The ``SyntheticStreets`` dataset: options, validation and sample caching."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from segnas.data.base import Transform, to_sample
from segnas.data.synthetic.classes import SYNTHETIC_CLASSES
from segnas.data.synthetic.render import DEFAULT_SIZE, GENERATOR_VERSION, SPLITS, render
from segnas.errors import SegnasError
from segnas.utils import atomic_write, parse_size

DEFAULT_LENGTH = {"train": 256, "val": 64, "test": 64}
MIN_SIDE = 8


class SyntheticStreets(Dataset):
    """Procedural street scenes with CamVid's 11 classes; see ``segnas.data.synthetic``.

    ``root``: optional folder for a disk cache of generated samples (used when ``cache=True``);
    with ``cache=True`` and no root, samples are kept in memory. ``size`` is (H, W) or "HxW";
    ``length`` defaults to 256 (train) / 64 (val, test); ``seed`` picks the family of scenes.
    """

    classes = SYNTHETIC_CLASSES

    @staticmethod
    def has_split(root: str | Path | None, split: str, **options: Any) -> bool:
        """Every split the generator knows (train, val, test) exists."""
        return split in SPLITS

    def __init__(self, root: str | Path | None = None, split: str = "train", transform: Transform | None = None,
                 cache: bool = False, size: Sequence[int] | str = DEFAULT_SIZE, length: int | None = None,
                 seed: int = 0) -> None:
        if split not in SPLITS:
            raise SegnasError(f"synthetic: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        h, w = parse_size(size, field="synthetic size")
        if h < MIN_SIDE or w < MIN_SIDE:
            raise SegnasError(f"synthetic size: height and width must be at least {MIN_SIDE}, got {h}x{w}")
        if length is None:
            length = DEFAULT_LENGTH[split]
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
            raise SegnasError(f"synthetic length: expected a positive integer, got {length!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise SegnasError(f"synthetic seed: expected a non-negative integer, got {seed!r}")
        self.split, self.size, self.length, self.seed = split, (h, w), int(length), int(seed)
        self.transform = transform
        self.name = f"synthetic[{split}] {h}x{w} seed {seed}"
        self.cache_dir: Path | None = None
        self._memory: dict[int, tuple[np.ndarray, np.ndarray]] | None = None
        if cache and root is not None:
            folder = Path(root) / f"synthetic-v{GENERATOR_VERSION}" / f"{split}-seed{seed}-{h}x{w}"
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SegnasError(f"{root}: cannot create the synthetic cache folder ({exc.strerror or exc})") from None
            self.cache_dir = folder
        elif cache:
            self._memory = {}

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    def __len__(self) -> int:
        return self.length

    def _index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"{self.name}: index {index} out of range for {self.length} samples")
        return i

    def generate(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Render sample ``index`` afresh (no cache): uint8 HxWx3 image, uint8 HxW mask."""
        return render(self.seed, self.split, self._index(index), self.size)

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 HxWx3 image and uint8 HxW train-id mask (255 = void), from the cache if any."""
        i = self._index(index)
        if self._memory is not None and i in self._memory:
            return self._memory[i]
        if self.cache_dir is not None:
            path = self.cache_dir / f"{i:06d}.npz"
            arrays = self._read_cached(path)
            if arrays is None:
                arrays = render(self.seed, self.split, i, self.size)
                image, mask = arrays
                atomic_write(path, lambda tmp: _save_npz(tmp, image, mask))
            return arrays
        arrays = render(self.seed, self.split, i, self.size)
        if self._memory is not None:
            self._memory[i] = arrays
        return arrays

    def _read_cached(self, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
        """A cached sample, or None when missing or unreadable (it is then regenerated)."""
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                image, mask = data["image"], data["mask"]
        except (OSError, ValueError, KeyError, EOFError):
            return None
        h, w = self.size
        if image.shape != (h, w, 3) or mask.shape != (h, w) or image.dtype != np.uint8 or mask.dtype != np.uint8:
            return None
        return image, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_sample(*self.load_arrays(index), self.transform)

    def validate(self) -> int:
        """Nothing to read: render the first sample as a smoke test and return the length."""
        self.load_arrays(0)
        return len(self)


def _save_npz(path: Path, image: np.ndarray, mask: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, image=image, mask=mask)
