"""The search-space contract, the space registry and architecture files.

A space is a ``SearchSpace`` subclass registered with ``@register_space("name")``; its architectures
are frozen dataclasses with ``to_dict()``. Everything that searches (strategies, evaluators, the
latency model, the ground-truth runner) talks to a space only through this contract, so a new space
works with every method. ``tests/test_space_contract.py`` runs the contract over every registered
space (timm's ``list_models()`` pattern).
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar, Generic, Iterable, Iterator, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from torch import nn

from segnas.errors import SegnasError
from segnas.registry import Registry
from segnas.nn.ops import OpKey
from segnas.utils import atomic_write_text, canonical_json, read_json


@runtime_checkable
class Architecture(Protocol):
    """A point of a space: immutable, comparable, serializable."""

    def to_dict(self) -> dict[str, Any]: ...


ArchT = TypeVar("ArchT", bound=Architecture)


@runtime_checkable
class Supernet(Protocol):
    """A weight-sharing network over a space, trained by the one-shot engine.

    ``num_archs`` architectures are searched at once (FasterSeg's teacher and student: 2). Width
    modes: ``max``/``min``/``random`` (pre-training's sandwich rule), ``gumbel`` (search),
    ``argmax`` (the derived widths). A supernet searched by sampling its members rather than by
    gradient (the ``mobile`` space's) has a class attribute ``differentiable = False``: no
    architecture parameters, and ``gumbel`` is refused (``tests/test_space_contract.py`` holds every
    supernet to what it declares)."""

    num_archs: int

    def weight_parameters(self) -> Iterator[nn.Parameter]: ...

    def arch_parameters(self, arch_index: int) -> Iterable[nn.Parameter]:
        """Everything the architecture optimizer trains for ``arch_index``: the architecture logits,
        and the weights of modules that act on them during the search (GAS's GGM). The engine applies
        ``arch_weight_decay`` to the logits only; a supernet with such modules lists their weights
        too (``ArchModuleSupernet``)."""
        ...

    def set_width_mode(self, mode: str) -> None: ...

    def __call__(self, x: torch.Tensor, arch_index: int = 0) -> Any: ...

    def expected_latency(self, arch_index: int, latency: Any) -> torch.Tensor:
        """Differentiable expected latency (ms) of architecture ``arch_index`` from the latency
        model's operator table (``segnas.cost.LatencyModel``)."""
        ...


@runtime_checkable
class TableCostedSupernet(Supernet, Protocol):
    """A differentiable supernet whose latency terms read operator table entries it can list, so
    that they are timed before the search starts (FasterSeg's, SSR's and GAS's)."""

    def latency_keys(self, arch_index: int) -> list[OpKey]:
        """Every table entry the latency terms of architecture ``arch_index`` look up."""
        ...


@runtime_checkable
class ArchModuleSupernet(Supernet, Protocol):
    """A differentiable supernet whose architecture optimizer also trains modules acting on the
    architecture logits (GAS's graph module): their weights take no ``arch_weight_decay``."""

    def arch_module_parameters(self, arch_index: int = 0) -> list[nn.Parameter]:
        """The weights among ``arch_parameters(arch_index)`` that are not architecture logits."""
        ...


@runtime_checkable
class WeightSharingSupernet(Supernet, Protocol):
    """A supernet that can run one chosen architecture on its shared weights (in "argmax" width
    mode after ``select``), for the weight-sharing evaluator (``segnas.evaluate.supernet``)."""

    def select(self, arch: Any) -> None: ...


@runtime_checkable
class MemberExtractable(Protocol):
    """A weight-sharing supernet that hands over one member's slices of its weights as a standalone
    network of the space (``subnet``), for the member's training to start from."""

    def subnet(self, arch: Any) -> nn.Module: ...


@runtime_checkable
class DecisionSpace(Protocol):
    """A space whose architectures are a fixed-length sequence of categorical decisions, for
    controllers that emit one decision at a time (the RL strategy's LSTM).

    ``decision_sizes()[i]`` is the number of choices at position ``i`` (it may depend on the
    position, never on earlier values); ``to_decisions`` and ``from_decisions`` are inverse:
    ``from_decisions(to_decisions(a)) == a``. ``decision_names()[i]`` names position ``i`` for logs."""

    def decision_sizes(self) -> list[int]: ...

    def decision_names(self) -> list[str]: ...

    def to_decisions(self, arch: Any) -> list[int]: ...

    def from_decisions(self, decisions: list[int]) -> Any: ...


class SearchSpace(ABC, Generic[ArchT]):
    """What every method needs of a space: sample, mutate, (de)serialize, key, build, cost."""

    name: ClassVar[str]
    version: ClassVar[int]
    smaller: ClassVar[str] = "smaller options of the method's space"
    """How to make the space's networks cheaper with its options (a latency target out of reach says it)."""

    @abstractmethod
    def arch_from_dict(self, data: Any) -> ArchT:
        """The architecture of ``to_dict()`` output; a bad mapping raises SegnasError naming the field."""

    @abstractmethod
    def build(self, arch: ArchT, num_classes: int) -> nn.Module:
        """The plain network (no search machinery), exportable to ONNX."""

    @abstractmethod
    def sample(self, rng: np.random.Generator, spread: bool = False) -> ArchT:
        """A random architecture; ``spread`` makes samples span the space's latency range."""

    @abstractmethod
    def mutate(self, arch: ArchT, rng: np.random.Generator) -> ArchT:
        """A valid neighbour different from ``arch`` (SegnasError if none is found)."""

    @abstractmethod
    def latency_keys(self, arch: ArchT, num_classes: int, input_size: tuple[int, int]) -> list[OpKey]:
        """The ``OpKey`` of every operator the network runs in eval mode at ``input_size`` (H, W)."""

    def defect(self, arch: ArchT) -> str | None:
        """Why a network of ``arch`` cannot segment (e.g. its output ignores the image), or None.
        ``sample`` and ``mutate`` never return such an architecture; the search loop skips any a
        strategy proposes without training it."""
        return None

    def supernet(self, num_classes: int, input_size: tuple[int, int], **options: Any) -> Supernet:
        """The space's weight-sharing supernet, for one-shot methods."""
        raise SegnasError(f"space {self.name!r} has no supernet; search it with a method that scores its networks "
                          "one by one (random or saswot: a proxy or a short training)")

    # ------------------------------------------------------------------ serialization
    def encode(self, arch: ArchT, **extra: Any) -> dict[str, Any]:
        """The arch-file mapping ``{"space", "version", "arch", **extra}``."""
        return {"space": self.name, "version": self.version, "arch": arch.to_dict(), **extra}

    def decode(self, data: dict[str, Any], where: str = "architecture") -> ArchT:
        """The architecture of an arch-file mapping of this space."""
        if data.get("space") != self.name:
            raise SegnasError(f"{where}: space {data.get('space')!r}, expected {self.name!r}")
        return self.arch_from_dict(data["arch"])

    def key(self, arch: ArchT | dict[str, Any]) -> str:
        """A canonical string of an architecture, equal for equal architectures."""
        return arch_key(arch)


def arch_key(arch: Architecture | dict[str, Any]) -> str:
    """A canonical string of an architecture (its sorted JSON), for deduplication and caching."""
    return canonical_json(arch)


# ---------------------------------------------------------------------------------- registry
#: Modules that define the built-in spaces (imported on first lookup).
BUILTIN_SPACE_MODULES: tuple[str, ...] = ("segnas.spaces.multires", "segnas.spaces.joint", "segnas.spaces.cells",
                                          "segnas.spaces.mobile", "segnas.spaces.encdec")
def check_space_class(cls: type[SearchSpace], name: str) -> None:
    """SegnasError when the class cannot serve as space ``name``: no integer ``version`` (arch files
    carry it), or a constructor that needs arguments (``get_space(name)`` makes the default
    instance, which reads arch files)."""
    if not _is_int(getattr(cls, "version", None)) or cls.version < 1:
        raise SegnasError("version: expected an integer class attribute >= 1 (the arch-file format's version)")
    required = [p.name for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required:
        raise SegnasError(f"__init__: {', '.join(required)} has no default (the space's options are keyword "
                          "arguments with defaults: get_space(name) makes the default instance)")


SPACES: Registry[type[SearchSpace]] = Registry("space", "search space", SearchSpace, BUILTIN_SPACE_MODULES,
                                               check=check_space_class)
_DEFAULTS: dict[str, SearchSpace] = {}


def register_space(name: str) -> Callable[[type[SearchSpace]], type[SearchSpace]]:
    """Class decorator: make a ``SearchSpace`` subclass available as ``name`` (``get_space``,
    ``--space``, architecture files); sets its ``name``."""
    return SPACES.register(name)


SpaceT = TypeVar("SpaceT", bound=SearchSpace)


def register_default(space: SpaceT) -> SpaceT:
    """Make ``space`` the shared instance that ``get_space(space.name)`` returns without options (a
    space module's default instance, e.g. ``MULTIRES``); its class must be registered first."""
    if SPACES.classes.get(getattr(space, "name", None)) is not type(space):
        raise ValueError(f"{type(space).__name__}: register_default needs an instance of a registered space class")
    _DEFAULTS[space.name] = space
    return space


def list_spaces() -> list[str]:
    """Names of every registered space."""
    return SPACES.names()


def space_class(name: str) -> type[SearchSpace]:
    return SPACES.get(name)


def get_space(name: str, **options: Any) -> SearchSpace:
    """The space ``name`` with ``options`` (its constructor's settings); without options one shared
    instance with the defaults."""
    cls = space_class(name)
    if options:
        known = inspect.signature(cls).parameters
        unknown = sorted(set(options) - set(known))
        if unknown and not any(p.kind is p.VAR_KEYWORD for p in known.values()):
            raise SegnasError(f"space_options: {unknown[0]!r} is not an option of space {name!r} (its options: "
                              f"{', '.join(known) or 'none'})")
        try:
            return cls(**options)
        except SegnasError as exc:
            raise SegnasError(f"space_options: {exc}") from None
        except (TypeError, ValueError) as exc:  # a value of the wrong kind (a list for a number, ...)
            raise SegnasError(f"space_options: space {name!r}: {exc}") from None
    if name not in _DEFAULTS:
        _DEFAULTS[name] = cls()
    return _DEFAULTS[name]


def resolve_space(space: str | SearchSpace) -> SearchSpace:
    """A space from a registered name, or the space itself."""
    if isinstance(space, str):
        return get_space(space)
    if not isinstance(space, SearchSpace):
        raise SegnasError(f"space: expected a space name or a SearchSpace, got {space!r}")
    return space


# ---------------------------------------------------------------------------------- arch files
def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def read_arch_file(path: str | Path) -> dict[str, Any]:
    """Read and check an arch.json; returns the raw ``{"space", "version", "arch"}`` mapping."""
    path = Path(path)
    if path.is_dir() and (path / "arch.json").is_file():
        raise SegnasError(f"{path}: a folder; its found network is {path / 'arch.json'}")
    if not path.is_file():
        raise SegnasError(f"{path}: architecture file not found")
    data = read_json(path)
    if isinstance(data, dict) and "run_dir" in data and "best_val_miou" in data:
        raise SegnasError(f"{path}: a search's record of a finished training, not an architecture; give the "
                          f"search's {path.name.removesuffix('_train.json')}.json")
    for key in ("space", "arch"):
        if not isinstance(data, dict) or key not in data:
            raise SegnasError(f"{path}: missing field {key!r} (expected {{'space', 'version', 'arch'}})")
    if not isinstance(data["space"], str):
        raise SegnasError(f"{path}: field 'space' must be a space name, got {data['space']!r}")
    try:  # every error in the architecture names the file
        space = get_space(data["space"])
        version = data.get("version", space.version)
        if not _is_int(version) or not 1 <= version <= space.version:
            newer = " (a newer file needs a newer segnas)" if _is_int(version) and version > space.version else ""
            raise SegnasError(f"field 'version': {version!r}; this segnas reads {space.name} architectures of "
                              f"versions 1-{space.version}{newer}")
        space.arch_from_dict(data["arch"])
    except SegnasError as exc:
        raise SegnasError(f"{path}: {exc}") from None
    return data


def save_arch(path: str | Path, space: SearchSpace, arch: Architecture, **extra: Any) -> None:
    """Write ``arch`` of ``space`` as an arch file (atomically), with ``extra`` fields."""
    atomic_write_text(path, json.dumps(space.encode(arch, **extra), indent=2))


def build_from_arch(data: dict[str, Any], num_classes: int) -> nn.Module:
    """Build the plain network that an architecture mapping describes."""
    space = get_space(data["space"])
    return space.build(space.arch_from_dict(data["arch"]), num_classes)
