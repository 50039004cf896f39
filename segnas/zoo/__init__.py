"""Hand-designed real-time segmentation networks, built by name for any class count.

Each network lives in one file that cites its paper and the published parameter count
(``PUBLISHED_PARAMS`` / ``PUBLISHED_PARAMS_SOURCE``) that the tests compare against.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from torch import nn

from segnas.errors import SegnasError
from segnas.zoo.bisenetv2 import BiSeNetV2
from segnas.zoo.ddrnet import DDRNet
from segnas.zoo.enet import ENet
from segnas.zoo.fast_scnn import FastSCNN
from segnas.zoo.mobilenetv2 import MobileDeepLabV3
from segnas.zoo.pp_liteseg import PPLiteSeg
from segnas.zoo.stdc import STDCSeg

MODELS: dict[str, Callable[..., nn.Module]] = {
    "fast_scnn": FastSCNN,
    "enet": ENet,
    "bisenetv2": BiSeNetV2,
    "stdc1_seg": functools.partial(STDCSeg, variant="stdc1"),
    "ddrnet_23_slim": functools.partial(DDRNet, variant="23_slim"),
    "pp_liteseg_t": functools.partial(PPLiteSeg, variant="t"),
    "mobilenetv2_deeplabv3": MobileDeepLabV3,
}


def zoo_name(name: str, setting: str = "model") -> str:
    """``name`` as ``MODELS`` keys it (any case, ``-`` for ``_``); SegnasError naming ``setting`` when
    no zoo network has it."""
    key = name.lower().replace("-", "_")
    if key not in MODELS:
        raise SegnasError(f"{setting}: unknown name {name!r}; choose one of {', '.join(sorted(MODELS))}")
    return key


def build_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build zoo network ``name`` for ``num_classes`` classes."""
    key = zoo_name(name)
    for option, value in kwargs.items():  # a size that a network would clamp or fail on later
        positive = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        if option == "width" and not positive:
            raise SegnasError(f"model.options: width: a width multiplier > 0, got {value!r}")
        if option.endswith("channels") and not (positive and isinstance(value, int)):
            raise SegnasError(f"model.options: {option}: a whole number of channels >= 1, got {value!r}")
    try:
        return MODELS[key](num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise SegnasError(f"model.options: {exc}") from None
