"""Paired image/mask transforms on tensors (image float CHW in [0, 1] until Normalize; mask int64 HW).

Randomness comes from torch's global generator, so a seeded job (and a resumed one, whose RNG
state is restored) sees the same augmentations.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from segnas.data.base import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Pair = tuple[torch.Tensor, torch.Tensor]


class Compose:
    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        for t in self.transforms:
            image, mask = t(image, mask)
        return image, mask


def resize_pair(image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]) -> Pair:
    """Bilinear resize for the image, nearest for the mask."""
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return image, mask


class Resize:
    """Resize to a fixed (H, W): the image bilinearly, the mask by nearest neighbour, or not at all
    with ``keep_mask`` (to score the network's output resized to the labels, as published results at
    full label size are)."""

    def __init__(self, size: tuple[int, int], keep_mask: bool = False) -> None:
        self.size = tuple(size)
        self.keep_mask = keep_mask

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        if tuple(image.shape[-2:]) == self.size:
            return image, mask
        if self.keep_mask:
            return F.interpolate(image[None], size=self.size, mode="bilinear", align_corners=False)[0], mask
        return resize_pair(image, mask, self.size)


class RandomScale:
    """Rescale both sides by a factor drawn uniformly from [low, high]."""

    def __init__(self, low: float = 0.75, high: float = 1.5) -> None:
        self.low, self.high = low, high

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        s = self.low + (self.high - self.low) * torch.rand(()).item()
        h, w = image.shape[-2:]
        return resize_pair(image, mask, (max(1, round(h * s)), max(1, round(w * s))))


class RandomCrop:
    """Crop to (H, W) at a random place, padding first (image 0, mask ignore) if too small.

    Class-focused crops: with probability ``focus_prob``, when the mask holds any of
    ``focus_classes`` (e.g. poles, signs, cyclists: thin or rare classes a uniform crop seldom
    centres on), one of those present classes is drawn uniformly, then one of its pixels, and the
    crop is placed at random among the windows that contain that pixel. With ``focus_prob`` 0 the
    crop draws exactly the random numbers of a plain crop."""

    def __init__(self, size: tuple[int, int], focus_classes: Sequence[int] = (), focus_prob: float = 0.0) -> None:
        self.size = tuple(size)
        self.focus_classes = tuple(int(c) for c in focus_classes)
        self.focus_prob = float(focus_prob) if self.focus_classes else 0.0

    def _focus_pixel(self, mask: torch.Tensor) -> tuple[int, int] | None:
        """A pixel of a focus class present in ``mask`` (class uniform, then pixel uniform), or None."""
        present = [c for c in self.focus_classes if bool((mask == c).any())]
        if not present:
            return None
        cls = present[int(torch.randint(0, len(present), ()).item())]
        ys, xs = torch.nonzero(mask == cls, as_tuple=True)
        k = int(torch.randint(0, len(ys), ()).item())
        return int(ys[k]), int(xs[k])

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        ch, cw = self.size
        h, w = image.shape[-2:]
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=0.0)
            mask = F.pad(mask, (0, pw, 0, ph), value=IGNORE_INDEX)
            h, w = image.shape[-2:]
        pixel = None
        if self.focus_prob > 0 and torch.rand(()).item() < self.focus_prob:
            pixel = self._focus_pixel(mask)
        if pixel is None:
            top = int(torch.randint(0, h - ch + 1, ()).item())
            left = int(torch.randint(0, w - cw + 1, ()).item())
        else:  # a window [top, top + ch) that holds row y, within the image; the same for columns
            y, x = pixel
            top = int(torch.randint(max(0, y - ch + 1), min(y, h - ch) + 1, ()).item())
            left = int(torch.randint(max(0, x - cw + 1), min(x, w - cw) + 1, ()).item())
        return image[:, top : top + ch, left : left + cw], mask[top : top + ch, left : left + cw]


class BatchCrop:
    """Random crops at several sizes: a collate function that draws one of ``fractions`` per batch
    (uniformly) and crops every sample of the batch at its own random place to that fraction of
    its sides, rounded down to a multiple of ``multiple`` (networks that downsample 32x need it;
    never below one multiple). A fraction of 1 keeps the samples whole: with ``fractions`` (1,),
    a plain collate that draws no random numbers.

    The samples come cropped at the largest size (``data.crop_size``), so a smaller crop is a
    random crop of the scaled image as well: each batch sees objects with less or more context."""

    def __init__(self, fractions: Sequence[float], multiple: int = 32) -> None:
        if not fractions or any(not 0 < f <= 1 for f in fractions):
            raise ValueError(f"crop fractions must lie in (0, 1], got {list(fractions)}")
        self.fractions = tuple(float(f) for f in fractions)
        self.multiple = multiple

    def size(self, height: int, width: int, fraction: float) -> tuple[int, int]:
        """The crop of ``fraction`` of a height x width sample."""
        if fraction >= 1:
            return height, width
        m = self.multiple
        return (min(height, max(m, int(height * fraction) // m * m)),
                min(width, max(m, int(width * fraction) // m * m)))

    def __call__(self, samples: Sequence[Pair]) -> Pair:
        fraction = 1.0
        if self.fractions != (1.0,):
            fraction = self.fractions[int(torch.randint(0, len(self.fractions), ()).item())]
        if fraction < 1:
            cropped = []
            for image, mask in samples:
                h, w = image.shape[-2:]
                ch, cw = self.size(h, w, fraction)
                top = int(torch.randint(0, h - ch + 1, ()).item())
                left = int(torch.randint(0, w - cw + 1, ()).item())
                cropped.append((image[:, top : top + ch, left : left + cw], mask[top : top + ch, left : left + cw]))
            samples = cropped
        return torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples])


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        if torch.rand(()).item() < self.p:
            return image.flip(-1), mask.flip(-1)
        return image, mask


class ColorJitter:
    """Photometric jitter on an RGB image in [0, 1]: brightness, contrast, saturation factors
    drawn from [1 - s, 1 + s], applied in random order."""

    def __init__(self, brightness: float = 0.3, contrast: float = 0.3, saturation: float = 0.3) -> None:
        self.strengths = (brightness, contrast, saturation)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        for k in torch.randperm(3).tolist():
            s = self.strengths[k]
            if s <= 0:
                continue
            f = 1.0 + (2 * torch.rand(()).item() - 1) * s
            if k == 0:
                image = image * f
            elif k == 1:
                mean = image.mean()
                image = (image - mean) * f + mean
            else:
                gray = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]
                image = (image - gray) * f + gray
        return image.clamp_(0.0, 1.0), mask


class RandomBlur:
    """With probability ``p``, a Gaussian blur of the image (not the mask) with σ drawn from
    [``sigma_low``, ``sigma_high``] pixels: the defocus and motion softness of another camera."""

    def __init__(self, p: float = 0.3, sigma_low: float = 0.3, sigma_high: float = 1.5) -> None:
        self.p, self.sigma = p, (sigma_low, sigma_high)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        if torch.rand(()).item() >= self.p:
            return image, mask
        low, high = self.sigma
        sigma = low + (high - low) * torch.rand(()).item()
        return gaussian_blur(image, sigma), mask


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """``image`` (CHW) blurred by a separable Gaussian of ``sigma`` pixels (radius 3σ, edges replicated)."""
    radius = max(1, int(3.0 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = image.shape[0]
    out = F.pad(image[None], (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return out[0]


class GaussianNoise:
    """Additive Gaussian pixel noise with a standard deviation drawn from [0, ``std``] per image
    (in [0, 1] units): the sensor noise of a darker or cheaper camera."""

    def __init__(self, std: float = 0.03) -> None:
        self.std = std

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        std = self.std * torch.rand(()).item()
        return (image + std * torch.randn_like(image)).clamp_(0.0, 1.0), mask


class Normalize:
    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> Pair:
        return (image - self.mean) / self.std, mask


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Undo Normalize (for drawing); works on CHW or NCHW."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(3, 1, 1)
    return (image * std + mean).clamp(0, 1)


def train_transforms(
    crop_size: tuple[int, int] | None,
    scale: tuple[float, float] = (0.75, 1.5),
    jitter: float = 0.3,
    base_size: tuple[int, int] | None = None,
    focus_classes: Sequence[int] = (),
    focus_prob: float = 0.0,
    blur_prob: float = 0.0,
    noise_std: float = 0.0,
) -> Compose:
    """Training augmentation: optional resize to base size, random scale + crop (ignore padding;
    class-focused with ``focus_classes``/``focus_prob``, see ``RandomCrop``) when a crop size is
    given, flip, photometric jitter, blur with probability ``blur_prob``, noise up to ``noise_std``,
    normalize. Without a crop size images keep their (base) size so that batches stack."""
    steps: list = [Resize(base_size)] if base_size else []
    if crop_size is not None:
        steps += [RandomScale(*scale), RandomCrop(crop_size, focus_classes, focus_prob)]
    steps.append(RandomHorizontalFlip())
    if jitter > 0:
        steps.append(ColorJitter(jitter, jitter, jitter))
    if blur_prob > 0:
        steps.append(RandomBlur(blur_prob))
    if noise_std > 0:
        steps.append(GaussianNoise(noise_std))
    steps.append(Normalize())
    return Compose(steps)


def eval_transforms(size: tuple[int, int] | None = None, label_size: bool = False) -> Compose:
    """Evaluation: optional resize to a fixed size (of the mask too, nearest, unless ``label_size``:
    then the mask keeps its size), then normalize. No cropping: any size works."""
    return Compose(([Resize(size, keep_mask=label_size)] if size else []) + [Normalize()])
