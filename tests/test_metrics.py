import math

import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from segnas.metrics import ConfusionMatrix


def random_batch(seed: int, n_classes: int = 6, shape=(3, 17, 23)):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, n_classes, shape, generator=g)
    target[torch.rand(shape, generator=g) < 0.1] = 255
    # predictions correlated with the target so IoUs are not all tiny
    pred = torch.where(torch.rand(shape, generator=g) < 0.6, target.clamp(max=n_classes - 1),
                       torch.randint(0, n_classes, shape, generator=g))
    return pred, target


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_and_accuracy_match_torchmetrics(seed):
    c = 6
    cm = ConfusionMatrix(c)
    jac = MulticlassJaccardIndex(c, average="none", ignore_index=255)
    macc = MulticlassAccuracy(c, average="macro", ignore_index=255)
    pacc = MulticlassAccuracy(c, average="micro", ignore_index=255)
    for k in range(3):
        pred, target = random_batch(seed * 10 + k, c)
        cm.update(pred, target)
        jac.update(pred, target)
        macc.update(pred, target)
        pacc.update(pred, target)
    m = cm.compute()
    torch.testing.assert_close(torch.tensor(m.iou, dtype=torch.float32), jac.compute(), atol=1e-6, rtol=0)
    assert m.miou == pytest.approx(float(jac.compute().mean()), abs=1e-6)
    assert m.mean_acc == pytest.approx(float(macc.compute()), abs=1e-6)
    assert m.pixel_acc == pytest.approx(float(pacc.compute()), abs=1e-6)


def test_fwiou_and_logits_input():
    c = 4
    pred, target = random_batch(5, c)
    logits = torch.nn.functional.one_hot(pred, c).permute(0, 3, 1, 2).float()
    cm = ConfusionMatrix(c)
    cm.update(logits, target)  # N×C×H×W logits are argmaxed
    m = cm.compute()
    valid = target != 255
    freqs = torch.stack([(target[valid] == k).sum() for k in range(c)]).double() / valid.sum()
    assert m.fwiou == pytest.approx(float((freqs * torch.tensor(m.iou, dtype=torch.float64)).sum()), abs=1e-9)


def test_scores_on_a_hand_computed_example():
    # ground truth 0 0 0 1 | prediction 0 0 1 1 -> class 0: tp 2, union 3; class 1: tp 1, union 2
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1]))
    m = cm.compute()
    assert m.iou == pytest.approx([2 / 3, 1 / 2])
    assert m.fwiou == pytest.approx(0.75 * 2 / 3 + 0.25 * 1 / 2)
    assert m.mean_acc == pytest.approx((2 / 3 + 1) / 2)
    assert m.pixel_acc == pytest.approx(3 / 4)


def test_absent_class_is_left_out_of_mean():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 255]))
    m = cm.compute()
    assert math.isnan(m.iou[2])
    assert m.iou[:2] == [0.5, 0.5]
    assert m.miou == pytest.approx(0.5)
    assert m.pixel_acc == pytest.approx(2 / 3)
