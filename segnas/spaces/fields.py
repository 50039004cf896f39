"""Checks of an architecture mapping's fields, with errors that name the space and the field."""

from __future__ import annotations

from typing import Any, NoReturn

import numpy as np

from segnas.errors import SegnasError

_KINDS = {dict: "a mapping", list: "a list", int: "an integer", str: "a string", float: "a number"}


class ArchFields:
    """Field checks for the arch mappings of one space: every error reads
    ``<space> arch field '<where>': <what is wrong>``."""

    def __init__(self, space: str) -> None:
        self.space = space

    def fail(self, where: str, msg: str) -> NoReturn:
        raise SegnasError(f"{self.space} arch field {where!r}: {msg}")

    def typed(self, v: Any, where: str, kind: type) -> Any:
        """``v`` as ``kind`` (int, float, list and str by ``integer``, ``number``, ``sequence`` and
        ``text``), else an error naming ``where``."""
        rule = {int: self.integer, float: self.number, list: self.sequence, str: self.text}.get(kind)
        if rule is not None:
            return rule(v, where)
        if not isinstance(v, kind):
            self.fail(where, f"expected {_KINDS.get(kind, kind.__name__)}, got {v!r}")
        return v

    def integer(self, v: Any, where: str) -> int:
        """An integer (numpy's too: a derived architecture's indices may be numpy integers; not a bool)."""
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            self.fail(where, f"expected an integer, got {v!r}")
        return int(v)

    def number(self, v: Any, where: str) -> float:
        """A number (numpy's too; not a bool)."""
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            self.fail(where, f"expected a number, got {v!r}")
        return float(v)

    def sequence(self, v: Any, where: str) -> list:
        """A list (a tuple too: an architecture built in Python)."""
        if not isinstance(v, (list, tuple)):
            self.fail(where, f"expected a list, got {v!r}")
        return list(v)

    def text(self, v: Any, where: str, what: str = "a string") -> str:
        if not isinstance(v, str):
            self.fail(where, f"expected {what}, got {v!r}")
        return v

    def fields(self, d: Any, where: str, known: set[str], required: set[str]) -> None:
        """``d`` is a mapping with only ``known`` fields and every ``required`` one."""
        if not isinstance(d, dict):
            self.fail(where or "arch", f"expected a mapping, got {type(d).__name__}")
        prefix = f"{where}." if where else ""
        unknown = sorted(set(d) - known)
        if unknown:
            self.fail(prefix + unknown[0], f"unknown field (expected {', '.join(sorted(known))})")
        missing = sorted(required - set(d))
        if missing:
            self.fail(prefix + missing[0], "missing")
