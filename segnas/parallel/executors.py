"""Executors: run `fn` over (key, item) pairs and yield (key, ok, result-or-exception) as each finishes.

Each keeps at most `workers` items in flight and submits no more once `stop()` is true, so that after
a failure the items already running finish (and get saved) and nothing new starts.

On Ray each item is a task reserving ``TaskResources`` (CPUs, GPUs); a task whose worker or node
dies is run again by Ray up to ``retries`` times, then reported as a ``WorkerError`` naming why. In
the process pool an item whose worker process dies is run again the same way (``ProcessRunner``).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import pickle
import signal
import socket
import sys
import threading
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from segnas.errors import SegnasError, SegnasWarning
from segnas.parallel.worker import exit_with_parent, prepared

Outcome = tuple[str, bool, Any]


class WorkerError(RuntimeError):
    """A worker failed outside `fn` (crashed, or could not load the function or item)."""


@dataclass(frozen=True)
class TaskResources:
    """What one item reserves on Ray: ``cpus`` (also its torch threads, at least 1), ``gpus`` (a
    fraction shares a GPU), and how many times it is run again when its worker dies."""

    cpus: float = 1.0
    gpus: float = 0.0
    retries: int = 2

    def __post_init__(self) -> None:
        if not self.cpus > 0:
            raise SegnasError(f"task_cpus: must be > 0, got {self.cpus}")
        if self.gpus < 0:
            raise SegnasError(f"task_gpus: must be >= 0, got {self.gpus}")
        if self.retries < 0:
            raise SegnasError(f"task_retries: must be >= 0, got {self.retries}")

    @classmethod
    def from_settings(cls, settings: Any) -> "TaskResources":
        """From the ``task_cpus``, ``task_gpus`` and ``task_retries`` fields of a settings object
        (``segnas.config.search.SearchSettings``); defaults for those it lacks."""
        return cls(float(getattr(settings, "task_cpus", 1.0)), float(getattr(settings, "task_gpus", 0.0)),
                   int(getattr(settings, "task_retries", 2)))

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus))

    def ray_task(self, fn: Callable[..., Any]) -> Any:
        """``fn`` as a Ray remote function reserving these resources, retried when its worker dies
        (an exception raised by ``fn`` itself is not retried)."""
        import ray

        return ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.retries,
                          retry_exceptions=False)(fn)


def ray_failure(exc: BaseException) -> BaseException:
    """What a Ray task's failure was: the exception ``fn`` raised, or a one-line ``WorkerError``
    when its worker (or node) died, or it could not be run, after every retry."""
    from ray.exceptions import RayTaskError

    if isinstance(exc, RayTaskError):
        return exc.cause if exc.cause is not None else exc
    lines = str(exc).strip().splitlines()
    return WorkerError(f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": "))


def call_with_threads(fn: Callable[[Any], Any], item: Any, threads: int | None) -> Any:
    """Run `fn(item)` in a worker after limiting torch to `threads` threads (None: leave as is), and
    the jobs it starts that leave theirs unset too (``OMP_NUM_THREADS``: ``job_threads``); an
    evaluator is set up once per worker (``segnas.parallel.worker.prepared``)."""
    if threads is not None:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(threads)  # (a worker process of segnas's own)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return prepared(fn)(item)


def run_inline(fn: Callable[[Any], Any], todo: Iterable[tuple[str, Any]], workers: int,
               threads: int | None, stop: Callable[[], bool], **_: Any) -> Iterator[Outcome]:
    """One item after another in this process (thread settings left as they are)."""
    for key, item in todo:
        if stop():
            return
        try:
            result = prepared(fn)(item)
        except Exception as exc:  # noqa: BLE001 - reported to the caller with the item's key
            yield key, False, exc
        else:
            yield key, True, result


def refill(pending: dict[Any, str], queue: Iterator[tuple[str, Any]], workers: int, stop: Callable[[], bool],
           submit: Callable[[Any], Any]) -> None:
    """Submit items until ``workers`` are in flight, the queue is empty or ``stop()`` says so."""
    while len(pending) < workers and not stop():
        nxt = next(queue, None)
        if nxt is None:
            return
        pending[submit(nxt[1])] = nxt[0]


@contextmanager
def sigterm_kept() -> Iterator[None]:
    """Keep this process's SIGTERM handler across the block (``ray.init`` installs one that exits at
    once: the command then said nothing of how to continue its run)."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)


class ProcessRunner:
    """``workers`` spawned processes (fork is unsafe once torch has started threads) that outlive one
    batch, so a worker sets an evaluator up once, and end when this process ends, even killed.

    A worker process that dies (killed, out of memory, a crash in native code) breaks the whole pool
    and fails every item in flight, so which item killed it is not known. The runner starts a fresh
    pool and runs those items again one at a time: an item that then kills its worker alone is run at
    most ``retries`` more times and reported as a ``WorkerError`` naming how often its worker died;
    the others finish normally."""

    def __init__(self, workers: int, retries: int = 2) -> None:
        self.workers, self.retries = workers, retries
        self._pool: ProcessPoolExecutor | None = None

    def _fresh_pool(self) -> ProcessPoolExecutor:
        self.close(block=False)
        self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=exit_with_parent, initargs=(os.getpid(),))
        return self._pool

    def run(self, fn: Callable[[Any], Any], todo: Iterable[tuple[str, Any]], threads: int | None,
            stop: Callable[[], bool] = lambda: False) -> Iterator[Outcome]:
        """(key, ok, result or exception) of every item of ``todo`` as each finishes; nothing new
        starts once ``stop()`` is true (items waiting to be run again alone are then reported failed)."""
        pool = self._pool or self._fresh_pool()
        pending: dict[Any, tuple[str, Any]] = {}
        suspects: list[tuple[str, Any]] = []  # in flight when the pool broke: run again one at a time
        deaths: dict[str, int] = {}  # deaths of an item's worker while it ran alone
        queue = iter(todo)
        while True:
            while not stop() and len(pending) < (1 if suspects else self.workers):
                nxt = suspects.pop(0) if suspects else next(queue, None)
                if nxt is None:
                    break
                pending[pool.submit(call_with_threads, fn, nxt[1], threads)] = nxt
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            alone = len(pending) == 1
            broken = False
            for future in done:
                key, item = pending.pop(future)
                exc = future.exception()
                if not isinstance(exc, BrokenProcessPool):
                    yield (key, False, exc) if exc is not None else (key, True, future.result())
                    continue
                broken = True
                if alone:
                    deaths[key] = deaths.get(key, 0) + 1
                if deaths.get(key, 0) > self.retries:
                    yield key, False, WorkerError(f"its worker process died each of the {deaths[key]} times it ran "
                                                  f"alone ({exc})")
                else:
                    suspects.append((key, item))
            if broken:  # the rest of the batch fails with the same pool: wait for it, then start afresh
                for future in list(pending):
                    wait([future])
                    suspects.append(pending.pop(future))
                again = f"; the {len(suspects)} item(s) in flight run again one at a time" if suspects else ""
                warnings.warn(f"a worker process died (killed, or out of memory: then run fewer workers){again}",
                              SegnasWarning, stacklevel=2)
                pool = self._fresh_pool()
        for key, _ in suspects:  # stopped before they could run again
            yield key, False, WorkerError("its worker process died and the run stopped before it was run again")

    def close(self, block: bool = True) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=block, cancel_futures=True)
            self._pool = None


def run_process(fn: Callable[[Any], Any], todo: Iterable[tuple[str, Any]], workers: int,
                threads: int | None, stop: Callable[[], bool], resources: TaskResources | None = None,
                **_: Any) -> Iterator[Outcome]:
    """A ``ProcessRunner`` of ``workers`` processes for this run (a dying worker's items run again,
    at most ``resources.retries`` times)."""
    try:
        pickle.dumps(fn)
    except Exception as exc:  # noqa: BLE001
        raise SegnasError(f"executor 'process' needs a picklable top-level function, got {fn!r} ({exc})") from None
    runner = ProcessRunner(workers, (resources or TaskResources()).retries)
    try:
        yield from runner.run(fn, todo, threads, stop)
    finally:
        runner.close()


def import_ray() -> Any:
    """The ``ray`` module, or SegnasError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise SegnasError("executor 'ray' needs Ray: pip install segnas[ray]") from None
    return ray


def no_answer(address: str, timeout_s: float = 5.0) -> str | None:
    """Why nothing accepts a connection at a ``host:port`` address (also ``ray://host:port``), or
    None when something does or the address names no port (``auto``)."""
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except OSError as exc:
        return " ".join(str(exc).split()) or type(exc).__name__


def start_ray(workers: int, address: str | None = None, resources: TaskResources | None = None) -> bool:
    """Connect to Ray: the cluster at ``address`` (``host:port`` of its head, or ``auto``: the
    cluster this machine belongs to, or RAY_ADDRESS), or a local Ray with CPUs for ``workers`` tasks
    of ``resources`` at once, whose workers import what this process imports. A local Ray that
    cannot hold one task's ``resources`` is refused (SegnasError: Ray would wait for ever); a
    cluster is not (its autoscaler may add the nodes the tasks ask for). Returns
    True when this call connected (the caller shuts the connection down), False when Ray was
    already initialized."""
    ray = import_ray()
    resources = resources or TaskResources()
    started = not ray.is_initialized()
    if started and address is None:
        # like spawned processes, local workers see this process's sys.path, so they import what it imports
        path = os.pathsep.join(os.path.abspath(p) for p in sys.path)
        with sigterm_kept():
            ray.init(num_cpus=max(workers, math.ceil(workers * resources.cpus)), include_dashboard=False,
                     ignore_reinit_error=True, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
        # (a local Ray only: a cluster may grow, an autoscaler adds the nodes its tasks ask for)
        nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
        if not any(n.get("CPU", 0) >= resources.cpus and n.get("GPU", 0) >= resources.gpus for n in nodes):
            ray.shutdown()
            held = ", ".join(f"{n.get('CPU', 0):g} CPUs and {n.get('GPU', 0):g} GPUs" for n in nodes) or "none"
            raise SegnasError(f"task_cpus {resources.cpus:g}, task_gpus {resources.gpus:g}: the local Ray cannot hold "
                              f"one evaluation (it has {held})")
    elif started:
        unreachable = no_answer(address)
        if unreachable:  # Ray itself would retry for minutes before it gives up
            raise SegnasError(f"ray_address: nothing answers at {address!r} ({unreachable}); is the cluster's head "
                              "started (ray start --head) and the address its host:port?")
        try:
            with sigterm_kept():
                ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SegnasError(f"ray_address: cannot connect to a Ray cluster at {address!r} "
                              f"({' '.join(str(exc).split())[:200]})") from None
    return started


def check_ray(workers: int, address: str | None = None, resources: TaskResources | None = None) -> None:
    """Before a job makes its run directory: refuse what would make its Ray executor fail or wait
    for ever once it runs (Ray missing, a GPU asked of a local Ray on a machine without one, a cluster
    address where nothing answers)."""
    resources = resources or TaskResources()
    ray = import_ray()
    if address is None and not ray.is_initialized():
        import torch

        if resources.gpus > torch.cuda.device_count():
            raise SegnasError(f"task_gpus {resources.gpus:g}: a local Ray has the GPUs this machine has, "
                              f"{torch.cuda.device_count()}")
        return
    if start_ray(workers, address, resources):
        ray.shutdown()


def run_ray(fn: Callable[[Any], Any], todo: Iterable[tuple[str, Any]], workers: int,
            threads: int | None, stop: Callable[[], bool], address: str | None = None,
            resources: TaskResources | None = None, **_: Any) -> Iterator[Outcome]:
    """Ray tasks reserving ``resources`` (default: one CPU each), at most `workers` in flight;
    starts a local Ray of `workers` CPUs unless one is running or `address` is given."""
    started = start_ray(workers, address, resources)
    import ray
    from ray.exceptions import RayError

    if resources is not None:
        threads = resources.threads
    try:
        task = (resources or TaskResources()).ray_task(call_with_threads)
        fn_ref = ray.put(fn)
        pending: dict[Any, str] = {}
        queue = iter(todo)

        def fill() -> None:
            refill(pending, queue, workers, stop, lambda item: task.remote(fn_ref, item, threads))

        fill()
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                key = pending.pop(ref)
                try:
                    outcome: Outcome = (key, True, ray.get(ref))
                except RayError as exc:  # fn raised, or the worker died after every retry
                    outcome = (key, False, ray_failure(exc))
                yield outcome
            fill()
    finally:
        if started:
            ray.shutdown()


EXECUTORS: dict[str, Callable[..., Iterator[Outcome]]] = {
    "inline": run_inline,
    "process": run_process,
    "ray": run_ray,
}
