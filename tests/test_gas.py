"""GAS on tiny settings: the ``cells`` space (arch files, export, derivation, expected latency), the
GCN-guided module, and the search job end to end (derive, train, determinism, resume, a start from
another run's pre-trained supernet). Latencies come from a FLOPs table (or a planted one), never
from timings, so that every latency-dependent decision is deterministic."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from segnas.cost import LatencyModel
from segnas.cost.export import check_parity, export_onnx
from segnas.cost.table import LatencyTable
from segnas.engine import load_checkpoint
from segnas.errors import SegnasError
from segnas.jobs.search import make_settings, search_job
from segnas.search.controllers.gcn import GCNGuide
from segnas.search.strategies.gas import GASSearch
from segnas.spaces import build_from_arch, read_arch_file
from segnas.spaces.cells import CellsArch, CellsSpace, Edge, cell_plans
from segnas.nn.segnet import padded_size
from segnas.spaces.cells.network import STAGE_STRIDES
from segnas.spaces.cells.supernet import edge_row

_spec = importlib.util.spec_from_file_location("make_search_pins",
                                               Path(__file__).parent / "data" / "make_search_pins.py")
pins = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pins)

SPACE_OPTIONS = {"layout": [1, 1, 1, 1], "channels": [4, 8, 8, 8], "nodes": 2, "stem_channels": 4, "decoder_width": 8}
SPACE = CellsSpace(**SPACE_OPTIONS)
CLASSES = 11


def flops_of(net, x) -> int:
    with FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops()


# ----------------------------------------------------------------------------------- the space
def every_op_arch(space: CellsSpace) -> CellsArch:
    """A network using every operator, on strided and plain edges."""
    ops = list(space.choices)
    cells, n = [], 0
    for _ in range(space.num_cells):
        nodes = []
        for i in range(space.nodes):
            nodes.append(tuple(Edge(ops[(n + m) % len(ops)], s) for m, s in enumerate((0, i + 1))))
            n += 2
        cells.append(tuple(nodes))
    return space.make_arch(cells)


def test_arch_files_round_trip_and_errors_name_the_field():
    arch = SPACE.sample(np.random.default_rng(0), spread=True)
    assert CellsArch.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
    cases = [(("cells", 0, 1, 0, "op"), "conv5x5", r"cells\[0\]\[1\]\[0\].op"),
             (("cells", 0, 1, 0, "op"), "none", r"cells\[0\]\[1\]\[0\].op.*zero operation"),
             (("cells", 1, 0, 1, "input"), 2, r"cells\[1\]\[0\]\[1\].input.*states 0..1"),
             (("channels", 0), 1, "channels"), (("decoder_strides",), [32, 8], "decoder_strides"),
             (("layout", 2), 0, "layout")]
    for path, value, match in cases:
        bad = arch.to_dict()
        node = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(SegnasError, match=match):
            CellsArch.from_dict(bad)
    with pytest.raises(SegnasError, match="'depth': unknown field"):
        CellsArch.from_dict({**arch.to_dict(), "depth": 3})
    with pytest.raises(SegnasError, match=r"cells\[0\].*2 nodes"):
        CellsArch.from_dict({**arch.to_dict(), "cells": [arch.to_dict()["cells"][0][:1]] + arch.to_dict()["cells"][1:]})
    with pytest.raises(SegnasError, match="ops"):
        CellsSpace(ops=("none",))


def test_layout_reductions_and_decoder_taps():
    plans = cell_plans(CellsSpace())  # default: (1, 2, 2, 2)
    assert [p.reduction for p in plans] == [False, True, False, True, False, True, False]
    assert [p.level for p in plans] == [2, 3, 3, 4, 4, 5, 5]
    assert plans[2].pre0.template.op == "skip" and plans[2].pre0.template.stride == 2  # after a reduction
    assert plans[1].edge(0, 0, "sep3x3").template.stride == 2 and plans[1].edge(1, 2, "sep3x3").template.stride == 1
    no_quarter = cell_plans(CellsSpace(layout=(0, 1, 1, 1)))
    assert no_quarter[0].reduction and no_quarter[0].pre0.level == 2


def test_derived_network_exports_to_onnx_with_parity_on_odd_sizes(tmp_path):
    space = CellsSpace(**{**SPACE_OPTIONS, "ops": ("none", "skip", "conv3x3", "sep3x3", "dil2_sep3x3", "dil4_sep3x3",
                                                   "dil8_sep3x3", "avg_pool3x3", "max_pool3x3")})
    arch = every_op_arch(space)
    assert {e.op for c in arch.cells for n in c for e in n} == set(space.choices)
    net = build_from_arch(space.encode(arch), CLASSES).eval()
    shape = (1, 3, 70, 90)
    path = export_onnx(net, tmp_path / "cells.onnx", shape)
    parity = check_parity(net, path, shape)
    assert parity.ok, parity
    with torch.no_grad():
        assert net(torch.randn(*shape)).shape == (1, CLASSES, 70, 90)
    # one latency key per operator that runs (identity skips run none)
    keys = space.latency_keys(arch, CLASSES, (70, 90))
    modules = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.AvgPool2d, torch.nn.MaxPool2d))]
    assert len(keys) <= len(modules) and all(k.h and k.w for k in keys)


def test_supernet_argmax_runs_the_derived_network_and_select_picks_it():
    torch.manual_seed(0)
    net = SPACE.supernet(CLASSES, (48, 64)).eval()
    arch = SPACE.sample(np.random.default_rng(3), spread=True)
    net.select(arch)
    assert net.derive() == arch
    net.set_width_mode("argmax")
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert flops_of(net, x) == flops_of(SPACE.build(arch, CLASSES).eval(), x)
        net.set_width_mode("max")
        assert flops_of(net, x) > flops_of(SPACE.build(arch, CLASSES).eval(), x)  # the soft supernet runs all
    with pytest.raises(SegnasError, match="not a choice"):
        net.select(CellsSpace(**{**SPACE_OPTIONS, "node_inputs": 1}).sample(np.random.default_rng(0)))
    with pytest.raises(SegnasError, match="channels"):
        net.select(CellsSpace(**{**SPACE_OPTIONS, "channels": [4, 8, 8, 16]}).sample(np.random.default_rng(0)))


def test_derivation_keeps_the_strongest_non_zero_edges():
    net = SPACE.supernet(CLASSES, (48, 64))
    k_none, k_conv, k_sep = (SPACE.ops.index(o) for o in ("none", "conv3x3", "sep3x3"))
    with torch.no_grad():
        alpha = net.alphas[0]
        alpha.zero_()
        alpha[edge_row(1, 0), k_none] = 9.0      # node 1: the input-0 edge is mostly "none" ...
        alpha[edge_row(1, 0), k_conv] = 3.0      # ... but its best real operator is the strongest of all
        alpha[edge_row(1, 1), k_sep] = 2.0
        alpha[edge_row(1, 2), k_conv] = 2.5
    cell = net.derive().cells[0]
    # strengths are weights of the full softmax: edge (1, 0) has conv at e^3/(e^9+…) ≈ 0.0025, weaker than
    # the others' ≈ 0.5: the zero operation's weight counts against an edge, never as its operator
    assert [(e.input, e.op) for e in cell[1]] == [(1, "sep3x3"), (2, "conv3x3")]
    assert all(e.op != "none" for node in cell for e in node)


def test_expected_latency_is_the_prediction_of_a_selected_network():
    """With every candidate edge kept (one node: its two inputs) and α one-hot, the expected latency
    is the latency model's prediction of that network; at uniform α it lies between the cheapest
    and the most expensive one."""
    space = CellsSpace(**{**SPACE_OPTIONS, "nodes": 1})
    latency = LatencyModel(pins.flops_table(Path("/nonexistent") / "t.json"), (48, 64), 1.0)
    latency.table.save = lambda: None  # keep it in memory
    net = space.supernet(CLASSES, (48, 64))
    uniform = net.expected_latency(0, latency).item()
    preds = []
    for op in space.choices:
        arch = space.make_arch([((Edge(op, 0), Edge(op, 1)),)] * space.num_cells)
        net.select(arch)
        preds.append(latency.predict(space, arch, CLASSES))
        assert net.expected_latency(0, latency).item() == pytest.approx(preds[-1], rel=1e-5)
    assert min(preds) < uniform < max(preds)


# ----------------------------------------------------------------------------------- the GGM
def arch_grads(net, guide: GCNGuide | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    net.attach_guide(guide)
    for p in list(net.parameters()) + (list(guide.parameters()) if guide else []):
        p.grad = None
    torch.manual_seed(1)
    x, y = torch.randn(2, 3, 48, 64), torch.randint(0, CLASSES, (2, 48, 64))
    out = net(x)
    latency = LatencyModel(pins.flops_table(Path("/nonexistent") / "t.json"), (48, 64), 1.0)
    latency.table.save = lambda: None
    (F.cross_entropy(out, y) + net.expected_latency(0, latency)).backward()
    return out.detach(), [a.grad.clone() for a in net.alphas]


def test_ggm_changes_the_architecture_gradients_and_is_an_exact_no_op_when_off():
    torch.manual_seed(0)
    net = SPACE.supernet(CLASSES, (48, 64))
    with torch.no_grad():
        for a in net.alphas:
            a.normal_(0, 0.5)  # cells that differ
    rng = torch.get_rng_state()
    guide = GCNGuide(len(SPACE.ops), dim=8, gamma=1.0, seed=0)
    assert torch.equal(rng, torch.get_rng_state())  # creating the GGM leaves the global RNG alone
    out0, plain = arch_grads(net, None)
    out1, guided = arch_grads(net, guide)
    assert not torch.equal(out0, out1)
    # every cell's gradient changes: the last ones run from α', and cell 0 guides cell 1 through Δ_1
    assert all(not torch.allclose(a, b) for a, b in zip(plain, guided))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in guide.parameters())
    assert {id(p) for p in net.arch_parameters()} == {id(p) for p in [*net.alphas, *guide.parameters()]}
    assert set(net.state_dict()) == set(SPACE.supernet(CLASSES, (48, 64)).state_dict())  # not in the checkpoint
    # γ = 0: the guide runs but moves nothing (α + 0·Δ == α); detached: nothing of it runs
    guide.gamma = 0.0
    out2, zero = arch_grads(net, guide)
    assert torch.equal(out0, out2) and all(torch.equal(a, b) for a, b in zip(plain, zero))
    out3, off = arch_grads(net, None)
    assert torch.equal(out0, out3) and all(torch.equal(a, b) for a, b in zip(plain, off))
    assert [id(p) for p in net.arch_parameters()] == [id(a) for a in net.alphas]
    net.attach_guide(guide)
    net.to(torch.float64)  # device and dtype moves reach the guide
    assert all(p.dtype == torch.float64 for p in guide.parameters())


def test_the_architecture_weight_decay_reaches_alpha_but_not_the_ggm():
    """Under Adam an L2 term on weights with a small loss gradient steps them towards zero by about
    the learning rate per step: on the GGM's weights it erased the correction in a CamVid search."""
    from segnas.search.oneshot.engine import arch_parameter_groups

    net = SPACE.supernet(CLASSES, (48, 64))
    guide = GCNGuide(len(SPACE.ops), dim=8, gamma=1.0, seed=0)
    net.attach_guide(guide)
    decayed, exempt = arch_parameter_groups(net, 0, 1e-3)
    assert decayed["weight_decay"] == 1e-3 and [id(p) for p in decayed["params"]] == [id(a) for a in net.alphas]
    assert exempt["weight_decay"] == 0.0 and [id(p) for p in exempt["params"]] == [id(p) for p in guide.parameters()]
    # 200 Adam steps on a loss that ignores the GGM: decay alone would shrink its weights to noise
    with torch.no_grad():
        for a in net.alphas:
            a.fill_(1.0)
    start = [p.detach().clone() for p in guide.parameters()]
    for groups, expect_kept in ((arch_parameter_groups(net, 0, 1e-3), True),
                                ([{"params": list(net.arch_parameters()), "weight_decay": 1e-3}], False)):
        with torch.no_grad():
            for p, p0 in zip(guide.parameters(), start):
                p.copy_(p0)
        opt = torch.optim.Adam(groups, lr=3e-3)
        for _ in range(200):
            opt.zero_grad()
            sum((a ** 2).sum() * 0.0 for a in net.alphas).backward()
            for p in guide.parameters():
                p.grad = torch.zeros_like(p)
            opt.step()
        kept = sum(p.norm() for p in guide.parameters()) / sum(p.norm() for p in start)
        assert (kept > 0.99) if expect_kept else (kept < 0.2), kept
    net.attach_guide(None)
    assert len(arch_parameter_groups(net, 0, 1e-3)) == 1  # no GGM: one group, as before


def test_ggm_updates_cell_k_from_cell_k_minus_1():
    guide = GCNGuide(5, dim=16, gamma=1.0, seed=0)
    alphas = [torch.randn(5, 5, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    out = guide(alphas)
    assert torch.equal(out[0], alphas[0]) and not torch.equal(out[1], alphas[1])
    moved = guide([alphas[0] + 3.0 * torch.eye(5), alphas[1], alphas[2]])  # only cell 0 changes
    assert torch.equal(moved[2], out[2]) and not torch.equal(moved[1], out[1])
    torch.testing.assert_close(guide.adjacency(alphas[0], alphas[1]).sum(-1), torch.ones(5))
    # a previous cell with no preference passes nothing: no shared prior over all cells
    uniform = guide([torch.zeros(5, 5), alphas[1]])
    assert torch.equal(uniform[1], alphas[1])


# ----------------------------------------------------------------------------------- the search
def tiny(tmp_path: Path, target_ms: float = 0.05, **section) -> dict:
    return {"data": {"name": "synthetic", "options": {"size": [48, 64], "length": 8}, "crop_size": [48, 64],
                     "batch_size": 2},
            # targets below every network on purpose: the latency term's pull is what these tests watch
            "latency": {"target_ms": target_ms, "backend": "eager", "threads": 1, "check_target": False},
            "gas": {"space": SPACE_OPTIONS, "pretrain_epochs": 1, "search_epochs": 3, "arch_lr": 0.05, **section},
            "threads": 1, "final": {"epochs": 0}, "out_dir": str(tmp_path / "runs"), "progress": False, "seed": 0}


@pytest.fixture
def gas_search(tmp_path):
    """``search(data, resume=None, table=None)`` → run directory: the search job with a FLOPs-table latency."""

    def search(data: dict | None, resume: Path | None = None, table: LatencyTable | None = None) -> Path:
        with pins.deterministic_latency(tmp_path) as latency:
            if resume is not None:
                data = json.loads(json.dumps(read_config(resume)))
            cfg = make_settings("gas", data)
            model = latency(cfg.deployment_size(), cfg.latency.target)
            if table is not None:
                model = LatencyModel(table, cfg.deployment_size(), cfg.latency.target)
            return Path(search_job(None if resume else cfg, resume=resume, latency=model)["run_dir"])

    return search


def read_config(run: Path) -> dict:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())


def records_of(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def arch_of(run: Path) -> dict:
    return read_arch_file(run / "arch.json")["arch"]


def test_search_derives_trains_and_reports(gas_search, tmp_path):
    data = tiny(tmp_path)
    data["final"] = {"epochs": 1, "overrides": {"ema_decay": None}}
    run = gas_search(data)
    records = records_of(run)
    assert [r["phase"] for r in records] == ["pretrain", "search", "search", "search"]
    search = records[1:]
    assert all({"lambda", "expected_latency_ms", "derived_latency_ms", "distinct_cells", "ggm_shift", "on_target"}
               <= set(r) for r in search)
    assert search[-1]["ggm_shift"] > 0
    # λ adapts to each epoch's derived network (target 0.05 ms: slower, so it doubles)
    assert [r["lambda"] for r in search] == [0.5, 1.0, 2.0]
    data_file = read_arch_file(run / "arch.json")
    assert data_file["space"] == "cells" and data_file["predicted_latency_ms"] > 0 and data_file["ggm"] is True
    assert (run / "archs" / "arch_epoch003.json").is_file()
    summary = json.loads((run / "search_result.json").read_text())
    found = summary["networks"]["arch"]
    assert summary["method"] == "gas" and summary["space"] == "cells" and found["measured_ms"] > 0
    assert found["training"]["best_val_miou"] >= 0 and found["params"] > 0 and found["gflops"] > 0
    assert summary["details"]["ggm"] is True and summary["details"]["picked"] == "final"
    # the supernet checkpoint loads into the space's own supernet (weight-sharing evaluator, pre-training)
    state = load_checkpoint(run / "checkpoints" / "search_last.pt")
    SPACE.supernet(CLASSES, (48, 64)).load_state_dict(state["supernet"])
    assert state["strategy_state"]["guide"] is not None


class PlantedTable(LatencyTable):
    """Cell operators cost by resolution: at 1/8 and finer a 3×3 conv is slow and a separable conv
    fast, at 1/16 and coarser the reverse; everything else costs next to nothing."""

    def _measure(self, key) -> float:
        if key.op not in ("conv", "sep_conv"):
            return 0.001
        fine = key.h >= padded_size((48, 64), STAGE_STRIDES[-1])[0] // 8
        return 1.0 if (key.op == "conv") == fine else 0.01

    def call_overhead(self, shape) -> float:
        return 0.0

    def __bool__(self) -> bool:
        return True


def test_cells_come_out_different_when_the_costs_ask_for_it(gas_search, tmp_path):
    """Every cell has its own α: with a table that prices operators by resolution, each edge of each
    cell takes the operator that is cheap where it runs, so cells at fine and coarse strides differ
    (with the GGM on: it guides, it does not tie cells together)."""
    data = tiny(tmp_path, target_ms=0.001, latency_weight=0.5, adapt=False, arch_lr=0.1, latency_loss="expected")
    data["gas"]["space"] = {**SPACE_OPTIONS, "ops": ["conv3x3", "sep3x3"]}
    run = gas_search(data, table=PlantedTable("eager", threads=1, path=tmp_path / "planted.json"))
    arch = CellsArch.from_dict(arch_of(run))
    ph, pw = padded_size((48, 64), STAGE_STRIDES[-1])
    for plan, cell in zip(cell_plans(arch), arch.cells):
        for i, node in enumerate(cell):
            for e in node:
                fine = plan.edge(i, e.input, e.op).key(ph, pw).h >= ph // 8
                assert e.op == ("sep3x3" if fine else "conv3x3"), (plan.index, i, e)
    assert arch.distinct_cells >= 3


def test_derived_latency_is_the_derived_networks_table_latency_with_the_expected_gradient(tmp_path):
    """The target loss's LAT: its value is the table latency of the network derivation returns,
    which uneven operator weights put far from the expected latency; its gradient is the expected
    latency's (straight-through)."""
    latency = LatencyModel(pins.flops_table(tmp_path / "t.json"), (48, 64), 1.0)
    latency.table.save = lambda: None  # keep it in memory
    net = SPACE.supernet(CLASSES, (48, 64))
    torch.manual_seed(0)
    with torch.no_grad():
        for alpha in net.alphas:
            alpha.normal_(0.0, 0.5)
    derived = net.derived_latency(0, latency)
    assert derived.item() == pytest.approx(latency.predict_table(SPACE, net.derive(), CLASSES), rel=1e-5)
    expected = net.expected_latency(0, latency)
    assert abs(derived.item() - expected.item()) > 0.01 * expected.item()
    for g_derived, g_expected in zip(torch.autograd.grad(derived, list(net.alphas)),
                                     torch.autograd.grad(expected, list(net.alphas))):
        assert torch.equal(g_derived, g_expected)


def test_the_target_loss_lifts_a_derived_network_below_the_target_and_lowers_one_above(gas_search, tmp_path):
    """From the same seed: the derived network of a search without a latency term is L0. The target
    loss at 2·L0 derives a slower network and at L0/2 a faster one; the expected-latency loss
    (FasterSeg's form) at 2·L0 can only make it faster."""
    def derived(**section) -> float:
        run = gas_search(tiny(tmp_path, adapt=False, arch_lr=0.1, **section))
        return records_of(run)[-1]["derived_latency_ms"]

    free = derived(latency_weight=0.0)
    assert derived(target_ms=2 * free, latency_weight=20.0) > free
    assert derived(target_ms=free / 2, latency_weight=20.0) < free
    assert derived(target_ms=2 * free, latency_weight=20.0, latency_loss="expected") < free


def test_latency_term_lowers_the_expected_and_the_derived_latency(gas_search, tmp_path):
    """Latency weight 0 against a large one, same seed, GGM off and on, with the expected-latency loss
    (which pushes latency down whatever the target): the searchable part of the expected latency
    (the fixed stem and decoder aside) and the derived network's latency fall."""
    latency = LatencyModel(pins.flops_table(tmp_path / "fixed.json"), (48, 64), 1.0)
    fixed = SPACE.supernet(CLASSES, (48, 64)).cost_tables(latency.op_latencies)[0]

    def last(weight: float, ggm: bool) -> dict:
        return records_of(gas_search(tiny(tmp_path, latency_weight=weight, adapt=False, ggm=ggm, arch_lr=0.1,
                                          latency_loss="expected")))[-1]

    for ggm in (False, True):
        free, pushed = last(0.0, ggm), last(20.0, ggm)
        searched = [r["expected_latency_ms"] - fixed for r in (free, pushed)]
        assert searched[1] < 0.85 * searched[0], (ggm, searched)
        assert pushed["derived_latency_ms"] < free["derived_latency_ms"], (ggm, free, pushed)


def test_search_is_deterministic_for_a_seed(gas_search, tmp_path):
    first, second = gas_search(tiny(tmp_path)), gas_search(tiny(tmp_path))
    assert first != second and arch_of(first) == arch_of(second)
    keep = ("lambda", "derived_latency_ms", "expected_latency_ms", "ggm_shift")
    assert [{k: r.get(k) for k in keep} for r in records_of(first)] == [{k: r.get(k) for k in keep}
                                                                         for r in records_of(second)]


def test_ggm_off_runs_the_plain_search(gas_search, tmp_path):
    run = gas_search(tiny(tmp_path, ggm=False))
    assert "ggm_shift" not in records_of(run)[-1]
    assert load_checkpoint(run / "checkpoints" / "search_last.pt")["strategy_state"]["guide"] is None
    assert read_arch_file(run / "arch.json")["ggm"] is False


class Killed(Exception):
    pass


def killed_after(gas_search, data: dict, out: Path, saves: int, monkeypatch) -> Path:
    """The run directory of a search of ``data`` in ``out`` killed right after its ``saves``-th
    search checkpoint."""
    import segnas.search.oneshot.engine as engine

    real, calls = engine.save_checkpoint, []

    def dying(path, state):
        real(path, state)
        calls.append(Path(path).name)
        if calls.count("search_last.pt") == saves:
            raise Killed

    monkeypatch.setattr(engine, "save_checkpoint", dying)
    with pytest.raises(Killed):
        gas_search({**data, "out_dir": str(out)})
    monkeypatch.setattr(engine, "save_checkpoint", real)
    return next(out.iterdir())


def test_killed_search_resumes_to_the_same_architecture(gas_search, tmp_path, monkeypatch):
    """A search killed right after its checkpoint of search epoch 2 (of 4), resumed from its run
    directory, ends with the same λ trajectory and network as an uninterrupted one (GGM on:
    its parameters and Adam state come back from the checkpoint)."""
    data = tiny(tmp_path, search_epochs=4)
    full = gas_search(data)
    killed = killed_after(gas_search, data, tmp_path / "killed", 3, monkeypatch)  # pre-training, epochs 1, 2
    assert not (killed / "search_result.json").is_file() and len(records_of(killed)) == 3
    gas_search(None, resume=killed)
    assert [r["epochs_done"] for r in records_of(killed)] == [1, 2, 3, 4, 5]
    keep = ("lambda", "derived_latency_ms", "ggm_shift")
    assert [{k: r.get(k) for k in keep} for r in records_of(killed)] == [{k: r.get(k) for k in keep}
                                                                          for r in records_of(full)]
    assert arch_of(killed) == arch_of(full)


def test_a_search_from_another_runs_supernet_resumes_exactly(gas_search, tmp_path, monkeypatch):
    """It adopts that run's pre-training epochs; a resume took the settings' instead: its epochs
    and its weights' learning-rate schedule differed from an uninterrupted run's."""
    pretrained = gas_search(tiny(tmp_path, ggm=False))  # (1 pre-training epoch)
    data = tiny(tmp_path, pretrained=str(pretrained), pretrain_epochs=5)
    full = gas_search({**data, "out_dir": str(tmp_path / "full")})
    killed = killed_after(gas_search, data, tmp_path / "killed", 1, monkeypatch)  # search epoch 1
    gas_search(None, resume=killed)
    keep = ("epochs_done", "weight_loss", "lambda", "derived_latency_ms")
    assert [{k: r.get(k) for k in keep} for r in records_of(killed)] == [{k: r.get(k) for k in keep}
                                                                          for r in records_of(full)]


def test_ggm_on_and_off_from_the_same_pretrained_supernet(gas_search, tmp_path):
    """The ablation's setup: a GGM-off run pre-trains; a GGM-on run starts its search from that
    supernet (the GGM's parameters are not part of it) and vice versa. The GGM is silent while α is
    uniform, so a GGM-on run that pre-trains itself finds the same network."""
    off = gas_search(tiny(tmp_path, ggm=False))
    on = gas_search(tiny(tmp_path, pretrained=str(off), pretrain_epochs=5))
    assert [r["phase"] for r in records_of(on)] == ["search"] * 3 and records_of(on)[-1]["epochs_done"] == 4
    assert arch_of(gas_search(tiny(tmp_path))) == arch_of(on)
    again_off = gas_search(tiny(tmp_path, ggm=False, pretrained=str(on)))
    assert arch_of(again_off) == arch_of(off)  # same pre-trained state, same search


def test_the_result_is_the_last_network_derived_on_target():
    from types import SimpleNamespace

    from segnas.search.strategies.gas import GASSettings

    on, final = (SPACE.sample(np.random.default_rng(seed)) for seed in (0, 1))
    strategy = GASSearch()
    strategy.space, strategy.engine = SPACE, SimpleNamespace(stopped=None)
    strategy.supernet = SimpleNamespace(derive=lambda: final)
    strategy.on_target = {"epoch": 2, "arch": on.to_dict(), "predicted_ms": 1.05}
    latency = SimpleNamespace(target_ms=1.0, size=(48, 64), backend="eager",
                              predict=lambda space, arch, n: 1.05 if arch == on else 2.0)
    strategy.ctx = ctx = SimpleNamespace(latency=latency, num_classes=CLASSES, section=GASSettings(), echo=print)
    result = strategy.derive(ctx)
    assert result.found.arch == on and result.details["picked"] == "search epoch 2"
    assert result.found.predicted_ms == 1.05
    ctx.section = GASSettings(pick="last")
    assert strategy.derive(ctx).found.arch == final
    ctx.section, strategy.on_target = GASSettings(), None  # none was on target: the final one
    assert strategy.derive(ctx).details["picked"] == "final"


def test_gas_settings_are_checked():
    with pytest.raises(SegnasError, match="gas.space: cells space: layout: cells per stage"):
        make_settings("gas", {"gas": {"space": {"layout": [1, 1]}}})
    with pytest.raises(Exception, match="unknown cells space option"):
        make_settings("gas", {"gas": {"space": {"colour": 1}}})
    assert GASSearch.settings_class().ggm is True
