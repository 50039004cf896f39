"""Fisher (Theis et al., 2018; as a NAS proxy in Abdelfattah et al., ICLR 2021): for the output
activation a of every convolution and linear layer, the per-sample channel saliency
g_nk = Σ_positions a ⊙ ∂ℓ_n/∂a, and the score 0.5 · mean_n Σ_k g_nk², summed over layers.

Segmentation: ℓ_n is image n's per-pixel cross-entropy averaged over its labelled pixels (0 if it
has none), so that g_nk is a per-sample gradient. g_nk is read off as the gradient of a
per-sample, per-channel gate (ones) multiplied onto each layer output. The mean is over all images
of all batches, so chunking does not change the score.
"""

from __future__ import annotations

import torch
from torch import nn

from segnas.proxies.common import (Batch, ProxySettings, calibrated_chunks, forward_logits, pixel_ce, proxy,
                                   weight_layers)


@proxy("fisher")
def fisher(net: nn.Module, batches: list[Batch], settings: ProxySettings) -> float:
    for p in net.parameters():
        p.requires_grad_(False)
    gates: list[torch.Tensor] = []

    def gate_output(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        shape = out.shape[:2] + (1,) * (out.dim() - 2)
        gate = torch.ones(shape, dtype=out.dtype, device=out.device, requires_grad=True)
        gates.append(gate)
        return out * gate

    handles = [m.register_forward_hook(gate_output) for m in weight_layers(net)]
    total = torch.zeros((), dtype=torch.float64)
    images_seen = 0
    try:
        for images, masks in calibrated_chunks(net, batches, settings.chunk_size):
            gates.clear()
            losses = pixel_ce(forward_logits(net, images), masks, settings.ignore_index)
            labelled = (masks != settings.ignore_index).flatten(1).sum(1).clamp_min(1)
            per_image = losses.flatten(1).sum(1) / labelled
            images_seen += images.shape[0]
            if not gates or not per_image.requires_grad:
                continue
            for s in torch.autograd.grad(per_image.sum(), gates, allow_unused=True):
                if s is not None:
                    total += 0.5 * s.double().pow(2).sum()
    finally:
        for h in handles:
            h.remove()
    return float(total / max(images_seen, 1))
