import json
import sys
from pathlib import Path

import pytest

from _parallel_work import conv_score, fail_on_three
from segnas.errors import SegnasError
from segnas.parallel import default_key, load_results, run_all


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _expected(seeds):
    return [conv_score(s) for s in seeds]


def test_process_pool_matches_inline():
    seeds = list(range(5))
    inline = run_all(conv_score, seeds)
    assert inline == _expected(seeds)
    pooled = run_all(conv_score, seeds, executor="process", workers=2)
    assert pooled == inline
    assert all(r["threads"] == 1 for r in pooled)


def test_ray_gives_the_same_results_and_saves_them_before_an_error(tmp_path):
    """(A task reserving more CPUs than there are workers runs: the local Ray is sized for it.)"""
    from segnas.parallel import TaskResources

    pytest.importorskip("ray")
    path = tmp_path / "results.jsonl"
    with pytest.raises(SegnasError, match=f"item {default_key(3)} failed: ValueError: boom on 3"):
        run_all(fail_on_three, list(range(6)), executor="ray", workers=1, results_path=path,
                resources=TaskResources(cpus=2))
    from_ray = load_results(path)
    assert {default_key(s) for s in range(3)} <= set(from_ray) and default_key(3) not in from_ray
    assert all(from_ray[default_key(s)]["threads"] == 2 for s in range(3))  # the task's CPUs are its threads
    scores = [r["score"] for r in run_all(conv_score, list(range(6)), results_path=path)]
    assert scores == [r["score"] for r in _expected(range(6))]


def test_resume_recomputes_only_missing_items(tmp_path):
    path = tmp_path / "results.jsonl"
    calls, interrupt = [], [True]

    def flaky(seed):
        calls.append(seed)
        if seed == 3 and interrupt[0]:
            raise ValueError("interrupted")
        return conv_score(seed)

    told = []
    with pytest.raises(SegnasError, match=f"item {default_key(3)} failed: ValueError: interrupted"):
        run_all(flaky, range(6), results_path=path, on_result=lambda k, r: told.append(("ok", k)),
                on_failure=lambda k, e: told.append((type(e).__name__, k)))
    assert [r["key"] for r in _lines(path)] == [default_key(s) for s in range(3)]
    assert told == [*(("ok", default_key(s)) for s in range(3)), ("ValueError", default_key(3))]
    calls.clear()
    interrupt[0] = False
    assert run_all(flaky, list(range(6)), results_path=path) == _expected(range(6))
    assert calls == [3, 4, 5]
    calls.clear()
    assert run_all(flaky, list(range(6)), results_path=path) == _expected(range(6))
    assert calls == []


def test_error_in_process_pool_saves_finished_results_then_resumes(tmp_path):
    path = tmp_path / "results.jsonl"
    with pytest.raises(SegnasError, match=f"item {default_key(3)} failed: ValueError: boom on 3") as err:
        run_all(fail_on_three, list(range(6)), executor="process", workers=2, results_path=path)
    assert "\n" not in str(err.value)
    saved = {r["key"] for r in _lines(path)}
    assert {default_key(s) for s in range(3)} <= saved and default_key(3) not in saved
    assert run_all(conv_score, list(range(6)), results_path=path) == _expected(range(6))
    assert len(_lines(path)) == 6  # nothing saved before was computed again


def test_truncated_last_line_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "results.jsonl"
    run_all(conv_score, [0, 1], results_path=path)
    with open(path, "a") as fh:
        fh.write('{"key": "' + default_key(2) + '", "resu')
    calls = []

    def counted(seed):
        calls.append(seed)
        return conv_score(seed)

    with pytest.warns(UserWarning, match="truncated last line"):
        assert run_all(counted, [0, 1, 2], results_path=path) == _expected([0, 1, 2])
    assert calls == [2]
    assert len(_lines(path)) == 3 and set(load_results(path)) == {default_key(s) for s in range(3)}


def test_duplicate_items_are_computed_once():
    calls = []

    def counted(item):
        calls.append(item["seed"])
        return conv_score(item["seed"])

    items = [{"seed": 1, "w": 2}, {"w": 2, "seed": 1}, {"seed": 2, "w": 2}]
    assert run_all(counted, items, progress=True) == _expected([1, 1, 2])
    assert calls == [1, 2]


def test_user_mistakes_are_segnas_errors(monkeypatch):
    with pytest.raises(SegnasError, match="unknown executor 'dask'.*inline, process, ray"):
        run_all(conv_score, [0], executor="dask")
    with pytest.raises(SegnasError, match="picklable"):
        run_all(lambda s: s, [0], executor="process")
    with pytest.raises(SegnasError, match="not JSON-serializable"):
        run_all(lambda s: {1, 2}, [0])
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(SegnasError, match=r"pip install segnas\[ray\]"):
        run_all(conv_score, [0], executor="ray")


def test_a_dying_worker_process_is_replaced_and_only_its_own_item_fails(tmp_path):
    """Seed 2 kills its worker once (it then succeeds); seed 5 kills it every time: after the pool
    breaks, the items in flight run again one at a time, so only seed 5 is reported, as a
    WorkerError after its retries, and every other item gets its result."""

    from _dying_work import die_once_then_square
    from segnas.errors import SegnasWarning
    from segnas.parallel import WorkerError, WorkerPool
    from segnas.parallel.executors import ProcessRunner

    items = [(s, str(tmp_path)) for s in range(7)]
    runner = ProcessRunner(workers=2, retries=1)
    try:
        with pytest.warns(SegnasWarning, match="a worker process died .* run again one at a time"):  # (said)
            outcomes = {key: (ok, value) for key, ok, value in runner.run(die_once_then_square, enumerate(items), None)}
    finally:
        runner.close()
    assert sorted(outcomes) == list(range(7))
    ok, error = outcomes[5]
    assert not ok and isinstance(error, WorkerError) and "died each of the 2 times it ran alone" in str(error)
    for seed in (0, 1, 2, 3, 4, 6):
        assert outcomes[seed] == (True, seed * seed)
    # WorkerPool.map (a search's batches) goes through the same runner: the batch reports seed 5's failure
    (tmp_path / "again").mkdir()
    with WorkerPool("process", 2, threads_per_worker=None) as pool:
        with pytest.raises(SegnasError, match="item 5 of the batch failed: WorkerError"):
            pool.map(die_once_then_square, [(s, str(tmp_path / "again")) for s in range(7)])
        assert pool.map(die_once_then_square, [(3, str(tmp_path)), (4, str(tmp_path))]) == [9, 16]  # still works


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (an exited orphan waiting to be reaped)."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "\tZ" not in next(line for line in status.read_text().splitlines() if line.startswith("State:"))
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_pool_workers_end_when_their_parent_is_killed(tmp_path):
    """A killed search (SIGKILL: no clean-up runs) leaves no worker process computing on as an orphan."""
    import os
    import signal
    import subprocess
    import time

    tests = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, str(tests / "_dying_work.py"), str(tmp_path)], env=env)
    pid_file = tmp_path / "worker-0.pid"
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and parent.poll() is None, "the worker never started"
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        assert _running(worker)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while _running(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _running(worker):
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the pool's worker ran on after its parent was killed")


def test_forget_drops_the_records_of_some_keys_and_keeps_the_rest(tmp_path):
    from segnas.parallel.store import ResultStore, forget, load_failures

    path = tmp_path / "r.jsonl"
    assert forget(path, {"a"}) == [] and not path.exists()
    store = ResultStore(path)
    store.add("a", 1)
    store.fail("b", "worker died")
    store.add("c", 3)
    store.add("a", 2)
    assert forget(path, {"a", "b", "z"}) == ["a", "b"]
    assert load_results(path) == {"c": 3} and load_failures(path) == {}
    assert forget(path, {"a"}) == [] and load_results(path) == {"c": 3}


def test_ray_executor_problems_are_found_before_any_work():
    """A GPU asked of a local Ray on a machine without one, or a cluster address where nothing
    answers, is refused at once in one line (Ray would wait for ever, or retry for minutes)."""
    import socket

    import torch

    from segnas.parallel import TaskResources, check_ray

    pytest.importorskip("ray")
    if torch.cuda.device_count() == 0:
        with pytest.raises(SegnasError, match="task_gpus 1: a local Ray has the GPUs this machine has, 0"):
            check_ray(2, None, TaskResources(gpus=1))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SegnasError, match=f"ray_address: nothing answers at '127.0.0.1:{port}'"):
        check_ray(2, f"127.0.0.1:{port}")


def test_a_pool_worker_keeps_ignoring_ctrl_c_where_its_parent_does_and_ray_keeps_the_sigterm_handler():
    """A job a script runs in the background ignores Ctrl-C; its workers, which inherit that, died
    of it (the pool broke and reran their items). ``ray.init`` replaced the command's SIGTERM handler."""
    import os
    import signal

    from segnas.parallel.executors import sigterm_kept
    from segnas.parallel.worker import exit_with_parent

    before = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        exit_with_parent(os.getppid())
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.signal(signal.SIGINT, signal.default_int_handler)
        exit_with_parent(os.getppid())
        assert signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, signal.default_int_handler)
    finally:
        signal.signal(signal.SIGINT, before)
    mine = signal.getsignal(signal.SIGTERM)
    with sigterm_kept():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (as ray.init does)
    assert signal.getsignal(signal.SIGTERM) is mine
