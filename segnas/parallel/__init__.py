"""Running independent evaluations in this process, in a process pool or on Ray, with resumable results."""

from segnas.parallel.executors import EXECUTORS
from segnas.parallel.pool import WorkerPool
from segnas.parallel.runner import run_all
from segnas.parallel.store import default_key, load_results

__all__ = ["EXECUTORS", "WorkerPool", "default_key", "load_results", "run_all"]
