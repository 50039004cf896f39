"""Files segnas keeps (issue 30): checkpoints loaded with ``weights_only=True`` and an allowlist (a
pickled callable is refused), the previous ``last.pt`` kept as a fallback, metrics cut back to the
checkpoint on resume, temporary files of killed writes cleaned, and a misshapen ``machine.json``
rebuilt with a warning."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from segnas.config.train import TrainConfig
from segnas.engine.checkpoint import (checkpoint_globals, keep_previous, load_checkpoint, load_latest_checkpoint,
                                      previous_path, save_checkpoint)
from segnas.engine.rundir import RunDir
from segnas.errors import SegnasError
from segnas.search.oneshot.engine import OneShotEngine, SearchSchedule
from segnas.training import train_job


def _epochs(run: Path, key: str = "epoch") -> list[int]:
    return [json.loads(x)[key] for x in (run / "metrics.jsonl").read_text().splitlines()]


def _allowed_names() -> set[str]:
    names = set()
    for g in checkpoint_globals():
        names.add(g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}")
    return names


# ------------------------------------------------------------------------ safe loading
class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_a_checkpoint_carrying_a_pickled_callable_is_refused_in_one_line(tmp_path):
    """weights_only=False (today) runs the callable while loading."""
    marker = tmp_path / "ran.txt"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "model_spec": {"kind": "zoo"}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(SegnasError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and "refused" in msg and "exec" in msg
    assert not marker.exists()
    # a whole pickled module (not weights) is refused the same way
    torch.save({"model": nn.Linear(1, 1), "model_spec": {}}, path)
    with pytest.raises(SegnasError, match="refused.*Linear"):
        load_checkpoint(path)
    # so is a NumPy array of Python objects (object arrays pickle arbitrary objects)
    torch.save({"model": {}, "model_spec": {}, "a": np.array([1, "x"], dtype=object)}, path)
    with pytest.raises(SegnasError, match="refused"):
        load_checkpoint(path)


def _train(tiny_cfg, **kw) -> Path:
    result = train_job(TrainConfig.model_validate(tiny_cfg(**kw)))
    return Path(result.run_dir)


def test_every_training_checkpoint_holds_only_allowlisted_things(tiny_cfg):
    run = _train(tiny_cfg, epochs=2, ema_decay=0.9, **{"optim.name": "sgd", "data.options": {"size": [48, 64],
                                                                                              "length": 8}})
    for name in ("last.pt", "last.prev.pt", "best.pt"):
        path = run / "checkpoints" / name
        assert set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) <= _allowed_names(), name
        state = load_checkpoint(path)
        assert state["model"] and state["model_spec"]["name"] == "fast_scnn"
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["ema"]["module"] and isinstance(state["rng"]["numpy"][1], np.ndarray)
    assert load_checkpoint(run / "checkpoints" / "last.prev.pt")["epoch"] == 1 and state["epoch"] == 2


def test_every_use_of_a_last_checkpoint_takes_the_weights_training_scored(tiny_cfg):
    """export, bench, proxies and a distillation teacher read last.pt's EMA weights, as eval does, not
    the raw ones beside them."""
    from segnas.training import load_teacher, resolve_model

    run = _train(tiny_cfg, epochs=2, ema_decay=0.9, **{"data.options": {"size": [48, 64], "length": 8}})
    last = run / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    ema = {k.removeprefix("module."): v for k, v in state["ema"]["module"].items()}
    assert any(not torch.equal(v, ema[k]) for k, v in state["model"].items())  # the two differ
    for model in (resolve_model(str(last))[0], load_teacher(str(last), state["classes"]["names"])):
        assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())


class ToySupernet(nn.Module):
    num_archs = 1

    def __init__(self) -> None:
        super().__init__()
        self.ops = nn.ModuleList([nn.Conv2d(3, 2, 3, padding=1), nn.Conv2d(3, 2, 1)])
        self.alpha = nn.Parameter(torch.zeros(2))

    def weight_parameters(self):
        return self.ops.parameters()

    def arch_parameters(self, i):
        return [self.alpha]

    def set_width_mode(self, mode):
        pass

    def forward(self, x, arch_index=0):
        w = F.softmax(self.alpha, 0)
        return sum(wi * op(x) for wi, op in zip(w, self.ops))


class NumpyHooks:
    """A strategy whose state holds NumPy values (like a λ computed with NumPy)."""

    def __init__(self):
        self.lam = np.float64(0.5)

    def arch_losses(self, net, i):
        return {}

    def on_epoch_end(self, engine, phase, epoch):
        self.lam = self.lam * np.float64(2.0)
        return {}

    def state_dict(self):
        return {"lambda": self.lam, "history": np.arange(3, dtype=np.int64)}

    def load_state_dict(self, state):
        self.lam = state["lambda"]


def _engine(tmp_path, name="run", search=2):
    torch.manual_seed(0)
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    sched = SearchSchedule(pretrain_epochs=1, search_epochs=search, batch_size=4, progress=False)
    return OneShotEngine(ToySupernet(), TensorDataset(x, (x[:, 0] > 0).long()), sched, RunDir(tmp_path / name),
                         NumpyHooks())


class KilledAtTheLastEpoch(NumpyHooks):
    """A search killed as its last epoch ends, before that epoch's checkpoint."""

    def on_epoch_end(self, engine, phase, epoch):
        if engine.epochs_done == 3:
            raise KeyboardInterrupt
        return super().on_epoch_end(engine, phase, epoch)


def _killed_engine(tmp_path) -> None:
    """A search of 3 epochs killed in its last: checkpoints of epochs 2 (search_last.pt) and 1 (its .prev)."""
    engine = _engine(tmp_path)
    engine.hooks = KilledAtTheLastEpoch()
    with pytest.raises(KeyboardInterrupt):
        engine.fit()


def test_every_search_checkpoint_loads_and_resumes(tmp_path):
    _killed_engine(tmp_path)
    ckpts = tmp_path / "run" / "checkpoints"
    for name in ("search_last.pt", "search_last.prev.pt", "pretrained.pt"):
        assert set(torch.serialization.get_unsafe_globals_in_checkpoint(ckpts / name)) <= _allowed_names(), name
        load_checkpoint(ckpts / name)
    resumed = _engine(tmp_path)
    assert resumed.resume_if_possible() and resumed.hooks.lam == pytest.approx(2.0) and resumed.epochs_done == 2
    resumed.fit()
    # a search that has ended keeps its last checkpoint (and pretrained.pt): the one it replaced,
    # a fallback for a write a kill cut short, is dropped (a FasterSeg supernet's: 216 MB)
    assert sorted(p.name for p in ckpts.iterdir()) == ["pretrained.pt", "search_last.pt"]
    again = _engine(tmp_path)
    assert again.resume_if_possible() and again.hooks.lam == pytest.approx(4.0) and again.epochs_done == 3


# ------------------------------------------------------------------------ fallback
def test_keep_previous_rotates_the_checkpoint_it_replaces(tmp_path):
    path = tmp_path / "last.pt"
    keep_previous(path)  # nothing yet: nothing kept
    assert not previous_path(path).exists()
    save_checkpoint(path, {"model": {}, "model_spec": {}, "epoch": 1})
    keep_previous(path)
    save_checkpoint(path, {"model": {}, "model_spec": {}, "epoch": 2})
    assert previous_path(path).name == "last.prev.pt"
    assert load_checkpoint(previous_path(path))["epoch"] == 1 and load_checkpoint(path)["epoch"] == 2
    assert load_latest_checkpoint(tmp_path / "none.pt") is None


def test_a_corrupt_last_checkpoint_falls_back_to_the_previous_with_a_notice(tiny_cfg, tmp_path):
    run = _train(tiny_cfg, epochs=2)
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(b"\x00" * 100)  # damaged after the run
    lines = []
    result = train_job(None, resume=run, echo=lines.append)
    notice = next(x for x in lines if "last.prev.pt" in x)
    assert str(last) in notice and "not a readable segnas checkpoint" in notice and "last.unusable.pt" in notice
    assert any("resuming" in x and "from epoch 1" in x for x in lines)
    assert result.epochs_done == 2 and _epochs(run) == [1, 2]
    assert (run / "checkpoints" / "last.unusable.pt").read_bytes() == b"\x00" * 100


def test_when_no_checkpoint_can_be_used_the_error_says_what_to_do(tiny_cfg, tmp_path):
    run = _train(tiny_cfg, epochs=1)
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(b"garbage")
    with pytest.raises(SegnasError) as info:  # only one epoch ran: no earlier checkpoint
        train_job(None, resume=run)
    msg = str(info.value)
    assert "\n" not in msg and str(last) in msg and "no earlier checkpoint" in msg and "delete" in msg
    previous_path(last).write_bytes(b"garbage too")
    with pytest.raises(SegnasError, match=r"earlier checkpoint is unusable too.*delete .*last\.pt and .*last\.prev\.pt"):
        train_job(None, resume=run)


def test_resume_without_checkpoints_starts_over_without_the_old_metrics(tiny_cfg):
    """Today the old metrics.jsonl is kept: epochs 1, 2, 1, 2."""
    run = _train(tiny_cfg, epochs=2)
    for name in ("last.pt", "last.prev.pt"):
        (run / "checkpoints" / name).unlink(missing_ok=True)
    result = train_job(None, resume=run)
    assert result.epochs_done == 2 and _epochs(run) == [1, 2]


def test_deleting_last_pt_resumes_from_the_previous_checkpoint(tiny_cfg):
    run = _train(tiny_cfg, epochs=2)
    (run / "checkpoints" / "last.pt").unlink()
    lines = []
    train_job(None, resume=run, echo=lines.append)
    assert any("checkpoint not found" in x and "last.prev.pt" in x for x in lines)
    assert _epochs(run) == [1, 2]


def test_search_resume_falls_back_to_the_previous_checkpoint(tmp_path):
    _killed_engine(tmp_path)
    (tmp_path / "run" / "checkpoints" / "search_last.pt").unlink()
    engine = _engine(tmp_path)
    assert engine.resume_if_possible() and engine.epochs_done == 1  # from search_last.prev.pt
    assert _epochs(tmp_path / "run", "epochs_done") == [1]


def test_search_resume_without_checkpoints_drops_the_old_metrics(tmp_path):
    """Today the old lines stay: epochs_done 1, 2, 1, 2, 3."""
    _killed_engine(tmp_path)
    for name in ("search_last.pt", "search_last.prev.pt"):
        (tmp_path / "run" / "checkpoints" / name).unlink(missing_ok=True)
    engine = _engine(tmp_path)
    assert not engine.resume_if_possible()
    engine.fit()
    assert _epochs(tmp_path / "run", "epochs_done") == [1, 2, 3]


# ------------------------------------------------------------------------ killed writes
def test_temporary_files_of_killed_writes_are_removed_on_start_and_resume(tiny_cfg):
    run = _train(tiny_cfg, epochs=1)
    orphans = [run / "checkpoints" / ".last.pt.k2j4x_9a.tmp", run / ".metrics.jsonl.abcdefgh.tmp"]
    for p in orphans:
        p.write_bytes(b"x" * 1000)
    kept = [run / "notes.tmp", run / "checkpoints" / ".hidden"]
    for p in kept:
        p.write_text("mine")
    train_job(None, resume=run)
    assert not any(p.exists() for p in orphans) and all(p.exists() for p in kept)
    assert "removed 2 temporary file(s)" in (run / "log.txt").read_text()
    # a kill during a write really leaves one (atomic_write cleans up only when it can)
    import segnas.utils as utils

    stray = run / "checkpoints" / ".best.pt.zzzzzzzz.tmp"
    stray.write_bytes(b"x")
    RunDir(run)
    assert not stray.exists() and utils.remove_stale_temps(run / "missing") == []


# ------------------------------------------------------------------------ machine.json
@pytest.mark.parametrize("content", ["[]", '"text"', '{"matmul_peak_gflops": []}',
                                     '{"matmul_peak_gflops": {"KEY": "fast"}}', '{"matmul_peak_gflops": {"KEY": -1}}',
                                     "{not json", "\xff\xfe"],
                         ids=["list", "string", "peaks-list", "peak-text", "peak-negative", "not-json", "binary"])
def test_a_machine_file_of_the_wrong_shape_is_rebuilt_with_a_warning(tmp_path, monkeypatch, content):
    import segnas.cost.machine as machine

    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path))
    key = f"{machine.machine_fingerprint()}-1t"
    (tmp_path / "machine.json").write_text(content.replace("KEY", key), encoding="latin-1")
    monkeypatch.setattr(machine, "measure_matmul_peak", lambda threads: 123.0)
    monkeypatch.setattr(machine, "other_processes_cores", lambda *a, **k: 0.0)
    with pytest.warns(UserWarning, match="machine.json: machine file unusable.*rebuilding"):
        assert machine.matmul_peak_gflops(1) == 123.0
    assert json.loads((tmp_path / "machine.json").read_text()) == {"matmul_peak_gflops": {key: 123.0}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert machine.matmul_peak_gflops(1) == 123.0  # the rebuilt file is read without a warning


def test_a_matmul_peak_measured_on_a_busy_host_is_not_cached(tmp_path, monkeypatch):
    import segnas.cost.machine as machine

    monkeypatch.setenv("SEGNAS_CACHE", str(tmp_path))
    monkeypatch.setattr(machine, "measure_matmul_peak", lambda threads: 50.0)
    monkeypatch.setattr(machine, "other_processes_cores", lambda *a, **k: 1.5)
    assert machine.matmul_peak_gflops(1) == 50.0 and not (tmp_path / "machine.json").exists()
    monkeypatch.setattr(machine, "measure_matmul_peak", lambda threads: 120.0)
    monkeypatch.setattr(machine, "other_processes_cores", lambda *a, **k: 0.0)
    assert machine.matmul_peak_gflops(1) == 120.0 and (tmp_path / "machine.json").exists()


def test_a_damaged_record_of_finished_work_is_named_and_the_work_done_again(tmp_path):
    """A garbled search_result.json, search_clock.json, arch_train.json or a comparison's
    latency.json was a JSONDecodeError traceback on resume; each is a record segnas can compute
    again: a warning names the file and what is done instead, and the resume goes on."""
    from segnas.errors import SegnasWarning
    from segnas.jobs.search import finished_search
    from segnas.utils import read_record

    (tmp_path / "search_result.json").write_text("{")
    with pytest.warns(SegnasWarning, match=r"search_result.json: invalid JSON at line 1 .*; the search's end runs "
                                           r"again"):
        assert finished_search(tmp_path) is None
    (tmp_path / "r.json").write_text('{"a": 1}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_record(tmp_path / "r.json", "x") == {"a": 1} and read_record(tmp_path / "none.json", "x") is None


def test_a_damaged_metrics_line_before_the_last_is_named(tmp_path):
    """A garbled middle line of metrics.jsonl was dropped without a word (and gone once a resume
    rewrote the file); a torn last line (a kill mid-write, or one being written) is skipped quietly."""
    from segnas.errors import SegnasWarning
    from segnas.utils import read_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\nGARBAGE{{\n{"epoch": 3}\n{"epo')
    with pytest.warns(SegnasWarning, match=r"metrics.jsonl: line 2 is not a JSON record \(damaged\): left out"):
        assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 3}]
    path.write_text('{"epoch": 1}\n{"epo')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_jsonl(path) == [{"epoch": 1}]


def test_a_log_line_that_finds_no_room_is_left_out_quietly(tmp_path, capsys):
    """On a full disk logging printed "--- Logging error ---" and a traceback for every line; the
    job says it once, as it next writes a file of its work (CannotWrite)."""
    import errno
    import logging

    run = RunDir.create(tmp_path, "t")
    handler = next(h for h in run.logger.handlers if isinstance(h, logging.FileHandler))

    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

    handler.stream = Full()
    run.log("a line")
    assert capsys.readouterr().err == ""
    handler.stream = None  # (reopened for the next line)
    run.log("another line")
    assert "another line" in (run.path / "log.txt").read_text()


def test_an_output_that_is_not_a_file_is_written_through_not_replaced(tmp_path):
    """`--json /dev/stdout` replaced the machine's /dev/stdout link with a file (and a named pipe's
    reader got nothing): a link keeps pointing where it did, what is not a file is written in place."""
    import os

    from segnas.utils import atomic_write_text

    (tmp_path / "real.json").write_text("old")
    os.symlink(tmp_path / "real.json", tmp_path / "link.json")
    os.symlink("/dev/null", tmp_path / "null.json")
    atomic_write_text(tmp_path / "link.json", "new")
    atomic_write_text(tmp_path / "null.json", "{}")
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "real.json").read_text() == "new"
    assert (tmp_path / "null.json").is_symlink() and Path("/dev/null").is_char_device()
