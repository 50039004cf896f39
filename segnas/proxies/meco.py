"""MeCo (Jiang et al., NeurIPS 2023, "MeCo: Zero-Shot NAS with One Data and Single Forward Pass via
Minimum Eigenvalue of Correlation"; reference code HamsterMimi/MeCo, ``get_score`` in
``correlation/NAS_Bench_201.py``): a network trains faster and generalizes better when the channels
of its feature maps are less collinear. For one input image x and every module i,

    MeCo(x) = Σ_i λ_min(P_i(x)),

P_i(x) the Pearson correlation matrix (C × C) of the C channels of module i's output on x, each
channel a variable observed at the H·W positions; NaN or infinite entries (a constant channel) are
set to 0, and a module whose λ_min is not finite is left out. Labels are not used.

Variant: MeCo, the paper's main proxy (every channel; the abstract's headline correlations are
MeCo's). MeCo_opt (the reference's ``meco_opt``: λ_min over 8 channels sampled at random per
module, times C/8) is not implemented: it makes the score a random draw and needs at least 8
channels everywhere. MeCo's cost stays small: one eigendecomposition per module output and image,
none for a map with no more positions than channels, whose λ_min is exactly 0.

Which modules: as in the reference, a forward hook on every module of ``net.modules()`` — leaves,
containers and the network itself — so an output that several nested modules return is counted
once per module. Only outputs that are N×C×H×W tensors count: the reference's ``output[0]`` of a
2-D output is a single sample's C logits, whose correlation is all-NaN and contributes 0, and other
outputs (dicts, tuples) are skipped here.

Segmentation and several images: the reference scores one image (``batch_size`` 1, "one data").
Here each image of ``batches`` is scored alone, as in the reference, and the score is the mean over
all images; with one image it is the reference's score. BatchNorm uses the batch's statistics
(``common``), so an image's feature maps, and the score, do not depend on ``chunk_size``. The
network's weights are its own (the reference's default initialization).
"""

from __future__ import annotations

import torch
from torch import nn

from segnas.proxies.common import Batch, ProxySettings, calibrated_chunks, proxy


def channel_correlations(features: torch.Tensor) -> torch.Tensor:
    """N × C × C Pearson correlations of each image's C channels over its positions (float64),
    entries that are NaN or infinite (a constant channel) set to 0."""
    x = features.detach().flatten(2).double()
    x = x - x.mean(dim=2, keepdim=True)
    cov = x @ x.transpose(1, 2)
    std = cov.diagonal(dim1=1, dim2=2).sqrt()
    corr = (cov / (std.unsqueeze(2) * std.unsqueeze(1))).clamp(-1.0, 1.0)
    return torch.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)


def min_eigenvalues(features: torch.Tensor) -> torch.Tensor:
    """λ_min of each image's channel correlation matrix (length N, float64). With no more positions
    than channels the centred channels span fewer than C dimensions, so the (positive
    semi-definite) matrix is singular and λ_min is 0 exactly: no eigendecomposition is needed."""
    n, c = features.shape[:2]
    if features[0, 0].numel() - 1 < c:
        return torch.zeros(n, dtype=torch.float64, device=features.device)
    return torch.linalg.eigvalsh(channel_correlations(features))[:, 0]


@proxy("meco")
def meco(net: nn.Module, batches: list[Batch], settings: ProxySettings) -> float:
    per_image: list[torch.Tensor] = []
    current: list[torch.Tensor] = []
    last: list = [None, -1, None]  # the last output measured, its version, its values

    def record(module: nn.Module, args: tuple, out: object) -> None:
        if not (isinstance(out, torch.Tensor) and out.dim() == 4 and current):
            return
        if out is last[0] and out._version == last[1]:  # a container returning its last child's output
            values = last[2]
        else:
            values = min_eigenvalues(out)
            values = torch.where(torch.isfinite(values), values, 0.0).cpu()
            last[:] = [out, out._version, values]
        current[0] += values

    handles = [m.register_forward_hook(record) for m in net.modules()]
    try:
        with torch.no_grad():
            for images, _ in calibrated_chunks(net, batches, settings.chunk_size):
                current[:] = [torch.zeros(images.shape[0], dtype=torch.float64)]
                net(images)
                per_image.append(current.pop())
    finally:
        last.clear()
        for h in handles:
            h.remove()
    return float(torch.cat(per_image).mean())
