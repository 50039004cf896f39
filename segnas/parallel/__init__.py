"""Running independent evaluations in this process, in a process pool or on Ray, with resumable results."""

from segnas.parallel.executors import EXECUTORS, TaskResources, WorkerError, check_ray
from segnas.parallel.pool import WorkerPool
from segnas.parallel.runner import run_all
from segnas.parallel.store import default_key, load_failures, load_results

__all__ = ["EXECUTORS", "TaskResources", "WorkerError", "WorkerPool", "check_ray", "default_key", "load_failures",
           "load_results", "run_all"]
