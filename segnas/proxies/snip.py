"""SNIP (Lee et al., ICLR 2019; as a NAS proxy in Abdelfattah et al., ICLR 2021): connection
sensitivity |w ⊙ ∂L/∂w| summed over every weight of every convolution and linear layer (the
gradient w.r.t. a multiplicative weight mask at 1, computed directly).

Segmentation: the loss is the per-pixel cross-entropy averaged over every labelled pixel of all
batches; gradients are accumulated over chunks before the absolute value, so chunking does not
change the score.
"""

from __future__ import annotations

from torch import nn

from segnas.proxies.common import Batch, ProxySettings, accumulate_loss_gradients, proxy, sum_over_layers, weight_layers


@proxy("snip")
def snip(net: nn.Module, batches: list[Batch], settings: ProxySettings) -> float:
    accumulate_loss_gradients(net, batches, settings)
    return sum_over_layers([(m.weight.detach() * m.weight.grad).abs().sum()
                            for m in weight_layers(net) if m.weight.grad is not None])
