"""Optimizers with weight-decay groups and learning-rate schedules with warm-up.

The schedule is a pure function of training progress in [0, 1] (iterations done / total, or time
spent / time budget), so resuming needs only the step count and elapsed time.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from segnas.config.train import OptimConfig


def parameter_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool = True) -> list[dict]:
    """Split trainable parameters into decayed weights and undecayed biases / norm weights."""
    decay, no_decay = [], []
    for module in model.modules():
        is_norm = isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            (no_decay if no_decay_norm_bias and (is_norm or name == "bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay, cfg.no_decay_norm_bias)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=False)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def lr_factor(cfg: OptimConfig, progress: float, step: int) -> float:
    """Multiplier of the base LR at ``progress`` (0..1) and iteration ``step`` (for warm-up)."""
    progress = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "poly":
        f = (1.0 - progress) ** cfg.power
    elif cfg.schedule == "cosine":
        f = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        f = 1.0
    f = cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * f
    if cfg.warmup_iters and step < cfg.warmup_iters:
        f *= (step + 1) / cfg.warmup_iters
    return f


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
