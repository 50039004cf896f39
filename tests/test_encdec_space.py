"""The ``encdec`` space (auxiliary-cell RL search): the decision sequence, the contextual cell's
encoding and operators, the network (odd sizes, auxiliary cells in training only, decoder on cached
features), export without the auxiliary cells, latency keys, encoder weights and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segnas.cost import count_flops, count_parameters
from segnas.cost.export import check_parity, export_onnx
from segnas.cost.latency_model import LatencyModel
from segnas.engine.checkpoint import save_checkpoint
from segnas.errors import SegnasError
from segnas.spaces import DecisionSpace, build_from_arch, get_space
from segnas.spaces.encdec import (OP_NAMES, Cell, CellLayer, ContextualCell, EncDecArch, EncDecSpace, EncoderSegmenter,
                                  save_encoder_weights)
from segnas.spaces.encdec.network import op_key, plan_network

TINY = dict(encoder_width=0.35, width=8)
SPACE = EncDecSpace(**TINY)
CLASSES = 5
H, W = 65, 97


def tiny_arch(seed: int = 0, space: EncDecSpace = SPACE) -> EncDecArch:
    return space.sample(np.random.default_rng(seed), spread=True)


def run(model, h: int = H, w: int = W, batch: int = 1):
    with torch.no_grad():
        return model(torch.randn(batch, 3, h, w))


# ------------------------------------------------------------------------------------ decisions
def test_is_a_decision_space_whose_sizes_follow_the_pool_growth():
    assert isinstance(SPACE, DecisionSpace)
    n = len(OP_NAMES)
    assert n == 11
    # blocks read from the 4 encoder outputs + the earlier blocks; layer l from 3l - 1 cell states
    assert SPACE.decision_sizes() == [4, 4, 5, 5, 6, 6, n, 2, 2, n, n, 5, 5, n, n, 8, 8, n, n]
    names = SPACE.decision_names()
    assert len(names) == len(set(names)) == 19 and names[0] == "block0.input0" and names[6] == "cell.first"
    other = EncDecSpace(**TINY, blocks=2, cell_layers=3)
    assert other.decision_sizes() == [4, 4, 5, 5, n, 2, 2, n, n, 5, 5, n, n]


def test_decisions_round_trip_and_every_value_is_valid():
    rng = np.random.default_rng(0)
    sizes = SPACE.decision_sizes()
    for seed in range(20):
        arch = tiny_arch(seed)
        values = SPACE.to_decisions(arch)
        assert len(values) == len(sizes) and all(0 <= v < s for v, s in zip(values, sizes))
        assert SPACE.from_decisions(values) == arch
        random_values = [int(rng.integers(s)) for s in sizes]
        assert SPACE.to_decisions(SPACE.from_decisions(random_values)) == random_values
    largest = SPACE.from_decisions([s - 1 for s in sizes])  # the last choice of every position is valid
    assert largest.blocks == ((3, 3), (4, 4), (5, 5)) and largest.cell.layers[-1].inputs == (7, 7)
    for i, size in enumerate(sizes):
        bad = [0] * len(sizes)
        bad[i] = size
        with pytest.raises(SegnasError, match=SPACE.decision_names()[i].replace(".", r"\.")):
            SPACE.from_decisions(bad)
    with pytest.raises(SegnasError, match="19 values"):
        SPACE.from_decisions([0] * 18)


def test_mutation_changes_exactly_one_decision():
    rng = np.random.default_rng(1)
    arch = tiny_arch(3)
    for _ in range(20):
        new = SPACE.mutate(arch, rng)
        diff = [a != b for a, b in zip(SPACE.to_decisions(arch), SPACE.to_decisions(new))]
        assert sum(diff) == 1
        arch = new


# ------------------------------------------------------------------------------------ the cell
def test_cell_encoding_reads_states_and_sums_the_loose_ends():
    """States: 0 input, 1 first op, layer l: branches 3l-1, 3l and their sum 3l+1; the output sums the
    states no later layer reads."""
    x = torch.randn(1, 4, 5, 6)

    def cell(first, *layers):
        return ContextualCell(Cell(first, tuple(CellLayer(i, o) for i, o in layers)), 4).eval()

    skip2 = ("skip", "skip")
    # layer 1 reads 0 and 1 (2x), layer 2 reads 4 and 0 with a none branch (2x), layer 3 reads 7 twice (4x)
    assert torch.equal(cell("skip", ((0, 1), skip2), ((4, 0), ("skip", "none")), ((7, 7), skip2))(x), 4 * x)
    # nothing reads state 1 nor 4: output = x (state 1) + 2x (state 4) + 4x (state 7) ... layer 3 reads 5, 6
    out = cell("skip", ((0, 0), skip2), ((0, 0), skip2), ((5, 6), skip2))(x)
    assert torch.allclose(out, x + 2 * x + 4 * x)
    # every branch none: zero everywhere, also through skips of zero states
    assert torch.equal(cell("none", ((1, 1), ("none", "skip")), ((4, 4), ("skip", "none")), ((7, 0), ("skip", "none")))(x),
                       torch.zeros_like(x))


def test_a_real_operator_on_a_zero_state_runs_on_zeros():
    """The official zero operator multiplies by 0, so an operator reading it sees zeros."""
    torch.manual_seed(0)
    c = ContextualCell(Cell("none", (CellLayer((1, 1), ("conv3x3", "none")), CellLayer((0, 0), ("none", "none")),
                                      CellLayer((0, 0), ("none", "none")))), 4).eval()
    x = torch.randn(1, 4, 5, 6)
    conv = c.ops["2"]
    with torch.no_grad():
        conv[1].running_mean.fill_(-1.0)  # conv(0) = 0, BN(0) = ReLU(+1·γ/σ): not zero
        assert torch.allclose(c(x), conv(torch.zeros_like(x))) and c(x).abs().sum() > 0


def test_a_cell_is_defective_exactly_when_its_output_ignores_where_the_pixels_are():
    """``defect`` against the network itself: a cell that carries the image pixel by pixel gives
    another output when the input's pixels are shuffled; one cut off by ``none`` or reduced by
    ``gap`` gives the same (global pooling does not see the order). Draws include defective cells;
    ``sample`` and ``mutate`` never return one."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = torch.randn(1, 4, 8, 8)
    shuffled = x.flatten(2)[:, :, torch.randperm(64)].view_as(x)
    found = {True: 0, False: 0}
    for _ in range(200):
        arch = SPACE._draw(rng, spread=True)
        cell = ContextualCell(arch.cell, 4).eval()
        with torch.no_grad():
            same = torch.allclose(cell(x), cell(shuffled), atol=1e-5)
        assert (SPACE.defect(arch) is not None) == same, arch.cell
        found[same] += 1
    assert found[True] >= 5 and found[False] >= 100
    for seed in range(200):
        arch = SPACE.sample(np.random.default_rng(seed), spread=True)
        assert SPACE.defect(arch) is None and SPACE.defect(SPACE.mutate(arch, rng)) is None
    cut = Cell("skip", (CellLayer((1, 1), ("none", "none")), CellLayer((3, 4), ("sep3x3", "conv3x3")),
                        CellLayer((5, 5), ("conv3x3", "gap"))))
    assert "does not depend on its input" in SPACE.defect(SPACE.make_arch(((1, 2), (1, 4), (2, 2)), cut))


@pytest.mark.parametrize("op", OP_NAMES)
def test_every_operator_builds_runs_and_is_a_latency_table_key(op):
    torch.manual_seed(0)
    layer = CellLayer((0, 1), (op, op))
    cell = ContextualCell(Cell(op, (layer, CellLayer((4, 2), (op, op)), CellLayer((7, 3), (op, op)))), 8)
    x = torch.randn(2, 8, 9, 11)
    out = cell.train()(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    if op == "none":
        assert len(cell.ops) == 0 and torch.equal(out, torch.zeros_like(x))
        return
    if op != "skip":  # the identity has no weights
        out.sum().backward()
        assert all(p.grad is not None for p in cell.parameters())
    key = op_key(op, 8)
    module = type(key)(key.op, key.cin, key.cout, 9, 11, key.stride, key.dilation, key.extra).build().eval()
    with torch.no_grad():
        assert module(torch.zeros(1, 8, 9, 11)).shape == (1, 8, 9, 11)


# ------------------------------------------------------------------------------------ network
def test_build_runs_at_odd_sizes_and_aux_cells_only_in_training():
    arch = tiny_arch(2)
    torch.manual_seed(0)
    plain = SPACE.build(arch, CLASSES)
    aux_space = EncDecSpace(**TINY, aux_cells=True)
    with_aux = aux_space.build(arch, CLASSES)
    assert len(plain.aux_heads) == 0 and len(with_aux.aux_heads) == len(arch.blocks) == 3
    out = run(plain.eval())
    assert isinstance(out, torch.Tensor) and out.shape == (1, CLASSES, H, W)
    assert isinstance(run(plain.train(), batch=2), torch.Tensor)  # no aux cells: a tensor in training too
    train_out = run(with_aux.train(), batch=2)
    assert set(train_out) == {"out", "aux"} and len(train_out["aux"]) == 3
    assert all(t.shape == (2, CLASSES, H, W) for t in [train_out["out"], *train_out["aux"]])
    eval_out = run(with_aux.eval())
    assert isinstance(eval_out, torch.Tensor) and eval_out.shape == (1, CLASSES, H, W)
    # the aux heads are training-only: not counted, same FLOPs as the plain network
    assert count_parameters(with_aux) == count_parameters(plain) < count_parameters(with_aux, deploy=False)
    assert count_flops(with_aux, (1, 3, H, W)).gmacs == count_flops(plain, (1, 3, H, W)).gmacs
    assert count_parameters(with_aux.without_aux(), deploy=False) == count_parameters(plain, deploy=False)


def test_forward_decoder_on_cached_features_matches_forward():
    arch = tiny_arch(4)
    torch.manual_seed(0)
    net = EncDecSpace(**TINY, aux_cells=True).build(arch, CLASSES).eval()
    x = torch.randn(1, 3, 64, 96)  # a padded size: the features are what forward computes
    with torch.no_grad():
        feats = net.encoder(x)
        assert [f.shape[-2:] for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]
        assert torch.allclose(net.forward_decoder(feats), net(x), atol=1e-6)
        assert net.forward_decoder(feats, size=(60, 90)).shape == (1, CLASSES, 60, 90)
        quarter, _ = net.decode(feats)  # what RL's stage 1 trains: the logits before the ×4 upsampling
        assert quarter.shape[-2:] == (16, 24) and torch.allclose(net.out(quarter), net(x), atol=1e-6)
    net.train()
    out = net.forward_decoder([f.expand(2, -1, -1, -1) for f in feats], size=(60, 90))
    assert out["out"].shape == (2, CLASSES, 60, 90) and [a.shape[-2:] for a in out["aux"]] == [(60, 90)] * 3
    loss = out["out"].mean() + sum(a.mean() for a in out["aux"])
    loss.backward()
    assert all(p.grad is None for p in net.encoder.parameters())  # cached features: the encoder is not trained
    assert any(p.grad is not None for p in net.aux_heads.parameters())


def test_onnx_export_has_no_aux_cells(tmp_path):
    onnx = pytest.importorskip("onnx")
    arch = tiny_arch(5)
    torch.manual_seed(0)
    net = EncDecSpace(**TINY, aux_cells=True).build(arch, CLASSES).eval()
    path = export_onnx(net, tmp_path / "encdec.onnx", (1, 3, H, W))
    assert check_parity(net, path, (1, 3, H, W)).ok
    graph = onnx.load(str(path)).graph
    assert not any("aux" in n.name for n in list(graph.node) + list(graph.initializer))
    # BatchNorms fold into the convolutions: compare convolution weights, the parameters that stay
    exported_convs = sum(int(np.prod(t.dims)) for t in graph.initializer if len(t.dims) == 4)
    plain_convs = sum(m.weight.numel() for m in net.without_aux().modules() if isinstance(m, torch.nn.Conv2d))
    assert exported_convs == plain_convs


def test_latency_keys_are_the_pieces_the_network_runs():
    """Each key is a module the eval network runs, with the input shape it sees; together they hold
    every parameter and every FLOP (so LatencyModel.predict costs the whole network)."""
    arch = tiny_arch(6)
    torch.manual_seed(0)
    net = EncDecSpace(**TINY, aux_cells=True).build(arch, CLASSES).eval()
    keys = SPACE.latency_keys(arch, CLASSES, (H, W))
    pieces = [p for p in plan_network(arch, CLASSES) if p.key(96, 128) in keys]
    assert len(pieces) == len(keys) and (keys[0].h, keys[0].w) == (96, 128)  # padded to a multiple of 32
    seen: dict[str, list] = {}
    hooks = [net.get_submodule(p.name).register_forward_hook(
        lambda m, inp, out, name=p.name: seen.setdefault(name, []).append(tuple(inp[0].shape))) for p in pieces]
    run(net)
    for hk in hooks:
        hk.remove()
    for piece, key in zip(pieces, keys):
        assert seen.get(piece.name) == [key.input_shape], piece.name  # run once, on the key's input
    assert sum(count_parameters(k.build()) for k in keys) == count_parameters(net)
    names = {p.name for p in pieces}
    convs = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d) and not n.startswith("aux_heads")]
    assert convs and all(any(n == p or n.startswith(p + ".") for p in names) for n in convs)
    total = count_flops(net, (1, 3, H, W)).gmacs
    assert sum(count_flops(k.build(), k.input_shape).gmacs for k in keys) == pytest.approx(total, rel=1e-9)

    class Table:  # made-up costs: the latency model only needs lookups
        def ensure(self, keys, progress=True):
            return 0

        def lookup(self, key, save=True):
            return 1e-6 * key.cin * key.cout * key.h * key.w

        def call_overhead(self, shape):
            return 0.5

    predicted = LatencyModel(Table(), (H, W)).predict(SPACE, arch, CLASSES)
    assert predicted == pytest.approx(0.5 + sum(Table().lookup(k) for k in keys))


# ------------------------------------------------------------------------------------ encoder weights
def test_encoder_weights_load_from_an_encoder_file_or_a_segmenter_checkpoint(tmp_path):
    arch = tiny_arch(7)
    torch.manual_seed(1)
    source = SPACE.build(arch, CLASSES)
    save_encoder_weights(source.encoder, tmp_path / "enc.pt")
    loaded = EncDecSpace(**TINY, encoder_weights=str(tmp_path / "enc.pt")).build(arch, CLASSES)
    fresh = SPACE.build(arch, CLASSES)
    ref = source.encoder.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.encoder.state_dict().items())
    assert not all(torch.equal(v, ref[k]) for k, v in fresh.encoder.state_dict().items())
    # a training checkpoint of the zoo segmenter that pre-trains the encoder
    seg = EncoderSegmenter(CLASSES, width=TINY["encoder_width"])
    save_checkpoint(tmp_path / "best.pt", {"model": seg.state_dict(), "model_spec": {"kind": "zoo"}})
    from_seg = EncDecSpace(**TINY, encoder_weights=str(tmp_path / "best.pt")).build(arch, CLASSES)
    assert all(torch.equal(v, seg.encoder.state_dict()[k]) for k, v in from_seg.encoder.state_dict().items())
    # the arch file stays self-describing: no path in it
    assert "encoder_weights" not in json.dumps(arch.to_dict())


def test_encoder_weights_errors_name_the_file(tmp_path):
    arch = tiny_arch(7)
    with pytest.raises(SegnasError, match="encoder_weights.*nope.pt.*not found"):
        EncDecSpace(**TINY, encoder_weights=str(tmp_path / "nope.pt"))
    wider = EncDecSpace(encoder_width=0.5, width=8).build(EncDecSpace(encoder_width=0.5, width=8).sample(
        np.random.default_rng(0)), CLASSES)
    save_encoder_weights(wider.encoder, tmp_path / "wide.pt")
    with pytest.raises(SegnasError, match=r"wide\.pt.*shape"):
        EncDecSpace(**TINY, encoder_weights=str(tmp_path / "wide.pt")).build(arch, CLASSES)
    torch.save({"head.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(SegnasError, match=r"other\.pt.*no tensor"):
        EncDecSpace(**TINY, encoder_weights=str(tmp_path / "other.pt")).build(arch, CLASSES)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(SegnasError, match=r"junk\.pt.*not a readable"):
        EncDecSpace(**TINY, encoder_weights=str(tmp_path / "junk.pt")).build(arch, CLASSES)


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("change,field", [
    (lambda d: d.pop("width"), "width"),
    (lambda d: d.update(encoder="resnet"), "encoder"),
    (lambda d: d.update(encoder_width="wide"), "encoder_width"),
    (lambda d: d.update(width=0), "width"),
    (lambda d: d["blocks"].__setitem__(1, [0, 5]), "blocks[1]"),
    (lambda d: d["blocks"].__setitem__(0, [0]), "blocks[0]"),
    (lambda d: d["blocks"].__setitem__(2, [0, True]), "blocks[2][1]"),
    (lambda d: d["cell"].update(first="conv7x7"), "cell.first"),
    (lambda d: d["cell"]["layers"][0].update(inputs=[0, 2]), "cell.layers[0].inputs"),
    (lambda d: d["cell"]["layers"][2]["ops"].__setitem__(1, "conv9"), "cell.layers[2].ops[1]"),
    (lambda d: d["cell"]["layers"].clear(), "cell.layers"),
    (lambda d: d["cell"].pop("first"), "cell"),
])
def test_arch_from_dict_errors_name_the_field(change, field):
    data = json.loads(json.dumps(tiny_arch(0).to_dict()))
    change(data)
    with pytest.raises(SegnasError, match=f"'{field}'".replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        SPACE.arch_from_dict(data)


def test_space_options_are_checked_and_arch_files_build_with_the_default_space(tmp_path):
    for bad, field in ((dict(width=0), "width"), (dict(cell_layers=1), "cell_layers"), (dict(encoder="vgg"), "encoder"),
                       (dict(encoder_width=0), "encoder_width"), (dict(blocks=2.5), "blocks")):
        with pytest.raises(SegnasError, match=field):
            EncDecSpace(**bad)
    arch = tiny_arch(8)
    net = build_from_arch(json.loads(json.dumps(SPACE.encode(arch))), CLASSES)  # the default space builds it
    assert count_parameters(net) == count_parameters(SPACE.build(arch, CLASSES))
    assert get_space("encdec").decision_sizes() == SPACE.decision_sizes()
    with pytest.raises(SegnasError, match="differ"):
        get_space("encdec").to_decisions(arch)  # another width: not a point of the default space
