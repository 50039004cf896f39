"""Shared helpers of the proxy tests: a tiny network, a batch with ignored pixels, made-up layer statistics."""

import math

import torch

from segnas.zoo import build_model

NUM_CLASSES = 5


def tiny_net(dtype=torch.float32):
    torch.manual_seed(0)
    return build_model("fast_scnn", NUM_CLASSES, width=0.25).to(dtype)


def data(n=2, h=32, w=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    images, masks = torch.randn(n, 3, h, w, generator=g), torch.randint(0, NUM_CLASSES, (n, h, w), generator=g)
    masks[:, : h // 4] = 255  # a band of ignored pixels
    return images, masks


def fake_arch(gen):
    """Per-layer statistics of a made-up architecture: weights and gradients at independent scales."""
    a = math.exp(float(torch.empty(1).uniform_(-2, 2, generator=gen)))
    b = math.exp(float(torch.empty(1).uniform_(-2, 2, generator=gen)))
    layers = []
    for _ in range(int(torch.randint(2, 7, (1,), generator=gen))):
        n = int(torch.randint(20, 200, (1,), generator=gen))
        layers.append({"W": a * torch.randn(n, generator=gen), "G": b * torch.randn(n, generator=gen),
                       "A": torch.relu(torch.randn(50, generator=gen)), "numel_w": torch.tensor(float(n)),
                       "numel_a": torch.tensor(50.0)})
    return layers
