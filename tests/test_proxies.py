import copy
import math

import pytest
import torch
from torch import nn

from segnas.cost import count_parameters
from segnas.errors import SegnasError
from segnas.proxies import PROXIES, score, score_all
from segnas.proxies.synflow import linearize, log_synflow
from segnas.zoo import MODELS, build_model

NUM_CLASSES = 5
LOSS_PROXIES = ["grad_norm", "snip", "grasp", "fisher"]


def tiny_net(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return build_model("fast_scnn", NUM_CLASSES, width=0.25).to(dtype)


def data(n=2, h=32, w=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, h, w, generator=g), torch.randint(0, NUM_CLASSES, (n, h, w), generator=g)


def conv_stack(depth: int, channels: int = 16) -> nn.Sequential:
    """A plain chain: conv3×3-BN-ReLU ``depth - 1`` times, then a 1×1 classifier."""
    layers: list[nn.Module] = []
    cin = 3
    for _ in range(depth - 1):
        layers += [nn.Conv2d(cin, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU()]
        cin = channels
    layers.append(nn.Conv2d(cin, NUM_CLASSES, 1))
    return nn.Sequential(*layers)


@pytest.mark.parametrize("name", sorted(PROXIES))
def test_every_proxy_is_finite_and_deterministic(name):
    net, batch = tiny_net(), data()
    state = torch.get_rng_state()
    first = score(name, net, [batch], seed=3)
    assert isinstance(first, float) and math.isfinite(first)
    assert score(name, net, [batch], seed=3) == first
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG stream is left alone


def test_seed_changes_a_random_proxy():
    net, batch = tiny_net(), data()
    assert score("zen", net, [batch], seed=0) != score("zen", net, [batch], seed=1)


def test_callers_network_is_unchanged():
    net, batch = tiny_net(), data()
    net.train()
    before = copy.deepcopy(net.state_dict())
    scores = score_all(sorted(PROXIES), net, [batch])
    assert set(scores) == set(PROXIES)
    assert net.training and all(m.training for m in net.modules())
    after = net.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None and p.requires_grad for p in net.parameters())


def test_baselines_match_the_cost_model():
    net, batch = tiny_net(), data()
    assert score("params", net, [batch]) == count_parameters(net)
    assert score("flops", net, [batch]) > 0


def test_synflow_log_space_on_a_deep_stack():
    torch.manual_seed(0)
    deep = conv_stack(100)
    with torch.no_grad():
        for m in deep.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(1000)  # the path sum is far beyond float64: e^(100·~9)
    assert math.isnan(log_synflow(linearize(copy.deepcopy(deep)), (8, 8)))
    value = score("synflow", deep, [data(1, 8, 8)])
    assert math.isfinite(value) and value > 709  # log of a number float64 cannot hold


def test_synflow_rescaling_is_exact_on_a_chain():
    torch.manual_seed(0)
    chain = conv_stack(6)
    exact = log_synflow(linearize(copy.deepcopy(chain)), (8, 8))
    rescaled = log_synflow(linearize(copy.deepcopy(chain)), (8, 8), rescale=True)
    assert math.isfinite(exact)
    assert rescaled == pytest.approx(exact, rel=1e-12)
    net = linearize(copy.deepcopy(chain))  # by definition: Σ |w ⊙ ∂R/∂w| with R = Σ f(1)
    net(torch.ones(1, 3, 8, 8, dtype=torch.float64)).sum().backward()
    direct = sum(float((m.weight.detach() * m.weight.grad).sum()) for m in net if isinstance(m, nn.Conv2d))
    assert exact == pytest.approx(math.log(direct), rel=1e-12)


@pytest.mark.parametrize("name", LOSS_PROXIES)
def test_all_pixels_ignored_gives_zero(name):
    images, masks = data()
    assert score(name, tiny_net(), [(images, torch.full_like(masks, 255))]) == 0.0


@pytest.mark.parametrize("name", LOSS_PROXIES)
def test_ignored_half_equals_the_cropped_labelled_half(name):
    # A per-pixel (1×1) network sees the same logits on the left half with or without the right
    # half, so ignoring the right half must give the score of the left half alone.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Conv2d(8, NUM_CLASSES, 1))
    images, masks = data()
    half = masks.clone()
    half[..., 24:] = 255
    masked = score(name, net, [(images, half)])
    cropped = score(name, net, [(images[..., :24], masks[..., :24])])
    assert masked != 0.0
    assert masked == pytest.approx(cropped, rel=1e-4)


@pytest.mark.parametrize("name", LOSS_PROXIES)
def test_ignore_index_is_honoured(name):
    net, (images, masks) = tiny_net(), data()
    with_255, with_9 = masks.clone(), masks.clone()
    with_255[:, :10] = 255
    with_9[:, :10] = 9
    assert score(name, net, [(images, with_9)], ignore_index=9) == score(name, net, [(images, with_255)])
    assert score(name, net, [(images, with_255)]) != score(name, net, [(images, masks)])


def test_a_mask_value_outside_the_classes_is_an_error():
    images, masks = data()
    masks[0, 0, 0] = 7
    with pytest.raises(SegnasError, match="mask value 7"):
        score("grad_norm", tiny_net(), [(images, masks)])


@pytest.mark.parametrize("name", ["grad_norm", "snip", "fisher", "grasp", "jacob_cov", "nwot", "zen"])
def test_chunk_size_does_not_change_the_score(name):
    # float64: the untrained net at 32×48 has 1×2 maps at depth whose BatchNorm amplifies float32
    # rounding (which differs between batch sizes) chaotically; the algorithm itself is invariant.
    net, batch = tiny_net(torch.float64), data(4)
    one = score(name, net, [batch], chunk_size=1)
    four = score(name, net, [batch], chunk_size=4)
    assert one == pytest.approx(four, rel=1e-9)


def test_unknown_proxy_name():
    net, batch = tiny_net(), data()
    with pytest.raises(SegnasError, match="unknown name 'nope'.*synflow"):
        score("nope", net, [batch])
    with pytest.raises(SegnasError, match="nope"):
        score_all(["snip", "nope"], net, [batch])


def test_bad_batches_are_user_errors():
    net, batch = tiny_net(), data()
    with pytest.raises(SegnasError, match="batches is empty"):
        score("snip", net, [])
    with pytest.raises(SegnasError, match="got one pair"):
        score("snip", net, batch)
    with pytest.raises(SegnasError, match="chunk_size must be a positive integer"):
        score("snip", net, [batch], chunk_size=0)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_proxy_runs_on_every_zoo_network(model):
    """Real networks have in-place activations, residual adds and auxiliary heads that tiny test
    networks lack (synflow once crashed on ddrnet_23_slim's in-place ReLUs)."""
    torch.manual_seed(0)
    net = build_model(model, 5)
    scores = score_all(sorted(PROXIES), net, [data(n=2, h=64, w=64)])
    bad = {n: v for n, v in scores.items() if not math.isfinite(v)}
    assert not bad, f"{model}: proxies not finite: {bad}"


def test_the_relu_tap_sees_prelu_and_relu6_modules_and_no_other_clamp():
    from segnas.proxies.relu_tap import ReluTap

    seen = []
    for module, expected in ((nn.PReLU(), 1), (nn.ReLU6(), 1), (nn.ReLU6(inplace=True), 1), (nn.Hardtanh(), 0),
                             (nn.Hardtanh(0.0, 1.0), 1), (nn.LeakyReLU(), 1)):
        seen.clear()
        with ReluTap(seen.append):
            module(torch.randn(1, 2, 3, 3))
        assert len(seen) == expected, module


def test_too_few_images_for_a_proxy_are_refused_before_scoring():
    from segnas.evaluate.proxy import check_proxy_images, fixed_batches

    check_proxy_images("nwot", 9, 8)  # the ninth image joins the first batch
    images = [(torch.zeros(3, 4, 4), torch.zeros(4, 4, dtype=torch.long))] * 9
    assert [b[0].shape[0] for b in fixed_batches(images, 9, 8)] == [9]
    assert [b[0].shape[0] for b in fixed_batches(images, 9, 4)] == [4, 5]
    with pytest.raises(SegnasError, match=r"scoring.images: jacob_cov needs at least 2 images per batch, got 1"):
        check_proxy_images("jacob_cov", 1, 8)
    with pytest.raises(SegnasError, match=r"--images: swap needs at least 24 images, got 16"):
        check_proxy_images("swap", 16, 8, "--images")
    with pytest.raises(SegnasError, match="swap needs at least 24 images"):
        check_proxy_images("rank_mean(nwot,swap)", 8, 8)
    check_proxy_images("swap", 24, 8)
    check_proxy_images("synflow", 1, 1)
