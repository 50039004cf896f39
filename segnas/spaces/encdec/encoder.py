"""The fixed encoders of the ``encdec`` space and their pre-trained weights.

An encoder kind maps an image to four feature maps at 1/4, 1/8, 1/16 and 1/32. Its layers are
``segnas.nn.ops`` operators (latency keys), and it has a segmenter in the zoo that pre-trains it with
the shared trainer: for ``mobilenetv2`` (``segnas.zoo.mobilenetv2``) that is ``mobilenetv2_deeplabv3``
(``EncoderSegmenter``), e.g. ``segnas train --model mobilenetv2_deeplabv3``.

Weights: ``load_encoder_weights`` reads a file holding either a segnas training checkpoint of that
segmenter (``checkpoints/best.pt``: its ``model`` entry), a whole network's state dict with an
``encoder.`` prefix (an ``EncDecNet``, the segmenter), or the encoder's own state dict
(``save_encoder_weights``); the encoder's tensors must all be there with the same shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from segnas.engine.checkpoint import read_weights
from segnas.errors import SegnasError
from segnas.nn.ops import OpKey
from segnas.spaces.pieces import Piece
from segnas.utils import atomic_write
from segnas.zoo.mobilenetv2 import MobileDeepLabV3, MobileNetV2Encoder, encoder_channels, encoder_layers

#: The segmenter that pre-trains the ``mobilenetv2`` encoder (zoo name ``mobilenetv2_deeplabv3``).
EncoderSegmenter = MobileDeepLabV3
PREFIX = "encoder."


@dataclass(frozen=True)
class EncoderKind:
    """An encoder: its module for a width multiplier, its layers (module name, ``OpKey`` without a
    resolution, input level), the channels of its four outputs, and its zoo segmenter."""

    build: Callable[[float], nn.Module]
    layers: Callable[[float], list[tuple[str, OpKey, int]]]
    channels: Callable[[float], tuple[int, ...]]
    segmenter: str


ENCODERS: dict[str, EncoderKind] = {
    "mobilenetv2": EncoderKind(MobileNetV2Encoder, encoder_layers, encoder_channels, "mobilenetv2_deeplabv3"),
}


def encoder_kind(name: str) -> EncoderKind:
    if name not in ENCODERS:
        raise SegnasError(f"encoder: unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}")
    return ENCODERS[name]


def build_encoder(name: str, width: float) -> nn.Module:
    """The encoder ``name`` with width multiplier ``width`` (image → 4 maps)."""
    return encoder_kind(name).build(width)


def encoder_pieces(name: str, width: float) -> list[Piece]:
    """The encoder's layers as pieces of a network whose encoder sits at attribute ``encoder``."""
    return [Piece(PREFIX + n, key, level) for n, key, level in encoder_kind(name).layers(width)]


def read_encoder_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The encoder tensors stored in ``path`` (see the module docstring), without the ``encoder.``
    prefix; a one-line SegnasError naming the file if it is missing or holds something else."""
    state = read_weights(path, "encoder_weights")
    if any(k.startswith(PREFIX) for k in state):
        state = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    return state


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load the weights in ``path`` into ``encoder``; SegnasError naming the file and the first
    missing, extra or differently shaped tensor (e.g. weights of another encoder width)."""
    state = read_encoder_state(path)
    own = encoder.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        what = f"no tensor {missing[0]!r} ({len(missing)} missing)" if missing else \
            f"unexpected tensor {extra[0]!r} ({len(extra)} extra)"
        raise SegnasError(f"encoder_weights: {path}: {what}; not weights of this encoder")
    for k, v in own.items():
        if state[k].shape != v.shape:
            raise SegnasError(f"encoder_weights: {path}: {k!r} has shape {list(state[k].shape)}, this encoder's is "
                              f"{list(v.shape)} (another encoder width?)")
    encoder.load_state_dict(state)


def save_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Write ``encoder``'s state dict to ``path`` atomically (what ``load_encoder_weights`` reads)."""
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    atomic_write(path, lambda tmp: torch.save(state, tmp))
