"""Base class of every segmentation network: any input size, logits at input resolution.

Subclasses implement ``forward_features(x) -> (main_logits, [aux_logits...])`` at reduced
resolution, or ``(main, aux, extras)`` where ``extras`` maps names to further training-only
outputs that a loss knows by name (e.g. ``"detail"``: STDC's boundary logits). The base pads the input to the network's stride (so H or W not divisible by 32 never
crashes), upsamples logits to the padded size and crops back. In eval mode (and in ONNX export)
it returns one tensor; in train mode it returns ``{"out": main, "aux": [...]}`` when aux heads exist.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def exporting() -> bool:
    """True while a network is traced for export (either ONNX exporter, or ``torch.export``): shapes
    may then be symbolic, and a Python branch on them would be fixed to the example input's."""
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


def padded_size(size: Sequence[int], multiple: int) -> tuple[int, int]:
    """The (H, W) that ``pad_to_multiple`` makes of an input of ``size``."""
    return -(-int(size[0]) // multiple) * multiple, -(-int(size[1]) // multiple) * multiple


def pad_to_multiple(x: torch.Tensor, multiple: int, value: float = 0.0) -> torch.Tensor:
    """Pad the bottom/right of an NCHW tensor so that H and W are multiples of ``multiple``.

    The padded size is written as ``multiple · ⌈h / multiple⌉``, which symbolic shapes (dynamic
    export) simplify through later halvings; under export the padding is always applied (a zero
    pad for sizes that need none), so the exported graph pads every input size."""
    h, w = x.shape[-2:]
    ph = (h + multiple - 1) // multiple * multiple - h  # no negative floor division: the ONNX exporter
    pw = (w + multiple - 1) // multiple * multiple - w  # writes SymInt // as a truncating Div
    if not exporting() and ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), value=value)


class SegmentationNet(nn.Module):
    """Pads to ``output_stride_multiple``, runs the network, returns full-resolution logits."""

    #: H and W are padded up to a multiple of this (the network's largest downsampling factor).
    stride_multiple: int = 32
    #: False where training with bf16 autocast in channels-last memory format is known to fail;
    #: the trainer then keeps such a network in NCHW (see ``Trainer``).
    bf16_channels_last_ok: bool = True

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> tuple:
        """(main logits, [aux logits], optional {name: extra training output}) at reduced size."""
        raise NotImplementedError(f"{type(self).__name__} must define forward_features")

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, Any]:
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x, self.stride_multiple)
        main, aux, *rest = self.forward_features(padded)
        return self.assemble(main, aux, rest[0] if rest else {}, tuple(padded.shape[-2:]), (h, w))

    def assemble(self, main: torch.Tensor, aux: Sequence[torch.Tensor], extras: dict[str, torch.Tensor],
                 size: Sequence[int], crop: Sequence[int]) -> torch.Tensor | dict[str, Any]:
        """What ``forward`` returns from ``forward_features``' outputs: the main logits upsampled to
        the padded input ``size`` and cropped to ``crop`` (H, W); in training mode, with auxiliary or
        extra outputs, ``{"out", "aux", **extras}``, each upsampled and cropped alike."""
        h, w = crop[0], crop[1]  # not int(): that would fix an exported graph to the traced size
        out = self.upsample_logits(main, size)[..., :h, :w]
        if not self.training or not (aux or extras):
            return out
        return {"out": out, "aux": [_upsample_crop(a, size, h, w) for a in aux],
                **{k: _upsample_crop(v, size, h, w) for k, v in extras.items()}}

    def upsample_logits(self, main: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Main logits to the padded input size (bilinear); a network may use its own op here."""
        return F.interpolate(main, size=size, mode="bilinear", align_corners=False)


def _upsample_crop(x: torch.Tensor, size, h: int, w: int) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)[..., :h, :w]
