"""Run directories: ``runs/<timestamp>-<job>/`` with config.yaml, log.txt, metrics.jsonl, checkpoints/.

Opening one (a new run, or a resumed one) deletes the temporary files of writes that a kill
interrupted there (``segnas.utils.remove_stale_temps``), such as a ~10 MB ``.last.pt.*.tmp``.

Under torchrun every rank opens the same directory (rank 0 names it) and only rank 0 writes the
log and the metrics (``segnas.engine.distributed``).
"""

from __future__ import annotations

import contextvars
import fcntl
import json
import logging
import math
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from segnas.config.io import read_yaml
from segnas.engine import distributed
from segnas.errors import SegnasError
from segnas.utils import (NO_ROOM, atomic_write_text, folder_to_write, json_safe, no_room_said, read_jsonl,
                          remove_stale_temps)


#: The file a process locks while it runs a job in a run directory (``RunDir._hold``).
LOCK_FILE = ".lock"
#: Tries a job makes at 0.1 s intervals to take its run folder's lock before refusing it.
LOCK_TRIES = 5


def _release(key: str, handle: Any) -> None:
    """Unlock and close a run folder's lock file, and close its log."""
    try:
        fcntl.flock(handle, fcntl.LOCK_UN)
    except (OSError, ValueError):  # (already closed)
        pass
    finally:
        handle.close()
    logger = logging.getLogger(f"segnas.run.{key}")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logging.Logger.manager.loggerDict.pop(logger.name, None)  # (a process that runs many jobs keeps no logger of each)


class _Held:
    """An open, locked lock file: the lock (and the folder's log) lasts as long as this object (the
    RunDirs that share it), or until ``release`` is called. ``thread``: the thread that opened it."""

    def __init__(self, key: str, handle: Any) -> None:
        self.handle = handle
        self.thread = threading.current_thread()
        self.release = weakref.finalize(self, _release, key, handle)


#: The run directories this process holds, while any of its RunDirs of them lives.
_HELD: "weakref.WeakValueDictionary[str, _Held]" = weakref.WeakValueDictionary()
#: The run directories opened within the current ``releasing_what_it_opens`` (per thread and call).
_OPENED: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("segnas_opened_runs", default=None)


def held_runs() -> list[Path]:
    """The run folders this process holds now, in the order it opened them (a job's, then the runs
    it started inside it)."""
    return [Path(key) for key in _HELD]


def release(keys: Iterable[str]) -> None:
    """Unlock the run folders ``keys`` (resolved paths) and close their logs, whatever RunDirs (kept
    alive by an exception's traceback in a REPL or a notebook) still refer to them."""
    for key in keys:
        held = _HELD.pop(key, None)
        if held is not None:
            held.release()


def release_all() -> None:
    """Unlock every run folder this process holds and close their logs."""
    release(list(_HELD))


@contextmanager
def releasing_what_it_opens() -> Iterator[None]:
    """Release, when the block ends, the run folders opened inside it (in this thread; not those of
    a job it runs inside of, nor those another thread opens meanwhile): a job called from Python."""
    token = _OPENED.set([])
    try:
        yield
    finally:
        opened = _OPENED.get() or []
        _OPENED.reset(token)
        release(opened)


def best_checkpoint(run_path: str | Path) -> Path:
    """A training run's best weights (the last ones when it has no validation split)."""
    return Path(run_path) / "checkpoints" / "best.pt"


def last_checkpoint(run_path: str | Path) -> Path:
    """A training run's latest state, which ``--resume`` continues from."""
    return Path(run_path) / "checkpoints" / "last.pt"


#: What a run directory holds.
RunKind = Literal["comparison", "search", "training"]


def run_kind(path: str | Path, config: Any = None) -> RunKind:
    """What the run directory at ``path`` holds: a comparison (compare.json, or a ``methods``
    setting), a search (search_result.json, or a ``method`` setting) or a training (a ``model``
    setting). ``config``: its config.yaml already read (else read here). SegnasError when it tells none."""
    path = Path(path)
    if config is None:
        config = read_yaml(path / "config.yaml") if (path / "config.yaml").is_file() else {}
    config = config if isinstance(config, Mapping) else {}
    if (path / "compare.json").is_file() or "methods" in config:
        return "comparison"
    if (path / "search_result.json").is_file() or "method" in config:
        return "search"
    if "model" in config:
        return "training"
    raise SegnasError(f"{path}: cannot tell the kind of run (no compare.json, no search_result.json, and "
                      "config.yaml has neither 'method' nor 'model')")


def latest_run(folder: str | Path, job: str | None = None) -> Path | None:
    """The newest run directory in ``folder`` (one holding a config.yaml; of ``job`` when given), if any."""
    folder = Path(folder)
    runs = sorted(p for p in folder.glob(f"*-{job}" if job else "*") if (p / "config.yaml").is_file()) \
        if folder.is_dir() else []
    return runs[-1] if runs else None


class RunLogHandler(logging.FileHandler):
    """A run's log.txt. A line that finds no room is left out quietly (logging would print a
    traceback for each): the job stops with one line when it next writes a file of its work."""

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError) and error.errno in NO_ROOM:
            return
        super().handleError(record)


class RunDir:
    """A job's folder. Opening an existing folder (resume) appends to its log and metrics; opening
    any removes the temporary files that killed writes left in it and in ``checkpoints/``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        #: Settings a resume changed (``training.start.start_job``), kept in config.yaml by
        #: ``open_run`` once the job's checks have passed.
        self.changed_settings: Any = None
        self.main = distributed.is_main()
        self.path.mkdir(parents=True, exist_ok=True)  # checkpoints/ is made by the first checkpoint written
        self.logger = logging.getLogger(f"segnas.run.{self.path.resolve()}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        if not self.main:  # only rank 0 logs; it may be writing: its temporary files are not stale
            return
        self._hold()  # before anything is removed: another process's temporary files are not stale
        if not self.logger.handlers:  # (after the hold: a released one's handler is gone by now)
            handler = RunLogHandler(self.path / "log.txt")
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
            self.logger.addHandler(handler)
        stale = remove_stale_temps(self.path) + remove_stale_temps(self.path / "checkpoints")
        if stale:
            self.log(f"removed {len(stale)} temporary file(s) of interrupted writes: "
                     f"{', '.join(p.name for p in stale)}")

    def _hold(self) -> None:
        """Hold the folder while this RunDir (or another of this thread for it) lives, with a lock
        file: another process opening it (a second ``--resume`` of a job still running), or another
        thread of this one while the thread that opened it runs, is refused in one line."""
        key = str(self.path.resolve())
        held = _HELD.get(key)
        if held is not None and held.thread is not threading.current_thread() and held.thread.is_alive():
            raise SegnasError(f"{self.path}: another thread of this process ({held.thread.name}) is running this job "
                              "now; let it end before continuing it")
        if held is None:
            handle = open(self.path / LOCK_FILE, "a")
            for attempt in range(LOCK_TRIES):  # (a reader's brief probe, ``in_use``, is waited out)
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if not isinstance(exc, BlockingIOError) or attempt == LOCK_TRIES - 1:
                        handle.close()
                        raise SegnasError(f"{self.path}: another process is running this job now; let it end (or "
                                          "stop it) before continuing it") from None
                    time.sleep(0.1)
            held = _HELD[key] = _Held(key, handle)
            opened = _OPENED.get()
            if opened is not None:
                opened.append(key)
        self._held = held

    @staticmethod
    def in_use(path: str | Path) -> bool:
        """Whether a process holds the run folder ``path`` now (its job runs), read without holding it."""
        key = str(Path(path).resolve())
        if key in _HELD:
            return True
        try:
            handle = open(Path(path) / LOCK_FILE)
        except OSError:  # (no lock file: never opened by a job, or not readable)
            return False
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            except OSError:  # (a file system without locks: nothing can be told)
                return False
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False

    @staticmethod
    def check_parent(out_dir: str | Path, setting: str = "out_dir (--out-dir)") -> None:
        """SegnasError naming ``setting`` and ``out_dir`` when nothing can be made in it: it, or the
        nearest of its parents that exists, is a file or cannot be written."""
        existing, problem = folder_to_write(out_dir)
        if problem == "a file":
            what = "is a file" if existing == Path(out_dir) else f"is under {existing}, a file"
            raise SegnasError(f"{setting}: {out_dir}: {what}; give a folder")
        if problem:
            raise SegnasError(f"{setting}: {out_dir}: {existing} cannot be written")

    @classmethod
    def create(cls, out_dir: str | Path, job: str) -> "RunDir":
        """A fresh ``<out_dir>/<YYYYmmdd-HHMMSS>-<job>`` folder (suffixed if the name is taken);
        under torchrun the one rank 0 made."""
        path = None
        if distributed.is_main():
            stamp = time.strftime("%Y%m%d-%H%M%S")
            base = Path(out_dir) / f"{stamp}-{job}"
            path, k = base, 1
            while path.exists():
                k += 1
                path = base.with_name(f"{base.name}-{k}")
            try:
                path.mkdir(parents=True)
            except OSError as exc:
                raise SegnasError(f"out_dir (--out-dir): {out_dir}: cannot create {path.name} there "
                                  f"({exc.strerror})") from None
        return cls(distributed.broadcast_object(path))

    @classmethod
    def existing(cls, path: str | Path) -> "RunDir":
        """The run directory at ``path``, opened to continue its job (``check_existing`` first)."""
        cls.check_existing(path)
        return cls(path)

    @staticmethod
    def check_existing(path: str | Path) -> None:
        """SegnasError unless ``path`` is a run directory; touches nothing in it."""
        path = Path(path)
        if not path.exists():
            raise SegnasError(f"{path}: run directory not found")
        if not (path / "config.yaml").is_file():
            raise SegnasError(f"{path}: not a run directory (no config.yaml)")

    @property
    def last_checkpoint(self) -> Path:
        return last_checkpoint(self.path)

    @property
    def best_checkpoint(self) -> Path:
        return best_checkpoint(self.path)

    def log(self, message: str, at: float | None = None) -> None:
        """A line of log.txt, stamped now (or at ``at``, a ``time.time()``: a line said before the run
        folder existed)."""
        if not self.main:
            return
        if at is None:
            self.logger.info(message)
            return
        record = self.logger.makeRecord(self.logger.name, logging.INFO, __file__, 0, message, None, None)
        record.created, record.msecs = at, (at % 1) * 1000
        self.logger.handle(record)

    def write_metrics(self, record: dict[str, Any]) -> None:
        if not self.main:
            return
        with no_room_said(self.path / "metrics.jsonl"), open(self.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(json_safe(record), allow_nan=False) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """The metrics records (a line torn by a kill mid-write is dropped on resume), per-class IoUs
        as the trainer has them: NaN where the file holds null (a class with no pixels)."""
        rows = read_jsonl(self.path / "metrics.jsonl")
        for row in rows:
            if isinstance(row.get("val_iou"), list):
                row["val_iou"] = [math.nan if v is None else v for v in row["val_iou"]]
        return rows

    def truncate_metrics(self, after_epoch: int, key: str = "epoch") -> None:
        """Drop records whose ``key`` exceeds ``after_epoch`` (written after the checkpoint we resume;
        every epoch record when a resumed run has no checkpoint left and starts over at 0)."""
        if not self.main:
            return
        if not (self.path / "metrics.jsonl").is_file():
            return
        kept = [r for r in self.read_metrics() if r.get(key, 0) <= after_epoch]
        atomic_write_text(self.path / "metrics.jsonl",
                          "".join(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in kept))
