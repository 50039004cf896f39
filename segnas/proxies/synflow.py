"""SynFlow (Tanaka et al., NeurIPS 2020; as a NAS proxy in Abdelfattah et al., ICLR 2021), returned
as its natural logarithm so that it never overflows.

What it measures: with every parameter replaced by its absolute value and an all-ones input, the
network output summed, R = Σ over input→output paths of the product of |w| along the path;
SynFlow = Σ over convolution and linear weights of |w ⊙ ∂R/∂w| = Σ over paths of (number of
weighted layers on the path) × (path product). Data and labels are not used, only the image size.

Neutral state, so that R is exactly that path sum: the copy runs in float64 in eval mode, every
normalization layer (BatchNorm, InstanceNorm, GroupNorm, LayerNorm) is replaced by identity and
every convolution/linear bias is set to 0 (no bias paths; a constant input would otherwise be
normalized away). The input is one 1×3×H×W image of ones at the batches' size. In-place
activations are made out-of-place: with the norm layer before them now an identity, an in-place
ReLU would overwrite the convolution output that the backward pass still needs.

Log space: R is a product over depth, so a deep or wide net overflows float64 (e.g. 100 layers of
row-sum 1e4). The score is first computed exactly; if it is not a finite positive float, every
weighted layer l is rescaled by s_l = 1/(mean over its output units of the sum of |w| feeding one
unit), so every layer maps ones to about ones, the network is run again, and log SynFlow =
log SynFlow(scaled) − Σ_l log s_l. For a chain of layers (every path crosses every layer) this is
exact, since the score is homogeneous of degree 1 in each layer's weights. With skip connections a
path that skips layer l is not multiplied by s_l, so the fallback then counts each skipped layer at
its gain 1/s_l; it is only used where the exact value lies outside float64's range.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from segnas.proxies.common import Batch, ProxySettings, forward_logits, proxy, weight_layers

NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)


@torch.no_grad()
def linearize(net: nn.Module) -> nn.Module:
    """The neutral |w| network of the module docstring (modifies ``net`` in place and returns it)."""
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, NORMS):
                setattr(parent, name, nn.Identity())
    for m in net.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False
    net.double().eval()
    for p in net.parameters():
        p.abs_()
    for m in weight_layers(net):
        if m.bias is not None:
            m.bias.zero_()
    return net


def layer_gain(module: nn.Module) -> float:
    """Mean over output units of the sum of |w| feeding one unit (weights already non-negative)."""
    w = module.weight.detach()
    outputs = w.shape[1] * module.groups if isinstance(module, nn.modules.conv._ConvTransposeNd) else w.shape[0]
    return float(w.sum()) / outputs


def log_synflow(net: nn.Module, image_size: tuple[int, int], rescale: bool = False) -> float:
    """log SynFlow of a network already ``linearize``d; ``rescale`` forces the per-layer rescaling
    (the result is the same for a chain of layers, see the module docstring). NaN where float64
    overflows, −inf where the path sum is 0 (or underflows)."""
    layers = weight_layers(net)
    log_scale = 0.0
    if rescale:
        with torch.no_grad():
            for m in layers:
                gain = layer_gain(m)
                if gain > 0 and math.isfinite(gain):
                    m.weight.div_(gain)
                    log_scale += math.log(gain)
    for p in net.parameters():
        p.grad = None
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    ones = torch.ones(1, 3, *image_size, dtype=torch.float64, device=device)
    forward_logits(net, ones).sum().backward()
    total = sum(((m.weight.detach() * m.weight.grad).sum() for m in layers if m.weight.grad is not None),
                torch.zeros((), dtype=torch.float64, device=device))
    value = float(total)
    if not math.isfinite(value):
        return math.nan
    return math.log(value) + log_scale if value > 0 else -math.inf


@proxy("synflow")
def synflow(net: nn.Module, batches: list[Batch], settings: ProxySettings) -> float:
    size = tuple(batches[0][0].shape[-2:])
    linearize(net)
    score = log_synflow(net, size)
    if math.isfinite(score):
        return score
    return log_synflow(net, size, rescale=True)
