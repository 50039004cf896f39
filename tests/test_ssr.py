"""SSR on tiny settings: the joint space, the SSR loss, shrinking, and the job end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from segnas.cost.export import export_onnx
from segnas.errors import SegnasError
from segnas.jobs.search import make_settings, search_job
from segnas.spaces import build_from_arch, read_arch_file
from segnas.spaces.joint import JointArch, JointSpace
from segnas.spaces.joint.supernet import normalized, ssr_loss

SPACE = JointSpace(channels=(8, 16), slots=(2, 2), stem_channels=4, decoder_width=8, dilations=(1, 2),
                   width_ratios=(1.0, 0.5))


def flops_of(net, x):
    with FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops()


def test_ssr_loss_is_zero_for_one_candidate_and_at_uniform_and_negative_otherwise():
    active = torch.tensor([[True, False, False], [True, True, True], [True, True, True]])
    p = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1]])
    loss = ssr_loss(p, active)
    assert loss[0].abs() < 1e-6 and loss[1].abs() < 1e-6 and loss[2] < -0.1


def test_ssr_loss_gradient_pushes_p_towards_one_hot():
    alpha = torch.tensor([0.2, 0.0, -0.1], requires_grad=True)
    active = torch.ones(3, dtype=torch.bool)
    opt = torch.optim.SGD([alpha], lr=2.0)
    history = []
    for _ in range(300):
        opt.zero_grad()
        ssr_loss(normalized(alpha, active), active).backward()
        opt.step()
        history.append(normalized(alpha.detach(), active).max().item())
    # minimizing −KL(U‖p) silences candidates one by one (an L0-like penalty) until p is one-hot
    assert history[-1] > 0.99 and normalized(alpha.detach(), active).argmax() == 0


def test_weights_are_sigmoid_normalized_over_active_candidates():
    alpha = torch.tensor([0.0, 1.0, 2.0])
    p = normalized(alpha, torch.tensor([True, False, True]))
    s = torch.sigmoid(alpha)
    torch.testing.assert_close(p, torch.stack([s[0], torch.tensor(0.0), s[2]]) / (s[0] + s[2]))


def test_arch_roundtrip_and_clear_errors():
    arch = SPACE.sample(np.random.default_rng(0), spread=True)
    assert JointArch.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
    bad = arch.to_dict()
    bad["slots"][0][0] = {"op": "fact", "dilation": 1, "half": False, "mid": 99, "out": 8}
    with pytest.raises(SegnasError, match=r"slots\[0\]\[0\].mid"):
        JointArch.from_dict(bad)
    with pytest.raises(SegnasError, match="'depth': unknown field"):
        JointArch.from_dict({**arch.to_dict(), "depth": 3})


def test_shrinking_never_removes_the_last_candidate_and_cuts_compute():
    torch.manual_seed(0)
    net = SPACE.supernet(3, (32, 48)).eval()
    x = torch.randn(1, 3, 32, 48)
    before = flops_of(net, x)
    with torch.no_grad():
        for a in net.alphas.values():
            a.normal_(0, 2)
    dropped = net.shrink(0.5)
    assert dropped["ops"] > 0 and flops_of(net, x) < before
    for _ in range(20):  # even an absurd threshold keeps one candidate of every decision
        net.shrink(0.999)
    assert net.is_single()
    for s in range(2):
        assert (net.active(f"op{s}").sum(-1) == 1).all()
    # a single network: the soft supernet is exactly its argmax network
    soft = net(x)
    net.set_width_mode("argmax")
    torch.testing.assert_close(net(x), soft)


def test_width_shrinking_slices_the_blocks():
    net = SPACE.supernet(3, (32, 48)).eval()
    with torch.no_grad():
        net.alphas["op0"].fill_(-5.0)
        net.alphas["op0"][:, 1] = 5.0  # slot 0's block 1 clearly best
        net.alphas["mid0"][:, 1, 0] = -5.0  # ... at the narrow mid width
    for _ in range(3):
        net.shrink(0.5)
    assert net.active("op0")[0].sum() == 1 and net.active("mid0")[0, 1].tolist() == [False, True]
    net(torch.randn(1, 3, 32, 48))
    assert net.slots[0][0][1].active[0] == 4  # runs on 4 of its 8 mid channels


def test_resource_gradient_lowers_expected_cost():
    from segnas.cost.flops import count_flops

    net = SPACE.supernet(3, (32, 48))

    def gflops(keys):
        return [count_flops(k.build().eval(), k.input_shape).gflops for k in keys]

    opt = torch.optim.Adam(net.arch_parameters(), lr=0.05)
    fixed = net.cost_tables(gflops)[0]  # stem, downsamplers, decoder: not searchable
    start = net.expected_cost(gflops).item() - fixed
    for _ in range(20):
        opt.zero_grad()
        net.expected_cost(gflops).backward()
        opt.step()
    assert net.expected_cost(gflops).item() - fixed < 0.7 * start


def tiny_data(tmp_path, **section) -> dict:
    return {
        "method": "ssr",
        "data": {"name": "synthetic", "options": {"size": [48, 64], "length": 8}, "crop_size": [48, 64],
                 "batch_size": 2},
        "latency": {"backend": "eager", "threads": 1, "table_min_runs": 1, "table_min_time_s": 0.0},
        "ssr": {"space": {"channels": [8, 16], "slots": [2, 2], "stem_channels": 4, "decoder_width": 8,
                          "dilations": [1, 2], "width_ratios": [1.0, 0.5]},
                "resource": "flops", "target_gflops": 0.01,  # counted, not timed: the run is deterministic
                "pretrain_epochs": 1, "search_epochs": 30, "arch_lr": 0.3, "shrink_threshold": 0.6,
                "gap_val_images": 4,
                # A strong decay keeps the last two candidates of a decision off sigmoid saturation (where
                # p stops moving), so that this 2-step-per-epoch search ends within the epoch cap.
                "arch_weight_decay": 1e-3, **section},
        "threads": 1, "final": {"epochs": 1, "overrides": {"ema_decay": None}}, "out_dir": str(tmp_path / "runs"), "progress": False}


@pytest.fixture
def tiny_ssr(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))
    return lambda **section: tiny_data(tmp_path, **section)


def test_ssr_search_shrinks_to_one_network_then_trains(tiny_ssr, tmp_path):
    summary = search_job(make_settings("ssr", tiny_ssr()))  # FLOPs-regularized: no latency target needed
    run = Path(summary["run_dir"])
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    search = [r for r in records if r["phase"] == "search"]
    assert summary["details"]["converged"] and search[-1]["single"] and len(search) < 30  # ended by itself
    assert "single network" in search[-1]["stopped"]
    ops = [r["active_ops"] for r in search]
    assert all(b <= a for a, b in zip(ops, ops[1:])) and ops[-1] == 4  # one candidate per slot
    assert all({"soft_miou", "argmax_miou", "gap", "derived_latency_ms"} <= set(r) for r in search)
    assert (run / "archs" / f"arch_epoch{len(search):03d}.json").is_file()
    data = read_arch_file(run / "arch.json")
    assert data["space"] == "joint" and data["converged"] is True
    net = build_from_arch(data, 11).eval()
    path = export_onnx(net, tmp_path / "ssr.onnx", (1, 3, 48, 64))
    assert Path(path).is_file()
    found = summary["networks"]["arch"]
    assert found["measured_ms"] > 0 and found["training"]["best_val_miou"] >= 0


def test_resumed_ssr_job_keeps_its_architecture(tiny_ssr):
    first = search_job(make_settings("ssr", {**tiny_ssr(), "final": {"epochs": 0}}))
    run = Path(first["run_dir"])
    found = read_arch_file(run / "arch.json")
    # the run as a kill after the last checkpoint leaves it: the architecture comes back from the checkpoint
    (run / "arch.json").unlink()
    (run / "search_result.json").unlink()
    again = search_job(None, resume=run)
    assert again["run_dir"] == str(run) and read_arch_file(run / "arch.json") == found


def test_the_latency_resource_needs_a_target_and_the_flops_resource_its_gflops(tiny_ssr):
    from segnas.search.strategies.ssr import SSRSearch

    latency = make_settings("ssr", {**tiny_ssr(), "ssr": {"resource": "latency"}})
    assert SSRSearch().target_required(latency)
    with pytest.raises(SegnasError, match="latency.target_ms: give the latency target"):
        search_job(latency)
    assert not SSRSearch().target_required(make_settings("ssr", tiny_ssr()))
    with pytest.raises(SegnasError, match="target_gflops"):
        make_settings("ssr", {**tiny_ssr(), "ssr": {"resource": "flops"}})


def test_joint_networks_leave_channels_last_under_bf16():
    """bf16 + channels-last gives NaN weight gradients on joint networks (see JointNet): the trainer
    keeps them in NCHW then, and only then."""
    from types import SimpleNamespace

    from segnas.engine.trainer import use_channels_last
    from segnas.zoo import build_model

    joint = SPACE.build(SPACE.sample(np.random.default_rng(0)), 11)
    other = build_model("fast_scnn", 11)
    settings = lambda bf16, cl: SimpleNamespace(bf16=bf16, channels_last=cl)  # noqa: E731
    assert not use_channels_last(settings(True, True), joint)
    assert use_channels_last(settings(False, True), joint)
    assert use_channels_last(settings(True, True), other)
    assert not use_channels_last(settings(True, False), other)


def test_latency_resource_regularizes_towards_the_target(tiny_ssr):
    """Same seed, a target far below the space's latencies: with the resource term the expected
    latency ends lower than without it."""
    lines: list[str] = []

    def search(weight: float) -> list[dict]:
        data = tiny_ssr(resource="latency", target_gflops=None, search_epochs=2, gap_val_images=0,
                        resource_weight=weight)
        # (a target far below the space on any host: not refused as out of reach, which depends on its speed)
        data.update(final={"epochs": 0}, latency={**data["latency"], "target_ms": 0.5, "check_target": False})
        run = Path(search_job(make_settings("ssr", data), echo=lines.append)["run_dir"])
        assert read_arch_file(run / "arch.json")["predicted_latency_ms"] > 0
        return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][1:]

    free = search(0.0)
    # the table's operators are timed before the search, said in a line; the second search finds them kept
    timing = [x for x in lines if x.startswith("latency table: timing ")]
    assert len(timing) == 1 and int(timing[0].split()[3]) > 10
    pulled = search(50.0)
    assert len([x for x in lines if x.startswith("latency table: timing ")]) == 1
    assert all(r["arch0_resource"] > 0 and r["expected_cost"] > 0 for r in pulled)  # E[latency] in ms
    assert pulled[-1]["expected_cost"] < free[-1]["expected_cost"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("resource", ["latency", "flops"])
def test_ssr_searches_on_a_gpu(tiny_ssr, resource):
    data = tiny_ssr(resource=resource, search_epochs=2)
    data.update(final={"epochs": 0}, device="cuda", latency={**data["latency"], "target_ms": 2.0})
    summary = search_job(make_settings("ssr", data))
    assert summary["networks"]["arch"]["predicted_ms"] > 0
