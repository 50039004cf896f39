"""Work functions for tests/test_ray_cluster.py, importable by the cluster's workers (PYTHONPATH)."""

import os
import signal
import time

from _parallel_work import conv_score


def slow_score(seed: int) -> dict:
    """`conv_score` after a pause, so that a node can be killed while items are in flight."""
    time.sleep(1.5)
    return {**conv_score(seed), "node": os.environ.get("SEGNAS_TEST_NODE")}


def dies_on_three(seed: int) -> dict:
    """`conv_score`, except that the worker running item 3 is killed (SIGKILL) every time."""
    if seed == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return conv_score(seed)
