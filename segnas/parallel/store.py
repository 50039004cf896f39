"""Append-only JSONL store of finished results, so that a killed run resumes where it stopped.

Each line is ``{"key": ..., "result": ...}``, or ``{"key": ..., "failed": reason}`` for an item that
failed (its worker kept dying, or it raised): a failed item has no result, so a rerun tries it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from segnas.errors import SegnasError, SegnasWarning
from segnas.utils import atomic_write_text, canonical_json, no_room_said


def default_key(item: Any) -> str:
    """A stable key for `item`: a hash of its JSON form (keys sorted); `to_dict()` is used if present."""
    try:
        text = canonical_json(item)
    except (TypeError, ValueError) as exc:
        raise SegnasError(f"cannot derive a key for item {item!r} ({exc}); pass key=... to run_all") from None
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_results(path: str | Path) -> dict[str, Any]:
    """Results by key from a JSONL results file (missing file: none); the last line for a key wins.

    A damaged last line (a run killed mid-write) is ignored with a warning and cut from the file so
    that later appends start on a fresh line; damage anywhere else is an error. Lines recording a
    failure are not results (``load_failures``).
    """
    return _load(path)[0]


def load_failures(path: str | Path) -> dict[str, str]:
    """Why each item that failed and has no result since failed, by key, from a JSONL results file."""
    results, failures = _load(path)
    return {k: v for k, v in failures.items() if k not in results}


def read_store(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Results and failures (without a later result) by key, reading only: a damaged last line,
    e.g. one a running job is writing now, is skipped and left in place (a reader beside a writer)."""
    results, failures = _load(path, repair=False)
    return results, {k: v for k, v in failures.items() if k not in results}


def forget(path: str | Path, keys: set[str]) -> list[str]:
    """Drop every record (result or failure) of ``keys`` from a JSONL results file, atomically, so
    that the next run computes them again; the keys that had records, sorted. Not while a run writes it."""
    path = Path(path)
    if not path.exists():
        return []
    _load(path)  # a damaged last line is repaired first; damage anywhere else is an error
    records = [(str(json.loads(line)["key"]), line) for line in path.read_text().splitlines() if line.strip()]
    dropped = {key for key, _ in records if key in keys}
    atomic_write_text(path, "".join(line + "\n" for key, line in records if key not in dropped))
    return sorted(dropped)


def _load(path: str | Path, repair: bool = True) -> tuple[dict[str, Any], dict[str, str]]:
    path = Path(path)
    failures: dict[str, str] = {}
    if not path.exists():
        return {}, failures
    data = path.read_bytes()
    lines = data.split(b"\n")
    results: dict[str, Any] = {}
    offset = 0
    for number, line in enumerate(lines, 1):
        is_last = number == len(lines) or (number == len(lines) - 1 and lines[-1] == b"")
        if line.strip():
            try:
                record = json.loads(line)
                if "failed" in record and "result" not in record:
                    failures[str(record["key"])] = str(record["failed"])
                else:
                    results[str(record["key"])] = record["result"]
            except (ValueError, KeyError, TypeError):
                if not is_last:
                    raise SegnasError(f"{path}, line {number}: expected a JSON object with 'key' and 'result', "
                                      f"got {line[:80]!r}") from None
                if repair:
                    warnings.warn(f"{path}: ignoring a truncated last line ({len(line)} bytes), "
                                  "left by a run that was stopped while writing", SegnasWarning, stacklevel=3)
                    _truncate(path, offset)
                break
        offset += len(line) + 1
    return results, failures


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)
        fh.flush()
        os.fsync(fh.fileno())


class ResultStore:
    """Finished results by key, each appended to `path` (if given) and fsynced as soon as it is added."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.results, failures = _load(self.path) if self.path is not None else ({}, {})
        #: why items failed (in this run or an earlier one) that have no result
        self.failures: dict[str, str] = {k: v for k, v in failures.items() if k not in self.results}
        self._fh = None

    def __contains__(self, key: str) -> bool:
        return key in self.results

    def __getitem__(self, key: str) -> Any:
        return self.results[key]

    def add(self, key: str, result: Any) -> None:
        """Record `result` (JSON-serializable) under `key`; stored as its JSON round trip."""
        text = json.dumps({"key": key, "result": result})
        self.results[key] = json.loads(text)["result"]
        self.failures.pop(key, None)
        self._append(text)

    def fail(self, key: str, reason: str) -> None:
        """Record that the item ``key`` failed, and why (one line); a later ``add`` replaces it."""
        self.failures[key] = reason
        self._append(json.dumps({"key": key, "failed": reason}))

    def _append(self, text: str) -> None:
        if self.path is None:
            return
        with no_room_said(self.path):
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "ab")
                if self._fh.tell() > 0 and not _ends_with_newline(self.path):
                    self._fh.write(b"\n")
            self._fh.write(text.encode() + b"\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"
