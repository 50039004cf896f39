"""Fast evaluation of one child network of the RL search (Nekrasov et al., CVPR 2019; docs/methods/rl.md).

A child is an ``EncDecNet`` of the ``encdec`` space (a fixed, pre-trained encoder and a searched
decoder with auxiliary cells) trained briefly on a *meta-train* part of the training split and scored
on the held-out *meta-validation* part (never the validation split):

1. **stage 1** trains only the decoder, on encoder features computed once per worker (``setup``)
   for ``stage1_images`` augmented meta-train crops, at 1/4 resolution (the decoder's logits before
   their ×4 upsampling, the auxiliary logits resized to them, masks downsampled to them; no
   full-size maps), with the auxiliary cells' losses (``aux_weight``) and,
   given a teacher checkpoint, distillation of the teacher's logits (MSE, ``kd_weight``);
2. **progressive termination**: the child continues only if its stage-1 reward reaches the
   ``threshold`` the strategy sends with each batch (a moving average of earlier children's stage-1
   rewards; None lets every child continue); otherwise its reward is the stage-1 reward;
3. **stage 2** fine-tunes the whole network end to end on augmented meta-train crops (the encoder
   with SGD, the decoder with Adam, as the official code).

With ``polyak`` on, a Polyak average of the weights (``segnas.engine.ema.ModelEMA``, decay
``polyak_decay[stage]`` after the average's warm-up: at step n the decay is min(d, (1+n)/(10+n)),
so over the default 100 and 50 steps it reaches 0.9 at step 80 of stage 1 and 0.85 at the end of
stage 2) is what each validation scores, and stage 2 starts from stage 1's average.
The reward is the geometric mean of mIoU, mean accuracy and frequency-weighted IoU.
The losses, optimizers, gradient clipping, EMA, data loader and evaluation are the engine's pieces.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn
from torch.utils.data import Dataset, Subset


from segnas.config.base import PATH, Settings, size_or_none
from segnas.config.train import DataConfig, OptimConfig
from segnas.data import IGNORE_INDEX, eval_transforms, meta_split, open_data, train_transforms
from segnas.engine.device import resolve_device
from segnas.engine.ema import ModelEMA
from segnas.engine.evaluate import evaluate
from segnas.engine.losses import SegmentationLoss, logit_mse
from segnas.engine.optim import build_optimizer
from segnas.engine.step import optimizer_step, train_loader
from segnas.errors import SegnasError
from segnas.evaluate.base import Evaluator
from segnas.metrics import SegMetrics
from segnas.nn.segnet import pad_to_multiple
from segnas.spaces.base import arch_key, get_space


class ChildSettings(Settings):
    """How each child is trained and scored (the RL strategy's ``child:`` section)."""

    #: Fraction of the training split held out as the meta-validation split the reward is measured on.
    meta_val_fraction: float = Field(0.1, gt=0, lt=1)
    #: At most this many meta-validation images (None: all of them).
    meta_val_images: Optional[int] = Field(None, ge=1)
    #: Training crop (HxW) of both stages; None: the data section's crop_size.
    size: Optional[tuple[int, int]] = None
    #: Augmented meta-train crops whose encoder features (and teacher logits) stage 1 caches.
    stage1_images: int = Field(100, ge=1)
    stage1_steps: int = Field(100, ge=1)
    stage1_batch: int = Field(8, ge=1)
    #: End-to-end optimizer steps (0: no stage 2; then no termination either).
    stage2_steps: int = Field(50, ge=0)
    stage2_batch: int = Field(4, ge=1)
    decoder_lr: float = Field(3e-3, gt=0)
    encoder_lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    clip_grad_norm: float = Field(3.0, gt=0)
    #: Weight of each auxiliary cell's loss (0: the auxiliary cells take no part in training).
    aux_weight: float = Field(0.15, ge=0)
    polyak: bool = True
    #: Polyak decays of stage 1 and stage 2 (the paper's 0.9 and 0.99), each reached after the
    #: average's warm-up min(d, (1+n)/(10+n)) at step n: a short stage stays below it.
    polyak_decay: tuple[float, float] = (0.9, 0.99)
    #: A trained segnas network checkpoint (``checkpoints/best.pt``) whose logits stage 1 distils.
    teacher: Optional[str] = Field(None, json_schema_extra=PATH)
    kd_weight: float = Field(0.3, ge=0)
    eval_batch: int = Field(4, ge=1)

    _size = field_validator("size", mode="before")(classmethod(lambda cls, v: size_or_none(v)))

    @field_validator("polyak_decay")
    @classmethod
    def _decays(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= d < 1 for d in v):
            raise ValueError(f"each decay must be in [0, 1), got {list(v)}")
        return v


def reward_of(metrics: SegMetrics) -> float:
    """Geometric mean of mIoU, mean accuracy and frequency-weighted IoU (0 when one is undefined)."""
    parts = [metrics.miou, metrics.mean_acc, metrics.fwiou]
    if any(not math.isfinite(p) or p <= 0 for p in parts):
        return 0.0
    return float(np.prod(parts) ** (1.0 / len(parts)))


def child_crop(settings: ChildSettings, data: DataConfig) -> tuple[int, int]:
    """The children's training crop: ``rl.child.size``, else the data section's crop size."""
    crop = settings.size or data.crop_size
    if crop is None:
        raise SegnasError("rl.child.size: give the children's training crop (HxW), or data.crop_size")
    return (int(crop[0]), int(crop[1]))


def child_seed(seed: int, arch: dict[str, Any]) -> int:
    """A child's own seed: the same architecture trains the same way in any order and on any worker."""
    return (seed * 1_000_003 + int(hashlib.sha1(arch_key(arch).encode()).hexdigest()[:8], 16)) % 2**31


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="bilinear",
                                                                      align_corners=False)


def _outputs(output: Any, size: tuple[int, int]) -> dict[str, Any]:
    """A train-mode output ({"out", "aux"} or logits) with every map resized to ``size``."""
    if not isinstance(output, dict):
        return {"out": _resize(output, size), "aux": []}
    return {"out": _resize(output["out"], size), "aux": [_resize(a, size) for a in output.get("aux", [])]}


class ChildEvaluator(Evaluator):
    """Scores ``encdec`` children as the module docstring describes. ``threshold`` is set by the
    strategy before each batch (a ``batch_settings`` attribute)."""

    worker_state = ("cache", "meta_train", "meta_val", "space", "teacher")
    batch_settings = ("threshold",)

    def __init__(self, space: str, space_options: dict[str, Any], data: DataConfig, settings: ChildSettings,
                 num_classes: int, seed: int = 0, device: str = "cpu") -> None:
        super().__init__()
        self.space_name, self.space_options = space, dict(space_options)
        self.data, self.settings, self.num_classes = data, settings, num_classes
        self.seed, self.device = seed, resolve_device(device)
        self.threshold: float | None = None
        self.crop = child_crop(settings, data)

    # ------------------------------------------------------------------ per-worker state
    def setup(self) -> None:
        s, dc = self.settings, self.data
        self.space = get_space(self.space_name, **self.space_options, aux_cells=s.aux_weight > 0)
        augment = train_transforms(self.crop, tuple(dc.scale), dc.jitter, dc.base_size)
        train = open_data(dc, dc.train_split, augment)
        train_idx, val_idx = meta_split(len(train), s.meta_val_fraction, self.seed, s.meta_val_images,
                                        setting="rl.child.meta_val_fraction")
        self.meta_train: Dataset = Subset(train, train_idx)
        self.meta_val: Dataset = Subset(open_data(dc, dc.train_split, eval_transforms(dc.base_size)), val_idx)
        self.teacher = None
        if s.teacher:
            from segnas.training.job import load_teacher

            self.teacher = load_teacher(s.teacher, train.classes.names).to(self.device)
        self.cache: dict[str, dict[str, Any]] = {}
        super().setup()

    def _stage1_data(self, arch: dict[str, Any], net: nn.Module) -> dict[str, Any]:
        """Encoder features, 1/4-resolution masks (and teacher logits) of ``stage1_images`` augmented
        meta-train crops; computed once per encoder (every child of a search shares one)."""
        name = f"{arch.get('encoder')}-{arch.get('encoder_width')}"
        if name in self.cache:
            return self.cache[name]
        encoder = net.encoder.to(self.device).eval()
        images, masks = [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for j in range(self.settings.stage1_images):
                image, mask = self.meta_train[j % len(self.meta_train)]
                images.append(image)
                masks.append(mask)
        feats: list[list[torch.Tensor]] = []
        small, soft = [], []
        with torch.no_grad():
            for start in range(0, len(images), 8):
                x = torch.stack(images[start:start + 8]).to(self.device)
                padded = pad_to_multiple(x, net.stride_multiple)  # what the network's forward does
                f = list(encoder(padded))
                feats.append([t.cpu() for t in f])
                size = tuple(f[0].shape[-2:])
                y = pad_to_multiple(torch.stack(masks[start:start + 8])[:, None].float(), net.stride_multiple,
                                    float(IGNORE_INDEX))
                small.append(F.interpolate(y, size=size, mode="nearest")[:, 0].long())
                if self.teacher is not None:
                    logits = pad_to_multiple(self.teacher.eval()(x).float(), net.stride_multiple)
                    soft.append(_resize(logits, size).cpu())
        data = {"features": [torch.cat([f[i] for f in feats]) for i in range(len(feats[0]))],
                "masks": torch.cat(small), "teacher": torch.cat(soft) if soft else None}
        self.cache[name] = data
        return data

    # ------------------------------------------------------------------ one child
    def evaluate(self, arch: dict[str, Any]) -> dict[str, Any]:
        s = self.settings
        seed = child_seed(self.seed, arch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = self.space.build(self.space.arch_from_dict(arch), self.num_classes).to(self.device)
        data = self._stage1_data(arch, net)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        scored, losses = self.stage1(net, data, seed)
        stage1 = {"reward": reward_of(scored), "miou": scored.miou, "mean_acc": scored.mean_acc,
                  "fwiou": scored.fwiou, "losses": losses, "seconds": round(time.perf_counter() - wall0, 3),
                  "cpu_seconds": round(time.process_time() - cpu0, 3)}
        record: dict[str, Any] = {"stage1": stage1, "threshold": self.threshold, "stage2": None}
        terminated = self.threshold is not None and stage1["reward"] < self.threshold
        if s.stage2_steps and not terminated:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            scored = self.stage2(net, seed)
            record["stage2"] = {"reward": reward_of(scored), "miou": scored.miou, "mean_acc": scored.mean_acc,
                                "fwiou": scored.fwiou, "seconds": round(time.perf_counter() - wall0, 3),
                                "cpu_seconds": round(time.process_time() - cpu0, 3)}
        final = record["stage2"] or stage1
        return {"score": final["reward"], "miou": final["miou"], "mean_acc": final["mean_acc"],
                "fwiou": final["fwiou"], "terminated": bool(terminated and s.stage2_steps > 0),
                "seconds": round(stage1["seconds"] + (record["stage2"] or {}).get("seconds", 0.0), 3),
                "cpu_seconds": round(stage1["cpu_seconds"] + (record["stage2"] or {}).get("cpu_seconds", 0.0), 3),
                **record}

    def _criterion(self) -> SegmentationLoss:
        return SegmentationLoss("ce", aux_weight=self.settings.aux_weight, kd_weight=0.0).to(self.device)

    def _score(self, model: nn.Module) -> SegMetrics:
        return evaluate(model, self.meta_val, self.num_classes, self.settings.eval_batch)

    def stage1(self, net: nn.Module, data: dict[str, Any], seed: int) -> tuple[SegMetrics, dict[str, float]]:
        """Train every parameter but the encoder's on the cached features; the Polyak average (when on)
        is loaded into ``net`` and scored. Returns the meta-validation metrics and mean loss terms."""
        s = self.settings
        for p in net.encoder.parameters():
            p.requires_grad_(False)
        optimizer = build_optimizer(net, OptimConfig(name="adamw", lr=s.decoder_lr, weight_decay=s.weight_decay))
        trained = [p for p in net.parameters() if p.requires_grad]
        ema = ModelEMA(net, s.polyak_decay[0]) if s.polyak else None
        criterion = self._criterion()
        feats, masks, soft = data["features"], data["masks"], data["teacher"]
        n, size = len(masks), tuple(masks.shape[-2:])
        batch = min(s.stage1_batch, n)
        gen = np.random.default_rng(seed)
        order: list[int] = []
        sums: dict[str, float] = {}
        net.train()
        net.encoder.eval()
        for _ in range(s.stage1_steps):
            if len(order) < batch:
                order += gen.permutation(n).tolist()
            idx, order = order[:batch], order[batch:]
            main, aux = net.decode([f[idx].to(self.device) for f in feats])  # at 1/4: the masks' size
            out = {"out": _resize(main, size), "aux": [_resize(a, size) for a in aux]}
            target = masks[idx].to(self.device)
            loss, parts = criterion(out, target)
            kd = logit_mse(out["out"], soft[idx].to(self.device)) if soft is not None else None
            parts["kd"] = float(s.kd_weight * kd.detach()) if kd is not None else 0.0
            if kd is not None and s.kd_weight > 0:
                loss = loss + s.kd_weight * kd
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer_step(optimizer, s.clip_grad_norm, trained)
            if ema is not None:
                ema.update(net)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
        for p in net.encoder.parameters():
            p.requires_grad_(True)
        if ema is not None:  # the average of what stage 1 trained (the frozen encoder stays exactly as it was)
            net.load_state_dict({k: v for k, v in ema.module.state_dict().items() if not k.startswith("encoder.")},
                                strict=False)
        return self._score(net), {k: v / s.stage1_steps for k, v in sums.items()}

    def stage2(self, net: nn.Module, seed: int) -> SegMetrics:
        """Fine-tune end to end (encoder: SGD, the rest: Adam); score the Polyak average (when on)."""
        s = self.settings
        enc_opt = build_optimizer(net.encoder, OptimConfig(name="sgd", lr=s.encoder_lr, momentum=0.9,
                                                           weight_decay=s.weight_decay))
        for p in net.encoder.parameters():
            p.requires_grad_(False)
        dec_opt = build_optimizer(net, OptimConfig(name="adamw", lr=s.decoder_lr, weight_decay=s.weight_decay))
        decoder = [p for p in net.parameters() if p.requires_grad]
        for p in net.encoder.parameters():
            p.requires_grad_(True)
        ema = ModelEMA(net, s.polyak_decay[1]) if s.polyak else None
        criterion = self._criterion()
        steps = 0
        net.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            while steps < s.stage2_steps:
                for images, masks in train_loader(self.meta_train, s.stage2_batch, generator):
                    images, masks = images.to(self.device), masks.to(self.device)
                    loss, _ = criterion(_outputs(net(images), tuple(masks.shape[-2:])), masks)
                    enc_opt.zero_grad(set_to_none=True)
                    dec_opt.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer_step(enc_opt, s.clip_grad_norm, net.encoder.parameters())
                    optimizer_step(dec_opt, s.clip_grad_norm, decoder)
                    if ema is not None:
                        ema.update(net)
                    steps += 1
                    if steps >= s.stage2_steps:
                        break
        return self._score(ema.module if ema is not None else net)
