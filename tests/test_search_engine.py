"""The one-shot engine on a toy supernet: phases, architecture losses, resume, budget, stop."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from segnas.engine.rundir import RunDir
from segnas.search.oneshot.engine import NoHooks, OneShotEngine, SearchSchedule, split_halves


class ToySupernet(nn.Module):
    """One mixed layer of two candidate ops (3×3 conv, 1×1 conv) per architecture."""

    num_archs = 2

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.ops = nn.ModuleList([nn.Conv2d(3, classes, 3, padding=1), nn.Conv2d(3, classes, 1)])
        self.alphas = nn.ParameterList([nn.Parameter(torch.zeros(2)) for _ in range(self.num_archs)])
        self.modes: list[str] = []

    def weight_parameters(self):
        return self.ops.parameters()

    def arch_parameters(self, i):
        return [self.alphas[i]]

    def set_width_mode(self, mode):
        self.modes.append(mode)

    def forward(self, x, arch_index=0):
        w = F.softmax(self.alphas[arch_index], 0)
        return sum(wi * op(x) for wi, op in zip(w, self.ops))


def data(n=16):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = (x[:, 0] > 0).long()
    return TensorDataset(x, y)


class Hooks(NoHooks):
    """Architecture losses and per-epoch work from plain functions; a counter as strategy state."""

    def __init__(self, arch_losses=None, on_epoch_end=None):
        self.losses, self.epoch_end, self.calls = arch_losses, on_epoch_end, 0

    def arch_losses(self, net, i):
        return self.losses(net, i) if self.losses else {}

    def on_epoch_end(self, engine, phase, epoch):
        self.calls += 1
        return self.epoch_end(engine, phase, epoch) if self.epoch_end else {}

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def make(tmp_path, pre=1, search=2, arch_losses=None, name="run", hook=None, **schedule):
    torch.manual_seed(0)
    net = ToySupernet()
    sched = SearchSchedule(pretrain_epochs=pre, search_epochs=search, batch_size=4, progress=False, arch_lr=0.05,
                           **schedule)
    return OneShotEngine(net, data(), sched, RunDir(tmp_path / name), Hooks(arch_losses, hook))


def test_halves_are_disjoint_and_cover():
    a, b = split_halves(data(10), 3)
    assert sorted(a.indices + b.indices) == list(range(10)) and not set(a.indices) & set(b.indices)


def test_phases_sandwich_rule_and_arch_updates(tmp_path):
    engine = make(tmp_path)
    record = engine.fit()
    assert record["phase"] == "search" and record["epochs_done"] == 3
    assert {"max", "min", "random", "gumbel"} <= set(engine.net.modes)
    assert not torch.equal(engine.net.alphas[1].detach(), torch.zeros(2))  # architecture moved


def test_architecture_loss_steers_each_arch(tmp_path):
    # penalize the probability of op 0 for arch 1 only
    def penalty(net, i):
        return {"pen": 5.0 * F.softmax(net.alphas[i], 0)[0]} if i == 1 else {}

    engine = make(tmp_path, pre=0, search=6, arch_losses=penalty)
    engine.fit()
    p = [F.softmax(a.detach(), 0)[0] for a in engine.net.alphas]
    assert p[1] < 0.3 and p[1] < p[0] - 0.1


def test_resume_after_interruption_matches(tmp_path):
    full = make(tmp_path, name="full")
    full.fit()
    def crash(engine, phase, epoch):
        if engine.epochs_done == 2:
            raise KeyboardInterrupt  # killed after epoch 2 ran, before its checkpoint was written
        return {}

    part = make(tmp_path, name="part", hook=crash)
    try:
        part.fit()
    except KeyboardInterrupt:
        pass
    resumed = make(tmp_path, name="part")
    assert resumed.resume_if_possible()
    assert resumed.hooks.calls == 1  # the strategy's state came back with the checkpoint of epoch 1
    resumed.fit()
    for a, b in zip(full.net.state_dict().values(), resumed.net.state_dict().values()):
        torch.testing.assert_close(a, b)
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epochs_done"] for x in lines] == [1, 2, 3]


def test_resume_when_killed_between_metrics_and_checkpoint(tmp_path, monkeypatch):
    import segnas.search.oneshot.engine as engine_module

    full = make(tmp_path, name="full")
    full.fit()
    real_save = engine_module.save_checkpoint
    calls = {"n": 0}

    def dying_save(path, state):
        calls["n"] += path.name == "search_last.pt"
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the 2nd epoch's metrics line is written, its checkpoint is not
        real_save(path, state)

    monkeypatch.setattr(engine_module, "save_checkpoint", dying_save)
    part = make(tmp_path, name="part")
    with pytest.raises(KeyboardInterrupt):
        part.fit()
    assert calls["n"] == 2
    orphaned = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epochs_done"] for r in orphaned] == [1, 2]  # the kill came after the line, before its checkpoint
    monkeypatch.setattr(engine_module, "save_checkpoint", real_save)
    resumed = make(tmp_path, name="part")
    assert resumed.resume_if_possible()
    resumed.fit()
    lines = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epochs_done"] for r in lines] == [1, 2, 3]  # the orphaned epoch-2 line was replaced
    for a, b in zip(full.net.state_dict().values(), resumed.net.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_search_from_another_runs_pretrained_supernet_matches(tmp_path):
    full = make(tmp_path, name="full")
    full.fit()
    assert (tmp_path / "full" / "checkpoints" / "pretrained.pt").is_file()
    other = make(tmp_path, pre=5, name="other")  # its own pretrain setting is replaced by the file's
    assert other.start_from_pretrained(tmp_path / "full" / "checkpoints" / "pretrained.pt") == 1
    record = other.fit()
    assert record["epochs_done"] == 3 and set(other.net.modes) == {"gumbel"}  # no pre-training ran
    for a, b in zip(full.net.state_dict().values(), other.net.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_fixed_width_arch_gets_one_pass_with_the_sandwich_gradient(tmp_path):
    engine = make(tmp_path, pre=1, search=0)
    engine.net.width_search = [False, True]
    engine.fit()
    # arch 0 (fixed widths) ran once per step, arch 1 three times (max, min, random)
    steps = engine.step
    assert len(engine.net.modes) == steps * (1 + 3)


def test_a_strategy_stops_the_search_and_it_stays_stopped(tmp_path):
    def stop_after_first_search_epoch(engine, phase, epoch):
        if phase == "search":
            engine.stop("one network left")
        return {}

    engine = make(tmp_path, pre=1, search=5, hook=stop_after_first_search_epoch)
    record = engine.fit()
    assert record["epochs_done"] == 2 and record["stopped"] == "one network left"
    again = make(tmp_path, pre=1, search=5)
    assert again.resume_if_possible() and again.stopped == "one network left"
    again.fit()  # nothing left to do
    assert again.epochs_done == 2 and len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


def test_time_budget_ends_the_search_after_the_epoch_that_spends_it(tmp_path):
    import time

    def slow(engine, phase, epoch):
        time.sleep(1.0)  # counted: the budget is the search's wall clock, per-epoch work included
        return {}

    # 1.5 s: spent during the second epoch (2 s of hooks), not the first, unless an epoch's own
    # work takes over 0.5 s (a heavily loaded machine)
    engine = make(tmp_path, pre=1, search=20, hook=slow, minutes=1.5 / 60)
    record = engine.fit()
    assert record["epochs_done"] == 2 and "time budget" in record["stopped"]
    assert engine.loop.elapsed >= 1.5
    resumed = make(tmp_path, pre=1, search=20, minutes=1.5 / 60)
    assert resumed.resume_if_possible()
    resumed.fit()
    assert resumed.epochs_done == 2  # the stop was checkpointed


def test_engine_places_the_supernet_on_the_settings_device(tmp_path):
    engine = make(tmp_path, device="cpu")
    assert engine.place.device.type == "cpu" and next(engine.net.parameters()).device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_engine_searches_on_a_gpu_and_its_checkpoint_resumes(tmp_path):
    full = make(tmp_path, name="gpu", device="cuda")
    full.fit()
    assert next(full.net.parameters()).device.type == "cuda"
    assert not torch.equal(full.net.alphas[1].detach().cpu(), torch.zeros(2))
    resumed = make(tmp_path, name="gpu", device="cuda")
    assert resumed.resume_if_possible() and resumed.epochs_done == 3
