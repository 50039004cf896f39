"""Latency under ``torchrun``: rank 0 times, the other ranks use its figures.

Ranks timing operators or networks at once would share the machine's cores, and each would cache
its own, slower figures; ranks with different tables could even derive different networks.
"""

from __future__ import annotations

from typing import Callable

from segnas.cost import LatencyModel
from segnas.engine import distributed


def timed_on_rank0(latency: LatencyModel, step: Callable[[], None]) -> None:
    """``step()`` (which may time latency with ``latency``) on rank 0; then on every other rank with
    rank 0's table entries and corrections in memory, so that it times nothing new. Outside
    torchrun: ``step()``."""
    if not distributed.context().enabled:
        step()
        return
    if distributed.is_main():
        step()
    shared = distributed.broadcast_object(latency.shared() if distributed.is_main() else None)
    if not distributed.is_main():
        latency.adopt(shared)
        step()
