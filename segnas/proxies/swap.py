"""SWAP-Score (Peng et al., ICLR 2024, "SWAP-NAS: Sample-Wise Activation Patterns for Ultra-fast
NAS"; reference code pym1024/SWAP, ``src/metrics/swap.py``): the expressivity of a network as the
number of distinct sample-wise activation patterns. Every ReLU unit (a channel at a position of a
ReLU output) is a neuron; its pattern is the binary vector of "active or not" (output > 0) over the
S samples (in the reference, one mini-batch); the score is the number of distinct patterns among
all neurons of all ReLUs, at most min(#neurons, 2^S).

What a sample is. Here, as in the reference, a sample is an image: the network's input, the thing it
maps as a whole. The alternative, pixels as samples, does not fit the definition: a neuron is a unit
at one position, so a pixel sample would have to see translated copies of the units, i.e. neurons
would become channels; the count would then be bounded by the number of channels and measure width
rather than the diversity of the units' behaviour over inputs. The samples are all images of all
batches (each image with its own batch's BatchNorm statistics), so that the number of images, not
the batch size, sets the ceiling 2^S. That ceiling matters: on noise images at 128×160, Fast-SCNN
reaches it with 8 and with 16 images (256 and 65 536) and stays well below it with 24, where widths
0.5 and 1.0 differ by a factor 2; score with 24 or more images. Images must all have one size.

Details (as in the reference, adapted where noted): weights are re-drawn Gaussian as in the
reference's ``network_weight_gaussian_init`` (convolution and linear weights N(0, 1), biases 0,
normalization weights 1 and biases 0; ``zen.gaussian_init``) from the seed — the reference averages
32 such draws; ``segnas``'s scoring averages over ``inits`` initializations instead. Every ReLU is
read, module or functional (``relu_tap``; the reference hooks ``nn.ReLU`` modules only, our networks
apply most ReLUs functionally), at every position (no subsampling). BatchNorm uses each batch's
statistics (``common``). Patterns are built image by image, chunk by chunk, so the score does not
depend on ``chunk_size``, nor, without BatchNorm, on how the images are split into batches. Labels
are unused.

Variant: the registered ``swap`` is the plain SWAP-Score. The paper also has a regularized score,
SWAP × exp(−(θ − μ)²/σ) with θ the model size, which steers a search towards a size μ and improved
the correlations in cell-based spaces; μ and σ depend on the space and on the size wanted, so it
cannot be a single registered name: ``regularized_swap(mu, sigma)`` builds it for ``proxy(name)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from segnas.cost import count_parameters
from segnas.errors import SegnasError
from segnas.proxies.common import Batch, ImageNeeds, ProxyFn, ProxySettings, calibrated_chunks, proxy
from segnas.proxies.relu_tap import ReluTap
from segnas.proxies.zen import gaussian_init

#: Images per int64 word of a neuron's pattern code.
BITS = 63


class PatternCodes:
    """Every ReLU neuron's activation pattern over ``images`` samples, bit i of word i // BITS set
    when the neuron is active on image i; filled chunk by chunk in any order."""

    def __init__(self, images: int) -> None:
        self.words = -(-images // BITS)
        self.codes: list[torch.Tensor] = []  # per ReLU call: words × neurons

    def add(self, net: nn.Module, x: torch.Tensor, first: int) -> None:
        """Record the patterns of images ``first`` … of the chunk ``x`` (BatchNorm statistics frozen)."""
        calls: list[torch.Tensor] = []
        with torch.no_grad(), ReluTap(lambda out: calls.append((out.detach() > 0).flatten(1))):
            net(x)
        if not self.codes:
            self.codes = [torch.zeros(self.words, a.shape[1], dtype=torch.int64, device=a.device) for a in calls]
        if [c.shape[1] for c in self.codes] != [a.shape[1] for a in calls]:
            raise SegnasError("proxies: swap needs the same ReLU outputs for every image (images of one size)")
        for code, active in zip(self.codes, calls):
            for j in range(active.shape[0]):
                word, bit = divmod(first + j, BITS)
                code[word] |= active[j].long() << bit

    def distinct(self) -> int:
        """The number of distinct patterns among all neurons."""
        if not self.codes:
            raise SegnasError("proxies: swap needs ReLU activations on N×C×H×W feature maps; the network has none")
        neurons = torch.cat(self.codes, dim=1)
        return int(torch.unique(neurons[0]).numel() if self.words == 1 else torch.unique(neurons.T, dim=0).shape[0])


def swap_score(net: nn.Module, batches: list[Batch], settings: ProxySettings) -> float:
    """The plain SWAP-Score over all images of ``batches`` (see the module docstring)."""
    gaussian_init(net, torch.Generator().manual_seed(settings.seed))
    patterns = PatternCodes(sum(images.shape[0] for images, _ in batches))
    first = 0
    for x, _ in calibrated_chunks(net, batches, settings.chunk_size):
        patterns.add(net, x, first)
        first += x.shape[0]
    return float(patterns.distinct())


#: Fewer images than this cap the score at 2^images, which networks reach (see the module docstring).
MIN_IMAGES = 24
swap = proxy("swap", ImageNeeds(images=MIN_IMAGES, why="with S images the score is at most 2^S, a ceiling "
                                "networks reach at 8 and 16 images (every network would score alike)"))(swap_score)


def size_factor(net: nn.Module, mu: float, sigma: float) -> float:
    """SWAP's regularization exp(−(θ − μ)²/σ), θ = the deployed network's parameters in millions."""
    theta = count_parameters(net) / 1e6
    return math.exp(-((theta - mu) ** 2) / sigma)


def regularized_swap(mu: float, sigma: float) -> ProxyFn:
    """The paper's regularized SWAP-Score, SWAP × exp(−(θ − μ)²/σ) with θ the parameters in millions
    (``count_parameters``, auxiliary heads left out) and σ > 0: register it with
    ``proxy("swap_reg")(regularized_swap(mu=1.2, sigma=0.5))``."""
    if not (math.isfinite(mu) and math.isfinite(sigma) and sigma > 0):
        raise SegnasError(f"swap: regularization needs a finite mu and sigma > 0, got mu={mu}, sigma={sigma}")

    def regularized(net: nn.Module, batches: list[Batch], settings: ProxySettings) -> float:
        return swap_score(net, batches, settings) * size_factor(net, mu, sigma)

    return regularized

