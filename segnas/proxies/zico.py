"""ZiCo (Li et al., ICLR 2023, "ZiCo: Zero-shot NAS via Inverse Coefficient of Variation on
Gradients"; reference code SLDGroup/ZiCo, ``ZeroShotProxy/compute_zico.py``): networks whose loss
gradients are large and consistent across samples train faster and generalize better. With g_s the
gradient of the loss on sample s, for every convolution and linear layer l,

    ZiCo = Σ_l log Σ_{w ∈ l, σ_w > 0} mean_s |g_s,w| / σ_w,      σ_w = std_s g_s,w (population std),

where weights whose gradient does not vary (σ_w = 0) are left out and a layer whose sum is 0
(no varying weight, or a layer the loss does not reach) is skipped, as in the reference.

What a "sample" is. The reference takes s over mini-batches (two, by default): g_s is the gradient
of one batch's mean loss. Here s is one image: g_s is the gradient of the image's per-pixel
cross-entropy averaged over its labelled pixels (``ignore_index`` excluded), and the statistics run
over every image of every batch. A segmentation image is itself a batch of tens of thousands of
labelled pixel samples, so its gradient plays the role of one classification mini-batch's; and the
images are a fixed, ordered set, unlike chunks, whose boundaries are a memory setting. The score is
therefore deterministic and does not depend on ``chunk_size``: each image is forwarded and
back-propagated on its own (its gradient is needed alone), with its batch's BatchNorm statistics
frozen (``common``; the reference's train-mode BatchNorm also differentiates through the batch
statistics). Images without a labelled pixel carry no loss and are not samples; ZiCo needs at
least two labelled images (a standard deviation over one sample is 0). Mean and variance are
accumulated per weight in float64 with Welford's update, so a gradient that is the same for every
image has σ exactly 0. The network's weights are its own (the reference does not re-initialize).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from segnas.errors import SegnasError
from segnas.proxies.common import (Batch, ProxySettings, calibrated_chunks, forward_logits, pixel_ce, proxy,
                                   weight_layers)


class GradientMoments:
    """Running mean |g|, mean and sum of squared deviations (Welford) of one weight's gradients, float64."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.count = 0
        self.abs_sum = torch.zeros(weight.shape, dtype=torch.float64, device=weight.device)
        self.mean = torch.zeros_like(self.abs_sum)
        self.m2 = torch.zeros_like(self.abs_sum)

    def add(self, grad: torch.Tensor | None) -> None:
        g = self.mean.new_zeros(()) if grad is None else grad.detach().double()
        self.count += 1
        self.abs_sum += g.abs()
        delta = g - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (g - self.mean)

    def layer_term(self) -> float | None:
        """log Σ over weights with σ > 0 of mean|g| / σ; None when that sum is 0."""
        std = (self.m2 / self.count).sqrt()
        varying = std > 0
        total = float(((self.abs_sum / self.count)[varying] / std[varying]).sum())
        return math.log(total) if total > 0 else None


@proxy("zico")
def zico(net: nn.Module, batches: list[Batch], settings: ProxySettings) -> float:
    layers = weight_layers(net)
    weights = [m.weight for m in layers]
    moments = [GradientMoments(w) for w in weights]
    samples = 0
    for image, mask in calibrated_chunks(net, batches, 1):
        labelled = int((mask != settings.ignore_index).sum())
        if labelled == 0:
            continue
        loss = pixel_ce(forward_logits(net, image), mask, settings.ignore_index).sum() / labelled
        grads = torch.autograd.grad(loss, weights, allow_unused=True) if loss.requires_grad else [None] * len(weights)
        for m, g in zip(moments, grads):
            m.add(g)
        samples += 1
    if samples < 2:
        raise SegnasError(f"proxies: zico needs at least 2 images with labelled pixels, got {samples}")
    terms = [m.layer_term() for m in moments]
    return float(sum(t for t in terms if t is not None))
