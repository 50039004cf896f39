"""Zero-cost proxy evaluator: scores an architecture by a proxy on a few fixed training images,
training nothing (SasWOT's scoring, and random search's cheapest option).

The network is built with a fixed initialization seed (the caller's RNG untouched), scored and
freed; with ``inits`` > 1 the score is the mean over that many initializations (seeds
``init_seed + r``, proxy seeds ``proxy_seed + r``), which ranks architectures less by the luck of
one draw of weights.

A rank aggregate (``az_nas``, ``rank_log(a,b)``, ``rank_mean(a,b)``: ``segnas.proxies.aggregate``)
is a proxy too, but its value exists only within a population: a record then keeps the components'
scores (``components``, each the mean over the initializations) and ``score`` None, and
``population_scores`` ranks any set of records against one another. The search loop re-ranks every
network scored so far after each batch (as AZ-NAS's own search does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from segnas.config.train import DataConfig
from segnas.data import eval_transforms, open_data
from segnas.errors import SegnasError
from segnas.evaluate.base import Evaluator
from segnas.proxies import PROXIES, score
from segnas.proxies.aggregate import RankAggregate, resolve_aggregate
from segnas.proxies.common import check_inits, images_problem
from segnas.proxies.ensemble import load_proxy
from segnas.spaces.base import SearchSpace, resolve_space
from segnas.utils import json_float

Batch = tuple[torch.Tensor, torch.Tensor]
ProxyLike = str | Callable[[nn.Module], float]

#: What a proxy scores on when neither its settings nor a discovered proxy file say.
DEFAULT_IMAGES, DEFAULT_SIZE, DEFAULT_INITS = 8, (128, 160), 1
#: A scoring size that stands for the images' own (``proxy score --size native``).
NATIVE = "native"


def scoring_setup(seen: Mapping[str, Any], images: int | None = None, size: Sequence[int] | str | None = None,
                  inits: int | None = None) -> tuple[int, tuple[int, int] | None, int]:
    """The images, size (None: the images' own) and weight initializations a proxy scores with: as
    given (``size``: HxW, or ``NATIVE``), else what its proxy file was discovered on (``seen``:
    ``proxy_scored_on``, where a recorded size None is the images' own), else the defaults. One rule
    for a search's evaluator and ``segnas proxy score``."""
    if size is None:
        size = (seen["size"] or NATIVE) if "size" in seen else DEFAULT_SIZE
    if images is None:
        images = seen.get("images") or DEFAULT_IMAGES
    if inits is None:
        inits = seen.get("inits") or DEFAULT_INITS
    return images, None if size == NATIVE else (int(size[0]), int(size[1])), inits


def fixed_batches(dataset: Any, images: int, batch_size: int, seed: int = 0, field: str = "images",
                  size_field: str = "the proxy's size") -> list[Batch]:
    """``images`` samples of ``dataset`` chosen by ``seed`` (no augmentation beyond the dataset's
    transform), stacked into batches of ``batch_size``; more images than ``dataset`` holds are
    refused, naming ``field``."""
    if images < 1 or batch_size < 1:
        raise SegnasError(f"images and batch_size must be >= 1, got {images} and {batch_size}")
    if len(dataset) < 1:
        raise SegnasError("data: the split has no images to score networks on")
    if images > len(dataset):
        raise SegnasError(f"{field}: {images} images, but the split holds {len(dataset)}")
    n = images
    idx = sorted(np.random.default_rng(seed).choice(len(dataset), size=n, replace=False).tolist())
    samples = [dataset[i] for i in idx]
    shapes = {tuple(im.shape) for im, _ in samples}
    if len(shapes) > 1:
        raise SegnasError(f"the split's images have different sizes {sorted(shapes)}: give a size to resize them to "
                          f"({size_field})")
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:  # a last batch of one image joins the one before it
        starts.pop()
    ends = starts[1:] + [n]
    return [(torch.stack([im for im, _ in samples[s:e]]), torch.stack([m for _, m in samples[s:e]]))
            for s, e in zip(starts, ends)]


def check_proxy_images(proxy: ProxyLike, images: int, batch_size: int, field: str = "scoring.images") -> None:
    """Refuse, naming ``field``, fewer images (in all, or per batch) than ``proxy`` or a component of
    its rank aggregate needs to tell networks apart (``segnas.proxies.common.ImageNeeds``)."""
    if not isinstance(proxy, str):
        return
    aggregate = None if proxy in PROXIES or Path(proxy).is_file() else resolve_aggregate(proxy)
    problem = images_problem(aggregate.components if aggregate else [proxy], images, batch_size)
    if problem:
        raise SegnasError(f"{field}: {problem}")


def check_proxy(proxy: ProxyLike, field: str = "proxy") -> None:
    """Raise SegnasError naming ``field`` unless ``proxy`` is a registered name, a rank aggregate of
    registered names, a readable proxy file or a callable."""
    if callable(proxy) or (isinstance(proxy, str) and proxy in PROXIES):
        return
    if isinstance(proxy, str) and Path(proxy).is_file():
        try:
            load_proxy(proxy)  # parsed now, not when the search starts scoring
        except SegnasError as exc:
            raise SegnasError(f"{field}: {exc}") from None
        return
    if isinstance(proxy, str) and resolve_aggregate(proxy) is not None:  # its components are checked here
        return
    raise SegnasError(f"{field}: unknown name or missing file {proxy!r}; choose one of {', '.join(sorted(PROXIES))}, "
                      "a rank aggregate (az_nas, rank_log(a,b,...), rank_mean(a,b,...)) or a saved proxy file")


def resolve_proxy(proxy: ProxyLike, batches: Sequence[Batch] | None, seed: int = 0) -> Callable[[nn.Module], float]:
    """``net -> score`` from a registered proxy name, a saved proxy file, or a callable.

    A name of ``segnas.proxies.PROXIES`` is scored on ``batches`` with ``seed``. A path to a file is
    a discovered proxy expression or ensemble (``segnas.proxies.ensemble.load_proxy``). A callable is used
    as it is (``net -> float``)."""
    check_proxy(proxy)
    if callable(proxy):
        return proxy
    if not batches:
        raise SegnasError(f"proxy {proxy}: needs data batches to score networks on")
    if proxy in PROXIES:
        return lambda net: score(proxy, net, batches, seed=seed)
    found = load_proxy(proxy)
    return lambda net: float(found.score_net(net, batches, seed=seed))


def proxy_scored_on(proxy: ProxyLike) -> dict[str, Any]:
    """What a discovered proxy file's statistics were measured on (``data``, ``split``, ``images``,
    ``size``, ``seed``, ``inits``); empty for a registered name, a callable or an older file."""
    if not (isinstance(proxy, str) and Path(proxy).is_file()):
        return {}
    return dict(load_proxy(proxy).settings.get("scored_on") or {})


class ProxyEvaluator(Evaluator):
    """Scores architectures of ``space`` by ``proxy`` on fixed batches: given (``batches`` and
    ``num_classes``), or drawn by ``setup`` from ``data`` (``images`` of ``split`` resized to
    ``size``, chosen by ``data_seed``). Record: ``{"score"}``."""

    worker_state = ("fns",)

    def __init__(self, space: str | SearchSpace, proxy: ProxyLike, *, batches: Sequence[Batch] | None = None,
                 num_classes: int | None = None, data: DataConfig | None = None, split: str = "train",
                 images: int = 8, batch_size: int = 8, size: Sequence[int] | None = None, data_seed: int = 0,
                 proxy_seed: int = 0, init_seed: int = 0, inits: int = 1) -> None:
        super().__init__()
        check_proxy(proxy)
        check_inits(inits)
        if batches is None:
            check_proxy_images(proxy, images, batch_size, "scoring.images (and scoring.batch_size)")
        if batches is None and data is None:
            raise SegnasError("proxy evaluator: give data batches or a data section to draw them from")
        if batches is not None and num_classes is None:
            raise SegnasError("num_classes: needed to build the networks the proxy scores")
        self.space = resolve_space(space)
        self.proxy = proxy
        self.batches = list(batches) if batches is not None else None
        self.num_classes = num_classes
        self.data, self.split, self.images, self.batch_size = data, split, images, batch_size
        self.size = tuple(size) if size else None
        self.data_seed, self.proxy_seed, self.init_seed, self.inits = data_seed, proxy_seed, init_seed, inits

    def with_inits(self, init_seed: int, proxy_seed: int, inits: int) -> "ProxyEvaluator":
        """The same evaluator over other initializations (finalists scored again)."""
        return ProxyEvaluator(self.space, self.proxy, batches=self.batches, num_classes=self.num_classes,
                              data=self.data, split=self.split, images=self.images, batch_size=self.batch_size,
                              size=self.size, data_seed=self.data_seed, proxy_seed=proxy_seed,
                              init_seed=init_seed, inits=inits)

    def load_batches(self) -> tuple[list[Batch], int]:
        """The scoring batches and the number of classes (drawn from the data once)."""
        if self.batches is None:
            dataset = open_data(self.data, self.split, eval_transforms(self.size), cache=False)
            self.batches = fixed_batches(dataset, self.images, self.batch_size, self.data_seed, "scoring.images")
            self.num_classes = int(dataset.num_classes)
        return self.batches, int(self.num_classes)

    @property
    def aggregate(self) -> RankAggregate | None:
        """The rank aggregate the proxy names, if it is one."""
        return resolve_aggregate(self.proxy) if isinstance(self.proxy, str) else None

    def setup(self) -> None:
        batches, _ = self.load_batches()
        agg = self.aggregate
        if agg is not None:
            self.fns = [lambda net, seed=self.proxy_seed + r: agg.component_scores(net, batches, seed=seed)
                        for r in range(self.inits)]
        else:
            self.fns = [resolve_proxy(self.proxy, batches, self.proxy_seed + r) for r in range(self.inits)]
        super().setup()

    def _per_init(self, arch: Any) -> list[Any]:
        """What each initialization's function gives for ``arch`` (a score, or components)."""
        values = []
        for r, fn in enumerate(self.fns):
            with torch.random.fork_rng():
                torch.manual_seed(self.init_seed + r)
                net = self.space.build(arch, int(self.num_classes))
            values.append(fn(net))
            del net
        return values

    def score_arch(self, arch: Any) -> float:
        """Mean proxy score of ``arch`` over the evaluator's initializations (not for an aggregate)."""
        if self.aggregate is not None:
            raise SegnasError(f"proxy {self.proxy}: a rank aggregate scores a population, not one network")
        return float(np.mean([float(v) for v in self._per_init(arch)]))

    def evaluate(self, arch: dict[str, Any]) -> dict[str, Any]:
        decoded = self.space.arch_from_dict(arch)
        if self.aggregate is None:
            return {"score": json_float(self.score_arch(decoded))}
        per_init = self._per_init(decoded)
        return {"score": None, "components": {name: json_float(float(np.mean([v[name] for v in per_init])))
                                              for name in self.aggregate.components}}

    def population_scores(self, records: Sequence[Mapping[str, Any]]) -> list[float] | None:
        """The aggregate of each record among ``records`` (None for a per-network proxy)."""
        agg = self.aggregate
        if agg is None:
            return None
        nan = float("nan")
        return agg.combine([{k: nan if v is None else float(v) for k, v in r["components"].items()} for r in records])
