"""Baseline proxy: the number of parameters of the deployed network (``segnas.cost.count_parameters``,
training-only auxiliary heads left out). Data-independent; a sanity floor any proxy should beat."""

from __future__ import annotations

from torch import nn

from segnas.cost import count_parameters
from segnas.proxies.common import Batch, ProxySettings, proxy


@proxy("params")
def params(net: nn.Module, batches: list[Batch], settings: ProxySettings) -> float:
    return float(count_parameters(net))
