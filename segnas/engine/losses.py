"""Segmentation losses: CE with ignore, OHEM CE, pixel-wise KD, and the combined training loss."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segnas.data.base import IGNORE_INDEX


class OhemCrossEntropy(nn.Module):
    """Online hard example mining: average CE over pixels whose true-class probability is below
    ``thresh``, keeping at least ``min_kept`` hardest pixels (as in FasterSeg / BiSeNet training)."""

    def __init__(self, thresh: float = 0.7, min_kept: int = 100_000, ignore_index: int = IGNORE_INDEX,
                 weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.loss_thresh = -math.log(thresh)
        self.min_kept = min_kept
        self.ignore_index = ignore_index
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pixel_loss = F.cross_entropy(logits.float(), target, weight=self.weight,
                                     ignore_index=self.ignore_index, reduction="none").flatten()
        valid = target.flatten() != self.ignore_index
        losses = pixel_loss[valid]
        if losses.numel() == 0:
            return logits.sum() * 0.0
        hard = losses[losses > self.loss_thresh]
        if hard.numel() < min(self.min_kept, losses.numel()):
            hard = losses.topk(min(self.min_kept, losses.numel())).values
        return hard.mean()


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
            target: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Pixel-wise KL(teacher ‖ student) on softened class distributions, × T², averaged over
    pixels (ignore pixels excluded when ``target`` is given)."""
    t = temperature
    log_p_s = F.log_softmax(student.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher.float() / t, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(1)  # N×H×W
    if target is not None:
        mask = target != ignore_index
        if not mask.any():
            return kl.sum() * 0.0
        kl = kl[mask]
    return kl.mean() * t * t


class SegmentationLoss(nn.Module):
    """Main loss + ``aux_weight`` × each auxiliary head's loss + ``kd_weight`` × KD to a teacher."""

    def __init__(self, kind: str = "ce", aux_weight: float = 0.4, ohem_thresh: float = 0.7,
                 ohem_min_kept: int = 100_000, class_weights: Sequence[float] | None = None,
                 kd_weight: float = 1.0, kd_temperature: float = 1.0,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        if kind == "ohem":
            self.main = OhemCrossEntropy(ohem_thresh, ohem_min_kept, ignore_index, weight)
        else:
            self.main = nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_index)
        # Auxiliary heads always use plain CE (their role is gradient flow, not hard mining).
        self.aux = nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_index)
        self.aux_weight = aux_weight
        self.kd_weight = kd_weight
        self.kd_temperature = kd_temperature
        self.ignore_index = ignore_index

    def forward(self, output, target: torch.Tensor, teacher_logits: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
        if isinstance(output, dict):
            main, aux = output["out"], output.get("aux", [])
        else:
            main, aux = output, []
        parts = {"seg": self.main(main.float(), target)}
        for i, a in enumerate(aux):
            parts[f"aux{i}"] = self.aux_weight * self.aux(a.float(), target)
        if teacher_logits is not None and self.kd_weight > 0:
            parts["kd"] = self.kd_weight * kd_loss(main, teacher_logits, self.kd_temperature, target,
                                                   self.ignore_index)
        total = sum(parts.values())
        return total, {k: float(v.detach()) for k, v in parts.items()}
