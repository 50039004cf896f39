"""What every zero-cost proxy shares: the registry, the settings, and the dense-prediction plumbing
(main logits, per-pixel cross-entropy with ignore, chunking, BatchNorm statistics).

BatchNorm policy (all data-driven proxies): before the images of one batch are scored, a single
no-grad forward of that whole batch records every BatchNorm's batch mean and (biased) variance —
exactly the statistics one train-mode forward of the batch would normalize with — and the proxy then
runs the network in eval mode with those statistics, ``chunk_size`` images at a time. Activations
and gradients of an image therefore do not depend on how the batch is chunked (the statistics are
constants to the backward pass, as in precise-BN / OFA sub-network evaluation), dropout is off, and
a one-image chunk never trips BatchNorm on 1×1 maps. A batch of ``batches`` is thus the statistical
unit and a chunk the memory unit; pass smaller batches to bound the statistics pass as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segnas.errors import SegnasError
from segnas.registry import plugin_table

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class ProxySettings:
    """Options every proxy receives; see ``segnas.proxies.score``."""

    seed: int = 0
    ignore_index: int = 255
    chunk_size: int = 4


ProxyFn = Callable[[nn.Module, list[Batch], ProxySettings], float]

#: Registered proxies by name; a proxy receives its own deep copy of the network, free to mutate
#: (a plugin's, registered with ``@proxy``, is left out with the rest of a plugin that fails to load).
PROXIES: dict[str, ProxyFn] = plugin_table({})


@dataclass(frozen=True)
class ImageNeeds:
    """The images a proxy's score means something with: ``images`` in all and ``per_batch`` in each
    batch (its statistical unit); ``why`` says what happens with fewer."""

    images: int = 1
    per_batch: int = 1
    why: str = ""


#: What each proxy needs beyond one image, by name (``proxy(name, needs=...)``).
NEEDS: dict[str, ImageNeeds] = {}


def proxy(name: str, needs: ImageNeeds | None = None) -> Callable[[ProxyFn], ProxyFn]:
    """Register ``fn(net, batches, settings) -> float`` as proxy ``name`` (higher = better, except
    where the proxy's docstring says otherwise), with the images it ``needs``."""

    def register(fn: ProxyFn) -> ProxyFn:
        if name in PROXIES:
            raise ValueError(f"proxy {name!r} is registered twice")
        PROXIES[name] = fn
        if needs is not None:
            NEEDS[name] = needs
        return fn

    return register


def images_problem(names: Sequence[str], images: int, batch_size: int) -> str | None:
    """Why ``images`` images in batches of ``batch_size`` are too few for one of proxies ``names``
    (a batch of one image left over joins the batch before it: ``fixed_batches``); None if enough."""
    smallest = min(images, batch_size)
    for name in names:
        need = NEEDS.get(name)
        if need is None:
            continue
        if images < need.images:
            return f"{name} needs at least {need.images} images, got {images}: {need.why}"
        if smallest < need.per_batch:
            return (f"{name} needs at least {need.per_batch} images per batch, got {smallest} "
                    f"({images} images in batches of {batch_size}): {need.why}")
    return None


def main_logits(output: object) -> torch.Tensor:
    """The main logits of a segmentation network's output (a tensor, ``{"out": ...}``, or a tuple)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and "out" in output:
        return output["out"]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise SegnasError(f"proxies: the network returned {type(output).__name__}; expected logits N×C×H×W "
                      "or a dict with key 'out'")


def forward_logits(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """N×C×H×W logits at the input size (bilinearly resized if the network returns another size)."""
    logits = main_logits(net(images))
    if logits.dim() != 4 or logits.shape[0] != images.shape[0]:
        raise SegnasError(f"proxies: the network's logits have shape {tuple(logits.shape)}; expected "
                          f"{images.shape[0]}×C×H×W")
    if logits.shape[-2:] != images.shape[-2:]:
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return logits


def pixel_ce(logits: torch.Tensor, masks: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Per-pixel cross-entropy N×H×W, 0 at ignored pixels; a mask value that is neither a class nor
    ``ignore_index`` is a user error."""
    num_classes = logits.shape[1]
    bad = (masks != ignore_index) & ((masks < 0) | (masks >= num_classes))
    if bool(bad.any()):
        value = int(masks[bad][0])
        raise SegnasError(f"proxies: mask value {value} is neither a class in [0, {num_classes}) nor "
                          f"ignore_index={ignore_index}")
    return F.cross_entropy(logits, masks, ignore_index=ignore_index, reduction="none")


def valid_pixels(batches: Sequence[Batch], ignore_index: int) -> int:
    """Number of labelled (not ignored) pixels over all batches."""
    return int(sum(int((masks != ignore_index).sum()) for _, masks in batches))


def chunks(images: torch.Tensor, masks: torch.Tensor, size: int) -> Iterator[Batch]:
    for start in range(0, images.shape[0], size):
        yield images[start:start + size], masks[start:start + size]


def batchnorms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def freeze_batch_stats(net: nn.Module, images: torch.Tensor) -> dict[nn.Module, torch.Tensor]:
    """Set every BatchNorm of ``net`` (left in eval mode) to the batch statistics of ``images``, as
    one train-mode forward of them would use (see the module docstring); returns each BatchNorm's
    biased batch variance per channel. A BatchNorm the forward does not reach gets mean 0, var 1."""
    net.eval()
    variances: dict[nn.Module, torch.Tensor] = {}

    def pre_hook(module: nn.Module, args: tuple) -> None:
        x = args[0]
        dims = [0] + list(range(2, x.dim()))
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        module.running_mean = mean.detach().clone()
        module.running_var = var.detach().clone()
        variances[module] = var.detach().clone()

    bns = batchnorms(net)
    for m in bns:
        m.running_mean = torch.zeros(m.num_features, device=images.device, dtype=images.dtype)
        m.running_var = torch.ones(m.num_features, device=images.device, dtype=images.dtype)
    handles = [m.register_forward_pre_hook(pre_hook) for m in bns]
    try:
        net(images)
    finally:
        for h in handles:
            h.remove()
    return variances


def calibrated_chunks(net: nn.Module, batches: Sequence[Batch], chunk_size: int) -> Iterator[Batch]:
    """Chunks of every batch, each batch's BatchNorm statistics frozen into ``net`` before its chunks."""
    for images, masks in batches:
        freeze_batch_stats(net, images)
        yield from chunks(images, masks, chunk_size)


def is_weight_layer(module: nn.Module) -> bool:
    """Convolution or linear layer: the layers whose weights zero-cost proxies score."""
    return isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and isinstance(module.weight, torch.Tensor)


def weight_layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if is_weight_layer(m)]


def accumulate_loss_gradients(net: nn.Module, batches: Sequence[Batch], settings: ProxySettings) -> None:
    """Accumulate into ``.grad`` the gradient of the mean per-pixel cross-entropy over every labelled
    pixel of every batch (each chunk's loss sum is divided by the global pixel count, so the total
    does not depend on the chunking; all pixels ignored → zero gradient)."""
    total = max(valid_pixels(batches, settings.ignore_index), 1)
    for images, masks in calibrated_chunks(net, batches, settings.chunk_size):
        loss = pixel_ce(forward_logits(net, images), masks, settings.ignore_index).sum() / total
        loss.backward()


def sum_over_layers(values: Sequence[torch.Tensor]) -> float:
    """Sum of per-layer scalars in float64 (0.0 for no layers)."""
    return float(sum((v.double() for v in values), torch.zeros((), dtype=torch.float64)))


def check_inits(inits: object) -> int:
    """``inits``, the number of weight initializations a score is averaged over, when it is a
    positive integer; otherwise a one-line error naming the value."""
    if not isinstance(inits, int) or isinstance(inits, bool) or inits < 1:
        raise SegnasError(f"inits: expected a positive number of initializations, got {inits!r}")
    return inits
