"""Zen-score (Lin et al., ICCV 2021, "Zen-NAS"): the expressivity of a network with Gaussian
weights — log of how much its output moves under a small input perturbation, Σ|f(x + γε) − f(x)|
(γ = 0.01, x and ε standard Gaussian), plus Σ over BatchNorms of log sqrt(mean per-channel batch
variance + eps), which restores the scale that BatchNorm divides out. Labels and image content are not
used, only each batch's shape.

Adaptation to segmentation: Zen-NAS compares pre-global-pooling features of a classifier; a
segmenter has no pooling, so the difference is taken on the main logits at input resolution
(Σ over classes and pixels per image, then the mean over images). Weights are re-drawn as in
Zen-NAS (convolution and linear weights N(0, 1), their biases 0, normalization weight 1 and bias 0)
from the seed. BatchNorm uses the batch statistics of the Gaussian input x for both x and x + γε
(Zen-NAS lets the perturbed batch bring its own statistics; fixed statistics make the difference a
property of one function), and those are the variances in the log term. Per batch; averaged over
batches.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from segnas.proxies.common import Batch, ProxySettings, forward_logits, freeze_batch_stats, is_weight_layer, proxy

GAMMA = 1e-2


@torch.no_grad()
def gaussian_init(net: nn.Module, generator: torch.Generator) -> None:
    """Zen-NAS initialization: conv/linear weights N(0, 1) and biases 0; norm weights 1, biases 0."""
    for m in net.modules():
        if is_weight_layer(m):
            m.weight.copy_(torch.randn(m.weight.shape, generator=generator, dtype=m.weight.dtype))
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
            if m.weight is not None:
                m.weight.fill_(1.0)
            if m.bias is not None:
                m.bias.zero_()


@proxy("zen")
def zen(net: nn.Module, batches: list[Batch], settings: ProxySettings) -> float:
    generator = torch.Generator().manual_seed(settings.seed)
    gaussian_init(net, generator)
    scores = []
    with torch.no_grad():
        for images, _ in batches:
            x = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
            noise = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
            variances = freeze_batch_stats(net, x)
            log_bn = sum(0.5 * math.log(float(v.double().mean()) + bn.eps) for bn, v in variances.items())
            moved = torch.zeros((), dtype=torch.float64)
            for start in range(0, x.shape[0], settings.chunk_size):
                xc, nc = x[start:start + settings.chunk_size], noise[start:start + settings.chunk_size]
                diff = forward_logits(net, xc + GAMMA * nc) - forward_logits(net, xc)
                moved += diff.double().abs().sum().cpu()
            mean_moved = float(moved) / x.shape[0]
            scores.append((math.log(mean_moved) if mean_moved > 0 else -math.inf) + log_bn)
    return sum(scores) / len(scores)
