"""A work function for tests/test_parallel.py that kills its worker process, without torch (spawned
workers start in a second)."""

import os
from pathlib import Path


def die_once_then_square(item: tuple[int, str]) -> int:
    """``seed ** 2``, but the first run of seed 2 kills its worker process (a marker file in the
    folder ``item[1]`` remembers it); seed 5 kills its worker every time."""
    seed, folder = item
    marker = Path(folder) / f"died-{seed}"
    if seed == 5 or (seed == 2 and not marker.exists()):
        marker.touch()
        os._exit(3)
    return seed * seed
