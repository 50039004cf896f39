import json
import os
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from segnas.cost import LatencyTable, check_parity, count_flops, export_onnx, export_torchscript, predict_latency
from segnas.cost.backends import pinned_threads, prepare
from segnas.cost.machine import measure_matmul_peak
from segnas.errors import SegnasError
from segnas.nn.ops import OpKey
from segnas.zoo import build_model


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))


def test_flops_of_a_convolution_and_the_extra_rules():
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    r = count_flops(conv, (1, 8, 10, 12))
    assert r.gmacs * 1e9 == pytest.approx(8 * 16 * 9 * 10 * 12)
    assert r.gflops == pytest.approx(2 * r.gmacs)
    up = nn.Upsample(scale_factor=2, mode="bilinear")
    assert count_flops(up, (1, 3, 4, 5)).gmacs * 1e9 == pytest.approx(4 * 3 * 8 * 10)
    pool = nn.AvgPool2d(2)
    assert count_flops(pool, (1, 3, 4, 6)).gmacs * 1e9 == pytest.approx(4 * 3 * 2 * 3)


def test_flops_grow_with_resolution():
    model = build_model("fast_scnn", 11)
    small, big = count_flops(model, (1, 3, 64, 64)), count_flops(model, (1, 3, 128, 128))
    assert 3.5 < big.gflops / small.gflops < 4.5


@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    return build_model("fast_scnn", 5, width=0.5).eval()


@pytest.mark.parametrize("backend", ["eager-cl", "torchscript", "onnxruntime", "openvino"])
def test_backends_agree_with_eager(small_net, backend):
    shape = (1, 3, 64, 96)
    x = torch.randn(*shape).numpy()
    with pinned_threads(1):
        ref = prepare("eager", small_net, shape, 1)(x)
        out = prepare(backend, small_net, shape, 1)(x)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-3, rtol=0)


def test_onnx_and_torchscript_export_parity_and_detecting_a_mismatch(small_net, tmp_path):
    shape = (1, 3, 64, 96)
    onnx_path = export_onnx(small_net, tmp_path / "m.onnx", shape)
    ts_path = export_torchscript(small_net, tmp_path / "m.pt", shape)
    for path in (onnx_path, ts_path):
        result = check_parity(small_net, path, shape)
        assert result.ok, result
    changed = build_model("fast_scnn", 5, width=0.5).eval()  # other weights: parity must fail
    assert not check_parity(changed, onnx_path, shape).ok


def test_dynamic_onnx_runs_other_sizes(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).eval()
    path = export_onnx(model, tmp_path / "d.onnx", (1, 3, 64, 64), dynamic=True)
    for shape in [(1, 3, 64, 64), (2, 3, 97, 131)]:
        assert check_parity(model, path, shape).ok


def keys():
    return [OpKey("conv", 8, 8, 32, 32), OpKey("conv_2x", 8, 16, 32, 32, stride=2), OpKey("skip", 8, 8, 32, 32)]


def test_table_cache_round_trip(tmp_path):
    path = tmp_path / "t.json"
    table = LatencyTable("eager", threads=1, path=path, min_runs=3, min_time_s=0.0)
    assert table.ensure(keys(), progress=False) == 3
    assert table.measured == 3
    again = LatencyTable("eager", threads=1, path=path)
    assert again.ensure(keys(), progress=False) == 0 and again.measured == 0
    assert again.entries == table.entries
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": "other"}), "[1, 2]"])
def test_corrupt_table_is_rebuilt_with_a_warning(tmp_path, content):
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.warns(UserWarning, match="rebuilding"):
        table = LatencyTable("eager", threads=1, path=path, min_runs=3, min_time_s=0.0)
    table.ensure(keys()[:1], progress=False)
    assert json.loads(path.read_text())["format"] == "segnas-latency-table"


def test_foreign_context_table_is_not_used(tmp_path):
    path = tmp_path / "t.json"
    LatencyTable("eager", threads=1, path=path, min_runs=3, min_time_s=0.0).ensure(keys()[:1], progress=False)
    with pytest.warns(UserWarning, match="measured for"):
        other = LatencyTable("eager", threads=2, path=path)
    assert len(other) == 0


def test_predicted_latency_grows_when_an_op_gets_bigger(tmp_path):
    table = LatencyTable("onnxruntime", threads=1, path=tmp_path / "t.json", min_runs=10, min_time_s=0.05)
    shape = (1, 16, 64, 64)
    small = predict_latency([OpKey("conv", 16, 16, 64, 64)], table, shape)
    wide = predict_latency([OpKey("conv", 16, 128, 64, 64)], table, shape)
    deep = predict_latency([OpKey("conv_2x", 16, 128, 64, 64)], table, shape)
    assert small.total_ms < wide.total_ms < deep.total_ms
    assert wide.overhead_ms == small.overhead_ms > 0


def test_matmul_peak_is_measured():
    assert measure_matmul_peak(1, n=256, seconds=0.1) > 0.5


def test_measuring_latency_leaves_the_global_rng_alone(tmp_path):
    table = LatencyTable("eager", threads=1, path=tmp_path / "t.json", min_runs=2, min_time_s=0.0)
    conv = nn.Conv2d(3, 3, 3)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    table.ensure(keys(), progress=False)  # measures: builds random ops and inputs
    from segnas.cost import measure_latency

    measure_latency(conv, (1, 3, 16, 16), "eager", threads=1, min_runs=2, min_time_s=0.0)
    assert torch.equal(before, torch.get_rng_state())


def test_other_processes_load_is_measured_and_can_be_ignored(monkeypatch):
    import subprocess
    import sys

    from segnas.cost.machine import other_processes_cores

    monkeypatch.delenv("SEGNAS_IGNORE_LOAD", raising=False)
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 5: pass"])
    try:
        time.sleep(0.3)
        busy = other_processes_cores(1.0)
    finally:
        spinner.kill()
    assert busy is not None and busy > 0.6  # one spinning process: about one core
    monkeypatch.setenv("SEGNAS_IGNORE_LOAD", "1")
    assert other_processes_cores(0.1) is None


def test_operators_measured_on_a_busy_machine_are_used_but_not_saved(tmp_path, monkeypatch):
    import segnas.cost.table as table_module

    monkeypatch.setattr(table_module, "other_processes_cores", lambda *a, **k: 1.5)
    table = LatencyTable("eager", threads=1, path=tmp_path / "t.json", min_runs=2, min_time_s=0.0)
    keys = [OpKey("conv", 4, 4, 8, 8), OpKey("sep_conv", 4, 8, 8, 8)]
    with pytest.warns(UserWarning, match="other processes keep 1.5 cores busy"):
        assert table.ensure(keys, progress=False) == 2
    assert all(table.lookup(k) > 0 for k in keys)  # used by this job
    with warnings.catch_warnings():  # told once per job, not once per candidate that needs new entries
        warnings.simplefilter("error")
        assert table.ensure([OpKey("conv", 4, 4, 12, 12)], progress=False) == 1
    table.lookup(OpKey("conv", 4, 4, 16, 16))  # a later save keeps the busy ones out
    saved = json.loads((tmp_path / "t.json").read_text())["entries"]
    assert set(saved) == {OpKey("conv", 4, 4, 16, 16).to_str()}
    assert table.call_overhead((1, 3, 8, 8)) > 0  # the call overhead too: used, not saved
    assert json.loads((tmp_path / "t.json").read_text())["overheads"] == {}
    monkeypatch.setattr(table_module, "other_processes_cores", lambda *a, **k: 0.0)
    fresh = LatencyTable("eager", threads=1, path=tmp_path / "t.json", min_runs=2, min_time_s=0.0)
    assert fresh.ensure(keys, progress=False) == 2  # measured again, quietly, and kept
    assert {k.to_str() for k in keys} <= set(json.loads((tmp_path / "t.json").read_text())["entries"])
    fresh.call_overhead((1, 3, 8, 8))
    assert "1x3x8x8" in json.loads((tmp_path / "t.json").read_text())["overheads"]


def test_threads_default_to_the_container_quota_and_the_fingerprint_holds_the_cpu_features(tmp_path, monkeypatch):
    from segnas.cost import latency, machine

    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert latency.cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert latency.cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert latency.cgroup_cpu_quota(tmp_path) == 2.0
    monkeypatch.setattr(latency, "cgroup_cpu_quota", lambda: 1.5)
    assert latency.default_threads() == min(2, len(os.sched_getaffinity(0)))
    before = machine.machine_fingerprint()
    monkeypatch.setattr(machine, "cpu_features", lambda: ("avx2", "amx_tile"))
    assert machine.machine_fingerprint() != before


def test_a_backend_unknown_or_not_installed_is_refused_before_any_work(monkeypatch):
    import importlib.util

    from segnas.cost.backends import check_backend

    with pytest.raises(SegnasError, match=r"latency.backend: unknown 'onnx'; choose one of eager"):
        check_backend("onnx", "latency.backend")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(SegnasError, match=r"--backend: openvino is not installed"):
        check_backend("openvino", "--backend")
    check_backend("onnxruntime")


def test_the_activation_memory_probe_leaves_nothing_alive():
    """The probe of a training's activation memory (run before every training) keeps no copy of the
    network or its activations: a long-lived process (a notebook training in a loop) does not grow."""
    import gc

    from segnas.cost.memory import activation_bytes_per_pixel
    from segnas.zoo import build_model

    model = build_model("fast_scnn", 11, width=0.5)

    def tensors() -> int:
        gc.collect()
        return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())

    first = activation_bytes_per_pixel(model)
    before = tensors()
    assert [activation_bytes_per_pixel(model) for _ in range(3)] == [first] * 3 and tensors() == before
