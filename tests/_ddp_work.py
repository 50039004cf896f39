"""Tiny data-parallel jobs for tests/test_ddp.py and benchmarks/scaling/scaling.py, run by
``torchrun`` (or in one process: the same code, without WORLD_SIZE).

    python tests/_ddp_work.py train RUN_DIR [--batch N] [--epochs N] [--kill-rank R --kill-epoch E]
    python tests/_ddp_work.py oneshot RUN_DIR [--batch N]
    python tests/_ddp_work.py search RUN_DIR

``train`` trains a small conv-BN network with the shared ``Trainer`` on fixed tensors (no random
augmentation, so that one process with the global batch and N processes with a share each see the
same data); with ``--kill-rank`` that rank SIGKILLs itself in the middle of epoch ``--kill-epoch``.
``oneshot`` runs the one-shot engine on a small GAS supernet; ``search`` a whole tiny GAS search job. Each rank writes ``rank<R>.json``
(losses, a digest of the final weights, architecture parameters, the derived architecture).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from segnas.config.train import TrainConfig
from segnas.engine import distributed
from segnas.engine.rundir import RunDir
from segnas.engine.trainer import Trainer

CLASSES = 3


class FixedImages(Dataset):
    """``n`` seeded images and masks (a mask from the image, so the task is learnable)."""

    def __init__(self, n: int = 16, size: tuple[int, int] = (16, 16), seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, *size, generator=g)
        self.masks = (self.images[:, 0] > 0).long() + (self.images[:, 1] > 0.5).long()
        self.num_classes = CLASSES

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.masks[i]


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, CLASSES, 1))


class KillingTrainer(Trainer):
    """A Trainer whose rank ``kill_rank`` SIGKILLs itself half-way through epoch ``kill_epoch``."""

    kill_rank: int | None = None
    kill_epoch: int = 0

    def train_one_epoch(self, loader, steps_total, bar=None):
        if self.dist.rank == self.kill_rank and self.loop.epoch + 1 == self.kill_epoch:
            batches = iter(loader)
            next(batches)
            os.kill(os.getpid(), signal.SIGKILL)
        return super().train_one_epoch(loader, steps_total, bar)


def digest(module: nn.Module) -> list[float]:
    return [float(t.double().sum()) for t in module.state_dict().values() if t.dtype.is_floating_point]


def train(args: argparse.Namespace) -> None:
    cfg = TrainConfig.model_validate({
        "data": {"batch_size": args.batch, "eval_batch_size": 8}, "epochs": args.epochs, "seed": 0,
        "optim": {"lr": 0.05, "schedule": "constant"}, "loss": {"aux_weight": 0.0}, "progress": False,
        "sync_bn": not args.no_sync_bn, "threads": 1, "out_dir": str(args.run_dir),
        **({"swa_start": 0.5, "swa_bn_batches": 2} if args.swa else {})})
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run = RunDir(args.run_dir)
    trainer = KillingTrainer(tiny_net(), FixedImages(args.images), FixedImages(8, seed=1), cfg, run,
                             {"kind": "test"}, {"names": [str(i) for i in range(CLASSES)], "colors": []})
    trainer.kill_rank, trainer.kill_epoch = args.kill_rank, args.kill_epoch
    trainer.resume_if_possible()
    result = trainer.fit()
    rank = distributed.context().rank
    out = {"world_size": distributed.context().world_size, "losses": [r["train_loss"] for r in result.history],
           "val_miou": [r.get("val_miou") for r in result.history], "weights": digest(trainer.model),
           "steps": trainer.loop.step}
    if trainer.swa:
        out["swa_weights"] = digest(trainer.swa.module)
    Path(args.run_dir, f"rank{rank}.json").write_text(json.dumps(out))


def oneshot(args: argparse.Namespace) -> None:
    from segnas.search.oneshot.engine import OneShotEngine, SearchSchedule
    from segnas.spaces.cells import CellsSpace

    torch.set_num_threads(1)
    torch.manual_seed(0)
    space = CellsSpace(layout=[1, 1, 1, 1], channels=[4, 8, 8, 8], nodes=2, stem_channels=4, decoder_width=8)
    net = space.supernet(CLASSES, (16, 16))
    sched = SearchSchedule(pretrain_epochs=1, search_epochs=args.epochs, batch_size=args.batch, progress=False,
                           sync_bn=not args.no_sync_bn)
    engine = OneShotEngine(net, FixedImages(args.images), sched, RunDir(args.run_dir))
    engine.resume_if_possible()
    engine.fit()
    alphas = [p.detach() for i in range(net.num_archs) for p in net.arch_parameters(i)]
    out = {"world_size": distributed.context().world_size,
           "alphas": [a.double().reshape(-1).tolist() for a in alphas],
           # the derivation every one-shot method starts from: the strongest choice of each decision
           "derived": [a.reshape(-1, a.shape[-1]).argmax(-1).tolist() if a.dim() else [] for a in alphas],
           "weights": digest(net), "steps": engine.loop.step}
    Path(args.run_dir, f"rank{distributed.context().rank}.json").write_text(json.dumps(out))


def search(args: argparse.Namespace) -> None:
    """A tiny GAS search job with its latency calibration, measurement of the found network and a
    final training; each rank records how many latency entries it measured itself and the summary."""
    import segnas.jobs.search as search_module
    from segnas.cost import LatencyModel
    from segnas.jobs.search import make_settings, search_job

    torch.set_num_threads(1)
    quick = search_module.time_found
    search_module.time_found = lambda *a, **k: quick(*a, **{**k, "min_runs": 2, "min_time_s": 0.0, "rounds": 2})
    cfg = make_settings("gas", {
        "data": {"name": "synthetic", "options": {"size": [32, 48], "length": 8}, "crop_size": [32, 48],
                 "batch_size": 4},
        "latency": {"target_ms": 1000.0, "backend": "eager", "threads": 1, "check_target": False,
                    "calibration_networks": 8, "table_min_runs": 1, "table_min_time_s": 0.0},
        "gas": {"space": {"layout": [1, 1, 1, 1], "channels": [4, 8, 8, 8], "nodes": 2, "stem_channels": 4,
                          "decoder_width": 8}, "pretrain_epochs": 1, "search_epochs": 1},
        "threads": 1, "final": {"steps": 2, "overrides": {"ema_decay": None, "bf16": False}},
        "out_dir": args.run_dir, "progress": False, "seed": 0})
    latency = LatencyModel.from_settings(cfg.latency, cfg.deployment_size(), 1)
    summary = search_job(cfg, latency=latency)
    out = {"measured_entries": latency.table.measured, "summary": summary}
    Path(args.run_dir, f"rank{distributed.context().rank}.json").write_text(json.dumps(out, default=str))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("job", choices=["train", "oneshot", "search"])
    ap.add_argument("run_dir")
    ap.add_argument("--batch", type=int, default=8, help="the global batch")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--no-sync-bn", action="store_true")
    ap.add_argument("--swa", action="store_true", help="train: with stochastic weight averaging from half-way")
    ap.add_argument("--kill-rank", type=int, default=None)
    ap.add_argument("--kill-epoch", type=int, default=0)
    args = ap.parse_args(argv)
    Path(args.run_dir).mkdir(parents=True, exist_ok=True)
    {"train": train, "oneshot": oneshot, "search": search}[args.job](args)
    distributed.end_rank(0)  # (as the segnas command ends a rank)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
