"""Per-worker set-up of evaluation functions: an object with a ``worker_token`` and ``setup()``
(``segnas.evaluate.Evaluator``) is set up once in each process that runs it and reused for every
later item, whatever the executor (in-process, process pool, Ray)."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any, Callable, Protocol, runtime_checkable


@runtime_checkable
class WorkerSetUp(Protocol):
    """An evaluation function with heavy state built once per process (``segnas.evaluate.Evaluator``):
    equal ``worker_token``s share one set-up copy; ``batch_settings`` name the attributes a search
    may change between batches, copied onto it."""

    worker_token: str | None
    batch_settings: tuple[str, ...]

    def setup(self) -> None: ...

    def __call__(self, item: Any) -> Any: ...


#: worker_token -> the set-up copy of an evaluator in this process (the most recent few).
_PREPARED: dict[str, WorkerSetUp] = {}
_KEEP = 4


def prepared(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """This process's set-up copy of ``fn`` (``fn`` itself when it needs no set-up)."""
    if not isinstance(fn, WorkerSetUp) or fn.worker_token is None:
        return fn
    ready = _PREPARED.get(fn.worker_token)
    if ready is None:
        fn.setup()
        ready = _PREPARED[fn.worker_token] = fn
        while len(_PREPARED) > _KEEP:
            _PREPARED.pop(next(iter(_PREPARED)))
    elif ready is not fn:  # settings a search may change between batches reach the set-up copy
        for name in fn.batch_settings:
            setattr(ready, name, getattr(fn, name))
    return ready


def exit_with_parent(parent_pid: int, period_s: float = 1.0) -> None:
    """Make this worker process exit once the process that started it (``parent_pid``) is gone.

    A pool worker waits on a queue whose writing end it holds itself, so it never learns that a
    killed parent will send nothing more, and would run on as an orphan holding cores and memory.
    A daemon thread checks every ``period_s`` whether the parent changed and then ends the process,
    whatever item it is running."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(period_s)
        os._exit(1)

    # Ctrl-C reaches the whole process group: the parent says how to continue; a worker ends quietly
    # (unless it ignores Ctrl-C, as the parent it inherited that from does: a job a script runs in the background)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, lambda signum, frame: os._exit(130))

    threading.Thread(target=watch, name="segnas-exit-with-parent", daemon=True).start()
