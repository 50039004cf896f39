"""The ``multires`` space (FasterSeg's derived networks): arch format, sampling and mutation, build on
any input size, latency keys that cover the network exactly, the official teacher/student import,
ONNX export."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from segnas.cost.flops import count_flops
from segnas.cost.params import count_parameters
from segnas.errors import SegnasError
from segnas.spaces import build_from_arch, get_space, read_arch_file, save_arch
from segnas.spaces.multires import (
    MULTIRES,
    Branch,
    MultiResArch,
    MultiResSpace,
    import_official,
    structure_rows,
    summarize,
)

SMALL = MultiResSpace(layers=8, base_width=4)  # cheap networks for forward passes


def _official_dir() -> Path:
    default = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fasterseg"
    return Path(os.environ.get("SEGNAS_FASTERSEG_DIR", default))


needs_official = pytest.mark.skipif(not (_official_dir() / "arch_1.pt").is_file(),
                                    reason="official FasterSeg arch files not available (set SEGNAS_FASTERSEG_DIR)")


def _run(model, h, w, channels=3):
    with torch.no_grad():
        return model.eval()(torch.randn(1, channels, h, w))


# ----------------------------------------------------------------------------- sample / mutate
@pytest.mark.parametrize("space", [MULTIRES, SMALL], ids=["default", "small"])
def test_sampled_archs_are_valid_and_run_on_odd_sizes(space):
    for seed in range(3):
        arch = space.sample(np.random.default_rng(seed))
        assert isinstance(arch, MultiResArch) and len(arch.branches) == 2
        assert arch.branches[0].last == space.num_scales - 1
        for b in arch.branches:
            assert all(b.scales[i + 1] - b.scales[i] in (0, 1) for i in range(len(b) - 1))
            assert not any(op == "skip" and not b.strided(i) for i, op in enumerate(b.ops))  # like the derivation
            assert len(b) >= space.min_cells(b.last)
        out = _run(space.build(arch, 5), 97, 131)
        assert out.shape == (1, 5, 97, 131)


def test_sampling_is_reproducible():
    a = MULTIRES.sample(np.random.default_rng(7))
    b = MULTIRES.sample(np.random.default_rng(7))
    assert a == b
    assert a != MULTIRES.sample(np.random.default_rng(8))


def test_mutations_are_valid_neighbours():
    rng = np.random.default_rng(0)
    arch = SMALL.sample(rng)
    for _ in range(25):
        child = SMALL.mutate(arch, rng)
        assert child != arch
        assert MultiResArch.from_dict(child.to_dict()) == child  # passes validation
        assert [b.last for b in child.branches] == [b.last for b in arch.branches]
        arch = child
    assert _run(SMALL.build(arch, 3), 45, 70).shape == (1, 3, 45, 70)


def test_shared_prefix_is_computed_once():
    ops = ("conv", "conv_2x", "conv_downup", "conv_2x_downup")
    a = Branch((0, 0, 1, 2), ops, (4, 4, 4))
    b = Branch((0, 0, 1, 1), ops, (4, 4, 4))
    arch = MultiResArch((a, b), layers=4, base_width=4)
    model = MULTIRES.build(arch, 3)
    # cells 0 and 1 shared (same op, same next scale, same width); cell 2 differs in stride; last cells never merge
    assert sorted(model.cells.keys()) == ["0_0", "1_0", "2_0", "2_1", "3_0", "3_1"]


# ------------------------------------------------------------------------------ arch format
def test_dict_and_json_file_round_trip(tmp_path):
    arch = MULTIRES.sample(np.random.default_rng(3))
    d = arch.to_dict()
    assert MULTIRES.arch_from_dict(json.loads(json.dumps(d))) == arch
    path = tmp_path / "arch.json"
    save_arch(path, MULTIRES, arch)
    data = read_arch_file(path)
    assert data["space"] == "multires" and get_space("multires") is MULTIRES
    torch.manual_seed(0)
    a = build_from_arch(data, 4)
    torch.manual_seed(0)
    b = MULTIRES.build(arch, 4)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _good() -> dict:
    return {"layers": 4, "branches": [{"scales": [0, 0, 1], "ops": ["conv", "skip", "conv_2x"], "widths": [1, 2]}]}


@pytest.mark.parametrize("edit,field", [
    (lambda d: d.pop("branches"), "branches"),
    (lambda d: d.update(colour=1), "colour"),
    (lambda d: d["branches"][0]["ops"].__setitem__(1, "conv9"), "branches[0].ops[1]"),
    (lambda d: d["branches"][0].update(kind="x"), "branches[0].kind"),
    (lambda d: d["branches"][0].pop("widths"), "branches[0].widths"),
    (lambda d: d["branches"].__setitem__(0, "conv"), "branches[0]"),
    (lambda d: d["branches"][0].update(widths=[1]), "branches[0].widths"),
    (lambda d: d["branches"][0].update(widths=[1, 9]), "branches[0].widths[1]"),
    (lambda d: d["branches"][0].update(scales=[0, 1, 3]), "branches[0].scales[2]"),
    (lambda d: d["branches"][0].update(scales=[1, 1, 1]), "branches[0].scales[0]"),
    (lambda d: d["branches"][0].update(scales=[0, 0, "1"]), "branches[0].scales[2]"),
    (lambda d: d.update(layers=2), "branches[0].ops"),
    (lambda d: d.update(base_width=1.5), "base_width"),
    (lambda d: d.update(width_ratios=[]), "width_ratios"),
    (lambda d: d["branches"].append(dict(d["branches"][0])), "branches"),
])
def test_malformed_dicts_name_the_field(edit, field):
    d = _good()
    MultiResArch.from_dict(d)
    edit(d)
    with pytest.raises(SegnasError) as err:
        MultiResArch.from_dict(d)
    assert repr(field) in str(err.value), str(err.value)


# ---------------------------------------------------------------------------------- network
def test_train_mode_aux_heads_and_backward():
    arch = SMALL.sample(np.random.default_rng(1))
    model = SMALL.build(arch, 5).train()
    assert len(model.aux_heads) == 2  # 1/16 and 1/32
    out = model(torch.randn(2, 3, 45, 70))
    assert set(out) == {"out", "aux"} and len(out["aux"]) == 2
    assert out["out"].shape == (2, 5, 45, 70) and all(a.shape == (2, 5, 45, 70) for a in out["aux"])
    (out["out"].mean() + sum(a.mean() for a in out["aux"])).backward()
    assert count_parameters(model, deploy=False) > count_parameters(model)
    assert isinstance(_run(model, 45, 70), torch.Tensor)


@pytest.mark.parametrize("seed", [0, 1])
def test_latency_keys_cover_every_eval_piece(seed):
    """Each key is the piece the network really runs: same input shape as the module sees in a
    forward pass (after padding), same output, and together the same parameters and FLOPs."""
    arch = SMALL.sample(np.random.default_rng(seed))
    torch.manual_seed(0)
    model = SMALL.build(arch, 5).eval()
    h, w = 97, 131
    keys = SMALL.latency_keys(arch, 5, (h, w))
    assert len(keys) == len(model.pieces)
    assert (keys[0].h, keys[0].w) == (128, 160)  # padded to a multiple of 32
    seen = []
    hooks = [model.get_submodule(p.name).register_forward_hook(
        lambda m, inp, out, name=p.name: seen.append((name, tuple(inp[0].shape), tuple(out.shape))))
        for p in model.pieces]
    _run(model, h, w)
    for hk in hooks:
        hk.remove()
    assert [name for name, _, _ in seen] == [p.name for p in model.pieces]
    for key, (name, in_shape, out_shape) in zip(keys, seen):
        assert key.input_shape == in_shape, name
        with torch.no_grad():
            assert tuple(key.build().eval()(torch.zeros(key.input_shape)).shape) == out_shape, name
    assert sum(count_parameters(k.build()) for k in keys) == count_parameters(model)
    total = count_flops(model, (1, 3, h, w)).gmacs
    assert sum(count_flops(k.build(), k.input_shape).gmacs for k in keys) == pytest.approx(total, rel=1e-9)


def test_onnx_export_matches_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    arch = SMALL.sample(np.random.default_rng(5))
    torch.manual_seed(0)
    model = SMALL.build(arch, 5).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 64, 96)
    path = tmp_path / "multires.onnx"
    torch.onnx.export(model, x, str(path), dynamo=False, opset_version=17, input_names=["x"], output_names=["y"])
    with torch.no_grad():
        expected = model(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    assert got.shape == expected.shape == (1, 5, 64, 96)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- official import
# Expected structures, derived from the official code and the released files: the official
# network_metas / betas2path / path2widths / alphas2ops_path_width (train/model_seg.py) were
# transcribed line by line into a throw-away script (not part of segnas) and run on arch_0.pt and
# arch_1.pt, and the results checked against a reading of the code:
# - train.py keeps branches [2, 0] if objective(mIoU02, latency02) > objective(mIoU12, latency12)
#   else [2, 1], objective = mIoU·(latency/8.3)^-0.07; both files hold mIoU02 = 0.0275,
#   latency02 = 6.26, mIoU12 = 0.0623, latency12 = 6.41 → 0.0281 < 0.0635 → [2, 1] (1/32 + 1/16).
# - teacher (arch 0): ignore_skip=True (no skip anywhere), ratio tensors have one column → every
#   width 1.0; stem/head width (1, 1) (config_train.py). Student (arch 1): widths from ratio argmax
#   over {4,6,8,10,12}/12, stem/head width (8/12, 8/12).
# - α and β are edited in place across the three network_metas calls (last = 0, 1, 2): β is
#   softmaxed once more per call and skip α set to -inf carry over; both reproduced.
D, D2, C2 = "conv_downup", "conv_2x_downup", "conv_2x"
OFFICIAL = {
    0: dict(stem_width=1.0, head_width=1.0, branches=[
        # 1/32 branch: down after cells 5 and 13
        ([0] * 6 + [1] * 8 + [2] * 2, [D] + [D2] * 6 + [D] + [D2] * 6 + [C2, C2], [4] * 15),
        # 1/16 branch: down after cell 4
        ([0] * 5 + [1] * 11, [D] + [D2] * 4 + [C2, D2, D] + [D2] * 8, [4] * 15),
    ], shared_cells=4, params=22_115_203),
    1: dict(stem_width=8 / 12, head_width=8 / 12, branches=[
        ([0] * 4 + [1] * 4 + [2] * 2, [C2, C2, D2, D] + [D2] * 6, [0, 0, 0, 2, 0, 0, 0, 0, 0]),
        ([0] * 6 + [1] * 3, [C2, C2, D2, D2, C2, C2, D2, D2, D2], [0, 0, 0, 0, 0, 0, 0, 4]),
    ], shared_cells=3, params=3_421_875),
}
# Student cells as the official get_branch_groups_cells builds them: (layer, branches, cin, cout, stride).
STUDENT_CELLS = [
    (0, "1/32+1/16", 64, 32, 1), (1, "1/32+1/16", 32, 32, 1), (2, "1/32+1/16", 32, 32, 1),
    (3, "1/32", 32, 128, 2), (3, "1/16", 32, 32, 1), (4, "1/32", 128, 64, 1), (4, "1/16", 32, 32, 1),
    (5, "1/32", 64, 64, 1), (5, "1/16", 32, 64, 2), (6, "1/32", 64, 64, 1), (6, "1/16", 64, 64, 1),
    (7, "1/32", 64, 128, 2), (7, "1/16", 64, 192, 1), (8, "1/32", 128, 128, 1), (8, "1/16", 192, 128, 1),
    (9, "1/32", 128, 256, 1),
]


@needs_official
@pytest.mark.parametrize("idx", [0, 1], ids=["teacher", "student"])
def test_official_import_reproduces_official_structure(idx):
    arch = import_official(_official_dir() / f"arch_{idx}.pt")
    exp = OFFICIAL[idx]
    assert (arch.layers, arch.num_scales, arch.base_width) == (16, 3, 12)
    assert arch.stem_width == pytest.approx(exp["stem_width"]) and arch.head_width == pytest.approx(exp["head_width"])
    assert [b.last for b in arch.branches] == [2, 1]
    for b, (scales, ops, widths) in zip(arch.branches, exp["branches"]):
        assert list(b.scales) == scales and list(b.ops) == ops and list(b.widths) == widths
    model = MULTIRES.build(arch, 19)
    n_cells = sum(len(b) for b in arch.branches) - exp["shared_cells"]
    assert len(model.cells) == n_cells
    params = count_parameters(model)
    print(f"official arch_{idx}: {params:,} parameters (deployed), "
          f"{count_parameters(model, deploy=False):,} with aux heads")
    assert params == exp["params"]
    if idx == 1:
        rows = [(r["layer"], r["branch"], r["cin"], r["cout"], r["stride"])
                for r in structure_rows(arch, 19) if r["part"] == "cell"]
        assert rows == STUDENT_CELLS
        # FLOPs scale exactly with the pixel count here: 256x512 × 16 = 1024x2048
        gmacs = count_flops(model, (1, 3, 256, 512)).gmacs * 16
        print(f"official student at 1024x2048: {gmacs:.2f} GMACs")
        assert gmacs == pytest.approx(27.99, abs=0.01)
        assert _run(model, 97, 131).shape == (1, 19, 97, 131)


@needs_official
def test_official_summary_table():
    text = summarize(import_official(_official_dir() / "arch_1.pt"), 19, (1024, 2048), flops=False)
    assert "conv_2x_downup" in text and "3,421,875" in text and "1/32+1/16" in text


def test_import_official_errors(tmp_path):
    with pytest.raises(SegnasError, match="not found"):
        import_official(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"alpha_1_0": torch.zeros(16, 5)}, bad)
    with pytest.raises(SegnasError, match="alpha_1_1"):
        import_official(bad)
