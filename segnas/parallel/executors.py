"""Executors: run `fn` over (key, item) pairs and yield (key, ok, result-or-exception) as each finishes.

Each keeps at most `workers` items in flight and submits no more once `stop()` is true, so that after
a failure the items already running finish (and get saved) and nothing new starts.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterable, Iterator

from segnas.errors import SegnasError
from segnas.parallel.worker import prepared

Outcome = tuple[str, bool, Any]


class WorkerError(RuntimeError):
    """A worker failed outside `fn` (crashed, or could not load the function or item)."""


def call_with_threads(fn: Callable[[Any], Any], item: Any, threads: int | None) -> Any:
    """Run `fn(item)` in a worker after limiting torch to `threads` threads (None: leave as is); an
    evaluator is set up once per worker (``segnas.parallel.worker.prepared``)."""
    if threads is not None:
        import torch

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


def run_process(fn: Callable[[Any], Any], todo: Iterable[tuple[str, Any]], workers: int,
                threads: int | None, stop: Callable[[], bool], **_: Any) -> Iterator[Outcome]:
    """A pool of `workers` spawned processes (fork is unsafe once torch has started threads)."""
    try:
        pickle.dumps(fn)
    except Exception as exc:  # noqa: BLE001
        raise SegnasError(f"executor 'process' needs a picklable top-level function, got {fn!r} ({exc})") from None
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        pending: dict[Any, str] = {}
        queue = iter(todo)

        def fill() -> None:
            refill(pending, queue, workers, stop, lambda item: pool.submit(call_with_threads, fn, item, threads))

        fill()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                key = pending.pop(future)
                exc = future.exception()
                yield (key, False, exc) if exc is not None else (key, True, future.result())
            fill()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def start_ray(workers: int, address: str | None = None) -> bool:
    """Connect to Ray: the cluster at ``address``, or a local Ray of ``workers`` CPUs whose workers
    import what this process imports. Returns True when this call started it (the caller shuts it
    down), False when Ray was already running."""
    try:
        import ray
    except ImportError:
        raise SegnasError("executor 'ray' needs Ray: pip install segnas[ray]") from None
    if ray.is_initialized():
        return False
    if address is None:
        # like spawned processes, local workers see this process's sys.path, so they import what it imports
        path = os.pathsep.join(os.path.abspath(p) for p in sys.path)
        ray.init(num_cpus=workers, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path}})
    else:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    return True


def run_ray(fn: Callable[[Any], Any], todo: Iterable[tuple[str, Any]], workers: int,
            threads: int | None, stop: Callable[[], bool], address: str | None = None,
            **_: Any) -> Iterator[Outcome]:
    """Ray tasks of one CPU each; starts a local Ray of `workers` CPUs unless one is running or `address` is given."""
    started = start_ray(workers, address)
    import ray
    from ray.exceptions import RayError, RayTaskError

    try:
        task = ray.remote(num_cpus=1)(call_with_threads)
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
                except RayTaskError as exc:
                    outcome = (key, False, exc.cause if exc.cause is not None else exc)
                except RayError as exc:  # the worker died or could not load the task: keep the first line
                    outcome = (key, False, WorkerError(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"))
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
