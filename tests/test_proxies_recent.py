"""ZiCo, MeCo, SWAP, AZ-NAS and rank aggregation: each proxy against a computation written here from
the reference code's definition (plain torch, on tiny networks), determinism, no side effects,
chunk-size invariance; the aggregation on hand-made scores."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from proxy_helpers import NUM_CLASSES, data, tiny_net
from segnas.errors import SegnasError
from segnas.proxies import PROXIES, proxy, score
from segnas.proxies.aggregate import (AGGREGATES, RankAggregate, aggregate_ranks, ranks, register_aggregate,
                                      resolve_aggregate, score_population)
from segnas.proxies.az_nas import AZ_PROXIES, az_init, rademacher, to_grid
from segnas.proxies.meco import min_eigenvalues
from segnas.proxies.relu_tap import ReluTap
from segnas.proxies.swap import regularized_swap, size_factor
from segnas.proxies.zen import gaussian_init

NEW = ["zico", "meco", "swap", "az_expressivity", "az_progressivity", "az_trainability", "az_complexity"]


def chain(bn: bool, seed: int = 0, inplace: bool = False) -> nn.Sequential:
    """conv-(BN)-ReLU ×4 (two of them stride 2) and a 1×1 classifier, in float64."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for cin, cout, stride in ((3, 4, 1), (4, 6, 2), (6, 6, 1), (6, 8, 2)):
        layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=not bn)] + ([nn.BatchNorm2d(cout)] if bn else []) \
            + [nn.ReLU(inplace=inplace)]
    layers.append(nn.Conv2d(8, NUM_CLASSES, 1))
    return nn.Sequential(*layers).double()


def small(n=4, h=16, w=16, seed=1):
    images, masks = data(n, h, w, seed)
    return images.double(), masks


def relu_outputs(net: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of the ``nn.ReLU`` modules with a 4-D input, as the references hook them."""
    out: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda m, i, o: out.append(o) if i[0].dim() == 4 else None)
             for m in net.modules() if isinstance(m, nn.ReLU)]
    net(images)
    for h in hooks:
        h.remove()
    return out


# ---------------------------------------------------------------- references

def zico_reference(net, images, masks, ignore=255) -> float:
    """compute_zico.py with one image per batch (logits resized to the image, the loss averaged over
    its labelled pixels): per layer log Σ mean|g| / std(g) over std ≠ 0."""
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    grads = {m: [] for m in layers}
    for n in range(images.shape[0]):
        if not (masks[n] != ignore).any():
            continue
        net.zero_grad()
        logits = F.interpolate(net(images[n:n + 1]), size=images.shape[-2:], mode="bilinear", align_corners=False)
        F.cross_entropy(logits, masks[n:n + 1], ignore_index=ignore).backward()
        for m in layers:
            if m.weight.grad is not None:
                grads[m].append(m.weight.grad.detach().flatten().clone())
    total = 0.0
    for g in grads.values():
        if not g:
            continue
        g = torch.stack(g)
        std, mean_abs = g.std(0, unbiased=False), g.abs().mean(0)
        nz = std != 0
        s = float((mean_abs[nz] / std[nz]).sum())
        if s != 0:
            total += math.log(s)
    return total


def meco_reference(net, images) -> float:
    """get_score of MeCo's NAS_Bench_201.py, image by image (train mode: the batch's BN statistics)."""
    net = copy.deepcopy(net).train()
    totals = torch.zeros(images.shape[0], dtype=torch.float64)

    def hook(module, inputs, out):
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            for n in range(out.shape[0]):
                fea = out[n].detach().reshape(out.shape[1], -1)
                corr = torch.corrcoef(fea)
                corr[torch.isnan(corr)] = 0
                corr[torch.isinf(corr)] = 0
                value = torch.min(torch.real(torch.linalg.eig(corr)[0]))
                if torch.isfinite(value):
                    totals[n] += value

    hooks = [m.register_forward_hook(hook) for m in net.modules()]
    with torch.no_grad():
        net(images)
    for h in hooks:
        h.remove()
    return float(totals.mean())


def swap_reference(net, images, seed) -> int:
    """SampleWiseActivationPatterns: distinct rows of sign(activations)ᵀ after the Gaussian init."""
    net = copy.deepcopy(net)
    gaussian_init(net, torch.Generator().manual_seed(seed))
    net.train()
    with torch.no_grad():
        feats = relu_outputs(net, images)
    act = torch.cat([f.reshape(images.shape[0], -1) for f in feats], 1)
    return torch.unique(torch.sign(act).T, dim=0).shape[0]


def az_reference(net, images, seed, batch=0) -> tuple[float, float, float]:
    """compute_az_nas_score.py on the ReLU outputs (Kaiming init, the batch's BN statistics)."""
    net = copy.deepcopy(net)
    az_init(net, torch.Generator().manual_seed(seed))
    net.train()
    feats = relu_outputs(net, images)
    entropies = []
    for f in feats:
        b, c, h, w = f.shape
        x = f.detach().permute(0, 2, 3, 1).reshape(b * h * w, c)
        x = x - x.mean(0, keepdim=True)
        s = torch.linalg.eigvalsh(x.T @ x / x.shape[0])
        p = s / s.sum()
        entropies.append(float((-p * torch.log(p + 1e-8)).sum()))
    expressivity = sum(entropies)
    progressivity = min(np.diff(entropies))
    scores = []
    for i in reversed(range(1, len(feats))):
        f_out, f_in = feats[i], feats[i - 1]
        g_out = torch.stack([rademacher(f_out.shape[1:], seed, batch, i, n) for n in range(f_out.shape[0])])
        g_in = torch.autograd.grad(f_out, f_in, g_out, retain_graph=True)[0]
        if g_out.shape == g_in.shape and torch.all(g_in == g_out):
            scores.append(-math.inf)
            continue
        if g_out.shape[2] != g_in.shape[2]:
            g_in = nn.PixelUnshuffle(g_in.shape[2] // g_out.shape[2])(g_in)
        bo, co, ho, wo = g_out.shape
        mat = g_in.permute(0, 2, 3, 1).reshape(-1, g_in.shape[1]).T @ g_out.permute(0, 2, 3, 1).reshape(-1, co)
        sigma = float(torch.linalg.svdvals(mat / (bo * ho * wo)).max())
        scores.append(-sigma - 1 / (sigma + 1e-6) + 2)
    return expressivity, float(progressivity), float(np.mean(scores))


# ---------------------------------------------------------------- against the references

def test_zico_matches_the_reference():
    net, (images, masks) = chain(bn=False), small(5)
    masks[2] = 255  # an image without labels is not a sample
    assert score("zico", net, [(images, masks)], chunk_size=2) == pytest.approx(zico_reference(net, images, masks),
                                                                              rel=1e-9)


def test_zico_needs_two_labelled_images():
    images, masks = small(3)
    masks[1:] = 255
    with pytest.raises(SegnasError, match="zico needs at least 2 images"):
        score("zico", chain(bn=False), [(images, masks)])


@pytest.mark.parametrize("inplace", [False, True])  # an in-place ReLU changes the BN output it returns
def test_meco_matches_the_reference(inplace):
    net, (images, masks) = chain(bn=True, inplace=inplace), small(3)
    assert score("meco", net, [(images, masks)], chunk_size=2) == pytest.approx(meco_reference(net, images), rel=1e-9)


def test_meco_shortcut_for_fewer_positions_than_channels():
    features = torch.randn(2, 12, 3, 3, dtype=torch.float64)  # 9 positions, 12 channels: singular
    assert torch.equal(min_eigenvalues(features), torch.zeros(2, dtype=torch.float64))
    full = torch.linalg.eigvalsh(torch.stack([torch.corrcoef(f.reshape(12, -1)) for f in features]))[:, 0]
    assert full.abs().max() < 1e-12
    wide = torch.randn(2, 4, 3, 3, dtype=torch.float64)  # 9 positions, 4 channels: regular
    expected = torch.stack([torch.linalg.eigvalsh(torch.corrcoef(f.reshape(4, -1)))[0] for f in wide])
    assert torch.allclose(min_eigenvalues(wide), expected, atol=1e-12) and bool((expected > 0).all())


@pytest.mark.parametrize("n, chunk", [(12, 5), (70, 16)])  # 70 images: patterns span two 63-bit words
def test_swap_matches_the_reference(n, chunk):
    net, (images, masks) = chain(bn=True), small(n, 8, 8)
    expected = swap_reference(net, images, seed=2)
    assert expected < 2 ** n  # not at the ceiling, so the count itself is checked
    assert score("swap", net, [(images, masks)], seed=2, chunk_size=chunk) == expected


def test_swap_regularization():
    net, batch = chain(bn=True), small(6, 8, 8)
    theta = sum(p.numel() for p in net.parameters()) / 1e6
    assert size_factor(net, mu=0.01, sigma=0.5) == pytest.approx(math.exp(-((theta - 0.01) ** 2) / 0.5))
    reg = regularized_swap(mu=0.01, sigma=0.5)
    plain = score("swap", net, [batch], seed=1)
    try:
        proxy("swap_reg_test")(reg)
        assert score("swap_reg_test", net, [batch], seed=1) == pytest.approx(plain * size_factor(net, 0.01, 0.5))
    finally:
        PROXIES.pop("swap_reg_test")
    with pytest.raises(SegnasError, match="sigma > 0"):
        regularized_swap(mu=1.0, sigma=0.0)


@pytest.mark.parametrize("bn, inplace", [(True, False), (False, False), (False, True)])
def test_az_nas_matches_the_reference(bn, inplace):
    net, (images, masks) = chain(bn=bn, inplace=inplace), small(4)
    expressivity, progressivity, trainability = az_reference(net, images, seed=5)
    got = {n: score(n, net, [(images, masks)], seed=5, chunk_size=3) for n in AZ_PROXIES[:3]}
    assert got["az_expressivity"] == pytest.approx(expressivity, rel=1e-9)
    assert got["az_progressivity"] == pytest.approx(progressivity, rel=1e-9)
    if not bn:  # the reference's train-mode BN would differentiate through the batch statistics
        assert got["az_trainability"] == pytest.approx(trainability, rel=1e-9)


def test_az_complexity_is_flops():
    net, batch = chain(bn=True), small(2)
    assert score("az_complexity", net, [batch]) == score("flops", net, [batch]) > 0


def test_az_init_draws_the_fan_in_scale():
    conv = nn.Conv2d(64, 256, 3)
    az_init(conv, torch.Generator().manual_seed(0))
    assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.02)
    assert float(conv.bias.detach().abs().max()) == 0.0


def test_to_grid_is_pixel_unshuffle_and_pads_odd_sizes():
    x = torch.randn(2, 3, 8, 12)
    assert torch.equal(to_grid(x, 4, 6), nn.PixelUnshuffle(2)(x))
    odd = to_grid(torch.ones(1, 1, 7, 5), 4, 3)  # padded to 8×6: the padded positions are 0
    assert odd.shape == (1, 4, 4, 3) and float(odd.sum()) == 35.0


def test_relu_tap_sees_module_and_functional_relus():
    seen = []
    with ReluTap(lambda out: seen.append(out.shape)):
        x = nn.ReLU()(torch.randn(1, 2, 3, 3))
        F.relu(x, inplace=True)
        x.relu()
        F.relu(torch.randn(2, 3))  # not a feature map
    assert len(seen) == 3


# ---------------------------------------------------------------- determinism, side effects, chunks

@pytest.mark.parametrize("name", NEW)
def test_deterministic_and_the_network_is_left_alone(name):
    net, batch = chain(bn=True), small(3)
    net.train()
    before = copy.deepcopy(net.state_dict())
    state = torch.get_rng_state()
    first = score(name, net, [batch], seed=4)
    assert math.isfinite(first) and score(name, net, [batch], seed=4) == first
    assert torch.equal(torch.get_rng_state(), state)
    assert net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in net.parameters())


def test_the_seed_draws_the_weights_of_swap_and_az_nas_only():
    net, batch = chain(bn=True), small(10, 8, 8)
    for name in ("swap", "az_expressivity", "az_trainability"):
        assert score(name, net, [batch], seed=0) != score(name, net, [batch], seed=1), name
    for name in ("zico", "meco"):  # the network's own weights, no randomness
        assert score(name, net, [batch], seed=0) == score(name, net, [batch], seed=1), name


@pytest.mark.parametrize("name", NEW[:-1])
def test_chunk_size_does_not_change_the_score(name):
    net, batch = chain(bn=True), small(5)
    one, three = score(name, net, [batch], seed=1, chunk_size=1), score(name, net, [batch], seed=1, chunk_size=3)
    assert one == pytest.approx(three, rel=1e-10)


def test_batches_are_averaged():
    net, a, b = chain(bn=True), small(3, seed=1), small(3, seed=2)
    for name in ("meco", "az_expressivity"):
        both = score(name, net, [a, b], seed=1)
        assert both == pytest.approx((score(name, net, [a], seed=1) + score(name, net, [b], seed=1)) / 2, rel=1e-10)


def test_swap_counts_patterns_over_the_images_of_all_batches():
    # without BatchNorm a split into batches changes nothing; 70 images span two 63-bit words
    net, (images, masks) = chain(bn=False), small(70, 8, 8)
    whole = score("swap", net, [(images, masks)], seed=3)
    assert whole < 2 ** 70
    assert score("swap", net, [(images[:35], masks[:35]), (images[35:], masks[35:])], seed=3) == whole
    with pytest.raises(SegnasError, match="images of one size"):
        score("swap", net, [small(2, 8, 8), small(2, 16, 16)])


@pytest.mark.parametrize("name", NEW)
def test_on_a_real_segmentation_network(name):
    # Fast-SCNN: functional ReLUs, parallel pyramid-pooling branches, a fusion that upsamples
    net, batch = tiny_net(), data()
    value = score(name, net, [batch], seed=3)
    assert math.isfinite(value) and score(name, net, [batch], seed=3) == value


def test_networks_without_relu_are_refused():
    net, batch = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, NUM_CLASSES, 1)).double(), small(2)
    for name in ("swap", "az_expressivity"):
        with pytest.raises(SegnasError, match="ReLU"):
            score(name, net, [batch])


# ---------------------------------------------------------------- rank aggregation

def test_ranks_ties_nan_and_direction():
    assert ranks([3.0, 1.0, 2.0, 2.0]).tolist() == [4.0, 1.0, 2.5, 2.5]
    assert ranks([3.0, math.nan, -math.inf, 5.0]).tolist() == [3.0, 1.5, 1.5, 4.0]
    assert ranks([3.0, 1.0, 2.0], lower_is_better=True).tolist() == [1.0, 3.0, 2.0]


def test_aggregate_ranks_by_hand():
    scores = {"a": [1.0, 3.0, 2.0], "b": [10.0, 10.0, 30.0]}  # ranks a: 1 3 2, b: 1.5 1.5 3
    log = aggregate_ranks(scores)
    assert log == pytest.approx([math.log(1 / 3) + math.log(0.5), math.log(1) + math.log(0.5), math.log(2 / 3)])
    assert aggregate_ranks(scores, "mean") == pytest.approx([(1 / 3 + 0.5) / 2, (1 + 0.5) / 2, (2 / 3 + 1) / 2])
    flipped = aggregate_ranks(scores, "mean", lower_is_better=["b"])  # b ranks 2.5 2.5 1
    assert flipped == pytest.approx([(1 / 3 + 2.5 / 3) / 2, (1 + 2.5 / 3) / 2, (2 / 3 + 1 / 3) / 2])
    # the log form punishes one bad rank more than the mean does: [best, worst] vs [middle, middle]
    split = {"a": [3.0, 2.0, 1.0], "b": [1.0, 2.0, 3.0]}
    assert aggregate_ranks(split, "log")[1] > aggregate_ranks(split, "log")[0]
    assert aggregate_ranks(split, "mean")[1] == pytest.approx(aggregate_ranks(split, "mean")[0])


def test_aggregate_ranks_refuses_bad_input():
    with pytest.raises(SegnasError, match="same networks"):
        aggregate_ranks({"a": [1.0, 2.0], "b": [1.0]})
    with pytest.raises(SegnasError, match="kind"):
        aggregate_ranks({"a": [1.0]}, "median")  # type: ignore[arg-type]
    with pytest.raises(SegnasError, match="at least one"):
        aggregate_ranks({})
    with pytest.raises(SegnasError, match="no scores"):
        aggregate_ranks({"a": [1.0]}, lower_is_better=["b"])


def test_aggregate_names():
    assert AGGREGATES["az_nas"] == RankAggregate(AZ_PROXIES, "log")
    inline = resolve_aggregate("rank_mean(zico, meco)")
    assert inline == RankAggregate(("zico", "meco"), "mean") and resolve_aggregate(inline.name) == inline
    assert resolve_aggregate("snip") is None
    with pytest.raises(SegnasError, match="unknown proxy 'nope'"):
        resolve_aggregate("rank_log(snip,nope)")
    with pytest.raises(SegnasError, match="already taken"):
        register_aggregate("snip", ["params", "flops"])
    try:
        mine = register_aggregate("size_rank_test", ["params", "flops"], "mean")
        assert resolve_aggregate("size_rank_test") is mine
    finally:
        AGGREGATES.pop("size_rank_test", None)
    with pytest.raises(SegnasError, match="rank aggregate"):
        score("az_nas", chain(bn=True), [small(2)])


def test_score_population_ranks_the_networks_among_themselves():
    nets, batch = [chain(bn=True, seed=s) for s in range(3)], small(3)
    per_net = {n: [score(n, net, [batch], seed=2) for net in nets] for n in AZ_PROXIES}
    assert score_population("az_nas", nets, [batch], seed=2) == pytest.approx(aggregate_ranks(per_net, "log"))
    agg = resolve_aggregate("rank_mean(az_expressivity,az_trainability)")
    records = [agg.component_scores(net, [batch], seed=2) for net in nets]
    assert agg.combine(records) == pytest.approx(
        aggregate_ranks({k: per_net[k] for k in agg.components}, "mean"))
    assert score_population("params", nets, [batch]) == [score("params", net, [batch]) for net in nets]
    with pytest.raises(SegnasError, match="no score for"):
        agg.combine([{"az_expressivity": 1.0}])
