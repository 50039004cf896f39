import json
import math
import random

import pytest
import torch
from deap import gp

from segnas.errors import SegnasError
from segnas.proxies import PROXIES, score
from segnas.proxies.common import weight_layers
from segnas.proxies.cross_validation import cross_validate, discover_cv, fold_indices
from segnas.metrics.ranking import tau_rho as rank_correlations
from segnas.proxies.ensemble import register_expression, score_expression
from segnas.proxies.discovery import DiscoveredProxy, discover, half_and_half, layer_stats
from segnas.proxies.graph import PSET, evaluate_expression, evaluate_tree, pack, parse, primitive_set
from proxy_helpers import data, fake_arch, tiny_net

PLANTED = "layer_sum(mean_w(abs_w(mul_w(W, G))))"


@pytest.fixture(scope="module")
def planted():
    """16 architectures whose "mIoU" is the planted proxy plus 1% noise."""
    gen = torch.Generator().manual_seed(0)
    archs = [fake_arch(gen) for _ in range(16)]
    truth = [sum(float((layer["W"] * layer["G"]).abs().mean()) for layer in s) for s in archs]
    noise = torch.randn(len(archs), generator=gen).mul(0.01).tolist()
    return archs, [t * (1 + e) for t, e in zip(truth, noise)]


@pytest.fixture(scope="module")
def real_stats():
    return layer_stats(tiny_net(), [data()])


def test_planted_expression_evaluates_to_its_definition(planted):
    archs, _ = planted
    expected = sum(float((layer["W"] * layer["G"]).abs().mean()) for layer in archs[0])
    assert evaluate_expression(PLANTED, archs[0]) == pytest.approx(expected, rel=1e-6)
    assert str(parse(PLANTED)) == PLANTED


def test_expression_round_trip(tmp_path, planted):
    archs, targets = planted
    hand = DiscoveredProxy.from_expression("layer_mean(div(l2_w(sub_w(W, G)), add(std_a(A), nA)))")
    hand.save(tmp_path / "hand.json")
    assert DiscoveredProxy.load(tmp_path / "hand.json").evaluate(archs[3]) == hand.evaluate(archs[3])
    found = discover(archs, targets, population=12, generations=2, seed=1)
    found.save(tmp_path / "found.json")
    again = DiscoveredProxy.load(tmp_path / "found.json")
    assert again.expression == found.expression and again.history == found.history
    assert again.train_tau == found.train_tau
    assert [again.evaluate(s) for s in archs] == [found.evaluate(s) for s in archs]
    assert json.loads((tmp_path / "found.json").read_text())["format"] == "segnas.proxy_expression"


def test_discovery_finds_the_planted_proxy(planted):
    archs, targets = planted
    result = discover(archs, targets, population=40, generations=20, seed=0)
    taus = [h["best_tau"] for h in result.history]
    assert len(taus) == 21 and taus == sorted(taus)  # elitism: the best never gets worse
    assert taus[-1] > taus[0] and taus[-1] >= 0.8
    assert result.train_tau == pytest.approx(taus[-1])
    values = [result.evaluate(s) for s in archs]
    assert rank_correlations(values, targets)[0] == pytest.approx(result.train_tau)


def test_discovery_is_deterministic(planted):
    archs, targets = planted
    state = random.getstate()
    first = discover(archs, targets, population=16, generations=4, seed=5)
    assert random.getstate() == state
    second = discover(archs, targets, population=16, generations=4, seed=5)
    assert first.expression == second.expression and first.history == second.history


def test_validation_split_is_reported(planted):
    archs, targets = planted
    result = discover(archs[:10], targets[:10], population=12, generations=2, seed=0,
                      validation=(archs[10:], targets[10:]))
    assert all("val_tau" in h for h in result.history) and result.val_tau is not None


def test_random_trees_are_finite(real_stats):
    extreme = [{"W": torch.tensor([0.0, 1e30, -1e-30, float("nan")]), "G": torch.tensor([0.0, 0.0, float("inf"), 1.0]),
                "A": torch.zeros(3), "numel_w": torch.tensor(4.0), "numel_a": torch.tensor(0.0)}]
    packed = [pack(real_stats), pack(extreme)]
    state = random.getstate()
    random.seed(0)
    try:
        trees = [gp.PrimitiveTree(gp.genHalfAndHalf(PSET, 2, 7)) for _ in range(50)]
    finally:
        random.setstate(state)
    for tree in trees:
        for p in packed:
            value = evaluate_tree(tree, p)
            assert isinstance(value, float) and math.isfinite(value), str(tree)


def with_extras(archs: list, seed: int = 1) -> list:
    """The architectures' statistics plus activation gradients ``GA`` at a per-architecture scale
    and a resolution ``R`` per layer."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for layers in archs:
        scale = math.exp(float(torch.empty(1).uniform_(-2, 2, generator=gen)))
        out.append([dict(layer, GA=scale * torch.randn(layer["A"].shape, generator=gen),
                         R=torch.tensor(4.0 ** -float(torch.randint(0, 4, (1,), generator=gen))))
                    for layer in layers])
    return out


@pytest.mark.parametrize("name, planted_expr, truth", [
    ("GA", "layer_sum(mean_a(abs_a(mul_a(A, GA))))",
     lambda s: sum(float((layer["A"] * layer["GA"]).abs().mean()) for layer in s)),
    ("R", "layer_sum(mul(R, mean_w(abs_w(W))))",
     lambda s: sum(float(layer["R"] * layer["W"].abs().mean()) for layer in s)),
])
def test_discovery_can_read_extra_terminals(planted, name, planted_expr, truth):
    archs = with_extras(planted[0])
    targets = [truth(s) for s in archs]
    assert evaluate_expression(planted_expr, archs[0]) == pytest.approx(targets[0], rel=1e-6)
    assert str(parse(planted_expr)) == planted_expr and str(parse(PLANTED)) == PLANTED
    found = discover(archs, targets, population=40, generations=20, seed=0, extra_terminals=[name])
    assert found.train_tau >= 0.8 and found.settings["extra_terminals"] == [name]
    assert DiscoveredProxy.from_dict(found.to_dict()).evaluate(archs[2]) == found.evaluate(archs[2])
    # the original primitive set lacks the terminal, and without extra_terminals discovery stays on it
    plain = discover(archs, targets, population=16, generations=3, seed=0)
    assert name not in str(plain.expression).replace("(", " ").replace(")", " ").replace(",", " ").split()
    assert "extra_terminals" not in plain.settings
    assert name in primitive_set([name]).mapping and name not in PSET.mapping
    with pytest.raises(SegnasError, match=f"reads {name} but the statistics lack it"):
        evaluate_expression(planted_expr, planted[0][0])
    with pytest.raises(SegnasError, match=f"extra terminal {name!r} needs statistics"):
        discover(planted[0], targets, population=4, generations=1, extra_terminals=[name])
    partial = [dict(layer) for layer in archs[0]]
    del partial[0][name]
    with pytest.raises(SegnasError, match="expected all or none"):
        pack(partial)
    with pytest.raises(SegnasError, match="unknown extra terminal 'X'"):
        discover(archs, targets, population=4, generations=1, extra_terminals=["X"])


def test_layer_stats_on_a_segmentation_net():
    net, batch = tiny_net(), data()
    stats = layer_stats(net, [batch], max_weights=64, max_activations=32)
    layers = weight_layers(net)
    assert len(stats) == len(layers)
    assert all(p.grad is None for p in net.parameters())
    for layer, s in zip(layers, stats):
        assert set(s) == {"W", "G", "A", "GA", "R", "numel_w", "numel_a"}
        assert s["GA"].shape == s["A"].shape
        assert 0 < float(s["R"]) <= 1 or (s["A"].numel() == 0 and float(s["R"]) == 0)
        assert s["W"].shape == s["G"].shape and s["W"].numel() == min(64, layer.weight.numel())
        assert s["A"].numel() in (0, 2 * min(32, int(s["numel_a"])))  # 0: a layer the forward skips
        assert int(s["numel_w"]) == layer.weight.numel()
        assert all(torch.isfinite(t).all() for t in s.values())
    assert any(s["G"].abs().sum() > 0 for s in stats)
    again = layer_stats(net, [batch], max_weights=64, max_activations=32)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(stats, again) for k in a)
    images, masks = batch
    ignored = layer_stats(net, [(images, torch.full_like(masks, 255))], max_weights=64, max_activations=32)
    assert any(s["GA"].abs().sum() > 0 for s in stats)
    assert all(not s["G"].any() and not s["GA"].any() for s in ignored)


def test_layer_stats_do_not_depend_on_chunking():
    net, batch = tiny_net(torch.float64), data(n=4)
    one, four = (layer_stats(net, [batch], chunk_size=c) for c in (1, 4))
    for a, b in zip(one, four):
        assert torch.equal(a["W"], b["W"])
        assert torch.allclose(a["G"], b["G"], rtol=1e-4, atol=1e-12)
        assert torch.equal(a["A"], b["A"])
        assert torch.allclose(a["GA"], b["GA"], rtol=1e-4, atol=1e-12)
        assert torch.allclose(a["A"], b["A"], rtol=1e-4, atol=1e-6)


def test_score_expression_and_registry(tmp_path):
    net, batch = tiny_net(), data()
    found = DiscoveredProxy.from_expression(PLANTED)
    found.save(tmp_path / "p.json")
    value = found.score_net(net, [batch])
    assert math.isfinite(value) and value > 0
    assert score_expression(PLANTED, net, [batch]) == value
    assert score_expression(str(tmp_path / "p.json"), net, [batch]) == value
    register_expression("test_discovered", tmp_path / "p.json")
    try:
        assert score("test_discovered", net, [batch]) == value
        with pytest.raises(SegnasError, match="already registered"):
            register_expression("test_discovered", PLANTED)
    finally:
        PROXIES.pop("test_discovered")
    # expressions reading every extra statistic score a real network too
    full = "div_p(layer_mean(mul(R, mean_a(mul_a(A, GA)))), layer_sum(std_w(G)))"
    stats = layer_stats(net, [batch])
    expected = (sum(float(s["R"] * (s["A"].double() * s["GA"].double()).mean()) if s["A"].numel() else 0.0
                    for s in stats) / len(stats)
                / sum(float(s["G"].double().std(unbiased=False)) for s in stats))
    assert score_expression(full, net, [batch]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("expression, message", [
    ("layer_sum(frobnicate_w(W))", "unknown primitive 'frobnicate_w'"),
    ("layer_sum(abs_w(W))", "gives WeightTensor where LayerScalar"),
    ("layer_sum(mean_w(add_w(W, A)))", "gives ActTensor where WeightTensor"),
    ("layer_sum(mean_w(W)", "expected ')'"),
    ("layer_sum(mean_w(W))) ", "unexpected ')'"),
    ("__import__('os')", "unknown primitive '__import__'"),
])
def test_bad_expressions(tmp_path, expression, message):
    with pytest.raises(SegnasError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(expression)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"format": "segnas.proxy_expression", "expression": expression}))
    with pytest.raises(SegnasError) as err:
        DiscoveredProxy.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_bad_discovery_input(planted):
    archs, targets = planted
    with pytest.raises(SegnasError, match="16 statistics but 15"):
        discover(archs, targets[:15])
    with pytest.raises(SegnasError, match="at least 3 architectures"):
        discover(archs[:2], targets[:2])
    with pytest.raises(SegnasError, match="all target mIoUs are equal"):
        discover(archs[:4], [0.5] * 4)
    with pytest.raises(SegnasError, match="lack 'G'"):
        discover([[{k: v for k, v in s[0].items() if k != "G"}] for s in archs[:3]], targets[:3])
    with pytest.raises(SegnasError, match="parsimony must be a non-negative"):
        discover(archs, targets, parsimony=-0.1)


def test_parsimony_prefers_smaller_trees_and_history_reports_plain_tau(planted):
    archs, targets = planted
    plain = discover(archs, targets, population=24, generations=6, seed=3)
    lean = discover(archs, targets, population=24, generations=6, seed=3, parsimony=0.05)
    assert len(lean.tree) <= len(plain.tree) and lean.settings["parsimony"] == 0.05
    last = lean.history[-1]
    assert last["best_fitness"] == pytest.approx(last["best_tau"] - 0.05 * len(lean.tree))
    assert lean.train_tau == pytest.approx(last["best_tau"])


def test_fold_indices_partition():
    parts = fold_indices(20, 3, seed=4)
    assert sorted(i for p in parts for i in p) == list(range(20)) and [len(p) for p in parts] == [7, 7, 6]
    assert parts == fold_indices(20, 3, seed=4) and parts != fold_indices(20, 3, seed=5)
    with pytest.raises(SegnasError, match="at least 3 architectures per fold"):
        fold_indices(8, 3, seed=0)


def test_cross_validation_picks_the_setting_that_generalizes(planted):
    archs, targets = planted
    candidates = [{"generations": 0}, {"generations": 16}]  # random trees against an evolved one
    rows = cross_validate(archs, targets, candidates, folds=2, seed=0, population=32)
    assert [r["settings"] for r in rows] == candidates and all(len(r["fold_taus"]) == 2 for r in rows)
    assert rows[1]["mean_tau"] > rows[0]["mean_tau"] and rows[1]["mean_tau"] >= 0.6
    found = discover_cv(archs, targets, candidates, folds=2, seed=0, population=32)
    assert found.settings["cross_validation"]["chosen"] == {"generations": 16}
    assert found.settings["generations"] == 16 and len(found.history) == 17
    assert found.settings["cross_validation"]["candidates"] == rows


def test_discovery_task_runs_in_a_process_pool_like_discover(planted):
    from segnas.parallel import run_all
    from segnas.proxies.cross_validation import as_numpy, discovery_task

    archs, targets = planted
    item = {"stats": as_numpy(archs[:12]), "targets": targets[:12], "options": {"population": 12, "generations": 2},
            "validation": (as_numpy(archs[12:]), targets[12:])}
    [found] = run_all(discovery_task, [item], executor="process", workers=1, key=lambda _: "one")
    direct = discover(archs[:12], targets[:12], population=12, generations=2, validation=(archs[12:], targets[12:]))
    again = DiscoveredProxy.from_dict(found)
    assert again.expression == direct.expression and again.val_tau == pytest.approx(direct.val_tau)


def test_discovery_is_the_same_in_every_process(planted):
    """DEAP's own typed crossover picks from a set of type classes (ordered by memory address): the
    same seed used to evolve differently in each process."""
    from segnas.parallel import run_all
    from segnas.proxies.cross_validation import as_numpy, discovery_task

    archs, targets = planted
    item = {"stats": as_numpy(archs), "targets": targets, "options": {"population": 24, "generations": 6, "seed": 2}}
    runs = [run_all(discovery_task, [item], executor="process", workers=1, key=lambda _: "one")[0] for _ in range(3)]
    here = discover(archs, targets, population=24, generations=6, seed=2)
    assert all(r["history"] == runs[0]["history"] for r in runs) and runs[0]["expression"] == here.expression


def test_tree_generation_matches_deap_and_ends_network_ops_on_roots():
    state = random.getstate()
    try:
        for seed in range(20):
            random.seed(seed)
            ours = [str(gp.PrimitiveTree(half_and_half(PSET, 2, 6))) for _ in range(10)]
            random.seed(seed)
            deap = [str(gp.PrimitiveTree(gp.genHalfAndHalf(PSET, 2, 6))) for _ in range(10)]
            assert ours == deap
        random.seed(0)
        with_ops = primitive_set(network_ops=True)
        trees = [gp.PrimitiveTree(half_and_half(with_ops, 2, 7)) for _ in range(200)]
    finally:
        random.setstate(state)
    assert any(t[0].name.endswith("_p") for t in trees)  # network ops are drawn
    stats = pack(fake_arch(torch.Generator().manual_seed(3)))
    for tree in trees:
        assert parse(str(tree)) is not None and math.isfinite(evaluate_tree(tree, stats, with_ops))


def test_discovery_with_network_ops_finds_a_difference_of_network_values(planted):
    archs, _ = planted
    planted_ops = "sub_p(log_p(layer_mean(max_w(W))), log_p(layer_sum(nW)))"  # log(mean max W / total weights)
    targets = [math.log(sum(float(l["W"].max()) for l in s) / len(s)) - math.log(sum(float(l["numel_w"]) for l in s))
               for s in archs]
    assert [evaluate_expression(planted_ops, s) for s in archs] == pytest.approx(targets, rel=1e-6)
    found = discover(archs, targets, population=40, generations=20, seed=0, network_ops=True)
    assert found.train_tau >= 0.9 and found.settings["network_ops"] is True
    assert DiscoveredProxy.from_dict(found.to_dict()).expression == found.expression
