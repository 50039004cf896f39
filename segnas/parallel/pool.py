"""A pool of workers kept for a whole search: ``map`` a function (or evaluator) over a batch of items
again and again without paying the start of processes (or of Ray) for every batch."""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence

from segnas.errors import SegnasError
from segnas.parallel.executors import EXECUTORS, call_with_threads, start_ray


class WorkerPool:
    """``executor`` "inline" (this process), "process" (spawned processes) or "ray" (tasks on a local
    Ray, or the cluster at ``ray_address``); ``workers`` items at once, torch limited to
    ``threads_per_worker`` threads in each worker (inline: left as is)."""

    def __init__(self, executor: str = "inline", workers: int = 1, threads_per_worker: int | None = 1,
                 ray_address: str | None = None) -> None:
        if executor not in EXECUTORS:
            raise SegnasError(f"executor: unknown {executor!r}; expected one of: {', '.join(EXECUTORS)}")
        if workers < 1:
            raise SegnasError(f"workers must be at least 1, got {workers}")
        self.executor = "inline" if workers == 1 and executor == "process" else executor
        self.workers = workers
        self.threads = threads_per_worker
        self.ray_address = ray_address
        self._pool: ProcessPoolExecutor | None = None
        self._ray_started = False
        self._ray_task = None

    def _start(self) -> None:
        if self.executor == "process" and self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        elif self.executor == "ray" and self._ray_task is None:
            self._ray_started = start_ray(self.workers, self.ray_address)
            import ray

            self._ray_task = ray.remote(num_cpus=1)(call_with_threads)

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``fn(item)`` of every item, in order; the first failure raises SegnasError after the
        batch has finished."""
        if not items:
            return []
        if self.executor == "inline":
            return [call_with_threads(fn, item, None) for item in items]
        try:
            pickle.dumps(fn)
        except Exception as exc:  # noqa: BLE001
            raise SegnasError(f"executor {self.executor!r} needs a picklable function or evaluator ({exc})") from None
        self._start()
        if self.executor == "process":
            futures = [self._pool.submit(call_with_threads, fn, item, self.threads) for item in items]
            errors = [f.exception() for f in futures]
            results = [f.result() if e is None else None for f, e in zip(futures, errors)]
        else:
            import ray

            fn_ref = ray.put(fn)
            refs = [self._ray_task.remote(fn_ref, item, self.threads) for item in items]
            results, errors = [], []
            for ref in refs:
                try:
                    results.append(ray.get(ref))
                    errors.append(None)
                except Exception as exc:  # noqa: BLE001 - reported below with the item
                    results.append(None)
                    errors.append(getattr(exc, "cause", None) or exc)
        failed = [(i, e) for i, e in enumerate(errors) if e is not None]
        if failed:
            i, exc = failed[0]
            raise SegnasError(f"evaluation of item {i} of the batch failed: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())}") from exc
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._ray_started:
            import ray

            ray.shutdown()
            self._ray_started = False
        self._ray_task = None

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
