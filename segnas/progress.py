"""Progress bars with ETA on a terminal's stderr; elsewhere a plain line now and then."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

#: Where a job writes its lines (``print``, a logger, a list's ``append``).
Echo = Callable[[str], None]


class NotesOnce:
    """Wraps echoes so that each ``note:`` line passes once: a job whose steps check the same data
    (a search, then each of its final trainings) says each of its notes once."""

    def __init__(self) -> None:
        self.said: set[str] = set()

    def wrap(self, echo: Echo) -> Echo:
        def once(line: str) -> None:
            if line.startswith("note: "):
                if line in self.said:
                    return
                self.said.add(line)
            echo(line)
        return once


class SaidBeforeRun:
    """An echo that keeps what a job says before its run folder exists (its data notes, its latency
    calibration, its target check), for the run's log.txt once it does (``log_into``)."""

    def __init__(self, echo: Echo | None) -> None:
        self.echo, self.lines = echo, []

    def __call__(self, line: str) -> None:
        self.lines.append((time.time(), line))
        if self.echo is not None:
            self.echo(line)

    def log_into(self, log: Callable[..., None]) -> None:
        """Write the lines kept so far with ``log`` (a run's ``RunDir.log``), once, each stamped with
        the time it was said."""
        for at, line in self.lines:
            log(line, at=at)
        self.lines.clear()


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress | None]:
    """A rich Progress on stderr when ``enabled`` and stderr is a terminal, else None (a command's
    output redirected to a file keeps only its lines)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                  TextColumn("{task.fields[info]}"), transient=True, console=Console(stderr=True),
                  redirect_stdout=sys.stdout.isatty()) as bar:  # (lines to a file go there, not above the bar)
        yield bar


#: Seconds before the first plain progress line when stderr is not a terminal; the wait doubles
#: after each line, up to PLAIN_MAX_FACTOR times this (a day-long job writes some hundred lines).
PLAIN_EVERY_S = 30.0
PLAIN_MAX_FACTOR = 20


class Ticker:
    """Progress of one task of ``total`` steps: ``advance()`` after each. See ``task_progress``."""

    def __init__(self, description: str, total: int, bar: Progress | None, every_s: float | None) -> None:
        import threading
        import time

        self.description, self.total, self.done = description, total, 0
        self.bar, self.every_s = bar, every_s
        self._time = time.perf_counter
        self._start = self._time()
        self._stop = threading.Event()
        self._task = bar.add_task(description, total=total, info="") if bar is not None else None
        self._thread = None
        if bar is None and every_s is not None:
            self._thread = threading.Thread(target=self._heartbeat, daemon=True)
            self._thread.start()

    def advance(self, steps: int = 1, info: str = "") -> None:
        self.done += steps
        if self.bar is not None:
            self.bar.update(self._task, advance=steps, info=info)

    def line(self) -> str:
        return f"{self.description}: {self.done}/{self.total} after {elapsed(self._time() - self._start)}"

    def _heartbeat(self) -> None:
        wait = self.every_s
        while not self._stop.wait(wait):
            print(self.line(), file=sys.stderr, flush=True)
            wait = min(2 * wait, PLAIN_MAX_FACTOR * self.every_s)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def elapsed(seconds: float) -> str:
    """A duration as a progress line says it: seconds, minutes or hours."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


@contextmanager
def task_progress(description: str, total: int, enabled: bool = True) -> Iterator[Ticker]:
    """A task's progress: a rich bar with ETA when stderr is a terminal, else a plain line on
    stderr after ``PLAIN_EVERY_S`` seconds, then at doubling waits while it runs (none when
    ``enabled`` is False)."""
    with progress_bar(enabled) as bar:
        ticker = Ticker(description, total, bar, PLAIN_EVERY_S if enabled else None)
        try:
            yield ticker
        finally:
            ticker.close()
