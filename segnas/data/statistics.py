"""Label statistics of a dataset split: per-class pixel frequencies and the class weights built from
them (median frequency balancing, Eigen & Fergus, ICCV 2015)."""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from segnas.data.base import IGNORE_INDEX
from segnas.errors import SegnasError


def label_map(dataset: Dataset, index: int) -> np.ndarray:
    """Sample ``index``'s train-id mask as stored (a ``PairDataset`` skips its augmentation)."""
    if hasattr(dataset, "load_arrays"):
        return np.asarray(dataset.load_arrays(index)[1])
    return np.asarray(dataset[index][1])


def class_frequencies(dataset: Dataset, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixels of each class, labelled pixels of the images each class appears in), over every
    sample of ``dataset``; ignored pixels count in neither."""
    pixels = np.zeros(num_classes, dtype=np.float64)
    present_in = np.zeros(num_classes, dtype=np.float64)
    for i in range(len(dataset)):
        mask = label_map(dataset, i).ravel()
        labelled = mask[mask != IGNORE_INDEX].astype(np.int64)
        if labelled.size and int(labelled.max()) >= num_classes:
            raise SegnasError(f"labels: sample {i} has class id {int(labelled.max())}, the dataset has {num_classes}")
        counts = np.bincount(labelled, minlength=num_classes)
        pixels += counts
        present_in[counts > 0] += labelled.size
    return pixels, present_in


def median_frequency_weights(dataset: Dataset, num_classes: int) -> list[float]:
    """w_c = median_c(f_c) / f_c with f_c = pixels of class c / labelled pixels of the images that
    contain c; a class that never appears gets weight 1 (it contributes no pixels anyway)."""
    pixels, present_in = class_frequencies(dataset, num_classes)
    seen = pixels > 0
    if not seen.any():
        raise SegnasError("loss.class_weights: median_frequency: the training split has no labelled pixels")
    freq = np.where(seen, pixels / np.maximum(present_in, 1.0), np.nan)
    median = float(np.nanmedian(freq))
    return [float(median / f) if np.isfinite(f) else 1.0 for f in freq]
