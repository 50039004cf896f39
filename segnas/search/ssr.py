"""SSR: joint-dimensional search with Solution Space Regularization and progressive shrinking.

Pipeline (PAPERS.md §2) on the ``joint`` space's supernet (``segnas.spaces.joint_supernet``):
optional weight warm-up (sandwich rule over widths) → first-order bilevel search where the
architecture loss is L_seg + Σ_g w_g·SSR_g (operators, mid widths, out widths; SSR = −KL(U‖p)
over the active candidates) + w_r·(E[cost]/target − 1)², the cost being the latency composed from
the operator table at the deployment size (default) or GFLOPs → after every search epoch the
discretization gap is measured (val mIoU of the soft supernet vs its argmax network on the same
weights) and candidates with p/max(p) <= threshold are dropped, operators before widths → the
search stops by itself once the space is a single network (or after ``search_epochs``) →
``arch.json`` → final training from scratch through the engine.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader

from segnas.config.search import SSRConfig
from segnas.config.train import TrainConfig
from segnas.cost.flops import count_flops
from segnas.engine.evaluate import iter_batches
from segnas.engine.rundir import RunDir
from segnas.metrics import ConfusionMatrix
from segnas.nn.ops import OpKey
from segnas.search.common import (final_train_config, latency_size, latency_table, resume_or_start, search_schedule,
                                  search_train_set, search_val_subset)
from segnas.search.differentiable import DifferentiableSearch
from segnas.spaces import read_arch_file, write_arch_file
from segnas.spaces.joint import JOINT, JointArch, JointSpace
from segnas.spaces.joint.supernet import JointSupernet

#: Training batches used to re-estimate BatchNorm statistics of the argmax network before scoring it.
BN_CALIBRATION_BATCHES = 10


def space_from_config(cfg: SSRConfig) -> JointSpace:
    sc = cfg.space
    return JointSpace(channels=sc.channels, slots=sc.slots, stem_channels=sc.stem_channels,
                      decoder_width=sc.decoder_width, ops=sc.ops, dilations=sc.dilations,
                      resolutions=sc.resolutions, width_ratios=sc.width_ratios)


@torch.no_grad()
def supernet_miou(net: JointSupernet, dataset, mode: str, num_classes: int) -> float:
    net.eval()
    net.set_width_mode(mode)
    cm = ConfusionMatrix(num_classes)
    for images, masks in iter_batches(dataset, 4):
        cm.update(net(images).argmax(1), masks)
    net.set_width_mode("gumbel")
    net.train()
    return cm.compute().miou


@torch.no_grad()
def calibrate_bn(net: torch.nn.Module, batches) -> None:
    """Re-estimate every BatchNorm's running statistics (cumulative average) on ``batches``."""
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    for images, _ in batches:
        net(images)


class SSRSearch:
    """A whole SSR job in one run directory; resumable at every stage."""

    def __init__(self, cfg: SSRConfig, echo: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.run: RunDir | None = None
        self.echo = echo or (lambda m: None)
        self.size = latency_size(cfg)
        self.train_set = search_train_set(cfg)
        self.num_classes = self.train_set.num_classes
        self.space = space_from_config(cfg)
        self.supernet = JointSupernet(self.space, self.num_classes, self.size)
        self.table = latency_table(cfg.latency, cfg.threads)
        self.val_set = search_val_subset(cfg, cfg.gap_val_images)
        self._flops: dict[OpKey, float] = {}

    # ---------------------------------------------------------------- costs
    def latency_ms(self, keys: list[OpKey]) -> list[float]:
        self.table.ensure(keys, progress=self.cfg.progress)
        return [self.table.lookup(k) for k in keys]

    def gflops(self, keys: list[OpKey]) -> list[float]:
        for k in keys:
            if k not in self._flops:
                self._flops[k] = count_flops(k.build().eval(), k.input_shape).gflops
        return [self._flops[k] for k in keys]

    @property
    def call_overhead_ms(self) -> float:
        return self.table.call_overhead((1, 3, *self.size))

    def expected_resource(self, net: JointSupernet) -> torch.Tensor:
        if self.cfg.resource == "flops":
            return net.expected_cost(self.gflops)
        return net.expected_cost(self.latency_ms) + self.call_overhead_ms

    def predicted_latency(self, arch: JointArch) -> float:
        return self.supernet.derived_cost(arch, self.latency_ms) + self.call_overhead_ms

    @property
    def resource_target(self) -> float:
        return self.cfg.target_gflops if self.cfg.resource == "flops" else self.cfg.latency.target

    def arch_losses(self, net: JointSupernet, arch_index: int) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        weights = dict(zip(("ops", "mid", "out"), self.cfg.ssr_weights))
        if any(weights.values()):
            terms = net.ssr_terms()
            losses.update({f"ssr_{k}": w * terms[k] for k, w in weights.items() if w})
        if self.cfg.resource_weight:
            ratio = self.expected_resource(net) / self.resource_target
            losses["resource"] = self.cfg.resource_weight * (ratio - 1.0) ** 2
        return losses

    # ---------------------------------------------------------------- per epoch
    def discretization_gap(self) -> dict[str, float]:
        """Val mIoU of the soft supernet and of its argmax network on the same weights (BatchNorm
        statistics re-estimated for the argmax network on a few training batches)."""
        soft = supernet_miou(self.supernet, self.val_set, "gumbel", self.num_classes)
        discrete = copy.deepcopy(self.supernet)
        discrete.set_width_mode("argmax")
        loader = DataLoader(self.train_set, batch_size=self.cfg.data.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(self.cfg.seed))
        calibrate_bn(discrete, itertools.islice(loader, BN_CALIBRATION_BATCHES))
        hard = supernet_miou(discrete, self.val_set, "argmax", self.num_classes)
        return {"soft_miou": soft, "argmax_miou": hard, "gap": soft - hard}

    def _epoch_end(self, engine: DifferentiableSearch, phase: str, epoch: int) -> dict[str, Any]:
        if phase != "search":
            return {}
        net = self.supernet
        record: dict[str, Any] = {}
        if self.val_set is not None:
            record.update(self.discretization_gap())
        with torch.no_grad():
            record["expected_cost"] = float(self.expected_resource(net))
        arch = net.derive()
        record["derived_latency_ms"] = self.predicted_latency(arch)
        record.update({f"dropped_{k}": v for k, v in net.shrink(self.cfg.shrink_threshold).items()})
        record.update({f"active_{k}": v for k, v in net.remaining().items()})
        record["single"] = net.is_single()
        write_arch_file(self.run.path / "archs" / f"arch_epoch{epoch:03d}.json", JOINT.name, JOINT.version,
                        arch.to_dict(), predicted_latency_ms=record["derived_latency_ms"])
        if record["single"]:
            engine.state["stop"] = True
            self.echo(f"search space shrunk to a single network after search epoch {epoch}")
        return record

    # ---------------------------------------------------------------- search
    def search(self) -> JointArch:
        cfg = self.cfg
        done = self.run.path / "arch.json"
        if done.is_file():  # a resumed job that already derived keeps what it trains on
            return JOINT.arch_from_dict(read_arch_file(done)["arch"])
        self.echo(f"latency table: {cfg.latency.backend}, {self.table.threads} threads, "
                  f"input {self.size[0]}x{self.size[1]}")
        self.supernet.cost_tables(self.latency_ms)  # measures every candidate once, up front
        schedule = search_schedule(cfg, arch_weight_decay=cfg.arch_weight_decay, arch_betas=cfg.arch_betas)
        engine = DifferentiableSearch(self.supernet, self.train_set, schedule, self.run, self.arch_losses,
                                      self._epoch_end, self.echo)
        resume_or_start(engine, cfg, self.echo)
        engine.fit()
        arch = self.supernet.derive()
        lat = self.predicted_latency(arch)
        write_arch_file(done, JOINT.name, JOINT.version, arch.to_dict(), predicted_latency_ms=lat,
                        target_ms=cfg.latency.target, converged=self.supernet.is_single())
        self.echo(f"derived: predicted {lat:.2f} ms at {self.size[0]}x{self.size[1]} ({cfg.latency.backend}); "
                  f"space {'shrunk to one network' if self.supernet.is_single() else 'not fully shrunk: argmax'}")
        return arch

    def final_config(self) -> TrainConfig:
        return final_train_config(self.cfg, self.run.path, "arch")

    @property
    def arch_path(self) -> Path:
        return self.run.path / "arch.json"
