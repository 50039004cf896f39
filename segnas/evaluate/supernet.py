"""Weight-sharing evaluator: scores an architecture by its sub-network inside a trained supernet,
training nothing more (one-shot NAS's cheap accuracy estimate).

For each candidate the supernet (loaded once per worker from a one-shot run's checkpoint) is
copied, made to run exactly that architecture (``select``: the space's supernet must support it),
its BatchNorm statistics are re-estimated on a few fixed training batches (shared weights carry
statistics of the mixture, not of the sub-network), and it is scored by mIoU on a fixed subset of
the validation split, or on given training images held out of the supernet's training (``meta_val``:
then the validation split stays unseen by the search). Record: ``{"score": mIoU, "pixel_acc"}``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import Subset

from segnas.config.train import DataConfig
from segnas.data import eval_transforms, open_data
from segnas.engine.checkpoint import load_checkpoint
from segnas.engine.evaluate import evaluate
from segnas.errors import SegnasError
from segnas.evaluate.base import Evaluator
from segnas.evaluate.proxy import fixed_batches
from segnas.spaces.base import WeightSharingSupernet, get_space


@torch.no_grad()
def calibrate_bn(net: nn.Module, batches: Iterable[tuple[torch.Tensor, Any]]) -> None:
    """Re-estimate every BatchNorm's running statistics (cumulative average) on ``batches``."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    for images, _ in batches:
        net(images)


class SupernetEvaluator(Evaluator):
    """Scores architectures of space ``space`` (with ``space_options``) by the supernet stored under
    ``"supernet"`` in ``checkpoint`` (``checkpoints/search_last.pt`` or ``pretrained.pt`` of a
    one-shot run), built for ``input_size`` with a ``num_classes`` head; images at ``size``. With
    ``meta_val`` (indices of the training split) it scores on those images and calibrates on the others."""

    worker_state = ("supernet", "calibration", "val")

    def __init__(self, space: str, checkpoint: str | Path, num_classes: int, input_size: Sequence[int],
                 data: DataConfig, space_options: dict[str, Any] | None = None, size: Sequence[int] | None = None,
                 val_images: int = 50, calibration_images: int = 80, batch_size: int = 8, seed: int = 0,
                 meta_val: Sequence[int] | None = None) -> None:
        super().__init__()
        if not Path(checkpoint).is_file():
            raise SegnasError(f"{checkpoint}: supernet checkpoint not found")
        self.meta_val = list(meta_val) if meta_val is not None else None
        if self.meta_val is None and not data.val_split:
            raise SegnasError("data.val_split: the weight-sharing evaluator scores on the validation split")
        self.space_name, self.space_options = space, dict(space_options or {})
        self.checkpoint, self.num_classes = str(checkpoint), int(num_classes)
        self.input_size, self.size = tuple(input_size), tuple(size) if size else None
        self.data, self.val_images, self.calibration_images = data, val_images, calibration_images
        self.batch_size, self.seed = batch_size, seed

    def setup(self) -> None:
        space = get_space(self.space_name, **self.space_options)
        supernet = space.supernet(self.num_classes, self.input_size)
        if not isinstance(supernet, WeightSharingSupernet):
            raise SegnasError(f"space {self.space_name!r}: its supernet cannot run a chosen architecture "
                              "(no select()); use the proxy or short-training evaluator")
        state = load_checkpoint(self.checkpoint)
        if "supernet" not in state:
            raise SegnasError(f"{self.checkpoint}: no supernet in this checkpoint (a one-shot search's "
                              "checkpoints/search_last.pt or pretrained.pt)")
        try:
            supernet.load_state_dict(state["supernet"])
        except RuntimeError as exc:
            raise SegnasError(f"{self.checkpoint}: the supernet does not match space {self.space_name!r} "
                              f"with {self.space_options} ({str(exc).splitlines()[0]})") from None
        self.space, self.supernet = space, supernet
        train = open_data(self.data, self.data.train_split, eval_transforms(self.size), cache=False)
        if self.meta_val is not None:
            held = set(self.meta_val)
            val: Any = Subset(train, self.meta_val)
            train = Subset(train, [i for i in range(len(train)) if i not in held])
        else:
            val = open_data(self.data, self.data.val_split, eval_transforms(self.size), cache=False)
        self.calibration = fixed_batches(train, min(self.calibration_images, len(train)), self.batch_size, self.seed)
        self.val = Subset(val, range(min(len(val), self.val_images)))
        super().setup()

    def evaluate(self, arch: dict[str, Any]) -> dict[str, Any]:
        net = copy.deepcopy(self.supernet)
        net.select(self.space.arch_from_dict(arch))
        net.set_width_mode("argmax")
        calibrate_bn(net, self.calibration)
        metrics = evaluate(net, self.val, self.num_classes)
        return {"score": float(metrics.miou), "pixel_acc": float(metrics.pixel_acc)}
