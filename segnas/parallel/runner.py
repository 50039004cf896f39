"""`run_all`: apply one function to many items on a chosen executor, saving and resuming results."""

from __future__ import annotations

import warnings
from contextlib import closing
from pathlib import Path
from typing import Any, Callable, Sequence

from segnas.errors import CannotWrite, SegnasError, SegnasWarning
from segnas.parallel.executors import EXECUTORS, TaskResources, WorkerError
from segnas.parallel.store import ResultStore, default_key
from segnas.progress import task_progress


def run_all(fn: Callable[[Any], Any], items: Sequence[Any], *, executor: str = "inline", workers: int = 2,
            results_path: str | Path | None = None, key: Callable[[Any], str] | None = None,
            progress: bool = False, threads_per_worker: int | None = 1,
            ray_address: str | None = None, resources: TaskResources | None = None,
            label: str = "evaluations", on_result: Callable[[str, Any], None] | None = None,
            on_failure: Callable[[str, BaseException], None] | None = None) -> list[Any]:
    """Results of `fn(item)` for every item, in input order.

    `fn` must be a picklable top-level function (spawned processes import it by name) and return
    JSON-serializable values (results come back as their JSON round trip, whatever the executor).
    `executor`: "inline" (this process), "process" (a spawned process pool) or "ray"; `workers`
    items run at once. With `results_path` (JSONL) each result is appended and fsynced as it
    finishes, and results already there are reused, not recomputed: `key(item)` (default: a hash
    of the item's JSON) must name everything the result depends on. Items with the same key are
    computed once. Workers limit torch to `threads_per_worker` threads (None: leave as is).
    On Ray (`ray_address`: a cluster's ``host:port`` or ``auto``; None: a local Ray) each item
    reserves `resources` (CPUs, which also set its torch threads, and GPUs) and is run again when
    its worker or node dies, up to `resources.retries` times.
    When `fn` raises, no new item starts; an item whose worker kept dying is recorded as failed,
    with the reason, in `results_path` (a rerun tries it again) and the other items still run.
    Then SegnasError names the first failed key, once every finished result is saved.
    `label` names the items on the progress bar; `on_result(key, result)` is told of each item
    finished in this call, once its result is saved; `on_failure(key, error)` of each item that
    failed in this call (its worker died, or `fn` raised), once its failure is recorded.
    """
    if executor not in EXECUTORS:
        raise SegnasError(f"unknown executor {executor!r}; expected one of: {', '.join(EXECUTORS)}")
    if workers < 1:
        raise SegnasError(f"workers must be at least 1, got {workers}")
    key = key or default_key
    keys = [str(key(item)) for item in items]
    store = ResultStore(results_path)
    todo: dict[str, Any] = {}
    for k, item in zip(keys, items):
        if k not in store and k not in todo:
            todo[k] = item
    failures: list[tuple[str, BaseException]] = []
    try:
        with task_progress(label, len(todo), progress and bool(todo)) as ticker:
            outcomes = EXECUTORS[executor](fn, list(todo.items()), workers, threads_per_worker,
                                           lambda: any(not isinstance(e, WorkerError) for _, e in failures),
                                           address=ray_address, resources=resources)
            with closing(outcomes):
                for k, ok, value in outcomes:
                    if ok:
                        try:
                            store.add(k, value)
                        except (TypeError, ValueError) as exc:
                            value = TypeError(f"result is not JSON-serializable: {exc}")
                            ok = False
                        else:
                            _tell(on_result, k, store[k])
                    if not ok:
                        failures.append((k, value))
                        if isinstance(value, WorkerError):
                            store.fail(k, " ".join(str(value).split()))
                        _tell(on_failure, k, value)
                    ticker.advance()
    finally:
        store.close()
    if failures:
        k, exc, kind = first_failure(failures)
        more = f" ({len(failures) - 1} more failed)" if len(failures) > 1 else ""
        saved = f"; finished results are saved in {results_path}, rerun to resume" if results_path else ""
        raise kind(f"item {k} failed: {failure_message(exc)}{more}{saved}") from exc
    return [store[k] for k in keys]


def first_failure(failures: Sequence[tuple[Any, BaseException]]) -> tuple[Any, BaseException, type[SegnasError]]:
    """The failure to report, of ``(key, error)`` pairs: one that found no room to write (the
    machine's: a rerun continues once there is room), else the first; and the error type to report
    it as (CannotWrite keeps its kind)."""
    k, exc = next(((k, e) for k, e in failures if isinstance(e, CannotWrite)), failures[0])
    return k, exc, CannotWrite if isinstance(exc, CannotWrite) else SegnasError


def failure_message(exc: BaseException) -> str:
    """Why an item failed, on one line: the error's type and message (segnas's own: its message)."""
    said = str(exc) if isinstance(exc, SegnasError) else f"{type(exc).__name__}: {exc}"
    return " ".join(said.split()).rstrip(":")


def _tell(callback: Callable[[str, Any], None] | None, key: str, value: Any) -> None:
    """``callback(key, value)``, a report of an item: a failing one warns, never the reason to lose
    the other items' results."""
    if callback is None:
        return
    try:
        callback(key, value)
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"reporting {key} failed: {exc}", SegnasWarning, stacklevel=3)
