"""Stochastic weight averaging (``train.swa_start``): the equal-weight mean of the weights after
``swa_start`` of the budget, BatchNorm statistics recomputed for it, evaluated and saved as
best.pt, its own random streams, and a resumed run that matches an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from segnas.config import TrainConfig
from segnas.engine import load_checkpoint
from segnas.engine import trainer as trainer_module
from segnas.engine.swa import WeightAverage
from segnas.jobs import train_job


def test_the_average_is_the_mean_of_the_weights_from_its_start_on():
    model = nn.Linear(3, 2)
    average = WeightAverage(model, start=0.5, bn_batches=4)
    seen = []
    for progress in (0.2, 0.5, 0.7, 0.9):
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
        average.update(model, progress)
        if progress >= 0.5:
            seen.append(model.weight.detach().clone())
    assert average.count == 3
    assert torch.allclose(average.module.weight, torch.stack(seen).mean(0), atol=1e-6)


def test_batchnorm_statistics_are_recomputed_for_the_average_without_touching_the_random_stream():
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1))
    nn.init.ones_(model[0].weight)
    average = WeightAverage(model, start=0.0, bn_batches=2)
    average.update(model, 0.0)
    batches = [torch.full((2, 1, 2, 2), 1.0), torch.full((2, 1, 2, 2), 3.0), torch.full((2, 1, 2, 2), 100.0)]

    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    net = average.ready(lambda: iter(batches))
    assert torch.equal(torch.rand(3), expected_next)  # its data order and augmentations are its own
    # the mean over the first two batches only (cumulative average), not a momentum-weighted one
    assert net[1].running_mean.item() == pytest.approx(2.0) and not net.training
    assert average.ready(lambda: iter([torch.zeros(2, 1, 2, 2)])) is net and net[1].running_mean.item() == pytest.approx(2.0)


def test_ema_and_swa_together_or_an_swa_rate_without_swa_are_refused(tiny_cfg):
    with pytest.raises(ValueError, match="ema_decay or swa_start"):
        TrainConfig.model_validate(tiny_cfg(ema_decay=0.99, swa_start=0.5))
    with pytest.raises(ValueError, match="swa_lr.*swa_start"):
        TrainConfig.model_validate(tiny_cfg(swa_lr=0.01))


def _records(run: str) -> list[dict]:
    return [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def test_a_run_with_swa_evaluates_and_saves_the_average_at_the_swa_rate(tiny_cfg):
    result = train_job(TrainConfig.model_validate(tiny_cfg(epochs=4, swa_start=0.5, swa_lr=0.001,
                                                           **{"optim.schedule": "poly"})))
    records = _records(result.run_dir)
    assert [r["lr"] for r in records][2:] == [0.001, 0.001] and records[0]["lr"] > 0.001
    last = load_checkpoint(Path(result.run_dir) / "checkpoints" / "last.pt")
    assert last["swa"]["averaged"]["n_averaged"].item() == 6  # 3 steps an epoch, the last 2 epochs
    # model.init from last.pt starts from the average training scored (best.pt's weights), not the raw ones
    from segnas.engine.checkpoint import read_weights

    best = load_checkpoint(Path(result.run_dir) / "checkpoints" / "best.pt")["model"]
    init = read_weights(Path(result.run_dir) / "checkpoints" / "last.pt", "model.init")
    assert all(torch.equal(init[k], best[k]) for k in best)


def test_without_a_val_split_best_pt_is_the_average_with_its_own_batchnorm_statistics(tiny_cfg):
    result = train_job(TrainConfig.model_validate(tiny_cfg(epochs=2, swa_start=0.5, **{"data.val_split": ""})))
    last = load_checkpoint(Path(result.run_dir) / "checkpoints" / "last.pt")["model"]
    best = load_checkpoint(Path(result.run_dir) / "checkpoints" / "best.pt")["model"]
    conv = next(k for k in best if k.endswith("weight") and best[k].dim() == 4)
    bn = next(k for k in best if k.endswith("running_mean"))
    assert not torch.equal(best[conv], last[conv]) and not torch.equal(best[bn], last[bn])


def test_a_run_with_swa_cut_after_averaging_began_resumes_to_the_same_result(tiny_cfg, monkeypatch):
    cfg = tiny_cfg(epochs=4, swa_start=0.4, **{"data.crop_fractions": [1.0, 0.5]})
    whole = train_job(TrainConfig.model_validate(cfg))

    saved = []
    real_save = trainer_module.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        if Path(path).name == "last.pt":
            saved.append(path)
            if len(saved) == 3:
                raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "save_checkpoint", save_then_die)
    cfg["out_dir"] = cfg["out_dir"] + "-cut"
    with pytest.raises(KeyboardInterrupt):
        train_job(TrainConfig.model_validate(cfg))
    monkeypatch.setattr(trainer_module, "save_checkpoint", real_save)
    run = Path(saved[0]).parent.parent
    resumed = train_job(None, resume=run)
    a, b = _records(whole.run_dir)[-1], _records(resumed.run_dir)[-1]
    assert a["epoch"] == b["epoch"] == 4
    assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
    assert a["val_miou"] == pytest.approx(b["val_miou"], abs=1e-6)


def test_eval_of_an_swa_run_scores_the_average_and_refuses_raw_weights_that_best_pt_lacks(tiny_cfg):
    from segnas.errors import SegnasError
    from segnas.training.models import build_network, select_weights

    result = train_job(TrainConfig.model_validate(tiny_cfg(epochs=2, swa_start=0.5, **{"data.val_split": ""})))
    checkpoints = Path(result.run_dir) / "checkpoints"
    last, best = load_checkpoint(checkpoints / "last.pt"), load_checkpoint(checkpoints / "best.pt")
    model = build_network(last["model_spec"], len(last["classes"]["names"]))
    assert select_weights(checkpoints / "last.pt", model, last) == "SWA"
    averaged = {k.removeprefix("module."): v for k, v in last["swa"]["averaged"].items() if k != "n_averaged"}
    assert all(torch.equal(v, averaged[k]) for k, v in model.state_dict().items())
    assert select_weights(checkpoints / "last.pt", model, last, raw=True) == "raw"
    assert best["weights"] == "SWA" and select_weights(checkpoints / "best.pt", model, best) == "SWA"
    with pytest.raises(SegnasError, match="only the SWA weights"):
        select_weights(checkpoints / "best.pt", model, best, raw=True)
    assert last["swa"]["bn_fresh"] is True  # the finished run recomputed them before its last checkpoint
    stale = {**last, "swa": {**last["swa"], "bn_fresh": False}}  # a run cut between two evaluations
    with pytest.raises(SegnasError, match="changed after its BatchNorm statistics were last recomputed"):
        select_weights(checkpoints / "last.pt", model, stale)
