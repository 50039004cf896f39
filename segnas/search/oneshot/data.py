"""The data a one-shot search trains and scores its supernet on, and where a pre-trained supernet is."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset, Subset

from segnas.config.search import SearchSettings
from segnas.data import eval_transforms, open_data, train_transforms


def search_train_set(settings: SearchSettings) -> Dataset:
    """The training split as the search sees it: whole images resized to ``search_size`` when set
    (searching at reduced resolution), else the data section's augmented crops."""
    dc = settings.data
    tf = (train_transforms(None, jitter=dc.jitter, base_size=settings.search_size) if settings.search_size
          else train_transforms(dc.crop_size, tuple(dc.scale), dc.jitter, dc.base_size))
    return open_data(dc, dc.train_split, tf)


def search_val_subset(settings: SearchSettings, images: int) -> Dataset | None:
    """The first ``images`` validation images at the search resolution (None when not wanted)."""
    dc = settings.data
    if not dc.val_split or not images:
        return None
    val = open_data(dc, dc.val_split, eval_transforms(settings.search_size or dc.base_size))
    return Subset(val, range(min(len(val), images)))


def pretrained_checkpoint(path: str | Path) -> Path:
    """``checkpoints/pretrained.pt`` of a search run directory, or the file itself."""
    path = Path(path)
    return path / "checkpoints" / "pretrained.pt" if path.is_dir() else path
