"""Segmentation losses: CE with ignore, OHEM CE, pixel-wise KD (KL, or MSE of logits), and the combined
training loss."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segnas.data.base import IGNORE_INDEX


class OhemCrossEntropy(nn.Module):
    """Online hard example mining: average CE over pixels whose true-class probability is below
    ``thresh``, keeping at least ``min_kept`` hardest pixels (as in FasterSeg / BiSeNet training)."""

    def __init__(self, thresh: float = 0.7, min_kept: int = 100_000, ignore_index: int = IGNORE_INDEX,
                 weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.loss_thresh = -math.log(thresh)
        self.min_kept = min_kept
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Hardness is judged on the unweighted loss (−log p of the true class); class weights then
        # weigh the kept pixels, normalized by their total weight like a weighted CE mean.
        log_p = F.log_softmax(logits.float(), dim=1)
        pixel_loss = F.nll_loss(log_p, target, ignore_index=self.ignore_index, reduction="none").flatten()
        flat_target = target.flatten()
        valid = flat_target != self.ignore_index
        losses, classes = pixel_loss[valid], flat_target[valid]
        if losses.numel() == 0:
            return logits.sum() * 0.0
        keep = losses > self.loss_thresh
        if int(keep.sum()) < min(self.min_kept, losses.numel()):
            keep = torch.zeros_like(keep)
            keep[losses.topk(min(self.min_kept, losses.numel())).indices] = True
        # as F.cross_entropy(weight, label_smoothing=ε) on the kept pixels: (1 − ε)·w_y·nll +
        # ε·mean_c(w_c·(−log p_c)), summed and divided by the kept pixels' w_y (1 without weights)
        w = self.weight[classes] if self.weight is not None else torch.ones_like(losses)
        losses = losses * w
        if self.label_smoothing:
            per_class = log_p if self.weight is None else log_p * self.weight.view(1, -1, *([1] * (log_p.dim() - 2)))
            uniform = -per_class.mean(dim=1).flatten()[valid]
            losses = (1.0 - self.label_smoothing) * losses + self.label_smoothing * uniform
        return losses[keep].sum() / w[keep].sum().clamp_min(1e-12)


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


def logit_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of student and teacher logits (N×C×H×W, the same size): the
    distillation loss of Nekrasov et al.'s child training (the RL strategy, ``segnas.evaluate.rl``)."""
    return F.mse_loss(student.float(), teacher.float())


LAPLACIAN = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]]).view(1, 1, 3, 3)


def boundary_targets(target: torch.Tensor) -> torch.Tensor:
    """STDC's detail ground truth: Laplacian edges of the label map at strides 1, 2 and 4,
    upsampled, fused with weights (0.6, 0.3, 0.1) and thresholded at 0.1 → N×1×H×W in {0, 1}.
    The label map is padded by replication (the official code pads with zeros, which marks the
    image border as a boundary wherever the class id is not 0)."""
    labels = F.pad(target[:, None].float(), (1, 1, 1, 1), mode="replicate")
    h, w = target.shape[-2:]
    maps = []
    for stride in (1, 2, 4):
        edge = F.conv2d(labels, LAPLACIAN.to(labels.device), stride=stride).clamp(min=0)
        edge = (edge > 0.1).float()
        maps.append(F.interpolate(edge, size=(h, w), mode="nearest") if stride > 1 else edge)
    fused = 0.6 * maps[0] + 0.3 * maps[1] + 0.1 * maps[2]
    return (fused > 0.1).float()


def detail_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """STDC detail guidance: binary cross-entropy + dice loss of boundary logits (N×1×H×W)
    against ``boundary_targets(target)``."""
    gt = boundary_targets(target)
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, gt)
    prob = torch.sigmoid(logits).flatten(1)
    inter = (prob * gt.flatten(1)).sum(1)
    dice = 1 - (2 * inter + 1) / (prob.pow(2).sum(1) + gt.flatten(1).pow(2).sum(1) + 1)
    return bce + dice.mean()


def label_edges(target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """N×H×W: the labelled pixels with a pixel of another labelled class among their 3×3 neighbours
    (a band two pixels wide along every class boundary; ignored pixels make no edge)."""
    t = target[:, None].long()
    valid = t != ignore_index
    highest = F.max_pool2d(torch.where(valid, t, -1).float(), 3, stride=1, padding=1)
    lowest = -F.max_pool2d(-torch.where(valid, t, 2**20).float(), 3, stride=1, padding=1)
    return ((highest != lowest) & valid)[:, 0]


def boundary_ce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy averaged over the pixels on a class boundary (``label_edges``): a
    boundary-aware term for any network, which weighs object edges and thin classes (poles, signs)
    that a pixel average, dominated by road, sky and buildings, neglects."""
    on_edge = label_edges(target, ignore_index)
    if not on_edge.any():
        return logits.sum() * 0.0
    pixel = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")
    return pixel[on_edge].mean()


class SegmentationLoss(nn.Module):
    """Main loss + ``aux_weight`` × each auxiliary head's loss + ``kd_weight`` × KD to a teacher
    + ``detail_weight`` × detail-guidance loss when the network outputs ``"detail"`` logits
    + ``boundary_weight`` × the main head's cross-entropy on label boundaries (``boundary_ce``)."""

    def __init__(self, kind: str = "ce", aux_weight: float = 0.4, ohem_thresh: float = 0.7,
                 ohem_min_kept: int = 100_000, class_weights: Sequence[float] | None = None,
                 kd_weight: float = 1.0, kd_temperature: float = 1.0, detail_weight: float = 1.0,
                 ignore_index: int = IGNORE_INDEX, label_smoothing: float = 0.0, boundary_weight: float = 0.0) -> None:
        super().__init__()
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        if kind == "ohem":
            self.main = OhemCrossEntropy(ohem_thresh, ohem_min_kept, ignore_index, weight, label_smoothing)
        else:
            self.main = nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing)
        # Auxiliary heads always use plain CE (their role is gradient flow, not hard mining).
        self.aux = nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing)
        self.aux_weight = aux_weight
        self.kd_weight = kd_weight
        self.kd_temperature = kd_temperature
        self.detail_weight = detail_weight
        self.boundary_weight = boundary_weight
        self.ignore_index = ignore_index

    def forward(self, output: torch.Tensor | dict[str, Any], target: torch.Tensor,
                teacher_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        if isinstance(output, dict):
            main, aux, detail = output["out"], output.get("aux", []), output.get("detail")
        else:
            main, aux, detail = output, [], None
        parts = {"seg": self.main(main.float(), target)}
        for i, a in enumerate(aux):
            parts[f"aux{i}"] = self.aux_weight * self.aux(a.float(), target)
        if self.boundary_weight > 0:
            parts["boundary"] = self.boundary_weight * boundary_ce(main, target, self.ignore_index)
        if detail is not None and self.detail_weight > 0:
            parts["detail"] = self.detail_weight * detail_loss(detail, target)
        if teacher_logits is not None and self.kd_weight > 0:
            parts["kd"] = self.kd_weight * kd_loss(main, teacher_logits, self.kd_temperature, target,
                                                   self.ignore_index)
        total = sum(parts.values())
        return total, {k: float(v.detach()) for k, v in parts.items()}
