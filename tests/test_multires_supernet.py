"""FasterSeg's co-search supernet for the ``multires`` space: slimmable layers, forward in every width
mode and arch, gradients to α/β/γ from the loss and from the expected latency, the decoupled latency
terms, and the official derivation on the supernet's parameters."""

import pytest
import torch
from torch import nn

from segnas.cost.table import LatencyTable
from segnas.errors import SegnasError
from segnas.nn.ops import OPS, OpKey
from segnas.nn.slimmable import (
    SlimmableConv2d,
    SlimmableConvBNReLU,
    SlimmableLayers,
    SlimmableOp,
    SwitchableBatchNorm2d,
)
from segnas.spaces.multires import CELL_OPS, MULTIRES, Branch, MultiResArch, MultiResSpace
from segnas.spaces.multires.supernet import ARCH_GROUPS, HEADS, WIDTH_MODES, MultiResSupernet

RATIOS = (0.5, 1.0)
SIZE = (64, 96)


def _supernet(layers: int = 6, input_size=(128, 192)) -> MultiResSupernet:
    torch.manual_seed(0)
    return MultiResSupernet(4, input_size, layers=layers, base_width=4, width_ratios=RATIOS,
                            stem_head_widths=[(1.0, 1.0), (0.5, 0.5)])


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return LatencyTable("eager", threads=1, path=tmp_path_factory.mktemp("lat") / "table.json",
                        min_runs=3, min_time_s=0.0)


def _randomize_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


# ------------------------------------------------------------------------------ slimmable layers
def test_slimmable_conv_at_a_width_is_the_plain_conv_with_sliced_weights():
    torch.manual_seed(0)
    slim = SlimmableConv2d(8, 12, 3, stride=2, padding=1, bias=True)
    x = torch.randn(2, 5, 9, 11)
    for set_width in (lambda: slim.set_channels(5, 7), lambda: slim.set_ratio((5 / 8, 7 / 12))):
        set_width()
        plain = nn.Conv2d(5, 7, 3, stride=2, padding=1, bias=True)
        plain.weight.data.copy_(slim.weight[:7, :5])
        plain.bias.data.copy_(slim.bias[:7])
        torch.testing.assert_close(slim(x), plain(x))
    slim.set_channels(8, 12)
    full = nn.Conv2d(8, 12, 3, stride=2, padding=1)
    full.load_state_dict(slim.state_dict())
    x = torch.randn(1, 8, 9, 11)
    torch.testing.assert_close(slim(x), full(x))
    with pytest.raises(SegnasError, match="channels"):
        slim(torch.randn(1, 5, 9, 11))
    with pytest.raises(SegnasError):
        slim.set_channels(9, 12)


def test_switchable_batchnorm_keeps_one_batchnorm_per_width():
    bn = SwitchableBatchNorm2d([4, 8])
    unit = SlimmableConvBNReLU(6, 8, 3, out_widths=[4, 8])
    unit.set_ratio((0.5, 0.5))
    assert unit[0].active == (3, 4) and unit[1].active == 4
    unit.train()(torch.randn(2, 3, 5, 5))
    assert unit[1].bns[0].num_batches_tracked == 1 and unit[1].bns[1].num_batches_tracked == 0
    with pytest.raises(SegnasError, match="no BatchNorm"):
        bn.set_channels(5, 5)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("op", CELL_OPS)
def test_slimmable_op_is_the_plain_op_of_its_latency_key(op, stride):
    """The supernet's operator at a width computes exactly the plain operator that the latency table
    measures for that width (``OpKey.build()``), given the sliced weights and the width's BatchNorm."""
    torch.manual_seed(0)
    slim = SlimmableOp(OPS[op](8, 16, stride=stride, layers=SlimmableLayers(RATIOS)))
    cin, cout = 4, 8
    slim.set_channels(cin, cout)
    _randomize_bn(slim)
    plain = OpKey(op, cin, cout, 8, 12, stride).build()
    for name, m in plain.named_modules():
        twin = slim.op.get_submodule(name) if name else slim.op
        if isinstance(m, nn.Conv2d):
            assert isinstance(twin, SlimmableConv2d)
            m.weight.data.copy_(twin.weight[:m.out_channels, :m.in_channels])
        elif isinstance(m, nn.BatchNorm2d):
            assert isinstance(twin, SwitchableBatchNorm2d) and twin.active == m.num_features
            m.load_state_dict(twin.bns[twin.widths.index(m.num_features)].state_dict())
    x = torch.randn(2, cin, 8, 12)
    with torch.no_grad():
        torch.testing.assert_close(slim.eval()(x), plain.eval()(x))


# ------------------------------------------------------------------------------------ supernet
def test_parameter_shapes_and_groups():
    sn = _supernet()
    L, n = 6, len(RATIOS)
    shapes = {0: [(L, 5), (L - 1, 5), (L - 2, 5), (L - 2, 2), (L - 3, 2), (L - 1, 1), (L - 1, 1), (L - 2, 1)],
              1: [(L, 5), (L - 1, 5), (L - 2, 5), (L - 2, 2), (L - 3, 2), (L - 1, n), (L - 1, n), (L - 2, n)]}
    arch_ids = set()
    for a, expected in shapes.items():
        params = list(sn.arch_parameters(a))
        assert [tuple(p.shape) for p in params] == expected
        arch_ids |= {id(p) for p in params}
    weights = {id(p) for p in sn.weight_parameters()}
    assert not weights & arch_ids and weights | arch_ids == {id(p) for p in sn.parameters()}
    # own stems and heads per arch, shared cells
    assert len(sn.stems) == len(sn.heads) == 2
    assert sn.stems[0][0][0].out_channels != sn.stems[1][0][0].out_channels  # stem widths 1 and 0.5


@pytest.mark.parametrize("mode", WIDTH_MODES)
def test_forward_backward_every_width_mode_and_arch(mode):
    sn = _supernet()
    sn.set_width_mode(mode)
    x = torch.randn(2, 3, 61, 90)  # not a multiple of 32: padded and cropped
    for a in (0, 1):
        sn.zero_grad()
        out = sn.train()(x, a)
        assert out["out"].shape == (2, 4, 61, 90) and len(out["aux"]) == len(HEADS) - 1
        assert all(t.shape == (2, 4, 61, 90) for t in out["aux"])
        loss = out["out"].logsumexp(1).mean() + sum(t.logsumexp(1).mean() for t in out["aux"])
        loss.backward()
        for p in list(sn.alphas(a)) + list(sn.betas(a)):
            assert p.grad is not None and p.grad.abs().sum() > 0
        gumbel_student = a == 1 and mode == "gumbel"
        for p in sn.gammas(a):  # widths only learn through the straight-through Gumbel scores
            assert (p.grad is not None and p.grad.abs().sum() > 0) if gumbel_student else p.grad is None
        other = 1 - a  # the other arch's parameters, stem and heads are not used
        assert all(p.grad is None for p in sn.arch_parameters(other))
        assert all(p.grad is None for p in sn.stems[other].parameters())
    with torch.no_grad():
        assert sn.eval()(x, 1).shape == (2, 4, 61, 90)
        assert set(sn.forward_all(x, 0)) == set(HEADS)


def test_teacher_ignores_width_mode_and_runs_at_max_width():
    sn = _supernet().eval()
    x = torch.randn(1, 3, *SIZE)
    outs = {}
    for mode in ("max", "min"):
        sn.set_width_mode(mode)
        with torch.no_grad():
            outs[mode] = (sn(x, 0), sn(x, 1))
        # the middle cells' convolutions of the last call ran at the width the mode asks for
        active = sn.cells[2][0].keep.ops[1].op[0][0].active
        assert active == ((32, 32) if mode == "max" else (16, 16))
        with torch.no_grad():
            sn(x, 0)
        assert sn.cells[2][0].keep.ops[1].op[0][0].active == (32, 32)  # the teacher: always the max
    torch.testing.assert_close(outs["max"][0], outs["min"][0])
    assert not torch.allclose(outs["max"][1], outs["min"][1])


def test_errors_name_the_setting():
    sn = _supernet()
    with pytest.raises(SegnasError, match="width mode"):
        sn.set_width_mode("widest")
    with pytest.raises(SegnasError, match="arch_index"):
        sn(torch.randn(1, 3, *SIZE), 2)
    with pytest.raises(SegnasError, match="num_scales"):
        MultiResSupernet(4, SIZE, layers=6, num_scales=2, base_width=4)
    with pytest.raises(SegnasError, match="layers"):
        MultiResSupernet(4, SIZE, layers=4, base_width=4)
    with pytest.raises(SegnasError, match="width_ratios"):
        MultiResSupernet(4, SIZE, layers=6, base_width=4, width_ratios=(0.5, 1.5))
    with pytest.raises(SegnasError, match="fix"):
        sn.expected_latency(1, None, fix=("delta",))


def test_space_builds_its_supernet():
    sn = MultiResSpace(layers=5, base_width=4, width_ratios=RATIOS).supernet(3, SIZE)
    assert isinstance(sn, MultiResSupernet) and sn.layers == 5 and sn.width_ratios == RATIOS


# ------------------------------------------------------------------------------------ latency
def test_latency_keys_cover_expected_latency_and_terms(table):
    sn = _supernet()
    for a in (0, 1):
        keys = sn.latency_keys(a)
        assert keys and all(isinstance(k, OpKey) for k in keys)
        table.ensure(keys, progress=False)
        before = len(table)
        sn.expected_latency(a, table)
        sn.latency_terms(a, table)
        assert len(table) == before  # nothing looked up outside latency_keys
    ops = {k.op for k in sn.latency_keys(1)}
    assert {"conv_2x_downup", "conv_2x", "conv_downup", "conv", "skip", "conv_bn_relu"} <= ops
    # widths: the student's keys span all width ratios, the teacher's only the max
    assert len(sn.latency_keys(1)) > len(sn.latency_keys(0))


def test_expected_latency_gradients_and_descent(table):
    sn = _supernet()
    lat = sn.expected_latency(1, table)
    assert lat.ndim == 0 and lat.item() > 0
    params = list(sn.arch_parameters(1))
    grads = torch.autograd.grad(lat, params, allow_unused=True)
    for group, sl in (("alpha", slice(0, 3)), ("beta", slice(3, 5)), ("gamma", slice(5, 8))):
        assert all(g is not None for g in grads[sl]), group
        assert sum(g.abs().sum() for g in grads[sl]) > 0, group
    # a few Adam steps on the arch parameters minimizing the expected latency reduce it
    opt = torch.optim.Adam(params, lr=0.05)
    values = []
    for _ in range(6):
        opt.zero_grad()
        lat = sn.expected_latency(1, table)
        values.append(lat.item())
        lat.backward()
        opt.step()
    assert sn.expected_latency(1, table).item() < values[0]
    # the teacher never changes width: holding γ fixed changes nothing
    assert sn.expected_latency(0, table).item() == pytest.approx(sn.expected_latency(0, table, fix=["gamma"]).item())


def test_decoupled_terms_are_each_differentiable_only_in_their_own_group(table):
    sn = _supernet()
    with torch.no_grad():  # away from uniform, so the fixed groups matter
        for p in sn.arch_parameters(1):
            p.normal_(0, 1)
    terms = sn.latency_terms(1, table)
    assert len(terms) == 3
    groups = {"alpha": sn.alphas(1), "beta": sn.betas(1), "gamma": sn.gammas(1)}
    for term, own in zip(terms, ARCH_GROUPS):
        for group, params in groups.items():
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            if group == own:
                assert sum(g.abs().sum() for g in grads if g is not None) > 0, (own, group)
            else:
                assert all(g is None for g in grads), (own, group)
    full = sn.expected_latency(1, table)
    assert len({round(t.item(), 6) for t in (*terms, full)}) > 1
    loss = sn.latency_loss(1, table)
    loss.backward()
    assert all(p.grad is not None for p in sn.arch_parameters(1))


# ---------------------------------------------------------------------------------- derivation
def test_derived_arch_builds_runs_and_exports(tmp_path, table):
    sn = _supernet()
    with torch.no_grad():
        for p in sn.arch_parameters(1):
            p.normal_(0, 1)
    for a in (0, 1):
        arch = sn.derive(a, latency_fn=lambda arch: sn.derived_latency(arch, table))
        assert isinstance(arch, MultiResArch) and MultiResArch.from_dict(arch.to_dict()) == arch
        assert sorted(b.last for b in arch.branches) in ([0, 2], [1, 2])
        model = MULTIRES.build(arch, 4).eval()
        x = torch.randn(1, 3, *SIZE)
        with torch.no_grad():
            assert model(x).shape == (1, 4, *SIZE)
        path = tmp_path / f"derived{a}.onnx"
        torch.onnx.export(model, x, str(path), dynamo=False, opset_version=17)
        assert path.stat().st_size > 0


L9 = 9
# Official betas2path: the 1/32 path takes the best β1[i]·β2[j] and strides after cells i+1 and j+2;
# the 1/16 path takes the best β1[r] (r in 1..L-4) and strides after cell r (not r+1).
PATH32 = (0, 0, 0, 0, 1, 1, 1, 2, 2)  # β1 row 2, β2 row 4: strided after cells 3 and 6
PATH16 = (0, 0, 0, 1, 1, 1, 1, 1, 1)  # β1 row 2: strided after cell 2
PATH8 = (0,) * L9


def _favour(sn: MultiResSupernet, a: int) -> None:
    """α: operator 1 + (layer + scale) % 4 everywhere, but a skip (then conv) at layer 3 on 1/8;
    β: from the finer scale at β1 row 2 and β2 row 4 only; γ: width index scale % 2."""
    with torch.no_grad():
        for s, alpha in enumerate(sn.alphas(a)):
            alpha.fill_(-5.0)
            for row in range(alpha.shape[0]):
                alpha[row, 1 + (row + 2 * s) % 4] = 5.0
        sn.alphas(a)[0][3] = torch.tensor([5.0, 2.0, -5.0, -5.0, -5.0])
        for beta, row in zip(sn.betas(a), (2, 4)):
            beta[:, 0], beta[:, 1] = -5.0, 5.0
            beta[row] = torch.tensor([5.0, -5.0])
        for s, gamma in enumerate(sn.gammas(a)):
            gamma.fill_(-5.0)
            gamma[:, (s % 2) if gamma.shape[1] > 1 else 0] = 5.0


def _expected_branch(path, teacher: bool, drop=()) -> Branch:
    """Official rules: a non-strided skip is removed (within the depth budget); any other skip,
    and every skip of the teacher, falls back to the second-best operator."""
    keep = [i for i in range(len(path)) if i not in drop]
    ops = ["conv" if i == 3 and path[i] == 0 else CELL_OPS[1 + (i + path[i]) % 4] for i in keep]
    widths = [1 if teacher else path[i + 1] % 2 for i in keep[:-1]]
    return Branch(tuple(path[i] for i in keep), tuple(ops), tuple(widths))


@pytest.mark.parametrize("a", [0, 1], ids=["teacher", "student"])
def test_strongly_favoured_structure_is_derived(a):
    sn = _supernet(layers=L9)
    _favour(sn, a)
    teacher = a == 0
    cands = sn.candidates(a)
    b32 = _expected_branch(PATH32, teacher)
    assert cands["12"].branches == (b32, _expected_branch(PATH16, teacher))
    # on the 1/8-only path, cell 3 is a plain (non-strided) skip: removed (the teacher keeps no skip)
    assert cands["02"].branches == (b32, _expected_branch(PATH8, teacher, drop=() if teacher else (3,)))
    assert (cands["12"].stem_width, cands["12"].head_width) == ((1.0, 1.0) if teacher else (0.5, 0.5))
    # the branch pair by the accuracy-latency objective
    assert sn.derive(a) == cands["12"]  # tie: 1/32 + 1/16
    assert sn.derive(a, mious={"02": 0.6, "12": 0.5}) == cands["02"]
    slow02 = lambda arch: 100.0 if arch == cands["02"] else 1.0  # noqa: E731
    assert sn.derive(a, latency_fn=slow02, mious={"02": 0.6, "12": 0.5}) == cands["12"]
    for arch in cands.values():
        assert MULTIRES.build(arch, 4) is not None


def test_the_plain_and_the_slimmable_layers_are_both_layer_kits():
    """Operators are built from either kit (``nn.ops.LayerKit``): both have every member of it."""
    from segnas.nn.ops import PLAIN, LayerKit
    from segnas.nn.slimmable import SlimmableLayers

    for kit in (PLAIN, SlimmableLayers([1.0, 0.5])):
        assert isinstance(kit, LayerKit), type(kit).__name__
    assert not PLAIN.slimmable and SlimmableLayers([1.0]).slimmable
