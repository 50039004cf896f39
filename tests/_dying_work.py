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


def note_pid_then_sleep(item: tuple[int, str]) -> int:
    """Write this worker's pid to ``worker-<seed>.pid`` in the folder ``item[1]``, then sleep a minute
    (a worker still busy when its parent is killed)."""
    import time

    seed, folder = item
    (Path(folder) / f"worker-{seed}.pid").write_text(str(os.getpid()))
    time.sleep(60)
    return seed


def run_one_sleeping_item(folder: str) -> None:
    """A parent for the orphan test: a process pool of one worker running ``note_pid_then_sleep``."""
    from segnas.parallel.executors import ProcessRunner

    runner = ProcessRunner(workers=1)
    for _ in runner.run(note_pid_then_sleep, [("0", (0, folder))], None):
        pass


if __name__ == "__main__":
    import sys

    run_one_sleeping_item(sys.argv[1])
