"""The search core: strategy registry, settings, the ask/tell loop, per-worker evaluators, and
resume through the CLI after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segnas.errors import SegnasError
from segnas.evaluate.base import Evaluator
from segnas.parallel import WorkerPool
from segnas.search.base import Strategy, get_strategy, list_strategies
from segnas.jobs.search import make_settings, search_job

TINY_DATA = {"name": "synthetic", "options": {"size": [48, 64], "length": 6}}
TINY_LATENCY = {"size": [48, 64], "backend": "eager", "table_min_runs": 1, "table_min_time_s": 0.0}
TINY_SCORING = {"images": 4, "batch_size": 2, "size": [32, 48]}


def test_every_registered_strategy_has_a_settings_section_and_a_cli_command():
    from typer.testing import CliRunner

    from segnas.cli.main import app

    assert {"fasterseg", "ssr", "saswot", "random"} <= set(list_strategies())
    for name in list_strategies():
        cls = get_strategy(name)
        assert issubclass(cls, Strategy) and cls.name == name and cls.family in ("one-shot", "ask-tell")
        cls.settings_class()  # every field has a default
        result = CliRunner().invoke(app, ["search", name, "--help"])
        assert result.exit_code == 0 and "--target-ms" in result.output and "--resume" in result.output
    with pytest.raises(SegnasError, match="unknown search method 'nope'"):
        get_strategy("nope")


def test_random_search_is_small():
    """The worked example of a new method: one file, under 100 lines."""
    import segnas.search.strategies.random as random_module

    assert len(Path(random_module.__file__).read_text().splitlines()) < 100


class SlowSquare(Evaluator):
    """Picklable test evaluator whose set-ups are counted: each appends its process id to ``log``."""

    log: str | None = None

    def setup(self) -> None:
        self.pid = os.getpid()
        if self.log:
            with open(self.log, "a") as fh:
                fh.write(f"{self.pid}\n")
        super().setup()

    def evaluate(self, arch):
        return {"score": float(arch["x"]) ** 2, "pid": self.pid}


def test_an_evaluator_is_set_up_once_per_worker(tmp_path):
    ev = SlowSquare()
    ev.log = str(tmp_path / "setups.txt")
    with WorkerPool("process", 2) as pool:
        first = pool.map(ev, [{"x": i} for i in range(4)])
        second = pool.map(ev, [{"x": i} for i in range(4, 8)])
    assert [r["score"] for r in first + second] == [float(i * i) for i in range(8)]
    pids = {r["pid"] for r in first + second}
    assert len(pids) <= 2 and os.getpid() not in {r["pid"] for r in first}
    setups = (tmp_path / "setups.txt").read_text().split()
    assert sorted(setups) == sorted(str(p) for p in pids)  # one set-up per worker over both batches
    inline = WorkerPool("inline", 1).map(ev, [{"x": 3}])
    assert inline[0]["pid"] == os.getpid()


def random_settings(out_dir, candidates=6, **extra):
    return make_settings("random", {
        "data": TINY_DATA, "latency": {"target_ms": 1e9, **TINY_LATENCY}, "out_dir": str(out_dir), "progress": False,
        "final": {"epochs": 0}, "random": {"space_options": {"layers": 6, "base_width": 4}, "candidates": candidates,
                                           "evaluator": {"proxy": TINY_SCORING}}, **extra})


def test_random_search_job_writes_the_common_run_directory(tmp_path):
    summary = search_job(random_settings(tmp_path))
    run = Path(summary["run_dir"])
    for name in ("config.yaml", "arch.json", "search_result.json", "candidates.jsonl", "search_state.json"):
        assert (run / name).is_file(), name
    result = json.loads((run / "search_result.json").read_text())
    assert result["method"] == "random" and result["space"] == "multires"
    assert result["details"]["candidates_scored"] == 6 and result["search_cpu_seconds"] > 0
    arch = result["networks"]["arch"]
    assert arch["measured_ms"] > 0 and arch["params"] > 0 and arch["predicted_ms"] > 0
    assert arch["measured_other_cores"] is None or arch["measured_other_cores"] >= 0  # the load around it
    again = search_job(random_settings(tmp_path / "again"))
    assert json.loads((Path(again["run_dir"]) / "arch.json").read_text())["arch"] == \
        json.loads((run / "arch.json").read_text())["arch"]
    # resuming a finished search changes nothing: its result is not measured and written again
    said: list[str] = []
    before = (run / "search_result.json").read_bytes()
    assert search_job(None, resume=run, echo=said.append) == {**result, "run_dir": str(run)}
    assert (run / "search_result.json").read_bytes() == before and "this search has finished" in said[0]


def test_a_search_without_a_target_is_refused_before_a_run_directory_exists(tmp_path):
    settings = make_settings("random", {"data": TINY_DATA, "latency": TINY_LATENCY, "out_dir": str(tmp_path)})
    with pytest.raises(SegnasError, match="latency.target_ms"):
        search_job(settings)
    assert not any(tmp_path.iterdir())


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "segnas.cli.main", *args]


#: Per method: its own arguments for a tiny run, and when a run is far enough to be killed.
KILL_CASES = {
    "saswot": (["--candidates", "40", "--proxy", "nwot",
                "--set", "saswot.space_options={layers: 6, base_width: 4}",
                "--set", "saswot.scoring={images: 4, batch_size: 2, size: [32, 48]}",
                "--set", "saswot.population=8", "--set", "saswot.sample_size=3"],
               lambda run: (run / "search_state.json").is_file()
               and len((run / "candidates.jsonl").read_text().splitlines()) >= 15),
    "ssr": (["--set", "ssr.space={channels: [16, 32], slots: [2, 2], stem_channels: 8, decoder_width: 8, "
                      "dilations: [1, 2]}",
             "--set", "ssr.pretrain_epochs=1", "--set", "ssr.search_epochs=4", "--set", "ssr.gap_val_images=2",
             "--set", "data.batch_size=2", "--set", "data.crop_size=[48,64]"],
            lambda run: (run / "metrics.jsonl").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) >= 2),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(KILL_CASES))
def test_a_search_killed_mid_way_resumes_to_the_same_result(tmp_path, method):
    """kill -9 during the search, then --resume: the same result as an uninterrupted run (for an
    ask/tell and a one-shot strategy)."""
    first, run = kill_and_resume(tmp_path, method, *KILL_CASES[method])
    read = lambda d, f: json.loads((d / f).read_text())  # noqa: E731
    assert read(run, "arch.json")["arch"] == read(first, "arch.json")["arch"]
    if method == "saswot":
        scores = lambda d: [h["score"] for h in read(d, "search_result.json")["details"]["history"]]  # noqa: E731
        assert scores(run) == scores(first) and len(scores(run)) == 40


def kill_and_resume(tmp_path: Path, method: str, own: list[str], far_enough) -> tuple[Path, Path]:
    """Run ``segnas search METHOD`` (tiny synthetic settings plus ``own``) to the end; run it again,
    kill -9 it once ``far_enough(run_dir)``, and finish it with ``--resume``. Returns the run
    directories (uninterrupted, resumed). The runs share one cache (latency table, pre-trained weights)."""
    args = ["search", method, "--data", "synthetic", "--size", "48x64", "--target-ms", "1e9", "--backend", "eager",
            "--threads", "1", *own, "--set", "data.options={size: [48, 64], length: 8}",
            "--set", "latency.table_min_runs=1", "--set", "latency.table_min_time_s=0",
            "--set", "latency.calibration_networks=0", "--set", "final.epochs=0", "--set", "progress=false"]
    # one latency cache for both runs: the table measured by the first is read by the second
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SEGNAS_CACHE": str(tmp_path / "cache")}
    whole = subprocess.run(_cli(*args, "--out-dir", str(tmp_path / "whole")), capture_output=True, text=True, env=env)
    assert whole.returncode == 0, whole.stderr
    proc = subprocess.Popen(_cli(*args, "--out-dir", str(tmp_path / "killed")), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, run = time.time() + 180, None
    while time.time() < deadline and proc.poll() is None:
        runs = list((tmp_path / "killed").glob("*/config.yaml"))
        if runs and far_enough(runs[0].parent):
            run = runs[0].parent
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert run is not None and not (run / "search_result.json").exists(), "the search ended before it was killed"
    resumed = subprocess.run(_cli("search", method, "--resume", str(run)), capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    return next((tmp_path / "whole").iterdir()), run


JOINT_TINY = {"channels": [16, 32], "slots": [2, 2], "stem_channels": 8, "decoder_width": 8, "dilations": [1, 2]}


def test_joint_supernet_select_runs_exactly_the_chosen_architecture():
    import numpy as np

    from segnas.spaces import get_space

    space = get_space("joint", **JOINT_TINY)
    net = space.supernet(5, (48, 64))
    rng = np.random.default_rng(0)
    for _ in range(5):
        arch = space.sample(rng)
        net.select(arch)
        assert net.derive() == arch
    net.active("op0")[0, 1:] = False  # a shrunk space no longer holds other candidates
    with pytest.raises(SegnasError, match="shrunk away"):
        net.select(next(a for a in (space.sample(rng) for _ in range(50)) if a.slots[0][0].op != "skip"))


def test_supernet_evaluator_scores_sub_networks_of_a_trained_supernet(tmp_path):
    """Weight sharing: a sub-network scores in [0, 1], the same every time and in any worker."""
    import numpy as np
    import torch

    from segnas.config.train import DataConfig
    from segnas.engine.checkpoint import save_checkpoint
    from segnas.evaluate.supernet import SupernetEvaluator
    from segnas.spaces import get_space

    space = get_space("joint", **JOINT_TINY)
    torch.manual_seed(0)
    supernet = space.supernet(11, (48, 64))
    save_checkpoint(tmp_path / "s.pt", {"supernet": supernet.state_dict(), "model": {},
                                        "model_spec": {"kind": "supernet"}})
    data = DataConfig.model_validate(TINY_DATA)
    ev = SupernetEvaluator("joint", tmp_path / "s.pt", 11, (48, 64), data, JOINT_TINY, val_images=3,
                           calibration_images=4, batch_size=2)
    archs = [a.to_dict() for a in (space.sample(np.random.default_rng(s)) for s in range(3))]
    scores = [ev(a)["score"] for a in archs]
    assert all(0 <= s <= 1 for s in scores) and ev(archs[0])["score"] == scores[0]
    with WorkerPool("process", 2) as pool:
        assert [r["score"] for r in pool.map(ev, archs)] == pytest.approx(scores)
    with pytest.raises(SegnasError, match="no supernet"):
        save_checkpoint(tmp_path / "bad.pt", {"model": {}, "model_spec": {"kind": "zoo"}})
        SupernetEvaluator("joint", tmp_path / "bad.pt", 11, (48, 64), data, JOINT_TINY)(archs[0])


def test_a_resumed_search_reports_the_time_of_every_process_that_worked_on_it(tmp_path):
    """The search clock is saved while the search runs; a killed process's time (up to its last
    save) is added to the resumed one's."""
    from types import SimpleNamespace

    from segnas.jobs.search import SearchClock

    run = SimpleNamespace(path=tmp_path)
    first = SearchClock(run, period_s=0.05)
    cpu_deadline = time.process_time() + 0.3  # busy until 0.3 s of CPU (more wall time on a loaded host)
    while time.process_time() < cpu_deadline:
        pass
    time.sleep(0.15)  # a save after the work; the process is then "killed" (never stopped)
    saved = json.loads((tmp_path / SearchClock.FILE).read_text())
    assert saved["search_wall_seconds"] >= 0.3 and saved["search_cpu_seconds"] >= 0.2
    first._stop.set()
    second = SearchClock(run, period_s=60)
    total = second.stop()
    assert total["search_wall_seconds"] >= saved["search_wall_seconds"]
    assert total["search_cpu_seconds"] >= saved["search_cpu_seconds"]
    assert json.loads((tmp_path / SearchClock.FILE).read_text()) == total


def test_the_search_clock_leaves_out_timing_the_latency_table_entries_a_search_meets_first(tmp_path, monkeypatch):
    """Entries (and the call overhead) timed on demand depend on what earlier jobs left in the
    cache: the search's clock leaves their seconds out, whichever way the search met them:
    predicting a candidate, or timing a one-shot supernet's table up front (which it counted)."""
    from types import SimpleNamespace

    import numpy as np

    from segnas.cost.latency_model import LatencyModel
    from segnas.cost.table import LatencyTable
    from segnas.jobs.search import SearchClock
    from segnas.spaces import get_space

    def busy(self, module, shape):  # timing an entry: 0.05 s of work
        deadline = time.perf_counter() + 0.05
        while time.perf_counter() < deadline:
            pass
        return 1.0

    monkeypatch.setattr(LatencyTable, "_time_module", busy)
    latency = LatencyModel(LatencyTable("eager", 1, path=tmp_path / "table.json"), (32, 48))
    space = get_space("multires", layers=6, base_width=4)
    clock = SearchClock(SimpleNamespace(path=tmp_path), latency, period_s=60)
    latency.predict(space, space.sample(np.random.default_rng(0)), 5)  # a candidate, predicted
    after_predicting = latency.table.measured
    latency.ensure(space.latency_keys(space.sample(np.random.default_rng(1)), 5, (32, 48)), progress=False)
    assert after_predicting > 5 and latency.table.measured > after_predicting  # (both ways timed entries)
    assert latency.timing_seconds[0] >= 0.05 * latency.table.measured
    total = clock.stop()
    assert total["search_wall_seconds"] < 0.2 * latency.timing_seconds[0], (total, latency.timing_seconds)
    assert total["search_cpu_seconds"] < 0.2 * latency.timing_seconds[1], (total, latency.timing_seconds)


@pytest.mark.parametrize("method, data, refused", [
    ("fasterseg", {"workers": 2}, "workers (--workers): not used by segnas search fasterseg"),
    ("ssr", {"task_retries": 0}, "task_retries (--task-retries): not used by segnas search ssr"),
    ("random", {"search_size": [32, 48]}, "search_size (--search-size): not used by segnas search random"),
    ("random", {"search_size": [32, 48], "random": {"evaluator": {"kind": "supernet", "supernet": {"size": [32, 48]}}}},
     "search_size (--search-size)"),  # the evaluator's own size wins
    ("saswot", {"sync_bn": True}, "sync_bn (--sync-bn): not used by segnas search saswot"),
    ("random", {"search_size": [32, 48], "random": {"evaluator": {"kind": "supernet"}}}, None),
    ("supernet", {"search_size": [32, 48], "workers": 2}, None),
    ("gas", {"search_size": [32, 48], "sync_bn": True}, None),
    ("rl", {"workers": 2, "executor": "ray"}, None),
])
def test_shared_settings_a_method_does_not_use_are_refused_in_new_settings_only(method, data, refused):
    from segnas.config.io import build_config

    if refused is None:
        make_settings(method, data, new=True)
        return
    with pytest.raises(SegnasError, match=refused.replace("(", r"\(").replace(")", r"\)")):
        make_settings(method, data, new=True)
    # a run directory's settings (an earlier segnas let them through), and settings segnas derives
    # from them, still load
    build_config(type(make_settings(method, {})), {**data, "method": method}, saved=True)
    make_settings(method, data)


def test_short_trainings_inline_keep_the_search_process_threads(tmp_path, monkeypatch):
    """A candidate's short training run in the search process (the inline pool) trains with the
    process's threads and leaves them as they were: the final training after it is not left on one
    thread (the evaluator's trainings once set 1 thread for good)."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # (the search's threads: job_threads)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        settings = random_settings(tmp_path, candidates=2, data={**TINY_DATA, "batch_size": 2})
        data = settings.model_dump(mode="json")
        data["random"]["evaluator"] = {"kind": "train", "train": {"steps": 1}}
        summary = search_job(make_settings("random", data))
        assert torch.get_num_threads() == 3
        configs = list((Path(summary["run_dir"]) / "candidates").rglob("config.yaml"))
        assert configs and all("threads: null" in c.read_text() for c in configs)
    finally:
        torch.set_num_threads(before)


def test_settings_that_errors_name_by_a_flag_have_that_flag():
    """``config.search.named`` names these settings by a ``segnas search`` flag: each exists."""
    from segnas.cli.main import SEARCH_OPTIONS
    from segnas.config.search import FLAGGED, named

    for field in FLAGGED:
        flag = field.replace("_", "-")
        assert SEARCH_OPTIONS[flag][0] == (field,) and named(field) == f"{field} (--{flag})"
    assert named("bf16") == "bf16"


def test_a_search_logs_what_it_prints_and_a_damaged_run_is_refused_in_one_line(tmp_path):
    args = ["search", "random", "--data", "synthetic", "--size", "48x64", "--target-ms", "1e9", "--backend", "eager",
            "--threads", "1", "--candidates", "4", "--set", "data.options={size: [48, 64], length: 8}",
            "--set", "random.space_options={layers: 6, base_width: 4}", "--set", "latency.table_min_runs=1",
            "--set", "latency.table_min_time_s=0", "--set", "latency.calibration_networks=0",
            "--set", "final.epochs=0", "--set", "progress=false", "--out-dir", str(tmp_path / "runs")]
    env = {**os.environ, "SEGNAS_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(_cli(*args), capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    run = next((tmp_path / "runs").iterdir())
    assert "random: latency" in (run / "log.txt").read_text()  # the log holds what the terminal showed
    for name in ("search_result.json", "arch.json"):  # as if killed before the end
        (run / name).unlink()
    (run / "candidates.jsonl").write_text("")  # a file of the run lost
    resumed = subprocess.run(_cli("search", "random", "--resume", str(run)), capture_output=True, text=True, env=env)
    assert resumed.returncode == 2 and "search_state.json: names candidate" in resumed.stderr
    assert len(resumed.stderr.strip().splitlines()) == 1, resumed.stderr


class _Plain(Evaluator):
    """A test evaluator that does not call ``Evaluator.__init__`` (a plugin's may not)."""

    def __init__(self, record=None):
        self.record = record

    def evaluate(self, arch):
        return self.record if self.record is not None else {"score": float(arch["base_width"])}


class _Raising(Evaluator):
    def evaluate(self, arch):
        raise ValueError("the evaluator's own defect")


def _loop(tmp_path, ask, evaluator=None, state=None, candidates=3, **options):
    """An ask/tell loop over the multires space whose strategy proposes with ``ask(strategy)`` and
    keeps ``state`` (a function of the strategy) beside its RNG's."""
    import numpy as np

    from segnas.search.asktell import AskTellLoop, AskTellStrategy
    from segnas.spaces import get_space

    class Probe(AskTellStrategy):
        def make_evaluator(self, ctx):
            return None

        def ask(self):
            return ask(self)

        def state_dict(self):
            return {**super().state_dict(), **(state(self) if state else {})}

    strategy = Probe()
    strategy.begin(get_space("multires", layers=6, base_width=4), 0, None)
    strategy.rng = np.random.default_rng(0)
    return AskTellLoop(strategy, evaluator or _Plain(), lambda arch: 1.0, None, candidates=candidates,
                       run_dir=tmp_path, max_draws=20, **options)


def test_the_loop_names_a_strategy_or_evaluator_that_breaks_its_contract(tmp_path):
    """A plugin's mistakes were a traceback deep in segnas, a state that could not resume, or a
    run that blamed the latency target."""
    import dataclasses
    import warnings

    from segnas.errors import SegnasWarning
    from segnas.spaces import get_space

    space = get_space("multires", layers=6, base_width=4)
    with pytest.raises(SegnasError, match=r"Probe\.ask\(\) returned dict: expected an architecture of space multires"):
        _loop(tmp_path / "a", lambda s: s.space.sample(s.rng).to_dict()).run()
    with pytest.raises(SegnasError, match=r"Probe\.ask\(\) returned MobileArch"):
        _loop(tmp_path / "b", lambda s: get_space("mobile").sample(s.rng)).run()

    def invalid(s):  # (a proposal the space's checks refuse: a SegnasError from ask means "draw again")
        return dataclasses.replace(s.space.sample(s.rng), base_width=-5)

    with pytest.raises(SegnasError, match=r"no architecture to evaluate in 20 draws: 20 found nothing valid .*"
                                          r"the last: .*base_width"):
        _loop(tmp_path / "c", invalid).run()
    with pytest.raises(SegnasError, match=r"state_dict\(\): state\['population'\], key 3 \(not a str\)"):
        _loop(tmp_path / "d", lambda s: s.space.sample(s.rng), state=lambda s: {"population": {3: [1.0]}}).run()
    with pytest.raises(SegnasError, match=r"state_dict\(\): state\['best'\] \(tuple\)"):
        _loop(tmp_path / "e", lambda s: s.space.sample(s.rng), state=lambda s: {"best": (1, 2)}).run()
    with pytest.raises(SegnasError, match=r"state_dict\(\): not JSON"):
        _loop(tmp_path / "f", lambda s: s.space.sample(s.rng), state=lambda s: {"seen": {1, 2}}).run()
    with pytest.raises(SegnasError, match=r"_Plain returned \{'value': 1\.0\}: an evaluation is a dict with 'score'"):
        _loop(tmp_path / "g", lambda s: s.space.sample(s.rng), _Plain({"value": 1.0})).run()
    assert not (tmp_path / "g" / "candidates.jsonl").is_file() or not (tmp_path / "g" / "candidates.jsonl").read_text()
    with pytest.raises(SegnasError, match=r"returned \{'score': 'high'\}"):
        _loop(tmp_path / "h", lambda s: s.space.sample(s.rng), _Plain({"score": "high"})).run()
    with pytest.raises(SegnasError, match=r"_Raising: evaluation of item 0 .* ValueError: the evaluator's own defect "
                                          r"\(traceback in .*error.txt"):  # (in a worker: its traceback kept)
        _loop(tmp_path / "w", lambda s: s.space.sample(s.rng), _Raising(), workers=2, executor="process").run()
    assert 'raise ValueError("the evaluator' in (tmp_path / "w" / "error.txt").read_text()
    same = space.sample(__import__("numpy").random.default_rng(1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = _loop(tmp_path / "i", lambda s: same, _Plain({"score": float("nan")})).run()
    said = [str(w.message) for w in caught if issubclass(w.category, SegnasWarning)]
    assert outcome.evaluated == 1 and any("ended after 1 of 3 candidates" in m and "19 duplicates" in m for m in said)
    assert any("no candidate of the 1 evaluated has a finite score" in m for m in said), said


def test_a_strategys_choice_and_description_are_checked_at_its_end(tmp_path):
    """choose() returning no finalist was an IndexError; a describe() that is not JSON failed as the
    result was written, with a traceback."""
    from segnas.search.strategies.random import RandomSearch

    with pytest.MonkeyPatch.context() as patch:  # (its own: undoing it leaves conftest's patches)
        patch.setattr(RandomSearch, "choose", lambda self, top, ctx: [])
        with pytest.raises(SegnasError, match=r"RandomSearch\.choose\(\) returned \[\]: expected the finalists"):
            search_job(random_settings(tmp_path / "a", candidates=2))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RandomSearch, "describe", lambda self: {"seen": {1, 2}})
        with pytest.raises(SegnasError, match=r"RandomSearch\.describe\(\): not JSON"):
            search_job(random_settings(tmp_path / "b", candidates=2))
