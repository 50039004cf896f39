"""YAML reading/writing of pydantic settings with user-facing errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from segnas.errors import SegnasError
from segnas.utils import atomic_write_text

M = TypeVar("M", bound=BaseModel)


def validation_message(exc: ValidationError, source: str) -> str:
    """First pydantic error as 'source: field.path: message (got value)'."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(root)"
    got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
    more = f" [+{len(exc.errors()) - 1} more]" if len(exc.errors()) > 1 else ""
    return f"{source}: {loc}: {err['msg']}{got}{more}"


def build_config(cls: type[M], data: dict[str, Any], source: str = "config") -> M:
    """Validate a dict into ``cls``; a SegnasError naming the field on failure."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise SegnasError(validation_message(exc, source)) from None


def load_config(cls: type[M], path: str | Path, overrides: dict[str, Any] | None = None) -> M:
    """Read YAML ``path`` into ``cls``, applying dotted-key ``overrides`` (e.g. {'optim.lr': 0.1})."""
    path = Path(path)
    if not path.is_file():
        raise SegnasError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SegnasError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise SegnasError(f"{path}: expected a mapping of settings at the top level")
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    return build_config(cls, data, str(path))


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data['a']['b'] = value`` for key 'a.b', creating levels as needed."""
    *parents, last = key.split(".")
    node = data
    for i, p in enumerate(parents):
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise SegnasError(f"{key}: {'.'.join(parents[:i + 1])} is a value, not a section of settings")
    node[last] = value


def save_config(config: BaseModel, path: str | Path) -> None:
    """Atomically write settings as YAML."""
    atomic_write_text(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
