"""Confusion-matrix accumulation and the standard segmentation scores derived from it.

Classes absent from both prediction and ground truth (union 0) get IoU NaN and are left out of
means, as in cityscapesscripts and mmsegmentation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from segnas.data.base import IGNORE_INDEX


@dataclass
class SegMetrics:
    miou: float
    pixel_acc: float
    mean_acc: float
    fwiou: float
    iou: list[float]
    acc: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


class ConfusionMatrix:
    """Accumulates a (C, C) matrix, rows = ground truth, columns = prediction."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` class ids (or logits N×C×H×W) and ``target`` ids with ignore."""
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(1)
        pred = pred.reshape(-1).to("cpu", torch.int64)
        target = target.reshape(-1).to("cpu", torch.int64)
        keep = (target != self.ignore_index) & (target >= 0) & (target < self.num_classes)
        idx = target[keep] * self.num_classes + pred[keep]
        self.matrix += torch.bincount(idx, minlength=self.num_classes**2).view(self.num_classes, -1)

    def compute(self) -> SegMetrics:
        m = self.matrix.double()
        tp = m.diag()
        gt = m.sum(1)
        pr = m.sum(0)
        union = gt + pr - tp
        iou = tp / union  # NaN where union == 0
        acc = tp / gt
        total = m.sum()
        present = union > 0
        freq = gt / total if total > 0 else gt
        fw = (freq[present] * iou[present]).sum() if total > 0 else torch.tensor(float("nan"))
        return SegMetrics(
            miou=_nanmean(iou),
            pixel_acc=float(tp.sum() / total) if total > 0 else float("nan"),
            mean_acc=_nanmean(acc),
            fwiou=float(fw),
            iou=[float(v) for v in iou],
            acc=[float(v) for v in acc],
        )


def _nanmean(x: torch.Tensor) -> float:
    valid = ~torch.isnan(x)
    return float(x[valid].mean()) if valid.any() else float("nan")
