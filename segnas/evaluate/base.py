"""The evaluator contract: a picklable object that scores one architecture and returns one record.

An evaluator holds only settings when pickled; heavy state (data batches, networks, a proxy's
functions) is built by ``setup()`` once in each process that runs it — ``segnas.parallel`` calls it
per worker (``segnas.parallel.worker.prepared``), so no module globals are needed.
"""

from __future__ import annotations

import math
import uuid
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping, Sequence


class Evaluator(ABC):
    """``evaluator(arch_dict) -> record``: a JSON-serializable mapping with at least ``"score"``
    (higher is better; ``None`` or non-finite ranks last)."""

    worker_state: ClassVar[tuple[str, ...]] = ()
    """Attributes that ``setup`` builds and pickling leaves out."""
    batch_settings: ClassVar[tuple[str, ...]] = ()
    """Attributes a search may change between batches (e.g. a termination threshold the strategy
    keeps): each batch's value reaches every worker's set-up copy (``segnas.parallel.worker``)."""

    is_setup: bool = False
    """Whether ``setup`` has run in this process (class default: a subclass's ``__init__`` need not
    call this one's)."""
    worker_token: str | None = None
    """Names this evaluator's set-up copy in each worker (given when first pickled if ``__init__``
    did not)."""

    def __init__(self) -> None:
        self.worker_token = uuid.uuid4().hex

    def setup(self) -> None:
        """Build the per-process state; called once per process before the first evaluation."""
        self.is_setup = True

    @abstractmethod
    def evaluate(self, arch: dict[str, Any]) -> dict[str, Any]:
        """The record of one architecture (given as its ``to_dict()``)."""

    def population_scores(self, records: Sequence[Mapping[str, Any]]) -> list[float] | None:
        """The scores of ``records`` relative to one another, for an evaluator whose score is a rank
        within the population scored so far (a rank aggregate of proxies: its records keep what the
        ranking needs, their ``score`` is None); None (the default) where each record's score stands."""
        return None

    def __call__(self, arch: dict[str, Any]) -> dict[str, Any]:
        if not self.is_setup:
            self.setup()
        return self.evaluate(arch)

    def __getstate__(self) -> dict[str, Any]:
        if self.worker_token is None:
            self.worker_token = uuid.uuid4().hex
        state = {k: v for k, v in self.__dict__.items() if k not in self.worker_state}
        state["is_setup"] = False
        return state


def fitness(score: float | None) -> float:
    """A score for selection: None and non-finite values rank last."""
    return float(score) if score is not None and math.isfinite(score) else -math.inf


