"""Evaluators: score one architecture and return one record, in any ``segnas.parallel`` executor
(``base``: the contract; ``proxy``: zero-cost proxies; ``short_train``: training from scratch under
a step or time budget; ``groundtruth``: the resumable runner of many short trainings; ``records``:
ground-truth files)."""

from segnas.evaluate.base import Evaluator, fitness

__all__ = ["Evaluator", "fitness"]
