import json
import math

import numpy as np
import pytest
import torch

from segnas.errors import SegnasError
from segnas.metrics.ranking import tau_rho as rank_correlations
from segnas.proxies.discovery import DiscoveredProxy, discover, layer_stats
from segnas.proxies.ensemble import (ProxyEnsemble, as_proxy, bagged_indices, check_bag_fraction, discover_ensemble,
                                     load_proxy, member_seeds, quantile_scale)
from segnas.evaluate.proxy import proxy_scored_on, resolve_proxy, scoring_setup
from proxy_helpers import data, fake_arch, tiny_net

EXPRESSIONS = ("layer_sum(mean_w(abs_w(mul_w(W, G))))", "layer_mean(std_a(A))")


def noisy_problem(seed: int, n: int = 40):
    """``n`` architectures whose "mIoU" is a planted proxy buried in as much noise (rank correlation ≈ 0.5)."""
    gen = torch.Generator().manual_seed(seed)
    archs = [fake_arch(gen) for _ in range(n)]
    truth = np.log([sum(float((layer["W"] * layer["G"]).abs().mean()) for layer in s) for s in archs])
    noise = torch.randn(len(archs), generator=gen).numpy() * truth.std()
    return archs, (truth + noise).tolist()


@pytest.fixture(scope="module")
def noisy():
    return noisy_problem(3)


@pytest.fixture(scope="module")
def real_batches():
    return [data()]


def test_quantile_scale_is_strictly_increasing_and_bounded():
    ref = [3.0, -1.0, 2.0, 2.0, 10.0]
    assert quantile_scale(ref, -1.0) == pytest.approx(0.1) and quantile_scale(ref, 10.0) == pytest.approx(0.9)
    assert quantile_scale(ref, 2.0) == pytest.approx(0.4)  # two equal values share their quantiles' mean
    values = [-1e9, -50.0, -1.0, 0.0, 2.0, 2.5, 3.0, 9.0, 10.0, 11.0, 1e3]
    scaled = [quantile_scale(ref, v) for v in values]
    assert all(a < b for a, b in zip(scaled, scaled[1:])) and all(0 <= s <= 1 for s in scaled)
    assert math.isnan(quantile_scale(ref, math.nan)) and math.isnan(quantile_scale(ref, math.inf))
    assert quantile_scale([1.0, 1.0], 1.0) == 0.5 and quantile_scale([1.0, 1.0], 0.0) < 0.5


def test_one_member_ranks_like_its_expression_and_ensembles_round_trip(tmp_path, noisy):
    archs, targets = noisy
    members = [DiscoveredProxy.from_expression(e) for e in EXPRESSIONS]
    single = ProxyEnsemble.from_members(members[:1], archs[:20], targets[:20], validation=(archs[20:], targets[20:]))
    tau = rank_correlations([members[0].evaluate(s) for s in archs[20:]], targets[20:])[0]
    assert single.val_tau == pytest.approx(tau)
    both = ProxyEnsemble.from_members(members, archs[:20], targets[:20], settings={"note": 1})
    assert both.expression == f"mean_quantile({EXPRESSIONS[0]}, {EXPRESSIONS[1]})"
    values = [both.evaluate(s) for s in archs]
    assert all(0 < v < 1 for v in values) and both.train_tau is not None and both.val_tau is None
    both.save(tmp_path / "ens.json")
    for again in (load_proxy(tmp_path / "ens.json"), as_proxy(str(tmp_path / "ens.json")),
                  ProxyEnsemble.load(tmp_path / "ens.json")):
        assert isinstance(again, ProxyEnsemble) and again.settings == {"note": 1}
        assert [again.evaluate(s) for s in archs] == values
    members[0].save(tmp_path / "one.json")
    assert isinstance(load_proxy(tmp_path / "one.json"), DiscoveredProxy)


def test_an_ensemble_file_scores_networks_and_drives_the_search(tmp_path, real_batches):
    stats = [layer_stats(tiny_net(), real_batches, seed=s) for s in range(3)]
    ens = ProxyEnsemble.from_members([DiscoveredProxy.from_expression(e) for e in EXPRESSIONS], stats,
                                     settings={"scored_on": {"images": 2}})
    ens.save(tmp_path / "ens.json")
    expected = ens.evaluate(layer_stats(tiny_net(), real_batches, seed=0))
    assert ens.score_net(tiny_net(), real_batches) == expected
    assert resolve_proxy(str(tmp_path / "ens.json"), real_batches)(tiny_net()) == expected
    assert proxy_scored_on(str(tmp_path / "ens.json")) == {"images": 2}


def test_discover_ensemble_evolves_each_member_with_its_own_seed(noisy):
    archs, targets = noisy
    train, held = (archs[:24], targets[:24]), (archs[24:], targets[24:])
    seen = []
    ens = discover_ensemble(*train, members=3, seed=7, population=16, generations=3, validation=held,
                            on_member=lambda j, m: seen.append(j))
    assert seen == [0, 1, 2] and member_seeds(7, 3) == [7, 1007, 2007] == ens.settings["member_seeds"]
    for member, seed in zip(ens.members, member_seeds(7, 3)):
        alone = discover(*train, population=16, generations=3, seed=seed)
        assert member.expression == alone.expression and member.settings["seed"] == seed
    assert ens.settings["population"] == 16 and ens.settings["members"] == 3
    values = [ens.evaluate(s) for s in held[0]]
    assert ens.val_tau == pytest.approx(rank_correlations(values, held[1])[0])


def test_bagging_evolves_each_member_on_its_own_part_of_the_training_networks(noisy):
    archs, targets = noisy
    train = (archs[:30], targets[:30])
    assert bagged_indices(30, 1.0, 5) == list(range(30))
    bag = bagged_indices(30, 0.7, 5)
    assert bag == sorted(set(bag)) and len(bag) == 21 and bag == bagged_indices(30, 0.7, 5)
    assert bag != bagged_indices(30, 0.7, 1005) and len(bagged_indices(10, 0.1, 0)) == 8
    seen = []

    def member(stats, mious, seed, **options):  # records what each member was given
        seen.append((seed, [next(i for i, a in enumerate(archs) if a is s) for s in stats], list(mious)))
        return discover(stats, mious, seed=seed, **options)

    ens = discover_ensemble(*train, members=3, seed=5, bag_fraction=0.7, population=12, generations=2,
                            discover_member=member)
    for (seed, idx, mious), expected_seed in zip(seen, member_seeds(5, 3)):
        assert seed == expected_seed and idx == bagged_indices(30, 0.7, seed)
        assert mious == [targets[i] for i in idx]
    assert len({tuple(idx) for _, idx, _ in seen}) == 3 and ens.settings["bag_fraction"] == 0.7
    # the ensemble's common scale is still fitted on every training network
    assert ens.train_tau == pytest.approx(rank_correlations([ens.evaluate(s) for s in train[0]], train[1])[0])
    for bad in (0.0, 1.5):
        with pytest.raises(SegnasError, match="bag fraction must be in"):
            bagged_indices(30, bad, 0)
    with pytest.raises(SegnasError, match="needs members > 1"):
        check_bag_fraction(0.7, members=1)


def test_averaging_members_ranks_held_out_networks_better_than_its_members(noisy):
    """On noisy planted problems each GP run fits the noise its own way; averaging them ranks the
    held-out half better than the members do on average (on 7 of 8 such problems when written)."""
    ensemble_taus, member_taus = [], []
    for seed in range(4):
        archs, targets = noisy_problem(seed)
        ens = discover_ensemble(archs[:20], targets[:20], members=5, population=24, generations=6,
                                validation=(archs[20:], targets[20:]))
        assert len({m.expression for m in ens.members}) > 1
        ensemble_taus.append(ens.val_tau)
        member_taus.append(np.mean([m.val_tau for m in ens.members]))
    assert np.mean(ensemble_taus) >= np.mean(member_taus) + 0.02
    assert sum(e > m for e, m in zip(ensemble_taus, member_taus)) >= 3


def test_bad_proxy_files_are_refused_with_the_file_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "segnas.proxy_ensemble", "members": [{"expression": "layer_mean(std_a(A))"}]}))
    with pytest.raises(SegnasError, match=r"bad\.json: member 0: expected an expression with its reference"):
        load_proxy(bad)
    bad.write_text("{")
    with pytest.raises(SegnasError, match=r"bad\.json: cannot read a proxy file"):
        load_proxy(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(SegnasError, match=r"bad\.json: not a segnas.proxy_expression file"):
        load_proxy(bad)
    with pytest.raises(SegnasError, match="at least 2 finite values"):
        ProxyEnsemble([DiscoveredProxy.from_expression(EXPRESSIONS[0])], [[1.0]])
    with pytest.raises(SegnasError, match="members must be at least 1"):
        discover_ensemble([], [], members=0)


def test_statistics_of_several_initializations_are_averaged(noisy):
    """A network's statistics may be a list, one per weight initialization: every expression (and
    discovery's fitness) then uses the mean of its values over them."""
    from segnas.proxies.graph import evaluate_expression

    archs, targets = noisy
    two = [[a, b] for a, b in zip(archs[:20], archs[20:])]  # the second half plays another initialization
    expr = EXPRESSIONS[0]
    assert evaluate_expression(expr, two[0]) == pytest.approx(
        (evaluate_expression(expr, archs[0]) + evaluate_expression(expr, archs[20])) / 2)
    found = discover(two, targets[:20], population=16, generations=3, seed=1)
    means = [(found.evaluate(a) + found.evaluate(b)) / 2 for a, b in two]
    assert found.train_tau == pytest.approx(rank_correlations(means, targets[:20])[0])
    ens = ProxyEnsemble.from_members([found], two, targets[:20])
    assert ens.train_tau == pytest.approx(found.train_tau)


def test_proxy_score_takes_images_size_and_inits_from_the_proxy_files(tmp_path, monkeypatch):
    import segnas.jobs.proxy as proxy_job

    ens = ProxyEnsemble.from_members([DiscoveredProxy.from_expression(EXPRESSIONS[0])],
                                     [layer_stats(tiny_net(), [data()], seed=s) for s in range(3)],
                                     settings={"scored_on": {"images": 3, "size": [32, 48], "inits": 2}})
    ens.save(tmp_path / "ens.json")
    assert proxy_job.discovered_settings([str(tmp_path / "ens.json"), "nwot"]) == \
        {"images": 3, "size": [32, 48], "inits": 2}
    ens.settings["scored_on"] = {"images": 3, "size": None}  # discovered at the images' own size
    ens.save(tmp_path / "native.json")
    native = proxy_job.discovered_settings([str(tmp_path / "native.json")])
    assert native == {"images": 3, "size": None}
    # one rule for a search and `proxy score`: as given, else as discovered (native included), else the defaults
    assert scoring_setup(native) == (3, None, 1) and scoring_setup(native, 5, (32, 48), 2) == (5, (32, 48), 2)
    assert scoring_setup({}) == (8, (128, 160), 1) and scoring_setup({}, size="native") == (8, None, 1)
    assert proxy_job.discovered_settings([str(tmp_path / "ens.json"), str(tmp_path / "native.json")]) == \
        {"images": 3}
    seen = {}

    def batches(data_name, root, split, images, batch_size, size, seed, options=None):
        seen.update(images=images, size=size)
        raise SegnasError("stop here")

    monkeypatch.setattr(proxy_job, "proxy_batches", batches)
    with pytest.raises(SegnasError, match="stop here"):
        proxy_job.proxy_score_job(["fast_scnn"], [str(tmp_path / "ens.json")], "synthetic")
    assert seen == {"images": 3, "size": (32, 48)}
    with pytest.raises(SegnasError, match="stop here"):
        proxy_job.proxy_score_job(["fast_scnn"], [str(tmp_path / "ens.json")], "synthetic", images=5, size="native")
    assert seen == {"images": 5, "size": None}
    with pytest.raises(SegnasError, match="stop here"):  # a registered name alone: the defaults
        proxy_job.proxy_score_job(["fast_scnn"], ["nwot"], "synthetic")
    assert seen == {"images": 8, "size": (128, 160)}
