"""Search spaces by name, and architecture files (``{"space", "version", "arch"}`` JSON).

A space registers itself with ``@register_space("name")``; it provides ``arch_from_dict``,
``build(arch, num_classes)`` and, for searching, ``sample``/``mutate``/``supernet``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from torch import nn

from segnas.errors import SegnasError
from segnas.utils import atomic_write_text

#: name -> "module:attribute" of the space object; filled as spaces are added.
SPACES: dict[str, str] = {}
SPACES["multires"] = "segnas.spaces.multires:MULTIRES"
SPACES["joint"] = "segnas.spaces.joint:JOINT"


def get_space(name: str) -> Any:
    if name not in SPACES:
        known = ", ".join(sorted(SPACES)) or "none installed yet"
        raise SegnasError(f"space: unknown search space {name!r} (known: {known})")
    module, attr = SPACES[name].split(":")
    return getattr(importlib.import_module(module), attr)


def read_arch_file(path: str | Path) -> dict[str, Any]:
    """Read and check an arch.json; returns the raw ``{"space", "version", "arch"}`` mapping."""
    path = Path(path)
    if not path.is_file():
        raise SegnasError(f"{path}: architecture file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SegnasError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
    for key in ("space", "arch"):
        if not isinstance(data, dict) or key not in data:
            raise SegnasError(f"{path}: missing field {key!r} (expected {{'space', 'version', 'arch'}})")
    return data


def write_arch_file(path: str | Path, space: str, version: int, arch: dict[str, Any], **extra: Any) -> None:
    atomic_write_text(path, json.dumps({"space": space, "version": version, "arch": arch, **extra}, indent=2))


def build_from_arch(data: dict[str, Any], num_classes: int) -> nn.Module:
    """Build the plain network that an architecture mapping describes."""
    space = get_space(data["space"])
    return space.build(space.arch_from_dict(data["arch"]), num_classes)
