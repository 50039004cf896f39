"""Small shared helpers: the cache folder, atomic file writes (and cleaning what a killed one left),
seeding, input-size parsing."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import random
import re
import resource
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from segnas.errors import CannotWrite, SegnasError, SegnasWarning


_UMASK = os.umask(0)
os.umask(_UMASK)
#: Names ``atomic_write`` gives its temporary files: ``.<target name>.<random>.tmp``.
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # mkstemp's random part: 8 characters


def cache_dir() -> Path:
    """Where segnas caches measurements and dataset checks: $SEGNAS_CACHE, else ~/.cache/segnas."""
    return Path(os.environ.get("SEGNAS_CACHE", Path.home() / ".cache" / "segnas"))


def home_folder(path: str | os.PathLike) -> str | os.PathLike:
    """A file or folder given with ``~`` at its start, as the home folder (as a shell would give it)."""
    return os.path.expanduser(path) if os.fspath(path).startswith("~") else path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Write `path` via a temporary file in the same folder and an atomic rename.

    `write` receives the temporary path and must create the file there; a crash leaves the old
    file (or nothing) in place, never a half-written one. A symbolic link is kept (its file is
    replaced); what is not a file (/dev/stdout, a named pipe) is written in place, not replaced.
    """
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        if (target := path.resolve()).is_file():
            path = target
        else:
            with no_room_said(path):
                write(path)
            return
    with no_room_said(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with no_room_said(path):
            try:
                write(tmp_path)
            except RuntimeError:  # (torch.save's writer says "unexpected pos" where the OS said no room)
                _probe_room(tmp_path)
                raise
            with open(tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


#: The errors of a write that found no room (a full file system, a quota, the file-size limit), as said.
NO_ROOM = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is used up",
           errno.EFBIG: "the file-size limit of this process (ulimit -f)"}


@contextlib.contextmanager
def no_room_said(path: str | Path) -> Iterator[None]:
    """A write to ``path`` that finds no room (``NO_ROOM``) raises CannotWrite naming ``path``; any
    other OSError goes on as it is."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_ROOM:
            raise
        raise CannotWrite(f"{path}: cannot be written: {NO_ROOM[exc.errno]}") from exc


def _probe_room(tmp: Path) -> None:
    """After a writer failed without saying why: OSError (the system's own) when ``tmp`` cannot
    grow by a few KiB; nothing when it can."""
    with open(tmp, "ab") as fh:
        fh.write(b"\0" * (1 << 16))
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomically replace a text file."""
    atomic_write(path, lambda p: p.write_text(text))


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files that writes killed midway (SIGKILL, power loss) left in ``folder``
    (``.<name>.<random>.tmp``, as ``atomic_write`` names them); returns what was removed. Call it
    only where no other process is writing: a job's own folders as it starts or resumes."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        if _TEMP_NAME.match(p.name) and p.is_file():
            try:
                p.unlink()
            except OSError:
                continue
            removed.append(p)
    return removed


def check_output_file(path: str | Path, option: str) -> Path:
    """``path`` as a file a job writes when it ends, checked before the work: not a folder, and its
    closest existing folder a writable folder (``atomic_write`` makes the missing ones); a
    SegnasError naming ``option`` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise SegnasError(f"{option} {path}: is a folder; give a file name")
    parent, problem = folder_to_write(path.parent)
    if problem == "a file":
        raise SegnasError(f"{option} {path}: {parent} is a file, not a folder")
    if problem:
        raise SegnasError(f"{option} {path}: cannot write in {parent}")
    return path


def folder_to_write(folder: str | Path) -> tuple[Path, str | None]:
    """The nearest of ``folder`` and its parents that exists (where the missing ones would be made),
    and what keeps anything from being made there: ``"a file"``, ``"not writable"``, or None."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        return existing, "a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        return existing, "not writable"
    try:  # what permissions do not tell: a read-only or virtual file system (/proc, /sys), root's access
        with tempfile.TemporaryFile(dir=existing, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX):
            pass
    except OSError:
        return existing, "not writable"
    return existing, None


def canonical_json(value: Any) -> str:
    """``value`` (its ``to_dict()`` when it has one) as compact JSON with sorted keys: one text for
    equal values, for keys of caches and deduplication."""
    data = value.to_dict() if hasattr(value, "to_dict") else value
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def json_float(x: float | None) -> float | None:
    """``x`` as JSON can hold it (non-finite: None)."""
    return float(x) if x is not None and math.isfinite(x) else None


def json_safe(value: Any) -> Any:
    """``value`` (numbers, text, lists and mappings of them) with every non-finite float as None:
    JSON has no NaN (a class no pixel holds has no IoU), and other readers refuse Python's."""
    if isinstance(value, float):
        return json_float(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file; a torn last line (a run killed mid-write, or one being
    written now) is skipped, a damaged line before it too, with a warning naming it."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    lines = path.read_text(errors="replace").splitlines()
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number < len(lines) and line.strip():
                warnings.warn(f"{path}: line {number} is not a JSON record (damaged): left out", SegnasWarning,
                              stacklevel=2)
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def read_json(path: str | Path, missing_ok: bool = False) -> Any:
    """The JSON document in ``path`` (None when it is absent and ``missing_ok``); a one-line
    SegnasError naming the file when it is missing, not text, or not valid JSON."""
    path = Path(path)
    if missing_ok and not path.is_file():
        return None
    if not path.exists():
        raise SegnasError(f"{path}: file not found")
    try:
        return json.loads(read_text_file(path))
    except json.JSONDecodeError as exc:
        raise SegnasError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg})") from None


def read_record(path: str | Path, otherwise: str) -> Any:
    """A record a job wrote of its work and can compute again (None when it is absent); a damaged
    one (a garbled disk, a hand edit) warns, naming it and ``otherwise`` (what is done instead), and
    reads as absent."""
    try:
        record = read_json(path, missing_ok=True)
        if record is not None and not isinstance(record, dict):
            raise SegnasError(f"{path}: expected a JSON object, got {type(record).__name__}")
        return record
    except SegnasError as exc:
        warnings.warn(f"{exc}; {otherwise}", SegnasWarning, stacklevel=2)
        return None


def read_text_file(path: str | Path) -> str:
    """The text of a settings or architecture file; a SegnasError naming it when it cannot be read
    as UTF-8 text (a checkpoint given by mistake, a UTF-16 file written by a shell redirect)."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not text
    except UnicodeDecodeError:
        raise SegnasError(f"{path}: not a UTF-8 text file (a binary file, e.g. a checkpoint, or another "
                          "text encoding such as UTF-16)") from None
    except IsADirectoryError:
        raise SegnasError(f"{path}: is a folder, not a file") from None
    except OSError as exc:
        raise SegnasError(f"{path}: cannot read ({exc.strerror or exc})") from None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that a job is reproducible for a given seed."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def parse_size(text: str | tuple[int, int] | list[int], field: str = "size") -> tuple[int, int]:
    """Parse 'HxW' (or a pair) into (H, W); raise a SegnasError naming `field` otherwise."""
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        parts = str(text).lower().replace(",", "x").split("x")
    try:
        if any(isinstance(p, bool) or (isinstance(p, float) and not p.is_integer()) for p in parts):
            raise ValueError  # 32.9 would become 32
        h, w = (int(p) for p in parts)
    except (ValueError, TypeError):
        raise SegnasError(f"{field}: expected HxW such as 360x480 (whole pixels), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise SegnasError(f"{field}: height and width must be positive, got {text!r}")
    return h, w


def parse_size_or_native(value: Any, field: str = "size") -> tuple[int, int] | None:
    """``parse_size``, or None for each image's own size (``native``, or no value)."""
    if not value or (isinstance(value, str) and value.strip().lower() == "native"):
        return None
    return parse_size(value, field)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (pool workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
