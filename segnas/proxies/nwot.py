"""NASWOT (Mellor et al., ICML 2021, "Neural Architecture Search without Training"): how
differently the network's ReLUs partition the images of a batch. Each image gets a binary code
(unit active or not); K[i, j] = number of code bits on which images i and j agree
(code length − Hamming distance), and the score is log|det K|.

Segmentation: a unit is a (channel, pixel) pair, so codes flatten channels × pixels of every ReLU
output; each map is subsampled on a fixed grid of at most 16 × 16 positions (deterministic, keeps
the code length bounded at high resolution). Every ReLU is seen, module or functional (``F.relu``,
``torch.relu``, ``Tensor.relu``, ReLU6, LeakyReLU), through a ``TorchFunctionMode``. Codes are
gathered chunk by chunk; K and the score are per batch, averaged over batches. Labels are unused.
"""

from __future__ import annotations

import torch
from torch import nn

from segnas.errors import SegnasError
from segnas.proxies.common import Batch, ImageNeeds, ProxySettings, chunks, freeze_batch_stats, proxy
from segnas.proxies.relu_tap import ReluTap

GRID = 16


def grid_codes(activation: torch.Tensor) -> torch.Tensor:
    """N × units boolean code of an activation, its spatial positions subsampled to a GRID × GRID grid."""
    code = activation.detach() > 0
    if code.dim() >= 4:
        for dim in (-2, -1):
            size = code.shape[dim]
            if size > GRID:
                index = torch.linspace(0, size - 1, GRID, device=code.device).round().long()
                code = code.index_select(dim, index)
    return code.flatten(1)


def hamming_kernel(codes: list[torch.Tensor]) -> torch.Tensor:
    """K[i, j] = Σ over layers of the number of bits on which rows i and j agree (float64)."""
    n = codes[0].shape[0]
    k = torch.zeros(n, n, dtype=torch.float64, device=codes[0].device)
    for code in codes:
        c = code.double()
        k += c @ c.T + (1 - c) @ (1 - c).T
    return k


@proxy("nwot", ImageNeeds(per_batch=2, why="its kernel compares the images of a batch; one image's carries "
                                                "no information"))
def nwot(net: nn.Module, batches: list[Batch], settings: ProxySettings) -> float:
    scores = []
    with torch.no_grad():
        for images, masks in batches:
            freeze_batch_stats(net, images)
            per_chunk: list[list[torch.Tensor]] = []
            for x, _ in chunks(images, masks, settings.chunk_size):
                codes: list[torch.Tensor] = []
                with ReluTap(lambda out: codes.append(grid_codes(out)), min_dim=2):
                    net(x)
                per_chunk.append(codes)
            if not per_chunk[0]:
                raise SegnasError("proxies: nwot needs ReLU activations; the network has none")
            layers = [torch.cat(layer) for layer in zip(*per_chunk)]
            scores.append(float(torch.linalg.slogdet(hamming_kernel(layers)).logabsdet))
    return sum(scores) / len(scores)
