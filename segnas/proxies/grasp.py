"""GraSP (Wang et al., ICLR 2020; as a NAS proxy in Abdelfattah et al., ICLR 2021): gradient
signal preservation, −w ⊙ (H g) summed over every weight of every convolution and linear layer,
where g is the loss gradient and H the Hessian of the loss w.r.t. those weights (temperature 1).

Segmentation: the loss is the per-pixel cross-entropy averaged over every labelled pixel of all
batches. First pass: g accumulated over all chunks (detached). Second pass: per chunk,
∂(g · ∇L_chunk)/∂w accumulated, which sums to H g; both passes divide by the global pixel count, so
the score does not depend on the chunking. Needs double backward through the network.
"""

from __future__ import annotations

import torch
from torch import nn

from segnas.proxies.common import (Batch, ProxySettings, calibrated_chunks, forward_logits, pixel_ce, proxy,
                                   sum_over_layers, valid_pixels, weight_layers)


@proxy("grasp")
def grasp(net: nn.Module, batches: list[Batch], settings: ProxySettings) -> float:
    weights = [m.weight for m in weight_layers(net)]
    total = max(valid_pixels(batches, settings.ignore_index), 1)

    def chunk_losses():
        for images, masks in calibrated_chunks(net, batches, settings.chunk_size):
            yield pixel_ce(forward_logits(net, images), masks, settings.ignore_index).sum() / total

    grad = [torch.zeros_like(w) for w in weights]
    used = [False] * len(weights)
    for loss in chunk_losses():
        for i, g in enumerate(torch.autograd.grad(loss, weights, allow_unused=True)):
            if g is not None:
                grad[i] += g
                used[i] = True
    for loss in chunk_losses():
        grads = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
        terms = [(g0 * g).sum() for g0, g in zip(grad, grads) if g is not None]
        z = sum(terms[1:], terms[0]) if terms else None
        if z is not None and z.requires_grad:
            z.backward()
    return sum_over_layers([-(w.detach() * w.grad).sum() for w, u in zip(weights, used)
                            if u and w.grad is not None])
