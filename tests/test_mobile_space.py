"""The ``mobile`` space: Fast-SCNN is a member (same parameters, same outputs from the zoo's weights),
the decision encoding, ranges kept by sampling and mutation, odd sizes and ONNX export, latency keys
that cover every convolution the network runs, errors that name the field, and sample-based
searches (random, SasWOT) on it end to end."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from segnas.cost import LatencyModel, LatencyTable, count_parameters
from segnas.cost.export import check_parity, export_onnx
from segnas.errors import SegnasError
from segnas.jobs.search import make_settings, search_job
from segnas.spaces import DecisionSpace, get_space, read_arch_file
from segnas.spaces.mobile import MOBILE, MOBILE_FAST_SCNN, MobileArch, MobileSpace, fast_scnn
from segnas.zoo.fast_scnn import FastSCNN

CLASSES = 5
#: A small space for the searches: every kind of choice, cheap networks.
SMALL_OPTIONS = {"stem_widths": [[8], [8, 16], [16]], "stage_widths": [[16], [16, 24], [24], [24, 32], [32]],
                 "stage_depths": [[0, 1], [1, 2], [0, 1], [1, 2], [0, 1]], "expansions": [2, 3],
                 "fusion_widths": [16, 24], "head_depths": [0, 1]}


# ----------------------------------------------------------------------------- Fast-SCNN as a member
@pytest.mark.parametrize("width", [1.0, 0.5])
def test_fast_scnn_is_a_member_with_the_zoos_parameters_and_outputs(width):
    arch = fast_scnn(width)
    assert MOBILE.contains(arch) and MOBILE.from_decisions(MOBILE.to_decisions(arch)) == arch
    torch.manual_seed(0)
    zoo = FastSCNN(CLASSES, width=width)
    for m in zoo.modules():  # BatchNorm statistics away from the defaults, so that they matter
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0), m.weight.data.uniform_(0.5, 1.5)
    ours = MOBILE.build(arch, CLASSES)
    assert count_parameters(ours) == count_parameters(zoo)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in zoo.parameters())  # aux head too
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in zoo.state_dict().items()}
    ours.load_state_dict(zoo.state_dict())  # strict: the same keys and shapes, no mapping
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), zoo.eval()(x))
    other = MOBILE.build(MOBILE.mutate(arch, np.random.default_rng(0)), CLASSES).eval()
    with torch.no_grad():
        assert other(x).shape == (1, CLASSES, 65, 97)
    if width == 1.0:
        assert arch == MOBILE_FAST_SCNN


# ------------------------------------------------------------------------------ decisions and ranges
class FakeTable:
    """Made-up entries (ms): proportional to multiply-adds, so no operator is measured."""

    def ensure(self, keys, progress: bool = True) -> int:
        return 0

    def lookup(self, key, save: bool = True) -> float:
        return 1e-6 * key.cin * key.cout * key.h * key.w / key.stride ** 2 + 0.01

    def call_overhead(self, shape) -> float:
        return 0.5


def in_ranges(space: MobileSpace, arch: MobileArch) -> bool:
    """The space's ranges, checked directly (not through the encoding)."""
    if arch.stem[0].op != "conv" or any(layer.width not in w for layer, w in zip(arch.stem, space.stem_widths)):
        return False
    if any(layer.op not in space.stem_ops for layer in arch.stem[1:]):
        return False
    per_stride = Counter(s.stride for s in arch.stages)
    for stride in set(space.stage_strides):
        slots = [i for i, s in enumerate(space.stage_strides) if s == stride]
        blocks = sum(len(s.blocks) for s in arch.stages if s.stride == stride)
        if not sum(max(space.stage_depths[i][0], 0) for i in slots) <= blocks <= sum(space.stage_depths[i][1]
                                                                                   for i in slots):
            return False
        if per_stride[stride] > len(slots):
            return False
    widths = {w for ws in space.stage_widths for w in ws}
    blocks = [b for s in arch.stages for b in s.blocks]
    return (all(s.width in widths for s in arch.stages) and all(b.expansion in space.expansions for b in blocks)
            and all(b.kernel in space.kernels and b.dilation in space.dilations for b in blocks)
            and arch.context in space.contexts and arch.fusion_width in space.fusion_widths
            and arch.head_depth in space.head_depths)


def test_decisions_round_trip_and_ranges_kept_by_sample_and_mutate():
    space = MOBILE
    assert isinstance(space, DecisionSpace)
    sizes, names = space.decision_sizes(), space.decision_names()
    assert len(sizes) == len(names) == len(set(names)) and min(sizes) >= 1
    rng = np.random.default_rng(0)
    seen = set()
    for i in range(40):
        arch = space.sample(rng, spread=i % 2 == 1)
        for a in (arch, space.mutate(arch, rng)):
            d = space.to_decisions(a)
            assert len(d) == len(sizes) and all(0 <= v < n for v, n in zip(d, sizes))
            assert space.from_decisions(d) == a and space.arch_from_dict(json.loads(json.dumps(a.to_dict()))) == a
            assert in_ranges(space, a), a
            seen.add(space.key(a))
        assert space.mutate(arch, rng) != arch
    assert len(seen) > 60  # spread samples near the cheapest corner may repeat
    # decisions drawn at random (as a controller does) always make a member
    for _ in range(20):
        d = [int(rng.integers(n)) for n in sizes]
        assert in_ranges(space, space.from_decisions(d))
    # every choice of every decision is reachable by sampling
    counts = [set() for _ in sizes]
    for i in range(300):
        for j, v in enumerate(space.to_decisions(space.sample(rng, spread=i % 2 == 1))):
            counts[j].add(v)
    for j, n in enumerate(names):
        if ".block." not in n:
            assert len(counts[j]) == sizes[j], n


def test_spread_samples_span_more_latency_than_uniform_ones():
    model = LatencyModel(FakeTable(), (360, 480))

    def predicted(spread):
        rng = np.random.default_rng(1)
        return [model.predict(MOBILE, MOBILE.sample(rng, spread), CLASSES) for _ in range(30)]

    uniform, spread = predicted(False), predicted(True)
    assert max(spread) / min(spread) > 2 * max(uniform) / min(uniform)


# ------------------------------------------------------------------------------ networks
def test_random_members_run_on_odd_sizes_and_export_to_onnx(tmp_path):
    rng = np.random.default_rng(3)
    small = MobileSpace(**{**SMALL_OPTIONS, "stem_ops": ["conv", "dsconv"]})
    archs = [small.sample(rng, spread=True), small.sample(rng)]
    shape = (1, 3, 65, 97)
    for i, arch in enumerate(archs):
        net = MOBILE.build(arch, CLASSES).eval()
        path = export_onnx(net, tmp_path / f"m{i}.onnx", shape)
        parity = check_parity(net, path, shape)
        assert parity.ok, (arch, parity)
    train = MOBILE.build(archs[0], CLASSES).train()
    out = train(torch.randn(2, 3, 65, 97))
    assert out["out"].shape == out["aux"][0].shape == (2, CLASSES, 65, 97)


def conv_signatures(module: nn.Module, x: torch.Tensor) -> Counter:
    """(in, out, kernel, stride, dilation, groups, input H, W) of every convolution ``module`` runs."""
    seen: Counter = Counter()

    def hook(m, inputs, output):
        seen[(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.dilation, m.groups,
              *inputs[0].shape[-2:])] += 1

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        module.eval()(x)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("seed", [0, 1])
def test_latency_keys_cover_every_convolution_the_network_runs(seed):
    rng = np.random.default_rng(seed)
    archs = [MOBILE_FAST_SCNN] if seed == 0 else []
    dilated = MobileSpace(contexts=["ppm"], stage_depths=[[1, 2], [1, 2], [0, 1], [1, 1], [0, 1]], dilations=[2])
    sixteen = MobileSpace(stage_strides=[8, 16, 16], stage_depths=[[0, 1], [1, 2], [0, 2]],
                          stage_widths=[[16], [24], [32]])  # the low-resolution branch at 1/16
    archs += [MOBILE.sample(rng, spread=True), dilated.sample(rng), sixteen.sample(rng)]
    size = (65, 97)
    for arch in archs:
        keys = MOBILE.latency_keys(arch, CLASSES, size)
        from_keys: Counter = Counter()
        for key in keys:
            from_keys += conv_signatures(key.build(), torch.randn(*key.input_shape))
        assert from_keys == conv_signatures(MOBILE.build(arch, CLASSES), torch.randn(1, 3, *size)), arch
        assert {k.op for k in keys} >= {"inverted_residual", "dw_conv", "conv_bn", "classifier", "upsample"}
        assert ("pyramid_pooling" in {k.op for k in keys}) == (arch.context == "ppm")


def test_latency_model_predicts_members_at_two_sizes():
    rng = np.random.default_rng(0)
    archs = [MOBILE.sample(rng, spread=True) for _ in range(4)] + [MOBILE_FAST_SCNN]
    small, large = (LatencyModel(FakeTable(), s) for s in ((360, 480), (512, 1024)))
    for arch in archs:
        a, b = small.predict(MOBILE, arch, 11), large.predict(MOBILE, arch, 11)
        assert 0.5 < a < b


# ------------------------------------------------------------------------------ errors
def test_errors_name_the_field():
    good = MOBILE_FAST_SCNN.to_dict()

    def bad(path, value):
        d = json.loads(json.dumps(good))
        node = d
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        return d

    cases = [(("stem", 1, "op"), "pool", r"'stem\[1\].op'"), (("stem", 0, "width"), 0, r"'stem\[0\].width'"),
             (("stages", 0, "stride"), 32, r"'stages\[0\].stride'"),
             (("stages", 1, "blocks", 0, "kernel"), 4, r"'stages\[1\].blocks\[0\].kernel'"),
             (("stages", 0, "blocks", 0, "dilation"), 2, r"'stages\[0\].blocks\[0\].dilation'.*strided"),
             (("stages", 2, "blocks"), [], r"'stages\[2\].blocks'"), (("context",), "aspp", "'context'"),
             (("fusion_width",), "wide", "'fusion_width'"), (("head_depth",), -1, "'head_depth'"),
             (("stages", 0, "blocks", 1, "colour"), 1, r"'stages\[0\].blocks\[1\].colour'.*unknown"),
             (("stages", 0, "width"), True, r"'stages\[0\].width'.*integer")]
    for path, value, match in cases:
        with pytest.raises(SegnasError, match=match):
            MOBILE.arch_from_dict(bad(path, value))
    with pytest.raises(SegnasError, match="'stages'.*list"):
        MOBILE.arch_from_dict({**good, "stages": {}})
    with pytest.raises(SegnasError, match="'stem'.*missing"):
        MOBILE.arch_from_dict({k: v for k, v in good.items() if k != "stem"})
    # valid networks outside the default space's ranges: the encoding names the field
    outside = [(("stages", 1, "width"), 200, r"'stages\[1\].width'.*200"),
               (("stages", 0, "blocks", 1, "expansion"), 5, r"'stages\[0\].blocks\[1\].expansion'"),
               (("stem", 2, "width"), 40, r"'stem\[2\].width'"), (("fusion_width",), 100, "'fusion_width'")]
    for path, value, match in outside:
        arch = MOBILE.arch_from_dict(bad(path, value))
        assert not MOBILE.contains(arch)
        with pytest.raises(SegnasError, match=match):
            MOBILE.to_decisions(arch)
    with pytest.raises(SegnasError, match="stage.0.depth"):
        MOBILE.from_decisions([0] * 5 + [7] + [0] * (len(MOBILE.decision_sizes()) - 6))
    with pytest.raises(SegnasError, match="expected 64 decisions"):
        MOBILE.from_decisions([0])
    for options, match in [({"stage_depths": [[0, 2], [0, 4], [0, 3], [1, 4], [0, 3]]}, r"stage_depths\[1\]"),
                           ({"stage_strides": [8, 32, 32, 32, 32]}, r"stage_strides\[1\]"),
                           ({"kernels": [3, 4]}, "kernels"), ({"stem_ops": ["conv", "pool"]}, "stem_ops"),
                           ({"expansions": []}, "expansions")]:
        with pytest.raises(SegnasError, match=match):
            MobileSpace(**options)


# ------------------------------------------------------------------------------ searches
class MacsTable(LatencyTable):
    """Entries planted from channel and pixel counts: no operator is timed."""

    def _measure(self, key) -> float:
        return 1e-7 * key.cin * key.cout * key.h * key.w / key.stride ** 2 + 0.001

    def call_overhead(self, shape) -> float:
        return 0.1


@pytest.mark.parametrize("method, section", [
    ("random", {"candidates": 3, "evaluator": {"proxy": {"proxy": "nwot", "images": 2, "batch_size": 2,
                                                          "size": [32, 48]}}}),
    ("saswot", {"candidates": 4, "population": 2, "sample_size": 2,
                "scoring": {"proxy": "nwot", "images": 2, "batch_size": 2, "size": [32, 48]}}),
])
def test_sample_based_searches_run_on_the_space(tmp_path, method, section):
    settings = make_settings(method, {
        "data": {"name": "synthetic", "options": {"size": [48, 64], "length": 4}}, "out_dir": str(tmp_path),
        "latency": {"target_ms": 1e9, "size": [48, 64], "backend": "eager", "threads": 1}, "threads": 1,
        "progress": False, "final": {"epochs": 0},
        method: {"space": "mobile", "space_options": SMALL_OPTIONS, **section}})
    latency = LatencyModel(MacsTable("eager", threads=1, path=tmp_path / "table.json"), (48, 64), 1e9)
    summary = search_job(settings, latency=latency)
    run = Path(summary["run_dir"])
    result = json.loads((run / "search_result.json").read_text())
    assert result["method"] == method and result["space"] == "mobile"
    details = result["details"]
    assert details["candidates_scored"] == section["candidates"] and np.isfinite(details["top"][0]["score"])
    data = read_arch_file(run / "arch.json")
    arch = get_space("mobile").arch_from_dict(data["arch"])
    assert MobileSpace(**SMALL_OPTIONS).contains(arch) and not MOBILE.contains(arch)  # the small space's own
    assert data["predicted_latency_ms"] == pytest.approx(latency.predict(MOBILE, arch, 11))
