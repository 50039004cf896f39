"""The ground-truth runner: sampled architectures trained from scratch under one budget through
``segnas.parallel`` (resumable), each by the short-training evaluator."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from segnas.errors import SegnasError
from segnas.evaluate.short_train import evaluate_or_diverged, item_key, make_item
from segnas.parallel import TaskResources, run_all
from segnas.spaces.base import Architecture, SearchSpace, arch_key, resolve_space


def sample_archs(space: str | SearchSpace, n: int, seed: int = 0, max_tries: int | None = None) -> list[Architecture]:
    """``n`` distinct architectures of ``space`` drawn with ``sample(rng, spread=True)`` (so they
    span the latency range), in draw order; deterministic for ``seed``."""
    space = resolve_space(space)
    if n < 1:
        raise SegnasError(f"sample_archs: n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    max_tries = max_tries or 100 * n
    seen: set[str] = set()
    out = []
    for _ in range(max_tries):
        arch = space.sample(rng, spread=True)
        k = arch_key(arch)
        if k not in seen:
            seen.add(k)
            out.append(arch)
            if len(out) == n:
                return out
    raise SegnasError(f"sample_archs: only {len(out)} distinct architectures in {max_tries} draws (asked for {n})")


def run_groundtruth(space: str | SearchSpace, archs: Sequence[Architecture | dict[str, Any]], settings: dict[str, Any],
                    *, results_path: str | Path | None,
                    executor: str = "inline", workers: int = 1, progress: bool = False,
                    threads_per_worker: int | None = 1, ray_address: str | None = None,
                    resources: TaskResources | None = None) -> list[dict[str, Any]]:
    """``evaluate_arch`` of every architecture through ``segnas.parallel.run_all`` (resumable via
    ``results_path``; on Ray: the cluster at ``ray_address``, each item reserving ``resources``);
    results in input order. A network whose training diverges is recorded with ``val_miou`` None and
    the reason in ``diverged`` (``evaluate_or_diverged``); the others go on."""
    items = [make_item(space, a, settings) for a in archs]
    return run_all(evaluate_or_diverged, items, executor=executor, workers=workers, results_path=results_path,
                   key=item_key, progress=progress, threads_per_worker=threads_per_worker,
                   ray_address=ray_address, resources=resources)
