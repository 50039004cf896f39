"""Median-frequency class weights: the definition on hand-made label maps, and a training job that
resolves them from its training split before it starts."""

import numpy as np
import pytest
import yaml

from segnas.config import TrainConfig
from segnas.data.statistics import class_frequencies, median_frequency_weights
from segnas.errors import SegnasError
from segnas.jobs import train_job


class Masks:
    """A dataset of label maps only (``dataset[i][1]``)."""

    def __init__(self, masks):
        self.masks = [np.asarray(m) for m in masks]

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, i):
        return None, self.masks[i]


def test_median_frequency_by_hand():
    # image 0: 6 px of class 0, 2 of class 1; image 1: 3 of class 1, 1 of class 2 (+ 4 ignored); class 3 absent
    a = np.array([[0, 0, 0, 1], [0, 0, 0, 1]])
    b = np.array([[1, 1, 1, 2], [255, 255, 255, 255]])
    pixels, present = class_frequencies(Masks([a, b]), 4)
    assert pixels.tolist() == [6, 5, 1, 0] and present.tolist() == [8, 12, 4, 0]
    f = np.array([6 / 8, 5 / 12, 1 / 4])
    median = np.median(f)
    assert median_frequency_weights(Masks([a, b]), 4) == pytest.approx(list(median / f) + [1.0])
    with pytest.raises(SegnasError, match="class id 7"):
        class_frequencies(Masks([np.array([[7]])]), 4)
    with pytest.raises(SegnasError, match="no labelled pixels"):
        median_frequency_weights(Masks([np.full((2, 2), 255)]), 4)


def test_a_training_resolves_median_frequency_weights_from_its_training_split(tiny_cfg):
    result = train_job(TrainConfig.model_validate(tiny_cfg(epochs=1, **{"loss.class_weights": "median_frequency",
                                                                        "loss.label_smoothing": 0.1})))
    log = (result.run_dir and open(f"{result.run_dir}/log.txt").read())
    line = next(x for x in log.splitlines() if "loss.class_weights (median frequency)" in x)
    weights = [float(part.rsplit(" ", 1)[1]) for part in line.split(": ", 2)[-1].split(", ")]
    assert len(weights) > 1 and all(w > 0 for w in weights) and min(weights) < 1 < max(weights)
    saved = yaml.safe_load(open(f"{result.run_dir}/config.yaml").read())
    assert saved["loss"]["class_weights"] == "median_frequency"  # the run records the rule, resumes with it
    assert np.isfinite(result.final["val_miou"])
