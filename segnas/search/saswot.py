"""Training-free architecture search (SasWOT's second stage): regularized evolution over a space's
``sample``/``mutate`` that maximizes a zero-cost proxy under a latency target, training nothing.

Regularized evolution (Real et al., 2019): a population of ``population`` scored networks; each
step draws ``sample_size`` of them at random, mutates the best of those, scores the child and adds
it, removing the oldest member (aging). A candidate whose predicted latency exceeds the target is
rejected before it is scored (latency is cheap: a table lookup), so every scored network is
feasible. Each architecture is scored at most once (cached by its JSON); a duplicate child is
discarded and another drawn. Scoring builds the network with a fixed initialization seed, scores it
on batches fixed up front and frees it, so a search is deterministic for its seed; with ``workers``
> 1 that many children are proposed per step and scored together (the result depends on seed and
workers, not on the executor).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import pickle
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from segnas.errors import SegnasError
from segnas.search.groundtruth import arch_key, latency_function, resolve_space

Batch = tuple[torch.Tensor, torch.Tensor]
ProxyLike = str | Callable[..., float]


# --------------------------------------------------------------------------------- result
@dataclass
class ScoredArch:
    """One scored candidate; ``index`` is its position (1-based) in scoring order; ``final_score``
    its score again over more initializations, for the finalists of a search with ``final_inits``."""

    arch: Any
    score: float
    latency_ms: float
    index: int
    final_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"arch": self.arch.to_dict(), "score": _json_float(self.score), "latency_ms": self.latency_ms,
               "index": self.index}
        if self.final_score is not None:
            out["final_score"] = _json_float(self.final_score)
        return out


@dataclass
class SearchResult:
    """Outcome of ``training_free_search``: the best feasible network and how the search went.

    ``history`` has one record per scored candidate (``n``, ``score``, ``latency_ms``,
    ``best_score`` so far, ``seconds`` since the start); ``stopped`` is ``"candidates"``, ``"time"``
    or ``"exhausted"`` (no new feasible candidate found in the allowed draws); ``final_inits`` the
    initializations the ``top`` finalists were scored again on (0: not rescored; ``best`` is then
    the best by that score), ``final_seconds`` what that took."""

    best: ScoredArch
    top: list[ScoredArch]
    target_ms: float
    candidates_scored: int
    seconds: float
    rejected: int
    duplicates: int
    stopped: str
    history: list[dict[str, Any]] = field(default_factory=list)
    final_inits: int = 0
    final_seconds: float = 0.0

    @property
    def best_arch(self) -> Any:
        return self.best.arch

    @property
    def best_score(self) -> float:
        return self.best.score

    @property
    def best_latency_ms(self) -> float:
        return self.best.latency_ms

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best.to_dict(), "target_ms": self.target_ms, "candidates_scored": self.candidates_scored,
                "seconds": round(self.seconds, 3), "rejected_infeasible": self.rejected,
                "duplicates": self.duplicates, "stopped": self.stopped, "final_inits": self.final_inits,
                "final_seconds": round(self.final_seconds, 3), "top": [t.to_dict() for t in self.top],
                "history": [{**h, "score": _json_float(h["score"]), "best_score": _json_float(h["best_score"])}
                            for h in self.history]}


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _fitness(x: float) -> float:
    """Scores used for selection: a non-finite proxy value ranks last."""
    return x if math.isfinite(x) else -math.inf


# --------------------------------------------------------------------------------- scoring
def resolve_proxy(proxy: ProxyLike, batches: Sequence[Batch] | None, seed: int = 0) -> Callable[[nn.Module], float]:
    """``net -> score`` from a registered proxy name, a saved proxy file, or a callable.

    A name of ``segnas.proxies.PROXIES`` is scored on ``batches`` with ``seed``. A path to a file is
    a discovered proxy expression or ensemble (``segnas.proxies.ensemble.load_proxy``). A callable is used
    as it is (``net -> float``)."""
    from segnas import proxies

    if callable(proxy):
        return proxy
    if not isinstance(proxy, str):
        raise SegnasError(f"proxy: expected a proxy name, a file or a callable, got {proxy!r}")
    if proxy in proxies.PROXIES:
        if not batches:
            raise SegnasError(f"proxy {proxy!r}: needs data batches to score networks on")
        return lambda net: proxies.score(proxy, net, batches, seed=seed)
    if Path(proxy).is_file():
        from segnas.proxies.ensemble import load_proxy

        found = load_proxy(proxy)
        if not batches:
            raise SegnasError(f"proxy {proxy}: needs data batches to score networks on")
        return lambda net: float(found.score_net(net, batches, seed=seed))
    raise SegnasError(f"proxy: unknown name or missing file {proxy!r}; choose one of {', '.join(sorted(proxies.PROXIES))}"
                      " or give a saved proxy file")


class CandidateScorer:
    """Scores an architecture: builds its network (initialization seeded by ``init_seed``, the
    caller's RNG untouched), applies the proxy, frees the network. With ``inits`` > 1 the score is
    the mean over that many initializations (seeds ``init_seed + r``, proxy seeds ``proxy_seed + r``),
    which ranks architectures less by the luck of one draw of weights. With ``proxy_input="arch"``
    the proxy is called on the architecture itself (no network is built)."""

    def __init__(self, space: Any, proxy: ProxyLike, batches: Sequence[Batch] | None, num_classes: int | None,
                 proxy_seed: int = 0, init_seed: int = 0, proxy_input: Literal["net", "arch"] = "net",
                 inits: int = 1) -> None:
        if proxy_input not in ("net", "arch"):
            raise SegnasError(f"proxy_input: expected 'net' or 'arch', got {proxy_input!r}")
        if proxy_input == "arch" and not callable(proxy):
            raise SegnasError("proxy_input='arch' needs a callable proxy (arch -> float)")
        if proxy_input == "net" and num_classes is None:
            raise SegnasError("num_classes: needed to build the networks the proxy scores")
        self.space = resolve_space(space)
        self.proxy_input = proxy_input
        self.num_classes = num_classes
        from segnas.proxies.common import check_inits

        check_inits(inits)
        self.init_seed = init_seed
        self.fns = [proxy] if proxy_input == "arch" else [resolve_proxy(proxy, batches, proxy_seed + r)
                                                          for r in range(inits)]

    def __call__(self, arch: Any) -> float:
        if self.proxy_input == "arch":
            return float(self.fns[0](arch))
        values = []
        for r, fn in enumerate(self.fns):
            with torch.random.fork_rng():
                torch.manual_seed(self.init_seed + r)
                net = self.space.build(arch, self.num_classes)
            values.append(float(fn(net)))
            del net
        return float(np.mean(values))


_WORKER_SCORER: CandidateScorer | None = None


def _init_worker(args: tuple, threads: int) -> None:
    global _WORKER_SCORER
    torch.set_num_threads(threads)
    _WORKER_SCORER = CandidateScorer(*args)


def _score_in_worker(arch_dict: dict[str, Any]) -> float:
    assert _WORKER_SCORER is not None
    return _WORKER_SCORER(_WORKER_SCORER.space.arch_from_dict(arch_dict))


# --------------------------------------------------------------------------------- search
def training_free_search(space: Any, proxy: ProxyLike, latency_fn: Callable[[Any], float], target_ms: float, *,
                         candidates: int = 1000, population: int = 50, sample_size: int = 10, seed: int = 0,
                         time_limit_s: float | None = None, batches: Sequence[Batch] | None = None,
                         num_classes: int | None = None, proxy_seed: int = 0, inits: int = 1,
                         final_inits: int = 0, proxy_input: Literal["net", "arch"] = "net", top_k: int = 10,
                         executor: Literal["inline", "process"] = "inline", workers: int = 1,
                         max_draws: int | None = None, progress: bool = False,
                         echo: Callable[[str], None] | None = None) -> SearchResult:
    """Regularized evolution maximizing ``proxy`` subject to ``latency_fn(arch) <= target_ms``.

    ``proxy``: a proxy name (scored on ``batches``), a saved proxy file, or a callable on the built
    network (``proxy_input="net"``, needs ``num_classes``) or on the architecture (``"arch"``);
    on networks, averaged over ``inits`` initializations (``CandidateScorer``).
    With ``final_inits`` > ``inits`` the ``top_k`` best candidates are scored again, averaged over
    ``final_inits`` initializations (the search's own among them), and the best by that score wins:
    the search explores at the cost of few initializations, the pick is less a lucky draw of weights.
    Stops after ``candidates`` networks are scored, after ``time_limit_s`` seconds, or once
    ``max_draws`` proposals in all (default 50 per requested candidate) have been drawn.
    """
    space = resolve_space(space)
    if candidates < 1 or population < 1 or sample_size < 1 or top_k < 1 or workers < 1:
        raise SegnasError("training_free_search: candidates, population, sample_size, top_k and workers must be >= 1")
    if not target_ms > 0:
        raise SegnasError(f"target_ms: must be > 0, got {target_ms}")
    if executor not in ("inline", "process"):
        raise SegnasError(f"executor: expected 'inline' or 'process', got {executor!r}")
    if final_inits < 0 or (final_inits and proxy_input == "arch"):
        raise SegnasError(f"final_inits: expected 0 or a number of initializations for a proxy on networks, "
                          f"got {final_inits}")
    scorer_args = (space, proxy, batches, num_classes, proxy_seed, seed, proxy_input, inits)
    scorer = CandidateScorer(*scorer_args)
    rng = np.random.default_rng(seed)
    max_draws = max_draws or 50 * candidates + 1000
    start = time.perf_counter()
    latencies: dict[str, float] = {}
    scored: dict[str, ScoredArch] = {}
    pop: deque[ScoredArch] = deque()
    history: list[dict[str, Any]] = []
    best: ScoredArch | None = None
    draws = rejected = duplicates = 0
    fastest = math.inf
    stopped = "candidates"

    def propose() -> Any:
        if len(scored) < population or not pop:
            return space.sample(rng, spread=True)
        members = list(pop)
        picks = rng.choice(len(members), size=min(sample_size, len(members)), replace=False)
        parent = max((members[int(i)] for i in picks), key=lambda c: (_fitness(c.score), -c.index))
        return space.mutate(parent.arch, rng)

    pool = None
    if executor == "process" and workers > 1:
        try:
            pickle.dumps(scorer_args)
        except Exception as exc:  # noqa: BLE001
            raise SegnasError(f"executor 'process' needs a picklable space and proxy (a registered name or a "
                              f"top-level function): {exc}") from None
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(scorer_args, 1))
    from segnas.engine.progress import progress_bar

    try:
        with progress_bar(progress) as bar:
            task = bar.add_task("training-free search", total=candidates, info="") if bar else None
            while len(scored) < candidates:
                if time_limit_s is not None and time.perf_counter() - start >= time_limit_s:
                    stopped = "time"
                    break
                batch: list[tuple[str, Any, float]] = []
                want = min(workers, candidates - len(scored))
                while len(batch) < want and draws < max_draws:
                    draws += 1
                    try:
                        arch = propose()
                    except SegnasError:  # a mutation that found nothing valid: draw again
                        continue
                    k = arch_key(arch)
                    if k in scored or any(k == b[0] for b in batch):
                        duplicates += 1
                        continue
                    if k not in latencies:
                        latencies[k] = float(latency_fn(arch))
                    fastest = min(fastest, latencies[k])
                    if latencies[k] > target_ms:
                        rejected += 1
                        continue
                    batch.append((k, arch, latencies[k]))
                if not batch:
                    stopped = "exhausted"
                    break
                if pool is not None:
                    values = list(pool.map(_score_in_worker, [a.to_dict() for _, a, _ in batch]))
                else:
                    values = [scorer(a) for _, a, _ in batch]
                for (k, arch, lat), value in zip(batch, values):
                    cand = ScoredArch(arch, float(value), lat, len(scored) + 1)
                    scored[k] = cand
                    pop.append(cand)
                    if len(pop) > population:
                        pop.popleft()
                    if best is None or _fitness(cand.score) > _fitness(best.score):
                        best = cand
                    history.append({"n": cand.index, "score": cand.score, "latency_ms": lat,
                                    "best_score": best.score, "seconds": round(time.perf_counter() - start, 3)})
                    if bar is not None:
                        bar.update(task, advance=1, info=f"best {best.score:.4g} @ {best.latency_ms:.1f} ms")
                    if echo and cand.index % 100 == 0:
                        echo(f"{cand.index} scored: best {best.score:.4g} at {best.latency_ms:.2f} ms")
                if len(batch) < want:
                    stopped = "exhausted"
                    break
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if best is None:
        raise SegnasError(f"target_ms: no sampled network runs within {target_ms} ms "
                          f"(fastest of {draws} drawn: {fastest:.2f} ms); raise the target")
    top = sorted(scored.values(), key=lambda c: (-_fitness(c.score), c.index))[:top_k]
    seconds = time.perf_counter() - start
    final_seconds = 0.0
    if final_inits > inits:
        # the search's score is already the mean over initializations 0 .. inits-1: score the rest only
        extra = CandidateScorer(space, proxy, batches, num_classes, proxy_seed + inits, seed + inits, proxy_input,
                                final_inits - inits)
        search_rank = {c.index: rank for rank, c in enumerate(top, 1)}
        for c in top:
            c.final_score = (inits * c.score + (final_inits - inits) * extra(c.arch)) / final_inits
        top.sort(key=lambda c: (-_fitness(c.final_score), c.index))
        best = top[0]
        final_seconds = time.perf_counter() - start - seconds
        if echo:
            echo(f"{len(top)} finalists scored again over {final_inits} initializations in {final_seconds:.0f} s; "
                 f"the winner ranked #{search_rank[best.index]} by the search's score")
    return SearchResult(best=best, top=top, target_ms=float(target_ms), candidates_scored=len(scored),
                        seconds=seconds, rejected=rejected, duplicates=duplicates, stopped=stopped,
                        history=history, final_inits=final_inits if final_inits > inits else 0,
                        final_seconds=final_seconds)


# --------------------------------------------------------------------------------- job API
def fixed_batches(dataset: Any, images: int, batch_size: int, seed: int = 0) -> list[Batch]:
    """``images`` samples of ``dataset`` chosen by ``seed`` (no augmentation beyond the dataset's
    transform), stacked into batches of ``batch_size``."""
    if images < 1 or batch_size < 1:
        raise SegnasError(f"images and batch_size must be >= 1, got {images} and {batch_size}")
    if len(dataset) < 1:
        raise SegnasError("data: the split has no images to score networks on")
    n = min(images, len(dataset))
    idx = sorted(np.random.default_rng(seed).choice(len(dataset), size=n, replace=False).tolist())
    samples = [dataset[i] for i in idx]
    shapes = {tuple(im.shape) for im, _ in samples}
    if len(shapes) > 1:
        raise SegnasError(f"score_size: images have different sizes {sorted(shapes)}; give a size to resize to")
    return [(torch.stack([im for im, _ in samples[s:s + batch_size]]),
             torch.stack([m for _, m in samples[s:s + batch_size]])) for s in range(0, n, batch_size)]


def proxy_scored_on(proxy: ProxyLike) -> dict[str, Any]:
    """What a discovered proxy file's statistics were measured on (``data``, ``split``, ``images``,
    ``size``, ``seed``); empty for a registered name, a callable or an older file."""
    if not (isinstance(proxy, str) and Path(proxy).is_file()):
        return {}
    from segnas.proxies.ensemble import load_proxy

    return dict(load_proxy(proxy).settings.get("scored_on") or {})


def _check_scored_on(proxy: ProxyLike, data: str, images: int, size: Sequence[int] | None, inits: int,
                     echo: Callable[[str], None] | None) -> None:
    """A notice when a discovered proxy file is used on other data, image count, size or number of
    initializations than it was discovered on (its values are then on another scale, and its
    ranking untested)."""
    seen = proxy_scored_on(proxy)
    now = {"data": data, "images": images, "size": list(size) if size else None, "inits": inits}
    diff = {k: (seen[k], v) for k, v in now.items() if k in seen and seen[k] != v}
    if diff and echo:
        echo(f"note: {proxy} was discovered on " + ", ".join(f"{k} {a}" for k, (a, _) in diff.items())
             + "; this search scores on " + ", ".join(f"{k} {b}" for k, (_, b) in diff.items()))


def saswot_search(out_dir: str | Path, *, target_ms: float, latency_size: Sequence[int], space: Any = "multires",
                  proxy: ProxyLike = "nwot", data: str = "synthetic", root: str | Path | None = None,
                  split: str = "train", data_options: dict[str, Any] | None = None, images: int = 8,
                  batch_size: int = 8, score_size: Sequence[int] | None = (128, 160),
                  backend: str = "onnxruntime", latency_threads: int | None = None, table_min_runs: int = 20,
                  table_min_time_s: float = 0.3, table: Any = None, candidates: int = 1000, population: int = 50,
                  sample_size: int = 10, seed: int = 0, proxy_seed: int = 0, inits: int | None = None,
                  final_inits: int | None = None, time_limit_s: float | None = None,
                  executor: Literal["inline", "process"] = "inline", workers: int = 1, top_k: int = 10,
                  progress: bool = False, echo: Callable[[str], None] | None = None) -> SearchResult:
    """Everything a ``segnas search saswot`` job needs: data batches, proxy, latency table, search,
    and ``<out_dir>/arch.json`` (the best network) plus ``<out_dir>/saswot_result.json``.

    Networks are scored on ``images`` images of ``data``/``split`` resized to ``score_size``
    (None: native size), each score the mean over ``inits`` initializations (the ``top_k``
    finalists' again over ``final_inits``, see ``training_free_search``; None: a proxy file's
    ``scored_on.inits``, else 1 and no rescoring); latency is predicted
    from the operator table of ``backend`` at ``latency_size`` (the deployment size), or from
    ``table`` if given."""
    from segnas.cost import LatencyTable
    from segnas.data import eval_transforms, open_split
    from segnas.spaces import write_arch_file
    from segnas.utils import atomic_write_text, parse_size

    space = resolve_space(space)
    lat_size = parse_size(latency_size, "latency_size")
    size = parse_size(score_size, "score_size") if score_size is not None else None
    dataset = open_split(data, root, split, eval_transforms(size), False, data_options or {})
    batches = fixed_batches(dataset, images, batch_size, seed)
    num_classes = int(dataset.num_classes)
    seen_inits = proxy_scored_on(proxy).get("inits")
    inits = inits or seen_inits or 1
    final_inits = (seen_inits or 0) if final_inits is None else final_inits
    _check_scored_on(proxy, data, images, size, inits, echo)
    table = table or LatencyTable(backend, threads=latency_threads, min_runs=table_min_runs,
                                  min_time_s=table_min_time_s)
    result = training_free_search(
        space, proxy, latency_function(space, table, num_classes, lat_size), target_ms, candidates=candidates,
        population=population, sample_size=sample_size, seed=seed, time_limit_s=time_limit_s, batches=batches,
        num_classes=num_classes, proxy_seed=proxy_seed, inits=inits, final_inits=final_inits, top_k=top_k,
        executor=executor, workers=workers,
        progress=progress, echo=echo)
    out = Path(out_dir)
    proxy_name = proxy if isinstance(proxy, str) else getattr(proxy, "__name__", repr(proxy))
    info = {"predicted_latency_ms": result.best_latency_ms, "target_ms": float(target_ms),
            "latency_size": list(lat_size), "backend": table.backend, "proxy": proxy_name,
            "proxy_score": _json_float(result.best_score), "candidates_scored": result.candidates_scored}
    if result.final_inits:
        info["final_proxy_score"] = _json_float(result.best.final_score)
    write_arch_file(out / "arch.json", space.name, space.version, result.best_arch.to_dict(), **info)
    settings = {"space": space.name, "data": data, "split": split, "images": sum(len(b[0]) for b in batches),
                "score_size": list(size) if size else None, "population": population, "sample_size": sample_size,
                "seed": seed, "proxy_seed": proxy_seed, "inits": inits, "final_inits": result.final_inits,
                "top_k": top_k, "workers": workers,
                "time_limit_s": time_limit_s}
    atomic_write_text(out / "saswot_result.json", json.dumps({"settings": settings, **info, **result.to_dict()},
                                                             indent=1))
    if echo:
        echo(f"best: {proxy_name} {result.best_score:.4g}, predicted {result.best_latency_ms:.2f} ms "
             f"(target {target_ms} ms) after {result.candidates_scored} candidates in {result.seconds:.0f} s")
    return result
