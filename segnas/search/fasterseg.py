"""FasterSeg: teacher–student co-search over the ``multires`` space with decoupled fine-grained
latency regularization, derivation, and final training with distillation.

Pipeline (PAPERS.md §1): supernet pretraining with the sandwich rule → first-order bilevel search
(weights SGD on one half of the training set, architecture Adam on the other) where the student's
architecture loss is L_seg + λ·(w1·LAT(α|β,γ) + w2·LAT(β|α,γ) + w3·LAT(γ|α,β)) and the teacher's
is L_seg alone → after every search epoch the student is derived, its latency predicted from the
latency table, and λ halved (faster than the target band) or doubled (slower) → final derivation
to ``teacher.json`` / ``student.json``. The final training (teacher, then the student distilled
from it: pixel-wise KL + OHEM + 0.2·aux heads) is run by ``segnas.jobs.search`` with the settings
``final_config`` gives.

Latency is always that of the user's backend and deployment resolution (``latency.size``), read
from an operator table measured on this machine, never a fixed table for 1024×2048 on TensorRT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from segnas.config.search import SearchConfig
from segnas.config.train import TrainConfig
from segnas.cost import LatencyTable

from segnas.engine.evaluate import iter_batches
from segnas.metrics import ConfusionMatrix
from segnas.engine.rundir import RunDir
from segnas.search.common import (final_train_config, latency_size, latency_table, resume_or_start, search_schedule,
                                  search_train_set, search_val_subset)
from segnas.search.differentiable import DifferentiableSearch
from segnas.spaces import read_arch_file, write_arch_file
from segnas.spaces.multires import MULTIRES, MultiResArch
from segnas.spaces.multires.supernet import MultiResSupernet

TEACHER, STUDENT = 0, 1


def latency_losses(cfg: SearchConfig, table: LatencyTable, lam: Callable[[], float]):
    """The architecture loss terms: none for the teacher; the decoupled (or, for the ablation,
    coupled) latency regularization for the student."""
    w1, w2, w3 = cfg.latency.weights

    def losses(net: MultiResSupernet, arch_index: int) -> dict[str, torch.Tensor]:
        if arch_index == TEACHER or lam() == 0:
            return {}
        if cfg.latency.mode == "coupled":
            return {"latency": lam() * (w1 + w2 + w3) * net.expected_latency(arch_index, table)}
        lat_ops, lat_paths, lat_widths = net.latency_terms(arch_index, table)
        return {"latency": lam() * (w1 * lat_ops + w2 * lat_paths + w3 * lat_widths)}

    return losses


def adapt_lambda(lam: float, latency_ms: float, target_ms: float, tolerance: float) -> float:
    """FasterSeg's per-epoch λ rule: halve if faster than the band, double if slower."""
    if latency_ms < target_ms * (1 - tolerance):
        return lam / 2
    if latency_ms > target_ms * (1 + tolerance):
        return lam * 2
    return lam


class FasterSegSearch:
    """A whole FasterSeg job in one run directory; resumable at every stage."""

    def __init__(self, cfg: SearchConfig, echo: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.run: RunDir | None = None  # set by the caller once the settings proved valid
        self.echo = echo or (lambda m: None)
        self.size = latency_size(cfg)
        self.train_set = search_train_set(cfg)
        self.num_classes = self.train_set.num_classes
        sc = cfg.space
        self.supernet = MultiResSupernet(num_classes=self.num_classes, input_size=self.size, layers=sc.layers,
                                         base_width=sc.base_width, width_ratios=sc.width_ratios)
        self.table = latency_table(cfg.latency, cfg.threads)
        self.val_set = search_val_subset(cfg, cfg.derive_val_images)
        self.mious: dict[int, dict[str, float]] = {}

    # ---------------------------------------------------------------- search
    def _epoch_end(self, engine: DifferentiableSearch, phase: str, epoch: int) -> dict[str, Any]:
        if phase != "search":
            return {}
        lat = {}
        for index in (TEACHER, STUDENT):
            self.mious[index] = self.head_mious(index)
        engine.state["mious"] = self.mious  # checkpointed: a resumed job derives the same networks
        for name, index in (("teacher", TEACHER), ("student", STUDENT)):
            arch = self.derive(index)
            lat[name] = self.supernet.derived_latency(arch, self.table)
            write_arch_file(self.run.path / "archs" / f"{name}_epoch{epoch:03d}.json", MULTIRES.name, MULTIRES.version,
                            arch.to_dict(), predicted_latency_ms=lat[name])
        lam = engine.state.setdefault("lambda", self.cfg.latency.lam)
        if self.cfg.latency.adapt:
            engine.state["lambda"] = adapt_lambda(lam, lat["student"], self.cfg.latency.target, self.cfg.latency.tolerance)
        return {"lambda": lam, "teacher_latency_ms": lat["teacher"], "student_latency_ms": lat["student"],
                **{f"arch{i}_miou_{h}": v for i, m in self.mious.items() for h, v in m.items()}}

    @torch.no_grad()
    def head_mious(self, index: int) -> dict[str, float] | None:
        """Validation mIoU of the two candidate branch pairs' heads ("02", "12") of one architecture,
        which the derivation weighs against latency (official ``train.py``)."""
        if self.val_set is None:
            return None
        self.supernet.eval()
        previous_mode = self.supernet.width_mode
        self.supernet.set_width_mode("argmax")  # score the widths that derivation will keep
        matrices = {h: ConfusionMatrix(self.num_classes) for h in ("02", "12")}
        for images, masks in iter_batches(self.val_set, 4):
            preds = self.supernet.forward_all(images, index)
            for h, cm in matrices.items():
                cm.update(preds[h].argmax(1), masks)
        self.supernet.set_width_mode(previous_mode)
        self.supernet.train()
        return {h: cm.compute().miou for h, cm in matrices.items()}

    def derive(self, index: int) -> MultiResArch:
        return self.supernet.derive(index, latency_fn=lambda a: self.supernet.derived_latency(a, self.table),
                                    target_ms=self.cfg.latency.target, mious=self.mious.get(index))

    def search(self) -> tuple[MultiResArch, MultiResArch]:
        cfg = self.cfg
        self.echo(f"latency table: {cfg.latency.backend}, {self.table.threads} threads, input {self.size[0]}x{self.size[1]}")
        self.table.ensure([k for i in (TEACHER, STUDENT) for k in self.supernet.latency_keys(i)], progress=cfg.progress)
        schedule = search_schedule(cfg, aux_weight=1.0)  # the official search loss sums all five heads equally
        engine = DifferentiableSearch(self.supernet, self.train_set, schedule, self.run,
                                      latency_losses(cfg, self.table, lambda: engine.state.get("lambda", cfg.latency.lam)),
                                      self._epoch_end, self.echo)
        resume_or_start(engine, cfg, self.echo)
        self.mious = {int(k): v for k, v in engine.state.get("mious", {}).items()}
        engine.fit()
        archs = []
        for name, index in (("teacher", TEACHER), ("student", STUDENT)):
            done = self.run.path / f"{name}.json"
            if done.is_file():  # a resumed job that already derived keeps what it trains on
                archs.append(MULTIRES.arch_from_dict(read_arch_file(done)["arch"]))
                continue
            arch = self.derive(index)
            lat = self.supernet.derived_latency(arch, self.table)
            write_arch_file(self.run.path / f"{name}.json", MULTIRES.name, MULTIRES.version, arch.to_dict(),
                            predicted_latency_ms=lat, target_ms=cfg.latency.target if index == STUDENT else None)
            self.echo(f"derived {name}: predicted {lat:.2f} ms at {self.size[0]}x{self.size[1]} ({cfg.latency.backend})")
            archs.append(arch)
        return archs[0], archs[1]

    # ---------------------------------------------------------------- final training
    def final_config(self, name: str, teacher_ckpt: Path | None) -> TrainConfig:
        return final_train_config(self.cfg, self.run.path, name, teacher_ckpt)
