"""Checks of an architecture mapping's fields, with errors that name the space and the field."""

from __future__ import annotations

from typing import Any, NoReturn

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
        """``v`` if it is of ``kind`` (a bool is not an integer), else an error naming ``where``."""
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            self.fail(where, f"expected {_KINDS.get(kind, kind.__name__)}, got {v!r}")
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
