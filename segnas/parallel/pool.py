"""A pool of workers kept for a whole search: ``map`` a function (or evaluator) over a batch of items
again and again without paying the start of processes (or of Ray) for every batch."""

from __future__ import annotations

import pickle
from typing import Any, Callable, Sequence

from segnas.errors import SegnasError
from segnas.parallel.executors import (EXECUTORS, ProcessRunner, TaskResources, call_with_threads, ray_failure,
                                       start_ray)
from segnas.parallel.runner import failure_message, first_failure

#: ``on_result(index, result)``: called in this process as each item of a batch finishes.
OnResult = Callable[[int, Any], None]


class WorkerPool:
    """``executor`` "inline" (this process), "process" (spawned processes) or "ray" (tasks on a local
    Ray, or the cluster at ``ray_address``: ``host:port`` or ``auto``); ``workers`` items at once,
    torch limited to ``threads_per_worker`` threads in each worker (inline: left as is). On Ray each
    item reserves ``resources`` (CPUs, which also set its torch threads, GPUs) and is run again when
    its worker dies, at most ``resources.retries`` times; in the process pool likewise
    (``ProcessRunner``)."""

    def __init__(self, executor: str = "inline", workers: int = 1, threads_per_worker: int | None = 1,
                 ray_address: str | None = None, *, resources: TaskResources | None = None) -> None:
        if executor not in EXECUTORS:
            raise SegnasError(f"executor: unknown {executor!r}; expected one of: {', '.join(EXECUTORS)}")
        if workers < 1:
            raise SegnasError(f"workers must be at least 1, got {workers}")
        self.executor = "inline" if workers == 1 and executor == "process" else executor
        self.workers = workers
        self.resources = resources
        self.threads = resources.threads if resources is not None and self.executor == "ray" else threads_per_worker
        self.ray_address = ray_address
        self._runner: ProcessRunner | None = None
        self._ray_started = False
        self._ray_task = None

    def _start(self) -> None:
        if self.executor == "process" and self._runner is None:
            self._runner = ProcessRunner(self.workers, (self.resources or TaskResources()).retries)
        elif self.executor == "ray" and self._ray_task is None:
            self._ray_started = start_ray(self.workers, self.ray_address, self.resources)
            self._ray_task = (self.resources or TaskResources()).ray_task(call_with_threads)

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], on_result: OnResult | None = None) -> list[Any]:
        """``fn(item)`` of every item, in order; ``on_result(index, result)`` is called as each one
        finishes (to save it at once). The first failure raises SegnasError after the batch has
        finished (every success reported)."""
        if not items:
            return []
        results: list[Any] = [None] * len(items)
        errors: list[BaseException | None] = [None] * len(items)

        def finished(i: int, result: Any) -> None:
            results[i] = result
            if on_result is not None:
                on_result(i, result)

        if self.executor == "inline":
            for i, item in enumerate(items):
                finished(i, call_with_threads(fn, item, None))
            return results
        try:
            pickle.dumps(fn)
        except Exception as exc:  # noqa: BLE001
            raise SegnasError(f"executor {self.executor!r} needs a picklable function or evaluator ({exc})") from None
        self._start()
        if self.executor == "process":
            for i, ok, value in self._runner.run(fn, enumerate(items), self.threads):
                if ok:
                    finished(i, value)
                else:
                    errors[i] = value
        else:
            import ray

            fn_ref = ray.put(fn)
            refs = {self._ray_task.remote(fn_ref, item, self.threads): i for i, item in enumerate(items)}
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    i = refs.pop(ref)
                    try:
                        value = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - reported below with the item
                        errors[i] = ray_failure(exc) if isinstance(exc, ray.exceptions.RayError) else exc
                    else:
                        finished(i, value)
        failed = [(i, e) for i, e in enumerate(errors) if e is not None]
        if failed:
            i, exc, kind = first_failure(failed)
            raise kind(f"evaluation of item {i} of the batch failed: {failure_message(exc)}") from exc
        return results

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        if self._ray_started:
            import ray

            ray.shutdown()
            self._ray_started = False
        self._ray_task = None

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
