"""One-shot search: the engine that trains a supernet and its architecture parameters
(``engine``), the strategy base with its hooks (``strategy``) and the data it searches on (``data``)."""

from segnas.search.oneshot.engine import OneShotEngine, SearchHooks, SearchSchedule, split_halves
from segnas.search.oneshot.strategy import OneShotSettings, OneShotStrategy

__all__ = ["OneShotEngine", "SearchHooks", "SearchSchedule", "split_halves", "OneShotSettings", "OneShotStrategy"]
