"""The search-space contract (``segnas.spaces.base.SearchSpace``), run over every registered space:
sampling, mutation, (de)serialization, keys, the plain network, latency keys and, where a space has
one, its supernet's protocol (timm's ``list_models()`` pattern: a new space is tested by registering
it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segnas.errors import SegnasError
from segnas.nn.ops import OpKey
from segnas.spaces import SearchSpace, Supernet, get_space, list_spaces, space_class

#: Small settings per space, so that networks and supernets stay cheap (default: the space's own).
SMALL: dict[str, dict] = {
    "multires": dict(layers=6, base_width=2, width_ratios=(0.5, 1.0)),
    "joint": dict(channels=(8, 16), slots=(2, 2), stem_channels=4, decoder_width=8, dilations=(1, 2),
                  width_ratios=(1.0, 0.5)),
    "cells": dict(layout=(1, 1, 1, 1), channels=(4, 8, 8, 8), nodes=2, stem_channels=4, decoder_width=8),
}
NUM_CLASSES = 5
SEEDS = (0, 1, 2)


@pytest.fixture(params=list_spaces())
def space(request) -> SearchSpace:
    return get_space(request.param, **SMALL.get(request.param, {}))


class FakeTable:
    """A latency table with made-up entries (ms), so no operator is measured."""

    def ensure(self, keys, progress: bool = True) -> int:
        return 0

    def lookup(self, key: OpKey, save: bool = True) -> float:
        return 1e-6 * key.cin * key.cout * key.h * key.w / key.stride ** 2 + 0.01

    def call_overhead(self, shape) -> float:
        return 0.5


class FakeLatencyModel:
    """The interface of ``segnas.cost.LatencyModel`` that supernets use."""

    def __init__(self) -> None:
        self.table = FakeTable()

    def op_latencies(self, keys: list[OpKey]) -> list[float]:
        return [self.table.lookup(k) for k in keys]

    def call_overhead(self) -> float:
        return self.table.call_overhead((1, 3, 64, 96))


def test_registry_names_classes_and_default_instances():
    names = list_spaces()
    assert {"multires", "joint"} <= set(names)
    for name in names:
        default = get_space(name)
        assert isinstance(default, SearchSpace) and type(default) is space_class(name)
        assert type(default).name == name and default.name == name
        assert get_space(name) is default  # one shared instance without options
        assert isinstance(default.version, int)
    from segnas.spaces.joint import JOINT
    from segnas.spaces.multires import MULTIRES

    assert get_space("multires") is MULTIRES and get_space("joint") is JOINT
    with pytest.raises(SegnasError, match="unknown search space"):
        get_space("no-such-space")


def test_space_is_a_search_space(space):
    assert isinstance(space, SearchSpace)
    assert space.name in list_spaces()


@pytest.mark.parametrize("spread", [False, True])
def test_sample_is_deterministic_per_seed(space, spread):
    for seed in SEEDS:
        a = space.sample(np.random.default_rng(seed), spread=spread)
        b = space.sample(np.random.default_rng(seed), spread=spread)
        assert a == b and space.key(a) == space.key(b)
    archs = {space.key(space.sample(np.random.default_rng(seed), spread=spread)) for seed in range(8)}
    assert len(archs) > 1


def test_dict_and_json_round_trip_and_key(space):
    for seed in SEEDS:
        arch = space.sample(np.random.default_rng(seed))
        assert space.arch_from_dict(arch.to_dict()) == arch
        again = space.arch_from_dict(json.loads(json.dumps(arch.to_dict())))
        assert again == arch and space.key(again) == space.key(arch)
        assert space.key(arch) == space.key(arch.to_dict())
    with pytest.raises(SegnasError):
        space.arch_from_dict([])
    with pytest.raises(SegnasError):
        space.arch_from_dict({**space.sample(np.random.default_rng(0)).to_dict(), "colour": 1})


def test_mutate_returns_a_valid_different_arch(space):
    rng = np.random.default_rng(0)
    for seed in SEEDS:
        arch = space.sample(np.random.default_rng(seed))
        for _ in range(5):
            new = space.mutate(arch, rng)
            assert new != arch and space.key(new) != space.key(arch)
            assert space.arch_from_dict(json.loads(json.dumps(new.to_dict()))) == new  # passes validation
            assert space.defect(new) is None
            arch = new


@pytest.mark.parametrize("spread", [False, True])
def test_samples_have_no_defect(space, spread):
    """``defect``: what the search loop never trains; ``sample`` never returns it."""
    rng = np.random.default_rng(0)
    assert all(space.defect(space.sample(rng, spread=spread)) is None for _ in range(50))


def test_encode_decode_round_trip(space):
    arch = space.sample(np.random.default_rng(0), spread=True)
    data = json.loads(json.dumps(space.encode(arch, note="x")))
    assert data["space"] == space.name and data["version"] == space.version and data["note"] == "x"
    assert space.decode(data) == arch
    with pytest.raises(SegnasError, match="space"):
        space.decode({**data, "space": "other"})


def test_build_runs_on_odd_sizes(space):
    torch.manual_seed(0)
    arch = space.sample(np.random.default_rng(1))
    model = space.build(arch, NUM_CLASSES).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 70, 90))
    assert isinstance(out, torch.Tensor) and out.shape == (1, NUM_CLASSES, 70, 90)
    assert torch.isfinite(out).all()


def test_latency_keys(space):
    arch = space.sample(np.random.default_rng(2))
    keys = space.latency_keys(arch, NUM_CLASSES, (70, 90))
    assert isinstance(keys, list) and keys and all(isinstance(k, OpKey) for k in keys)
    assert all(k.h > 0 and k.w > 0 for k in keys)
    assert keys == space.latency_keys(arch, NUM_CLASSES, (70, 90))
    larger = space.latency_keys(arch, NUM_CLASSES, (140, 180))
    assert len(larger) == len(keys) and larger != keys  # the resolution enters the keys


def _supernet(space):
    """The space's supernet; a space without one (the base class's ``supernet``) is skipped, and any
    error of a space that has one fails the test."""
    if type(space).supernet is SearchSpace.supernet:
        pytest.skip(f"{space.name}: no supernet")
    return space.supernet(NUM_CLASSES, (64, 96))


def test_supernet_protocol(space):
    net = _supernet(space)
    assert isinstance(net, Supernet)
    assert isinstance(net.num_archs, int) and net.num_archs >= 1
    weights = {id(p) for p in net.weight_parameters()}
    assert weights
    differentiable = getattr(net, "differentiable", True)
    for a in range(net.num_archs):
        arch = list(net.arch_parameters(a))
        assert bool(arch) == differentiable and not weights & {id(p) for p in arch}
    if not differentiable:  # its argmax mode runs the member given to select()
        net.select(space.sample(np.random.default_rng(0)))
    for mode in ("max", "min", "random", "argmax") + (("gumbel",) if differentiable else ()):
        net.set_width_mode(mode)
    if not differentiable:  # searched by sampling: no gradient search mode
        with pytest.raises(SegnasError):
            net.set_width_mode("gumbel")
    with pytest.raises(SegnasError):
        net.set_width_mode("widest")
    net.set_width_mode("max")
    with torch.no_grad():
        out = net.eval()(torch.randn(1, 3, 40, 50), 0)
    assert out.shape == (1, NUM_CLASSES, 40, 50)


def test_supernet_expected_latency_is_differentiable(space):
    net = _supernet(space)
    latency = FakeLatencyModel()
    for a in range(net.num_archs):
        lat = net.expected_latency(a, latency)
        assert isinstance(lat, torch.Tensor) and lat.dim() == 0 and lat.item() > 0
        if not getattr(net, "differentiable", True):
            continue  # the member's table latency: a constant
        lat.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.arch_parameters(a))


def test_supernet_needs_an_input_size(space):
    with pytest.raises(TypeError):
        space.supernet(NUM_CLASSES)


def test_multires_expected_latency_takes_a_latency_model_or_its_table():
    net = get_space("multires", **SMALL["multires"]).supernet(NUM_CLASSES, (64, 96))
    latency = FakeLatencyModel()
    for a in range(net.num_archs):
        assert net.expected_latency(a, latency).item() == pytest.approx(net.expected_latency(a, latency.table).item())
        by_model = [t.item() for t in net.latency_terms(a, latency)]
        assert by_model == pytest.approx([t.item() for t in net.latency_terms(a, latency.table)])
    arch = net.derive(1)
    assert net.derived_latency(arch, latency) == pytest.approx(net.derived_latency(arch, latency.table))


def test_joint_expected_latency_is_expected_cost_plus_call_overhead():
    net = get_space("joint", **SMALL["joint"]).supernet(NUM_CLASSES, (64, 96))
    latency = FakeLatencyModel()
    expected = net.expected_cost(latency.op_latencies) + latency.call_overhead()
    assert net.expected_latency(0, latency).item() == pytest.approx(expected.item())
    with pytest.raises(SegnasError, match="arch_index"):
        net.expected_latency(1, latency)
