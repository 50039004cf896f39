"""Baseline proxy: GFLOPs of one eval-mode forward of a single image at the batches' size
(``segnas.cost.count_flops``; FLOPs = 2 × MACs). Data-independent; a sanity floor any proxy should beat."""

from __future__ import annotations

from torch import nn

from segnas.cost import count_flops
from segnas.proxies.common import Batch, ProxySettings, proxy


@proxy("flops")
def flops(net: nn.Module, batches: list[Batch], settings: ProxySettings) -> float:
    images = batches[0][0]
    return float(count_flops(net.cpu().float(), (1, *images.shape[1:])).gflops)  # counts on CPU zeros
