"""grad_norm (Abdelfattah et al., ICLR 2021, "Zero-Cost Proxies for Lightweight NAS"): the sum over
convolution and linear layers of the Euclidean norm of the loss gradient w.r.t. the layer's weight.

Segmentation: the loss is the per-pixel cross-entropy averaged over every labelled pixel of all
batches (``ignore_index`` pixels excluded), accumulated chunk by chunk (see ``common``).
"""

from __future__ import annotations

from torch import nn

from segnas.proxies.common import Batch, ProxySettings, accumulate_loss_gradients, proxy, sum_over_layers, weight_layers


@proxy("grad_norm")
def grad_norm(net: nn.Module, batches: list[Batch], settings: ProxySettings) -> float:
    accumulate_loss_gradients(net, batches, settings)
    return sum_over_layers([m.weight.grad.norm() for m in weight_layers(net) if m.weight.grad is not None])
