"""AZ-NAS (Lee & Ham, CVPR 2024, "AZ-NAS: Assembling Zero-Cost Proxies for Network Architecture
Search"; reference code cvlab-yonsei/AZ-NAS, ``compute_az_nas_score.py`` of ``ImageNet_MBV2`` and
``NB201``): four proxies of an untrained network, each ranked over the candidates and combined by
Σ log(rank / m) (``segnas.proxies.aggregate``, name ``az_nas``). With f_1 … f_L the network's
feature maps in forward order:

- ``az_expressivity``: Σ_l H_l, H_l the entropy −Σ p log(p + 1e-8) of the normalized eigenvalues
  p = λ / Σλ of the C × C covariance of f_l's channels over all images and positions (a layer
  whose features spread evenly over many directions is expressive).
- ``az_progressivity``: min_l (H_l − H_{l−1}): expressivity should grow with depth at every step.
- ``az_trainability``: for every consecutive pair (f_{l−1}, f_l), the largest singular value σ of
  the Jacobian ∂f_l/∂f_{l−1}, estimated as E_positions[g_in g_outᵀ] (C_in × C_out) with g_out a
  Rademacher (±1) vector and g_in = (∂f_l/∂f_{l−1})ᵀ g_out; the pair scores −σ − 1/(σ + 1e-6) + 2
  (0 at σ = 1, gradients neither shrink nor grow); a pair whose map is the identity (g_in = g_out)
  scores −inf; the proxy is the mean over pairs.
- ``az_complexity``: FLOPs (the registered ``flops``; larger is better within a budget, as in
  AZ-NAS's FLOPs-constrained search).
A value that comes out NaN is −inf, as in the reference. Higher is better for all four.

Adaptation to segmentation (the reference reads a classifier's chain of blocks through
model-specific ``extract_*_features`` methods):
- Feature maps are the outputs of every ReLU (module or functional; ``relu_tap``), in call order,
  as the MobileNetV2 reference takes every ReLU block's output; the logits are not a feature map.
  Encoder–decoder networks are not chains: a pair whose later map does not depend on the earlier one
  (parallel branches) is left out of the trainability; a decoder pair that upsamples is aligned by
  folding the finer map's s_h × s_w blocks into channels (pixel unshuffle), as the reference does for
  the finer input of a downsampling pair; sizes that are not whole multiples are zero-padded or
  cropped at the bottom/right first.
- The covariance and E[g_in g_outᵀ] are sums over images and positions, accumulated chunk by chunk,
  and each image's Rademacher vector for pair l comes from its own seeded generator (``rademacher``):
  the scores do not depend on ``chunk_size``. Each batch of ``batches`` is the reference's batch;
  the three scores are averaged over batches.
- Weights are re-drawn as in the reference (``az_init``: Kaiming normal, fan-in, ReLU gain;
  biases 0; normalization weights 1, biases 0) from the seed. BatchNorm uses the batch's statistics
  (``common``), as constants in the backward pass; the reference's train-mode BatchNorm also
  differentiates through them.
- Expressivity, progressivity and trainability come from one pass (``az_scores``); the first two
  registered proxies skip the backward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from segnas.errors import SegnasError
from segnas.proxies.common import Batch, ProxySettings, freeze_batch_stats, is_weight_layer, proxy
from segnas.proxies.flops import flops
from segnas.proxies.relu_tap import ReluTap

ENTROPY_EPS = 1e-8
SIGMA_EPS = 1e-6
#: The AZ-NAS proxies, in the paper's order (``segnas.proxies.aggregate`` ranks them).
AZ_PROXIES = ("az_expressivity", "az_progressivity", "az_trainability", "az_complexity")


@torch.no_grad()
def az_init(net: nn.Module, generator: torch.Generator) -> None:
    """AZ-NAS's initialization: convolution and linear weights Kaiming normal (fan-in, ReLU gain),
    biases 0; BatchNorm and GroupNorm weights 1, biases 0 (drawn on the CPU from ``generator``)."""
    for m in net.modules():
        if is_weight_layer(m):
            w = torch.empty(m.weight.shape, dtype=m.weight.dtype)
            nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu", generator=generator)
            m.weight.copy_(w)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)) and m.affine:
            m.weight.fill_(1.0)
            m.bias.zero_()


def rademacher(shape: torch.Size | tuple[int, ...], seed: int, batch: int, pair: int, image: int) -> torch.Tensor:
    """Image ``image``'s ±1 output gradient for feature pair ``pair`` of batch ``batch`` (float64,
    CPU), from a generator of its own: the same whatever the chunking."""
    mixed = 0
    for part in (seed, batch, pair, image):
        mixed = (mixed * 1_000_003 + part) % (2 ** 62)
    g = torch.Generator().manual_seed(mixed)
    return torch.randint(0, 2, tuple(shape), generator=g).double() * 2 - 1


def spectral_entropy(cov: torch.Tensor) -> float:
    """−Σ p log(p + 1e-8) of the eigenvalues of ``cov`` normalized to sum 1 (NaN when they sum to 0)."""
    s = torch.linalg.eigvalsh(cov)
    p = s / s.sum()
    return float(-(p * torch.log(p + ENTROPY_EPS)).sum())


def to_grid(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """N×C×H×W → N×(C·s_h·s_w)×h×w with s_h = round(H/h), s_w = round(W/w): each s_h × s_w block of
    positions becomes channels (pixel unshuffle), after zero-padding or cropping the bottom and
    right to s_h·h × s_w·w."""
    n, c, height, width = x.shape
    sh, sw = max(1, round(height / h)), max(1, round(width / w))
    x = x[:, :, :sh * h, :sw * w]
    x = F.pad(x, (0, sw * w - x.shape[3], 0, sh * h - x.shape[2]))
    return x.reshape(n, c, h, sh, w, sw).permute(0, 1, 3, 5, 2, 4).reshape(n, c * sh * sw, h, w)


def paired_positions(g_in: torch.Tensor, g_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two gradients as (positions × channels) matrices on the coarser grid of the two."""
    h, w = min(g_in.shape[2], g_out.shape[2]), min(g_in.shape[3], g_out.shape[3])
    a, b = to_grid(g_in, h, w), to_grid(g_out, h, w)
    return a.permute(0, 2, 3, 1).reshape(-1, a.shape[1]), b.permute(0, 2, 3, 1).reshape(-1, b.shape[1])


def pair_trainability(mat: torch.Tensor) -> float:
    """−σ − 1/(σ + 1e-6) + 2 for the largest singular value σ of E[g_in g_outᵀ]."""
    sigma = float(torch.linalg.svdvals(mat).max())
    return -sigma - 1.0 / (sigma + SIGMA_EPS) + 2.0


@dataclass(frozen=True)
class AZScores:
    """AZ-NAS's data-driven proxies of one network (``trainability`` NaN when not computed)."""

    expressivity: float
    progressivity: float
    trainability: float


@dataclass
class _PairSums:
    """Σ g_in g_outᵀ over positions of one feature pair, their number, and whether g_in = g_out so far."""

    mat: torch.Tensor
    positions: int = 0
    identity: bool = True


class _BatchAccumulator:
    """One batch's sums over chunks: per feature map Σx, Σxxᵀ and rows; per pair ``_PairSums``."""

    def __init__(self) -> None:
        self.sums: list[torch.Tensor] = []
        self.grams: list[torch.Tensor] = []
        self.rows: list[int] = []
        self.pairs: dict[int, _PairSums] = {}

    def add_features(self, index: int, features: torch.Tensor, first_chunk: bool) -> None:
        x = features.detach().permute(0, 2, 3, 1).reshape(-1, features.shape[1]).double()
        if first_chunk:
            self.sums.append(torch.zeros(x.shape[1], dtype=torch.float64, device=x.device))
            self.grams.append(torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device))
            self.rows.append(0)
        elif index >= len(self.sums) or self.sums[index].shape[0] != x.shape[1]:
            raise SegnasError("proxies: az_nas saw other ReLU feature maps in another chunk of the same batch")
        self.sums[index] += x.sum(0)
        self.grams[index] += x.T @ x
        self.rows[index] += x.shape[0]

    def add_pair(self, pair: int, g_in: torch.Tensor, g_out: torch.Tensor) -> None:
        identity = g_in.shape == g_out.shape and torch.equal(g_in, g_out)
        a, b = paired_positions(g_in.detach().double(), g_out.detach().double())
        sums = self.pairs.setdefault(pair, _PairSums(torch.zeros(a.shape[1], b.shape[1], dtype=torch.float64,
                                                                 device=a.device)))
        sums.mat += a.T @ b
        sums.positions += a.shape[0]
        sums.identity = sums.identity and identity

    def entropies(self) -> list[float]:
        out = []
        for s, gram, n in zip(self.sums, self.grams, self.rows):
            mean = s / n
            out.append(spectral_entropy(gram / n - torch.outer(mean, mean)))
        return out

    def trainability(self) -> float:
        scores = [-math.inf if p.identity else pair_trainability(p.mat / p.positions) for p in self.pairs.values()]
        return sum(scores) / len(scores) if scores else math.nan


def _finite_or_minus_inf(value: float) -> float:
    return -math.inf if math.isnan(value) else float(value)


def az_scores(net: nn.Module, batches: list[Batch], settings: ProxySettings, *, trainability: bool = True) -> AZScores:
    """Expressivity, progressivity and (with ``trainability``) trainability of ``net`` (a copy the
    caller may mutate: it is re-initialized), averaged over ``batches``."""
    az_init(net, torch.Generator().manual_seed(settings.seed))
    per_batch: list[tuple[float, float, float]] = []
    for b, (images, _) in enumerate(batches):
        freeze_batch_stats(net, images)
        acc = _BatchAccumulator()
        for start in range(0, images.shape[0], settings.chunk_size):
            x = images[start:start + settings.chunk_size]
            features: list[torch.Tensor] = []  # kept for the backward pass only
            seen = [0]

            def record(out: torch.Tensor) -> None:
                acc.add_features(seen[0], out, start == 0)
                seen[0] += 1
                if trainability:
                    features.append(out)

            with torch.set_grad_enabled(trainability), ReluTap(record):
                net(x)
            if seen[0] != len(acc.sums):
                raise SegnasError("proxies: az_nas saw other ReLU feature maps in another chunk of the same batch")
            if trainability:
                for pair in range(1, len(features)):
                    f_in, f_out = features[pair - 1], features[pair]
                    if not (f_out.requires_grad and f_in.requires_grad):
                        continue
                    g_out = torch.stack([rademacher(f_out.shape[1:], settings.seed, b, pair, start + j)
                                         for j in range(x.shape[0])]).to(f_out.device, f_out.dtype)
                    (g_in,) = torch.autograd.grad(f_out, f_in, g_out, retain_graph=True, allow_unused=True)
                    if g_in is not None:
                        acc.add_pair(pair, g_in, g_out)
        if len(acc.sums) < 2:
            raise SegnasError(f"proxies: az_nas needs at least 2 ReLU feature maps (N×C×H×W); the network has "
                              f"{len(acc.sums)}")
        h = acc.entropies()
        progress = min(h[i] - h[i - 1] for i in range(1, len(h)))
        per_batch.append((sum(h), progress, acc.trainability() if trainability else math.nan))
    mean = [sum(v[k] for v in per_batch) / len(per_batch) for k in range(3)]
    return AZScores(_finite_or_minus_inf(mean[0]), _finite_or_minus_inf(mean[1]),
                    _finite_or_minus_inf(mean[2]) if trainability else math.nan)


@proxy("az_expressivity")
def az_expressivity(net: nn.Module, batches: list[Batch], settings: ProxySettings) -> float:
    return az_scores(net, batches, settings, trainability=False).expressivity


@proxy("az_progressivity")
def az_progressivity(net: nn.Module, batches: list[Batch], settings: ProxySettings) -> float:
    return az_scores(net, batches, settings, trainability=False).progressivity


@proxy("az_trainability")
def az_trainability(net: nn.Module, batches: list[Batch], settings: ProxySettings) -> float:
    return az_scores(net, batches, settings).trainability


#: AZ-NAS's complexity is the network's FLOPs: the ``flops`` proxy under AZ-NAS's name.
az_complexity = proxy("az_complexity")(flops)
