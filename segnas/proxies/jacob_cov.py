"""jacob_cov (Mellor et al., "Neural Architecture Search without Training", arXiv v1, 2020): how
decorrelated the input Jacobians of different images are. Per image, J_n = ∂(Σ logits)/∂x_n; with
the eigenvalues v of the correlation matrix of {J_n}, the score is −Σ(log(v + k) + 1/(v + k)),
k = 1e-5 (higher = less correlated = better).

Segmentation: the summed output is every logit of every class at every pixel of the image (labels
are not used). Jacobians are gathered chunk by chunk (images are independent in eval mode with the
batch's frozen BatchNorm statistics) and the score is taken per batch, then averaged over batches.
An image whose Jacobian is constant counts as uncorrelated with the others.
"""

from __future__ import annotations

import torch
from torch import nn

from segnas.proxies.common import (Batch, ImageNeeds, ProxySettings, chunks, forward_logits, freeze_batch_stats,
                                   proxy)

EPS = 1e-5


def correlation_score(jacobians: torch.Tensor) -> float:
    """−Σ(log(v + k) + 1/(v + k)) over the eigenvalues v of the rows' correlation matrix."""
    corr = torch.corrcoef(jacobians.double())
    corr = torch.nan_to_num(corr, nan=0.0)
    corr.fill_diagonal_(1.0)
    v = torch.linalg.eigvalsh(corr).clamp_min(0.0)
    return float(-(torch.log(v + EPS) + 1.0 / (v + EPS)).sum())


@proxy("jacob_cov", ImageNeeds(per_batch=2, why="it correlates the Jacobians of a batch's images"))
def jacob_cov(net: nn.Module, batches: list[Batch], settings: ProxySettings) -> float:
    for p in net.parameters():
        p.requires_grad_(False)
    scores = []
    for images, masks in batches:
        freeze_batch_stats(net, images)
        rows = []
        for x, _ in chunks(images, masks, settings.chunk_size):
            x = x.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(forward_logits(net, x).sum(), x)
            rows.append(grad.flatten(1).detach())
        scores.append(correlation_score(torch.cat(rows)))
    return sum(scores) / len(scores)
