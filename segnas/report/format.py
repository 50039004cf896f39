"""How figures are written in tables and lines: one rule for every report (compare's table, the
HTML report, job lines)."""

from __future__ import annotations

import math
from typing import Any


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def num(value: Any, fmt: str = ".2f") -> str:
    """A number in ``fmt``; ``-`` for a missing or non-finite one."""
    return format(value, fmt) if is_number(value) else "-"


def pct(value: Any, std: Any = None, unit: str = "") -> str:
    """A fraction as a percentage with two decimals (``0.6123`` → ``61.23``), with ``± std`` when
    given, then ``unit``; ``-`` for a missing or non-finite value."""
    if not is_number(value):
        return "-"
    spread = f" ± {100 * std:.2f}" if is_number(std) else ""
    return f"{100 * value:.2f}{spread}{unit}"


def signed_pct(value: Any) -> str:
    """A relative difference as a signed percentage (``-0.042`` → ``-4.2%``); ``-`` when missing."""
    return f"{100 * value:+.1f}%" if is_number(value) else "-"
