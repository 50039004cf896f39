"""Data-parallel training under torchrun (issue 28): N processes train the same steps as one process
with the global batch, a one-shot search keeps identical architecture parameters on every rank, and
a rank killed with SIGKILL followed by a resume ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import _ddp_work
from segnas.engine import distributed
from segnas.errors import SegnasError

HERE = Path(__file__).resolve().parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


def torchrun(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)]), "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = subprocess.run([*TORCHRUN, str(HERE / "_ddp_work.py"), *args], env=env, capture_output=True, text=True,
                          timeout=240)
    if check and done.returncode != 0:
        raise AssertionError(f"torchrun failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def in_process(*args: str) -> dict:
    """The same job in this process (WORLD_SIZE unset), torch's thread count restored after."""
    threads = torch.get_num_threads()
    try:
        _ddp_work.main(list(args))
    finally:
        torch.set_num_threads(threads)
    return json.loads((Path(args[1]) / "rank0.json").read_text())


def ranks(run: Path, n: int = 2) -> list[dict]:
    return [json.loads((run / f"rank{r}.json").read_text()) for r in range(n)]


@pytest.fixture(scope="module")
def ddp_train(tmp_path_factory) -> Path:
    """An uninterrupted 2-process training (global batch 8: 4 images per rank, 3 epochs of 2 steps)."""
    run = tmp_path_factory.mktemp("ddp") / "uninterrupted"
    torchrun("train", str(run), "--batch", "8")
    return run


def test_two_processes_train_like_one_process_with_the_doubled_batch(ddp_train, tmp_path):
    single = in_process("train", str(tmp_path / "one"), "--batch", "8")
    r0, r1 = ranks(ddp_train)
    assert r0["world_size"] == 2 and single["world_size"] == 1
    assert r0["steps"] == single["steps"] == 6
    assert r0["losses"] == pytest.approx(single["losses"], rel=1e-4, abs=1e-5)
    assert r0["losses"][-1] < r0["losses"][0]  # it learns
    assert r0["weights"] == pytest.approx(single["weights"], rel=1e-4, abs=1e-5)
    assert r0["weights"] == r1["weights"]  # one network on every rank
    # rank 0 alone wrote the run directory: one metrics line per epoch, one set of checkpoints
    lines = (ddp_train / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    assert sorted(p.name for p in (ddp_train / "checkpoints").iterdir()) == ["best.pt", "last.prev.pt", "last.pt"]


def test_a_rank_killed_mid_run_then_resumed_ends_like_an_uninterrupted_run(ddp_train, tmp_path):
    run = tmp_path / "killed"
    killed = torchrun("train", str(run), "--batch", "8", "--kill-rank", "1", "--kill-epoch", "2", check=False)
    assert killed.returncode != 0 and not (run / "rank0.json").exists()
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    torchrun("train", str(run), "--batch", "8")
    assert "resumed at epoch 1" in (run / "log.txt").read_text()
    resumed, uninterrupted = ranks(run), ranks(ddp_train)
    assert resumed[0]["losses"] == uninterrupted[0]["losses"]
    assert resumed[0]["weights"] == pytest.approx(uninterrupted[0]["weights"], rel=1e-6, abs=1e-7)
    assert resumed[1]["weights"] == resumed[0]["weights"]


def test_a_one_shot_search_under_ddp_derives_the_same_architecture_on_every_rank(tmp_path):
    torchrun("oneshot", str(tmp_path / "ddp"), "--batch", "8", "--epochs", "2")
    r0, r1 = ranks(tmp_path / "ddp")
    assert r0["alphas"] == r1["alphas"] and r0["derived"] == r1["derived"]
    assert r0["weights"] == r1["weights"]
    single = in_process("oneshot", str(tmp_path / "one"), "--batch", "8", "--epochs", "2")
    assert r0["derived"] == single["derived"]
    for a, b in zip(r0["alphas"], single["alphas"]):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)


def test_outside_torchrun_every_distributed_call_is_a_no_op():
    assert not distributed.context().enabled and distributed.is_main()
    net = _ddp_work.tiny_net()
    assert distributed.convert_sync_batchnorm(net) is net
    assert not any(isinstance(m, distributed.SyncBatchNorm2d) for m in net.modules())
    assert distributed.mean_over_ranks({"loss": 2.0}) == {"loss": 2.0}
    assert distributed.global_batch(8, 5) == 5


def test_a_global_batch_that_does_not_split_over_the_processes_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "context", lambda: distributed.DistContext(0, 2, 0))
    with pytest.raises(SegnasError, match="data.batch_size: 7 is not divisible by the 2"):
        distributed.global_batch(7, 16)
    assert distributed.global_batch(8, 5) == 4


def test_a_search_job_under_torchrun_measures_latency_on_rank_0_alone(tmp_path, monkeypatch):
    """The latency table, the space's correction and the found network are timed by rank 0 (ranks
    timing at once would share the cores); the other ranks read its cache and figures. The final
    training runs data-parallel; one search_result.json."""
    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path / "cache"))
    torchrun("search", str(tmp_path / "runs"))
    r0, r1 = ranks(tmp_path / "runs")
    assert r0["measured_entries"] > 0 and r1["measured_entries"] == 0
    found, other = r0["summary"]["networks"]["arch"], r1["summary"]["networks"]["arch"]
    assert {k: v for k, v in found.items() if k != "training"} == {k: v for k, v in other.items() if k != "training"}
    assert found["training"]["best_val_miou"] == other["training"]["best_val_miou"]
    assert found["measured_ms"] > 0 and found["correction"] and found["training"]["steps"] == 2
    runs = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1 and (runs[0] / "search_result.json").is_file()


def test_swa_with_synchronized_batchnorm_under_torchrun_gives_every_rank_the_same_average(tmp_path):
    """The average's BatchNorm statistics are recomputed on every rank at once (SyncBatchNorm gathers
    them over the ranks' batches): rank 0 alone would wait forever for the others' all-reduce."""
    torchrun("train", str(tmp_path / "swa"), "--batch", "8", "--epochs", "2", "--swa")
    r0, r1 = ranks(tmp_path / "swa")
    assert r0["swa_weights"] == pytest.approx(r1["swa_weights"]) and r0["val_miou"][-1] is not None


@pytest.mark.parametrize("method", ["random", "saswot", "rl", "supernet"])
def test_a_sample_based_search_under_torchrun_is_refused_before_it_starts(tmp_path, monkeypatch, method):
    """Every rank would run the whole search (the same candidates N times, all timing latency at
    once): sample-based searches parallelize with --workers instead."""
    from segnas.jobs.search import make_settings, search_job

    monkeypatch.setattr(distributed, "context", lambda: distributed.DistContext(0, 2, 0))
    settings = make_settings(method, {"data": {"name": "synthetic"}, "latency": {"target_ms": 10},
                                      "out_dir": str(tmp_path)})
    with pytest.raises(SegnasError, match=f"segnas search {method}: a sample-based search .* not under torchrun"):
        search_job(settings)
    assert not list(tmp_path.iterdir())


def test_under_torchrun_the_continue_line_repeats_the_launch_and_another_world_size_is_said(tmp_path, monkeypatch):
    """The hint lacked torchrun: run as it said, a 2-process search continued in 1 process and found
    another architecture, without a word."""
    from segnas.engine.step import LoopState
    from segnas.errors import SegnasWarning
    from segnas.training.start import continue_command

    (tmp_path / "config.yaml").write_text("model: {name: fast_scnn}\n")
    assert continue_command(tmp_path) == f"segnas train --resume {tmp_path}"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert continue_command(tmp_path) == f"torchrun --standalone --nproc-per-node 2 -m segnas train --resume {tmp_path}"
    monkeypatch.delenv("WORLD_SIZE")
    saved = LoopState(0).state_dict()
    saved["rng_ranks"] = [saved["rng"], saved["rng"]]
    with pytest.warns(SegnasWarning, match="computed by 2 process.es. and continues with 1: .* 2 processes in all"):
        LoopState(0).load_state_dict(saved)


def test_a_batch_that_cannot_be_split_over_the_processes_is_refused_before_the_run_directory(tmp_path, monkeypatch):
    from segnas.config import TrainConfig
    from segnas.config.io import build_config
    from segnas.errors import SegnasError
    from segnas.training import train_job

    cfg = build_config(TrainConfig, {"data": {"name": "synthetic", "batch_size": 3}, "out_dir": str(tmp_path / "r")})
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SegnasError, match="data.batch_size: 3 is not divisible by the 2 data-parallel processes"):
        train_job(cfg)
    assert not (tmp_path / "r").exists()


def test_a_mistake_every_rank_meets_is_said_once_and_one_a_rank_alone_meets_is_said(tmp_path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    done = subprocess.run([*TORCHRUN, "-m", "segnas", "train", "--data", "synthetic", "--steps", "1", "--set",
                           "optim.lr=-1", "--out-dir", str(tmp_path)], env={**env, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=240)
    assert done.returncode != 0
    assert [x for x in done.stderr.splitlines() if x.startswith("error:")] == [
        "error: optim.lr: Input should be greater than 0 (got -1)"], done.stderr
    from segnas.cli.main import first_to_say

    (tmp_path / "attempt_0" / "1").mkdir(parents=True)
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "attempt_0" / "1" / "error.json"))
    assert first_to_say("data: a.png: unreadable") and not first_to_say("data: a.png: unreadable")
    assert first_to_say("data: b.png: unreadable")
