"""What every settings class is built on: the base ``Settings`` (unknown keys refused, bounds
checked), value types shared by the jobs' settings (job names, paths, bounded numbers, sizes), and
the rule that refuses settings a run would not use."""

from __future__ import annotations

import math
import os
import types
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Optional, Sequence, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, model_validator

from segnas.config.io import new_settings, path_marker
from segnas.errors import SegnasError
from segnas.utils import home_folder, parse_size


def plain_name(value: str) -> str:
    """A job's name as it names its run directory (``<out_dir>/<stamp>-<job>``): no folders in it."""
    if not value or value in (".", "..") or "/" in value or "\\" in value:
        raise ValueError(f"must be a plain name (it names the run directory's folder), got {value!r}")
    return value


#: A job's name (``plain_name``).
JobName = Annotated[str, AfterValidator(plain_name)]

#: Marks a setting that names a file or folder: ``save_config`` writes it as an absolute path.
PATH = {"path": True}
#: Marks a setting that holds a name (a zoo network, a registered proxy) or a file: ``save_config``
#: writes a file as an absolute path (``config.io.names_a_file``) and a name as it is.
NAME_OR_FILE = {"path": "file"}


@dataclass(frozen=True)
class Bounds:
    """Bounds of a number setting (``Annotated[float, Bounds(ge=0)]``) that a user's settings for a new
    run must keep; a run directory's settings load as they were saved (an earlier segnas took more),
    so that a run under way always resumes."""

    gt: Optional[float] = None
    ge: Optional[float] = None
    lt: Optional[float] = None
    le: Optional[float] = None

    def holds(self, x: float) -> bool:
        return ((self.gt is None or x > self.gt) and (self.ge is None or x >= self.ge)
                and (self.lt is None or x < self.lt) and (self.le is None or x <= self.le))

    def __str__(self) -> str:
        parts = [f"{sign} {v:g}" for sign, v in ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
                 if v is not None]
        return " and ".join(parts)


#: A weight of a loss term: 0 or more.
NonNegative = Annotated[float, Bounds(ge=0)]
#: A coefficient in [0, 1) (Adam's betas).
UnitCoefficient = Annotated[float, Bounds(ge=0, lt=1)]
#: Adam's (β1, β2).
Betas = tuple[UnitCoefficient, UnitCoefficient]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _fits(value: Any, annotation: Any) -> bool:
    """Whether ``value`` is of the kind ``annotation`` describes (to pick a union's member)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _fits(value, get_args(annotation)[0])
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if annotation in (int, float):
        return _is_number(value)
    return origin in (Union, types.UnionType) and any(_fits(value, a) for a in get_args(annotation))


def out_of_bounds(value: Any, annotation: Any, metadata: Sequence[Any] = ()) -> Optional[str]:
    """Why ``value`` breaks its annotation's ``Bounds`` or is not a finite number (None when it keeps
    them), looking into tuples, lists and unions."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return out_of_bounds(value, args[0], [*metadata, *args[1:]])
    if _is_number(value):
        if not math.isfinite(value):
            return f"must be a finite number, got {value}"
        broken = next((b for b in metadata if isinstance(b, Bounds) and not b.holds(value)), None)
        return f"must be {broken}, got {value:g}" if broken else None
    if origin in (Union, types.UnionType):
        return next((why for a in args if _fits(value, a) for why in [out_of_bounds(value, a)] if why), None)
    if isinstance(value, (list, tuple)) and origin in (list, tuple) and args:
        elements = args if origin is tuple and Ellipsis not in args else [args[0]] * len(value)
        return next((why for x, a in zip(value, elements) for why in [out_of_bounds(x, a)] if why), None)
    return None


def union_members(annotation: Any) -> list[Any]:
    """The types a value of type ``annotation`` may have: a union's members (nested ones too), each
    without its ``Annotated`` metadata; a plain type alone."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return union_members(args[0])
    if origin in (Union, types.UnionType):
        return [m for a in args for m in union_members(a)]
    return [annotation]


def _admits_bool(annotation: Any) -> bool:
    """Whether a field of type ``annotation`` takes a true/false value (``Any``, ``bool`` or a union
    holding one): elsewhere pydantic would read ``true`` as the number 1."""
    return any(m in (bool, Any) for m in union_members(annotation))


def _kind_of(annotation: Any) -> str:
    """What a setting of type ``annotation`` holds, in words: a number, text, a list, or a value."""
    members = union_members(annotation)
    if any(m in (int, float) for m in members):
        return "a number"
    if any(get_origin(m) in (list, tuple) for m in members):
        return "a list"
    return "text" if str in members else "a value of its type"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _home_folder_in_paths(cls, data: Any) -> Any:
        """``~`` at the start of a file or folder setting is the home folder, wherever the setting
        is used (it was expanded only in the saved config.yaml: a run went to a folder named ``~``)."""
        if not isinstance(data, dict):
            return data
        expanded = {}
        for name, field in cls.model_fields.items():
            value = data.get(name)
            if path_marker(field) and isinstance(value, (str, os.PathLike)) and home_folder(value) != value:
                expanded[name] = home_folder(value)
        return {**data, **expanded} if expanded else data

    @model_validator(mode="before")
    @classmethod
    def _no_true_for_a_number(cls, data: Any, info: ValidationInfo) -> Any:
        """In a user's settings for a new run: ``true``/``false`` only where a setting is a switch
        (``max_steps: true`` is not one step)."""
        if new_settings(info) and isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name)
                if isinstance(value, bool) and field is not None and not _admits_bool(field.annotation):
                    raise ValueError(f"{name}: expected {_kind_of(field.annotation)}, got {str(value).lower()} "
                                     "(true and false are for on/off settings)")
        return data

    @model_validator(mode="after")
    def _numbers_in_bounds(self, info: ValidationInfo) -> "Settings":
        """In a user's settings for a new run: every number finite (no setting means infinity) and
        within its field's ``Bounds``."""
        if new_settings(info):
            for name, field in type(self).model_fields.items():
                why = out_of_bounds(getattr(self, name), field.annotation, field.metadata)
                if why:
                    raise ValueError(f"{name}: {why}")
        return self


def size_or_none(v: Any) -> Optional[tuple[int, int]]:
    """An HxW size (or None); a bad one is a field error, so that the message names the setting."""
    if v is None:
        return None
    try:
        return parse_size(v)
    except SegnasError as exc:
        raise ValueError(str(exc).split(": ", 1)[-1]) from None


def refuse_idle(settings: BaseModel, info: ValidationInfo, idle: dict[str, tuple[bool, str]],
                named: Callable[[str], str] = str) -> None:
    """Refuse the first field of ``idle`` (field -> (unused now, whose it is)) that is unused yet set
    to other than its default, in a user's settings for a new run (``config.io.NEW_SETTINGS``); the
    error names it as ``named`` says (e.g. with its flag)."""
    if not new_settings(info):
        return
    found = first_idle(settings, idle)
    if found:
        raise ValueError(f"{named(found[0])}: {found[1]}; leave it out")


def first_idle(settings: BaseModel, idle: dict[str, tuple[bool, str]]) -> tuple[str, str] | None:
    """(field, whose it is) of the first field of ``idle`` that is unused yet set to other than its default."""
    fields = type(settings).model_fields
    for name, (unused, whose) in idle.items():
        if unused and getattr(settings, name) != fields[name].get_default(call_default_factory=True):
            return name, whose
    return None
