"""Evaluation of a network on a dataset: confusion matrix → SegMetrics, at native image size."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from segnas.cost.machine import cpu_has_native_bf16, cpu_model
from segnas.engine.device import module_device
from segnas.metrics import ConfusionMatrix, SegMetrics
from segnas.progress import Echo


def iter_batches(dataset: Dataset, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of consecutive samples, split wherever the image or mask size changes (any size works)."""
    images, masks = [], []
    for i in range(len(dataset)):
        img, mask = dataset[i]
        if images and (img.shape != images[0].shape or mask.shape != masks[0].shape or len(images) == batch_size):
            yield torch.stack(images), torch.stack(masks)
            images, masks = [], []
        images.append(img)
        masks.append(mask)
    if images:
        yield torch.stack(images), torch.stack(masks)


def autocast_context(bf16: bool, device_type: str = "cpu") -> AbstractContextManager:
    """bf16 autocast on ``device_type`` when ``bf16``, else a context that changes nothing."""
    return torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else nullcontext()


def usable_bf16(requested: bool, echo: Echo | None = None, device_type: str = "cpu") -> bool:
    """bf16 autocast as requested, unless the CPU lacks native bf16: then fp32, which is faster
    there, with a one-line notice through ``echo``. On a GPU, bf16 where the GPU supports it."""
    if device_type == "cuda":
        if requested and not torch.cuda.is_bf16_supported():
            if echo:
                echo(f"bf16 requested, but {torch.cuda.get_device_name()} has no bf16: computing in fp32")
            return False
        return requested
    if requested and not cpu_has_native_bf16():
        if echo:
            echo(f"bf16 requested, but this CPU ({cpu_model()}) has no native bf16 (AVX512-BF16/AMX): "
                 "computing in fp32, which is faster here")
        return False
    return requested


@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, bf16: bool = False,
                   channels_last: bool = False) -> torch.Tensor:
    """Eval-mode logits (float32, N×C×H×W at input size, on the model's device; of a network that
    returns a mapping of heads, its ``"out"``); the model's mode (training or eval) is put back."""
    was_training = model.training
    model.eval()
    device = module_device(model)
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    try:
        with autocast_context(bf16, device.type):
            out = model(images)
    finally:
        model.train(was_training)
    return (out["out"] if isinstance(out, Mapping) else out).float()


def evaluate(model: nn.Module, dataset: Dataset, num_classes: int, batch_size: int = 4,
             bf16: bool = False, channels_last: bool = False) -> SegMetrics:
    """Score ``model`` on every sample of ``dataset``; where a mask is larger or smaller than its image
    (``eval_transforms(label_size=True)``), against the logits resized bilinearly to the mask."""
    cm = ConfusionMatrix(num_classes)
    for images, masks in iter_batches(dataset, batch_size):
        logits = predict_logits(model, images, bf16, channels_last)
        if logits.shape[-2:] != masks.shape[-2:]:
            logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
        cm.update(logits.argmax(1), masks)
    return cm.compute()
