"""Many-candidate jobs on a Ray cluster (issue 28): a head and a second node started as separate
``ray start`` processes on 127.0.0.1 run a tiny ground truth and a tiny SasWOT scoring with the
process pool's results; killing the second node mid-run loses no finished result and the job
completes on the head; a task whose worker keeps dying is recorded as failed with the reason."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from _parallel_work import conv_score  # noqa: E402
from _ray_work import dies_on_three, slow_score  # noqa: E402
from segnas.errors import SegnasError  # noqa: E402
from segnas.evaluate.groundtruth import run_groundtruth, sample_archs  # noqa: E402
from segnas.parallel import TaskResources, default_key, load_failures, load_results, run_all  # noqa: E402
from segnas.search.strategies.saswot import training_free_search  # noqa: E402
from segnas.spaces.multires import MultiResSpace  # noqa: E402

HERE = Path(__file__).resolve().parent
RAY = str(Path(sys.executable).with_name("ray"))
TINY = MultiResSpace(layers=4, base_width=2, width_ratios=(0.5, 1.0))
SMALL = MultiResSpace(layers=6, base_width=2, width_ratios=(0.5, 0.75, 1.0))


def ephemeral_low() -> int:
    """The lowest port the kernel hands out to outgoing connections (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class Ports:
    """Distinct listening ports below the kernel's ephemeral range, each checked free by binding it.

    Ports picked from the ephemeral range (bind to port 0) can be taken again by any outgoing
    connection, or fall inside another node's worker-port range, before Ray binds them: a node then
    fails to start and the cluster never reaches two nodes (seen in CI)."""

    def __init__(self) -> None:
        high = ephemeral_low()
        low = max(10100, high - 12000)
        self.next, self.high = low + (os.getpid() * 97) % max(1, high - low - 2000), high

    def _free(self, port: int) -> bool:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    def block(self, n: int) -> int:
        """The first of ``n`` consecutive free ports, none handed out before."""
        while self.next + n < self.high:
            first, self.next = self.next, self.next + n
            if all(self._free(p) for p in range(first, first + n)):
                return first
        raise AssertionError("no free ports below the ephemeral range")

    def one(self) -> int:
        return self.block(1)


class LocalCluster:
    """A Ray head and one more node, each a ``ray start --block`` process group of its own (so that
    each can be killed, and only what this test started is ever killed)."""

    def __init__(self, temp: Path, env: dict[str, str]) -> None:
        self.temp, self.env = temp, env
        self.ports = Ports()
        self.port = self.ports.one()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: dict[str, subprocess.Popen] = {}

    def _ports(self) -> list[str]:
        flags = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                 "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port"]
        workers = self.ports.block(61)
        return [a for flag in flags for a in (flag, str(self.ports.one()))] + [
            "--min-worker-port", str(workers), "--max-worker-port", str(workers + 60)]

    def log(self, name: str) -> Path:
        return self.temp.parent / f"{name}.log"

    def start(self, name: str, head: bool) -> None:
        common = [RAY, "start", "--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
                  "--object-store-memory", str(80 * 2**20), "--disable-usage-stats", *self._ports()]
        role = (["--head", "--port", str(self.port),
                 "--include-dashboard", "false", "--temp-dir", str(self.temp)]
                if head
                else ["--address", self.address])
        log = open(self.log(name), "w")
        self.nodes[name] = subprocess.Popen(common + role, env={**self.env, "SEGNAS_TEST_NODE": name},
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def exited(self) -> list[str]:
        """The started nodes whose ``ray start`` process has ended, each with its log's last lines."""
        return [f"{name} (exit {proc.returncode}): {self.log(name).read_text()[-1500:]}"
                for name, proc in self.nodes.items() if proc.poll() is not None]

    def wait_for_head(self, timeout: float = 90.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.nodes["head"].poll() is not None:
                raise AssertionError(f"ray start --head ended: {self.exited()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"the Ray head is not listening after {timeout}s")

    def wait_for(self, alive: int, timeout: float = 90.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if sum(n["Alive"] for n in ray.nodes()) >= alive:
                return
            if self.exited():
                break
            time.sleep(0.5)
        tails = {name: self.log(name).read_text()[-800:] for name in self.nodes}
        raise AssertionError(f"{alive} Ray nodes not up after {timeout}s; ended: {self.exited() or 'none'}; "
                             f"logs: {tails}")

    def start_worker(self) -> None:
        """Start the second node and wait for it; a node that ended before joining is started once
        more, on new ports (it may have lost a port to another process in between)."""
        for attempt in range(2):
            self.start("worker", head=False)
            try:
                self.wait_for(2)
                return
            except AssertionError:
                if attempt or "worker" not in [n.split(" ")[0] for n in self.exited()]:
                    raise
                self.kill("worker")

    def kill(self, name: str) -> None:
        proc = self.nodes.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in list(self.nodes)[::-1]:
            self.kill(name)


@pytest.fixture(scope="module")
def cluster():
    temp = Path(tempfile.mkdtemp(prefix="segray", dir="/tmp"))  # short: Ray's socket paths must fit
    cache = temp.parent / f"{temp.name}-cache"
    # the cluster listens on every interface: only holders of this token may use it
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)]),
           "SEGNAS_CACHE": str(cache), "RAY_USAGE_STATS_ENABLED": "0", **auth}
    env.pop("RAY_ADDRESS", None)
    c = LocalCluster(temp / "r", env)
    (temp / "r").mkdir()
    from ray._private.authentication_test_utils import reset_auth_token_state  # Ray's own test helper

    with pytest.MonkeyPatch.context() as mp:
        for k, v in auth.items():
            mp.setenv(k, v)
        reset_auth_token_state()  # this process has read the settings already: read them again
        c.start("head", head=True)
        try:
            c.wait_for_head()
            ray.init(address=c.address, log_to_driver=False)
            c.start_worker()
            yield c
        finally:
            ray.shutdown()
            c.stop()
            shutil.rmtree(temp, ignore_errors=True)
            shutil.rmtree(cache, ignore_errors=True)
    reset_auth_token_state()


def ensure_two_nodes(c: LocalCluster) -> None:
    if "worker" not in c.nodes:
        c.start_worker()
    else:
        c.wait_for(2)


def tiny_settings(out_dir: Path) -> dict:
    return {"data": {"name": "synthetic", "options": {"size": [48, 64], "length": 8}, "crop_size": [48, 64],
                     "batch_size": 4},
            "epochs": 1, "minutes": None, "size": [48, 64], "threads": 1, "out_dir": str(out_dir),
            "record_latency": False, "train": {"bf16": False, "ema_decay": None, "channels_last": False}}


def test_a_tiny_ground_truth_on_the_cluster_equals_the_process_pool(cluster, tmp_path, monkeypatch):
    ensure_two_nodes(cluster)
    monkeypatch.setenv("SEGNAS_CACHE", cluster.env["SEGNAS_CACHE"])
    archs = sample_archs(TINY, 2, seed=3)
    path = tmp_path / "gt.jsonl"
    on_ray = run_groundtruth(TINY, archs, tiny_settings(tmp_path / "ray"), results_path=path, executor="ray",
                             workers=2, ray_address=cluster.address, resources=TaskResources(cpus=1))
    pooled = run_groundtruth(TINY, archs, tiny_settings(tmp_path / "pool"), results_path=None, executor="process",
                             workers=2)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "train_minutes"} for r in rs]  # noqa: E731
    assert strip(on_ray) == strip(pooled)
    assert len(load_results(path)) == 2


def test_a_tiny_saswot_scoring_on_the_cluster_equals_the_process_pool(cluster):
    import torch

    ensure_two_nodes(cluster)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(2, 3, 32, 48, generator=g), torch.randint(0, 5, (2, 32, 48), generator=g))]
    run = lambda **where: training_free_search(  # noqa: E731
        SMALL, "nwot", lambda a: 1.0, 2.0, candidates=6, population=3, sample_size=2, seed=0, batches=batches,
        num_classes=5, workers=2, **where)
    on_ray = run(executor="ray", ray_address=cluster.address)
    pooled = run(executor="process")
    assert [h["score"] for h in on_ray.history] == [h["score"] for h in pooled.history]
    assert on_ray.best.arch == pooled.best.arch


def test_killing_a_node_mid_run_loses_no_finished_result(cluster, tmp_path):
    ensure_two_nodes(cluster)
    path = tmp_path / "results.jsonl"
    seeds = list(range(8))
    out: dict = {}

    def job() -> None:
        try:
            out["results"] = run_all(slow_score, seeds, executor="ray", workers=2, results_path=path,
                                     ray_address=cluster.address, resources=TaskResources(cpus=1, retries=3))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            out["error"] = exc

    thread = threading.Thread(target=job)
    thread.start()
    deadline = time.time() + 60
    while not (path.is_file() and path.read_text().count("\n") >= 2) and time.time() < deadline:
        time.sleep(0.1)
    before = path.read_text().splitlines()
    assert len(before) >= 2, "no result finished in time"
    cluster.kill("worker")  # the second node, with the items it was running
    thread.join(timeout=150)
    assert not thread.is_alive() and "error" not in out, out.get("error")
    assert [{k: v for k, v in r.items() if k != "node"} for r in out["results"]] == [conv_score(s) for s in seeds]
    after = path.read_text().splitlines()
    assert after[:len(before)] == before  # nothing finished was lost or rewritten
    assert set(load_results(path)) == {default_key(s) for s in seeds} and not load_failures(path)
    assert {r["node"] for r in out["results"][-2:]} == {"head"}  # the last items ran on the head alone


def test_a_task_whose_worker_keeps_dying_is_recorded_as_failed(cluster, tmp_path):
    path = tmp_path / "results.jsonl"
    with pytest.raises(SegnasError, match=f"item {default_key(3)} failed: WorkerError: .*saved in"):
        run_all(dies_on_three, list(range(5)), executor="ray", workers=2, results_path=path,
                ray_address=cluster.address, resources=TaskResources(cpus=1, retries=1))
    assert set(load_results(path)) == {default_key(s) for s in (0, 1, 2, 4)}
    failures = load_failures(path)
    assert list(failures) == [default_key(3)] and "died" in failures[default_key(3)].lower()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert sum("failed" in x for x in lines) == 1

