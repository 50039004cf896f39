"""The ``mobile`` space's weight-sharing supernet and the ``supernet`` search over it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from segnas.cost import LatencyModel
from segnas.engine.checkpoint import load_checkpoint
from segnas.errors import SegnasError
from segnas.jobs.search import make_settings, search_job
from segnas.search.oneshot.engine import OneShotEngine, SearchSchedule
from segnas.spaces import get_space, read_arch_file
from segnas.spaces.base import WeightSharingSupernet
from segnas.spaces.mobile import MOBILE, MOBILE_FAST_SCNN, MobileSpace
from segnas.data import open_data, train_transforms
from segnas.config.train import DataConfig

from test_mobile_space import SMALL_OPTIONS, MacsTable

CLASSES = 5


def scrambled(net: nn.Module, seed: int = 0) -> nn.Module:
    """``net`` with random BatchNorm affine weights and running statistics (so that slicing them matters)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.2 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return net


def members(space: MobileSpace, n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


def test_a_member_computes_on_its_slices_exactly_what_the_plain_network_computes():
    supernet = scrambled(MOBILE.supernet(CLASSES, (64, 96))).eval()
    assert isinstance(supernet, WeightSharingSupernet)
    x = torch.randn(2, 3, 70, 90)  # padded inside, as the plain network pads
    for arch in [MOBILE_FAST_SCNN, supernet.largest, supernet.smallest, *members(MOBILE, 5)]:
        supernet.select(arch)
        supernet.set_width_mode("argmax")
        net = supernet.subnet(arch).eval()
        assert type(net) is type(MOBILE.build(arch, CLASSES))
        assert {k: v.shape for k, v in net.state_dict().items()} == \
               {k: v.shape for k, v in MOBILE.build(arch, CLASSES).state_dict().items()}
        with torch.no_grad():
            ours, plain = supernet(x), net(x)
        assert ours.shape == (2, CLASSES, 70, 90)
        torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-5)


def test_the_comparison_can_fail_members_share_and_differ():
    """Two members differ, and a change to a shared weight reaches every member that uses it."""
    supernet = scrambled(MOBILE.supernet(CLASSES, (64, 96))).eval()
    x = torch.randn(1, 3, 64, 96)
    a, b = MOBILE_FAST_SCNN, members(MOBILE, 1, seed=3)[0]
    outs = []
    for arch in (a, b):
        supernet.select(arch)
        supernet.set_width_mode("argmax")
        with torch.no_grad():
            outs.append(supernet(x))
    assert not torch.allclose(outs[0], outs[1])
    net = supernet.subnet(a).eval()
    with torch.no_grad():
        supernet.stem[0][0].weight[0].add_(1.0)  # the first stem filter: in every member
        supernet.select(a)
        assert not torch.allclose(supernet(x), net(x))


def test_modes_run_the_largest_smallest_random_and_selected_members():
    space = MobileSpace(**SMALL_OPTIONS)
    supernet = space.supernet(CLASSES, (48, 64))
    assert supernet.largest == space.from_decisions([len(d.choices) - 1 for d in space.decisions])
    assert supernet.smallest.context == "none" and supernet.smallest.stem[1].op == "dsconv"
    x = torch.randn(2, 3, 48, 64)
    torch.manual_seed(0)
    drawn = set()
    supernet.train()
    for mode in ("max", "min", "random", "random", "random"):
        supernet.set_width_mode(mode)
        out = supernet(x)
        assert set(out) == {"out", "aux"} and out["out"].shape == (2, CLASSES, 48, 64)
        drawn.add(supernet.active)
    assert len(drawn) >= 4  # random draws differ
    with pytest.raises(SegnasError, match="select"):
        space.supernet(CLASSES, (48, 64)).set_width_mode("argmax")
    with pytest.raises(SegnasError, match="not by gradient"):
        supernet.set_width_mode("gumbel")
    with pytest.raises(SegnasError, match="stages"):
        supernet.select(MOBILE_FAST_SCNN)  # outside the small space


def test_sandwich_training_changes_the_shared_weights_and_keeps_every_member_trainable(tmp_path):
    from segnas.engine.rundir import RunDir

    space = MobileSpace(**SMALL_OPTIONS)
    supernet = space.supernet(11, (48, 64))  # the synthetic scenes' 11 classes
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    data = DataConfig.model_validate({"name": "synthetic", "options": {"size": [48, 64], "length": 4}})
    train = open_data(data, "train", train_transforms((48, 64)))
    engine = OneShotEngine(supernet, train, SearchSchedule(pretrain_epochs=1, search_epochs=0, batch_size=2,
                                                           progress=False, sandwich_random=1),
                           RunDir.create(tmp_path, "t"))
    engine.fit()
    after = supernet.state_dict()
    changed = [k for k in before if k.endswith("weight") and not torch.equal(before[k], after[k])]
    assert any(k.startswith("stem.0") for k in changed) and any(k.startswith("slots.") for k in changed)
    state = load_checkpoint(engine.pretrained_path)
    fresh = space.supernet(11, (48, 64))
    fresh.load_state_dict(state["supernet"])  # what the weight-sharing evaluator loads


def test_inplace_distillation_mixes_the_largest_members_predictions_into_the_loss(tmp_path):
    """A member distilled from its own logits has no distillation loss: at weight 1 the loss is 0,
    at 0.5 half the label loss; the largest member's predictions are what the others learn from."""
    from segnas.engine.rundir import RunDir

    space = MobileSpace(**SMALL_OPTIONS)
    data = DataConfig.model_validate({"name": "synthetic", "options": {"size": [48, 64], "length": 4}})
    train = open_data(data, "train", train_transforms((48, 64)))
    engine = OneShotEngine(space.supernet(11, (48, 64)), train, SearchSchedule(pretrain_epochs=1, search_epochs=0,
                           batch_size=2, progress=False, inplace_distill=1.0), RunDir.create(tmp_path, "t"))
    images, masks = engine.place.batch(*next(iter(engine._loader(train))))
    engine.net.eval()  # no dropout: two passes of one member give the same logits
    engine.net.set_width_mode("min")
    with torch.no_grad():
        label_only = float(engine.criterion(engine.net(images), masks)[0])
        own = engine.net(images)
        assert float(engine._seg_loss(images, masks, 0, teacher=own)[0]) == pytest.approx(0.0, abs=1e-5)
        engine.s.inplace_distill = 0.5
        assert float(engine._seg_loss(images, masks, 0, teacher=own)[0]) == pytest.approx(0.5 * label_only, rel=1e-4)
    engine.net.train()
    calls, seg_loss = [], engine._seg_loss

    def recorded(images, masks, arch_index, teacher=None):
        loss, main = seg_loss(images, masks, arch_index, teacher)
        calls.append((engine.net.width_mode, teacher, main.detach()))
        return loss, main

    engine._seg_loss = recorded
    engine._weight_step(images, masks, ["max", "min", "random"])
    assert [c[0] for c in calls] == ["max", "min", "random"] and calls[0][1] is None
    assert all(torch.equal(teacher, calls[0][2]) for _, teacher, _ in calls[1:])  # the largest's logits


def test_supernet_search_trains_then_scores_members_on_held_out_training_images(tmp_path):
    settings = make_settings("supernet", {
        "data": {"name": "synthetic", "options": {"size": [48, 64], "length": 8}, "crop_size": [48, 64],
                 "batch_size": 2},
        "out_dir": str(tmp_path), "threads": 1, "progress": False, "final": {"epochs": 0},
        "latency": {"target_ms": 1e9, "size": [48, 64], "backend": "eager", "threads": 1},
        "supernet": {"space": "mobile", "space_options": SMALL_OPTIONS, "epochs": 1, "sandwich_random": 0,
                     "candidates": 4, "population": 2, "sample_size": 2, "meta_val_fraction": 0.25,
                     "meta_val_images": 2, "calibration_images": 2, "inherit_weights": True,
                     "inplace_distill": 0.5}})
    latency = LatencyModel(MacsTable("eager", threads=1, path=tmp_path / "table.json"), (48, 64), 1e9)
    run = Path(search_job(settings, latency=latency)["run_dir"])
    result = json.loads((run / "search_result.json").read_text())
    details = result["details"]
    assert result["method"] == "supernet" and details["candidates_scored"] == 4
    assert details["supernet"]["meta_val_images"] == 2 and details["supernet"]["meta_train_images"] == 6
    assert all(0.0 <= c["score"] <= 1.0 for c in details["top"])
    arch = get_space("mobile").arch_from_dict(read_arch_file(run / "arch.json")["arch"])
    assert MobileSpace(**SMALL_OPTIONS).contains(arch)
    from segnas.training.models import load_init_weights

    init = load_init_weights(MOBILE.build(arch, 11), run / "inherited.pt")  # what the final training loads
    assert init["loaded"] == init["of"] and init["shape_mismatch"] == 0
    assert (run / "checkpoints" / "pretrained.pt").is_file()
    # searching this supernet again: only over the same held-out images (its run's seed and fraction)
    from segnas.search.strategies.supernet import SUPERNET_TRAINING

    section = {**{k: v for k, v in settings.supernet.model_dump().items() if k not in SUPERNET_TRAINING},
               "pretrained": str(run)}  # (its training settings are refused beside pretrained)
    for change in ({"seed": 1}, {"supernet": {**section, "meta_val_fraction": 0.5}}):
        again = make_settings("supernet", {**settings.model_dump(mode="json"), "supernet": section,
                                           "job": "again", **change})
        with pytest.raises(SegnasError, match="supernet.pretrained: .* holding out 2 of 8 training images"):
            search_job(again, latency=latency)
    assert not list(tmp_path.glob("*-again"))


def test_a_time_budget_spent_while_the_supernet_trains_still_searches_the_supernet_as_trained(tmp_path):
    settings = make_settings("supernet", {
        "data": {"name": "synthetic", "options": {"size": [48, 64], "length": 8}, "crop_size": [48, 64],
                 "batch_size": 2},
        "out_dir": str(tmp_path), "threads": 1, "progress": False, "final": {"epochs": 0}, "minutes": 1e-4,
        "latency": {"target_ms": 1e9, "size": [48, 64], "backend": "eager", "threads": 1},
        "supernet": {"space": "mobile", "space_options": SMALL_OPTIONS, "epochs": 3, "sandwich_random": 0,
                     "candidates": 4, "population": 2, "sample_size": 2, "meta_val_fraction": 0.25,
                     "meta_val_images": 2, "calibration_images": 2}})
    latency = LatencyModel(MacsTable("eager", threads=1, path=tmp_path / "table.json"), (48, 64), 1e9)
    run = Path(search_job(settings, latency=latency)["run_dir"])
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["phase"] == "pretrain" and metrics[-1]["epoch"] == 1 and "time budget" in metrics[-1]["stopped"]
    assert (run / "checkpoints" / "pretrained.pt").is_file() and (run / "arch.json").is_file()
    assert json.loads((run / "search_result.json").read_text())["details"]["candidates_scored"] >= 1


def test_inherit_weights_is_refused_before_the_search_for_a_supernet_that_cannot_hand_them_over(tmp_path):
    settings = make_settings("supernet", {
        "data": {"name": "synthetic", "options": {"size": [48, 64], "length": 8}}, "out_dir": str(tmp_path),
        "threads": 1, "progress": False, "final": {"epochs": 0},
        "latency": {"target_ms": 1e9, "size": [48, 64], "backend": "eager", "threads": 1},
        "supernet": {"space": "joint", "inherit_weights": True}})
    with pytest.raises(SegnasError, match="inherit_weights"):
        search_job(settings, latency=LatencyModel(MacsTable("eager", threads=1, path=tmp_path / "t.json"), (48, 64),
                                                  1e9))
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # no run directory was made


def test_the_supernet_searchs_time_budget_covers_training_the_supernet_and_the_evolution():
    """``minutes`` is the whole search's: the evolution gets what training the supernet left."""
    from types import SimpleNamespace

    from segnas.search.strategies.supernet import SupernetSearch

    search = SupernetSearch()
    ctx = SimpleNamespace(settings=SimpleNamespace(minutes=2.0))
    assert search.time_limit_s(ctx) == 120.0  # a pretrained supernet: no training in this run
    search.training_seconds = 90.0
    assert search.time_limit_s(ctx) == 30.0
    search.training_seconds = 500.0
    assert search.time_limit_s(ctx) == 1.0  # one batch of candidates still runs
    assert search.time_limit_s(SimpleNamespace(settings=SimpleNamespace(minutes=None))) is None
