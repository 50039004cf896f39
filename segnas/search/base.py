"""The search contracts: a ``Strategy`` runs over a space in a ``SearchContext`` and returns a
``SearchResult``; strategies register with ``@strategy("name")``.

Two families share this contract:

- one-shot strategies (``OneShotStrategy``: FasterSeg, SSR, GAS) own a supernet's architecture
  parameters and hooks; the one engine (``segnas.search.oneshot.engine``) owns the training loop;
- sample-based strategies (``AskTellStrategy``: SasWOT's evolution, random search, RL) propose
  architectures (``ask``) and learn from their evaluations (``tell``); the one loop
  (``segnas.search.asktell``) filters by latency, evaluates through ``segnas.parallel``, keeps the
  budget and checkpoints.

A strategy's own settings are a ``Settings`` class (``settings_class``): the section of the search
settings named after the strategy (``segnas.config.search.SearchSettings``).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal

from segnas.config.base import Settings
from segnas.config.search import SearchSettings
from segnas.cost.latency_model import LatencyModel
from segnas.engine.rundir import RunDir
from segnas.errors import SegnasError
from segnas.progress import Echo
from segnas.registry import Registry
from segnas.spaces.base import Architecture, SearchSpace
from segnas.zoo import MODELS


@dataclass
class SearchContext:
    """Everything a strategy runs with; built by the search job (``segnas.jobs.search``)."""

    settings: SearchSettings
    run: RunDir | None
    latency: LatencyModel
    num_classes: int
    echo: Echo = lambda message: None

    @property
    def section(self) -> Any:
        """The strategy's own settings section."""
        return getattr(self.settings, self.settings.method)


@dataclass
class FoundNetwork:
    """One network a search hands over. ``role`` says what it is for: ``"found"`` (the network
    measured against the target), ``"teacher"`` (trained first and distilled into the networks with
    ``distill_from`` naming it). ``init``: a weights file the final training starts from
    (``model.init``: the tensors matching by name and shape), None: from scratch."""

    name: str
    space: SearchSpace
    arch: Architecture
    predicted_ms: float | None = None
    role: Literal["found", "teacher"] = "found"
    distill_from: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    init: str | None = None


@dataclass
class SearchResult:
    """What a strategy returns: the networks it found (the one measured against the target first
    among ``role == "found"``) and method-specific figures for ``search_result.json``."""

    networks: list[FoundNetwork]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def found(self) -> FoundNetwork:
        return next(n for n in self.networks if n.role == "found")


class Strategy(ABC):
    """A search method. ``run`` may be called on a fresh strategy whose run directory holds a
    killed run of the same settings: it then resumes (``state_dict`` / ``load_state_dict`` hold
    everything needed to continue exactly)."""

    name: ClassVar[str]
    family: ClassVar[Literal["one-shot", "ask-tell"]]
    settings_class: ClassVar[type[Settings]]
    """The strategy's settings section (a ``Settings`` subclass; fields with defaults)."""
    cli_options: ClassVar[dict[str, tuple[str, type, str]]] = {}
    """Command-line flags of the strategy: flag name -> (settings path, type, help)."""
    needs_target: ClassVar[bool] = True
    """Whether the search needs a latency target (a FLOPs-regularized SSR search does not)."""
    hands_over_teacher: ClassVar[bool] = False
    """Whether a found network is distilled from another found one (``FoundNetwork.distill_from``) in
    its final training: the final training's settings are then checked with a teacher."""
    section_fields: ClassVar[tuple[str, ...]] = ()
    """The fields of the settings section the family's loop reads (beside the strategy's own)."""

    @classmethod
    def check_definition(cls, name: str) -> None:
        """SegnasError when the class cannot run as method ``name``: a name that would clash with a
        zoo network's or a shared setting's, no settings section whose every field has a default, or
        one without a field the family's loop reads (checked when it registers: a plugin's mistakes
        are found before any search)."""
        if name in MODELS or name in SearchSettings.model_fields:
            raise SegnasError("a method's name is not a zoo network's name or a shared setting's (data, latency, "
                              "final, ...): it names a settings section and a comparison's rows")
        section = getattr(cls, "settings_class", None)
        if not (isinstance(section, type) and issubclass(section, Settings)):
            raise SegnasError("settings_class: expected a Settings subclass (the method's section of the settings)")
        required = [f for f, info in section.model_fields.items() if info.is_required()]
        if required:
            raise SegnasError(f"settings_class {section.__name__}: {', '.join(required)} has no default (a method "
                              "runs with its section's defaults)")
        missing = [f for f in cls.section_fields if f not in section.model_fields]
        if missing:
            raise SegnasError(f"settings_class {section.__name__}: no {', '.join(missing)}, which the {cls.family} "
                              "family's loop reads from a method's section")
        flags: set[str] = set()
        for flag, spec in cls.cli_options.items():
            path = spec[0] if isinstance(spec, tuple) and len(spec) == 3 else None
            if not (re.fullmatch(r"[a-z][a-z0-9-]*", str(flag)) and isinstance(path, str) and isinstance(spec[1], type)
                    and isinstance(spec[2], str)):
                raise SegnasError(f"cli_options[{flag!r}]: expected a lower-case flag name and (settings path, "
                                  "type, help text)")
            if flag.replace("-", "_") in flags:
                raise SegnasError(f"cli_options[{flag!r}]: two flags of one name")
            flags.add(flag.replace("-", "_"))
            head, _, field = path.partition(".")
            if head != name or field.split(".")[0] not in section.model_fields:
                raise SegnasError(f"cli_options[{flag!r}]: {path!r} is not a setting of the method's section "
                                  f"({name}.FIELD)")

    def prepare(self, ctx: SearchContext) -> None:
        """Check and build what can fail on user input (data, space, supernet) before the run
        directory exists (``ctx.run`` is None here)."""

    def latency_space(self, ctx: SearchContext) -> SearchSpace | None:
        """The space whose networks the search predicts the latency of (known after ``prepare``):
        the search job calibrates its learned latency correction first (``latency.calibration_networks``)."""
        return None

    @abstractmethod
    def run(self, ctx: SearchContext) -> SearchResult:
        """Search (or finish a killed search) and return what was found."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...

    def target_required(self, settings: SearchSettings) -> bool:
        return self.needs_target

    @classmethod
    def unused_settings(cls, settings: SearchSettings) -> dict[str, str]:
        """Shared settings this search does not use, each with why: set to other than their
        defaults they would silently do nothing, so new settings naming them are refused
        (``segnas.jobs.search.settings_class``)."""
        return {}


# ---------------------------------------------------------------------------------- registry
#: Modules that define the built-in strategies (imported on first lookup).
BUILTIN_STRATEGY_MODULES: tuple[str, ...] = (
    "segnas.search.strategies.fasterseg", "segnas.search.strategies.ssr", "segnas.search.strategies.saswot",
    "segnas.search.strategies.random", "segnas.search.strategies.gas", "segnas.search.strategies.rl",
    "segnas.search.strategies.supernet")
STRATEGIES: Registry[type[Strategy]] = Registry("method", "search method", Strategy, BUILTIN_STRATEGY_MODULES,
                                                check=lambda cls, name: cls.check_definition(name))


def strategy(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator: make a ``Strategy`` subclass available as ``segnas search <name>`` (and as
    a method of ``segnas compare``); sets its ``name``."""
    return STRATEGIES.register(name)


def list_strategies() -> list[str]:
    """The registered method names, the built-in ones included."""
    return STRATEGIES.names()


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class registered as ``name``; a SegnasError listing the known names otherwise."""
    return STRATEGIES.get(name)
