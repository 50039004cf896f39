"""The settings as a reference: every key of a settings model (its dotted path, as in YAML nesting and
``--set``) with its type, default and meaning, the meaning read from the ``#:`` comment above the
field in the model's source. The settings page (docs/reference/config.md) is generated from it, and a
test holds every setting to having a meaning."""

from __future__ import annotations

import inspect
import re
import types
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel

from segnas.config.base import Bounds, Settings

_FIELD = re.compile(r"^    (\w+)\s*:")


@dataclass(frozen=True)
class SettingDoc:
    key: str          # dotted path, e.g. ``data.crop_size``
    type: str         # e.g. ``number > 0``, ``HxW or null``
    default: str      # YAML-like, e.g. ``null``, ``[0.75, 1.5]``, ``required``
    meaning: str      # from the field's ``#:`` comment ("" when it has none)


@lru_cache(maxsize=None)
def field_meanings(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> its ``#:`` comment (lines joined), over ``model`` and its bases (the nearest wins)."""
    out: dict[str, str] = {}
    for klass in reversed(model.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, BaseModel)) or klass in (BaseModel, Settings):
            continue
        pending: list[str] = []
        for line in inspect.getsource(klass).splitlines()[1:]:
            text = line.strip()
            if text.startswith("#:"):
                pending.append(text[2:].strip())
                continue
            match = _FIELD.match(line)
            if match and pending and match.group(1) in klass.model_fields:
                out[match.group(1)] = " ".join(pending)
            pending = []
    return out


def _type_name(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:  # a constrained element (e.g. Betas' coefficients)
        bounds = _bounds([m for info in args[1:] for m in getattr(info, "metadata", [info])])
        return _type_name(args[0]) + (f" {bounds}" if bounds else "")
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args) if len(args) > 1 else f"`{args[0]}`"
    if origin is tuple:
        return "HxW" if args == (int, int) else "[" + ", ".join(_type_name(a) for a in args) + "]"
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return "mapping"
    return {int: "integer", float: "number", str: "text", bool: "true or false"}.get(annotation, str(annotation))


def _bounds(metadata: list[Any]) -> str:
    """``> 0``, ``≥ 1``, or ``in [0, 1)`` with both a lower and an upper bound (pydantic's or ``Bounds``)."""
    limits = {a: v for m in metadata if isinstance(m, (at.Gt, at.Ge, at.Lt, at.Le, Bounds))
              for a in ("gt", "ge", "lt", "le") if (v := getattr(m, a, None)) is not None}
    low = ("(", ">", limits["gt"]) if "gt" in limits else ("[", "≥", limits["ge"]) if "ge" in limits else None
    high = (")", "<", limits["lt"]) if "lt" in limits else ("]", "≤", limits["le"]) if "le" in limits else None
    if low and high:
        return f"in {low[0]}{low[2]:g}, {high[2]:g}{high[0]}"
    bound = low or high
    return f"{bound[1]} {bound[2]:g}" if bound else ""


def _yaml(value: Any, type_name: str) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value) \
            and type_name.startswith("HxW"):
        return f"`{value[0]}x{value[1]}`"
    if isinstance(value, (tuple, list)):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return f"`{value}`"


def setting_docs(model: type[BaseModel], prefix: str = "",
                 sections: tuple[type[BaseModel], ...] = ()) -> list[SettingDoc]:
    """Every setting of ``model``, nested models walked into (but ``sections``: left out, documented on
    their own)."""
    rows: list[SettingDoc] = []
    meanings = field_meanings(model)
    for name, field in model.model_fields.items():
        key, ann = prefix + name, field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if ann not in sections:
                rows += setting_docs(ann, key + ".", sections)
            continue
        bounds = _bounds(field.metadata)
        optional = get_origin(ann) in (Union, types.UnionType) and type(None) in get_args(ann)
        type_name = _type_name(ann) + (f" {bounds}" if bounds else "") + (", or null" if optional else "")
        default = "required" if field.is_required() else _yaml(field.get_default(call_default_factory=True), type_name)
        rows.append(SettingDoc(key, type_name, default, meanings.get(name, "")))
    return rows


def settings_table(rows: list[SettingDoc], recipe: Optional[tuple[str, dict[str, Any]]] = None) -> str:
    """A markdown table of ``rows``; with ``recipe`` (name, its values by key) a column of what it sets."""
    head = ["setting", "type", "default"] + ([f"`{recipe[0]}` recipe"] if recipe else []) + ["meaning"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        meaning = re.sub(r"\bNone\b", "null", r.meaning).replace("|", "\\|")
        cells = [f"`{r.key}`", r.type.replace("|", "\\|"), r.default]
        if recipe:
            cells.append(_yaml(recipe[1][r.key], r.type) if r.key in recipe[1] else "")
        lines.append("| " + " | ".join(cells + [meaning]) + " |")
    return "\n".join(lines)
