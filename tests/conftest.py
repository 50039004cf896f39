import os

import pytest
import torch
import yaml

from segnas.cost import LatencyModel

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")  # (the threads of a job whose settings leave them unset: job_threads)
# Latency tables and corrections measured in tests are trusted whatever else runs on the machine
# (a busy machine would otherwise keep them from the cache); tests of that check unset it.
os.environ["SEGNAS_IGNORE_LOAD"] = "1"


def tiny_config(tmp_path, **overrides) -> dict:
    """Settings of a seconds-long training run on small synthetic scenes."""
    cfg = {
        "job": "t",
        "data": {"name": "synthetic", "options": {"size": [48, 64], "length": 12}, "crop_size": [48, 64],
                 "batch_size": 4, "eval_batch_size": 4},
        "model": {"name": "fast_scnn", "options": {"width": 0.5}},
        "optim": {"name": "adamw", "lr": 0.003},
        "epochs": 3,
        "threads": 1,
        "progress": False,
        "out_dir": str(tmp_path / "runs"),
    }
    for key, value in overrides.items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


@pytest.fixture(scope="session", autouse=True)
def _test_cache(tmp_path_factory):
    """Tests never read or write the user's segnas cache (latency tables, dataset checks): one cache
    folder for the test session; modules that need their own set SEGNAS_CACHE themselves."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGNAS_CACHE", str(tmp_path_factory.mktemp("segnas-cache")))
        yield


@pytest.fixture
def tiny_cfg(tmp_path):
    return lambda **kw: tiny_config(tmp_path, **kw)


@pytest.fixture
def tiny_yaml(tmp_path):
    def write(**kw):
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(tiny_config(tmp_path, **kw)))
        return path

    return write


@pytest.fixture(autouse=True)
def _no_latency_calibration(request, monkeypatch):
    """A search fits the latency correction on a few dozen measured networks before it starts
    (seconds to minutes): tests skip that, except those marked ``calibration``. Tests that run a
    search in a subprocess set ``latency.calibration_networks: 0`` instead."""
    if request.node.get_closest_marker("calibration") is None:
        skip_latency_calibration(monkeypatch)


def skip_latency_calibration(patch: pytest.MonkeyPatch) -> None:
    """No latency calibration under ``patch`` (for module fixtures, which run before the function
    fixtures of this file)."""
    patch.setattr(LatencyModel, "calibrate", lambda self, *args, **kwargs: None)


@pytest.fixture(autouse=True)
def _quick_found_network_timing(monkeypatch):
    """A search times its found network for seconds at its end (``segnas.jobs.search.time_found``):
    tests time it in two short rounds (what they check is that it is timed and recorded). Searches in
    a subprocess patch it themselves (``tests/_ddp_work.py``)."""
    quick_found_network_timing(monkeypatch)


def quick_found_network_timing(patch: pytest.MonkeyPatch) -> None:
    """The found network timed in two short rounds under ``patch``."""
    import segnas.jobs.search as search

    quick = search.time_found
    patch.setattr(search, "time_found", lambda *a, **k: quick(*a, **{**k, "min_runs": 2, "min_time_s": 0.0, "rounds": 2}))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test starts with torch on one thread, whatever an earlier test's job set."""
    yield
    torch.set_num_threads(1)
