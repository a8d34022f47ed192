"""Progress you can follow in a terminal and in a log file.

On a terminal: rich live bars. Otherwise (output redirected to a file, a pipe, CI) a live bar only appears when a
stage ends, so :class:`PlainProgress` and :class:`LineProgress` print one plain line every ``every`` seconds
instead (and at the end): what, done/total, rate, ETA. Training counts optimizer steps from 0 to ``max_steps``,
so a resumed run shows its true position (not the batch within the current epoch).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator

EVERY_S = 30.0


def is_terminal(stream=None) -> bool:
    stream = sys.stdout if stream is None else stream
    return hasattr(stream, "isatty") and stream.isatty()


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def progress_line(what: str, done: int, total: int | None, rate: float, unit: str = "it", extra: str = "") -> str:
    """``what 120/6000 (2%) loss 4.21 | 3.10 it/s, ETA 31:35``."""
    head = f"{what} {done}/{total} ({100 * done / total:.0f}%)" if total else f"{what} {done}"
    eta = f", ETA {_clock((total - done) / rate)}" if total and rate > 0 else ""
    return f"{head}{' ' + extra if extra else ''} | {rate:.2f} {unit}/s{eta}"


class _Ticker:
    """Counts progress of one task and says when a line is due (every ``every`` seconds, and at the end)."""

    def __init__(self, what: str, total: int | None, start: int = 0, every: float = EVERY_S) -> None:
        self.what, self.total, self.start, self.done, self.every = what, total, start, start, every
        self.t0 = self.last = time.monotonic()

    def rate(self) -> float:
        elapsed = time.monotonic() - self.t0
        return (self.done - self.start) / elapsed if elapsed > 0 else 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.every or (self.total is not None and self.done >= self.total):
            self.last = now
            return True
        return False


class PlainProgress:
    """The part of ``rich.progress.Progress`` that plmgen uses (add_task, advance, context manager), printing
    plain lines to ``file`` (default stderr) instead of a live bar."""

    def __init__(self, file=None, disable: bool = False, every: float = EVERY_S, unit: str = "it") -> None:
        self.file, self.disable, self.every, self.unit = file, disable, every, unit
        self.tasks: list[_Ticker] = []

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str, total: int | None = None, **_: Any) -> int:
        self.tasks.append(_Ticker(description, total, every=self.every))
        return len(self.tasks) - 1

    def advance(self, task: int, advance: float = 1) -> None:
        t = self.tasks[task]
        t.done += int(advance)
        if t.due() and not self.disable:
            print(progress_line(t.what, t.done, t.total, t.rate(), self.unit), file=self.file or sys.stderr,
                  flush=True)


def make_progress(console, quiet: bool = False, columns: tuple = ()):
    """A rich live ``Progress`` on a terminal, else :class:`PlainProgress` lines (both off when ``quiet``)."""
    if console.is_terminal:
        from rich.progress import Progress

        return Progress(*columns, console=console, disable=quiet, transient=False)
    return PlainProgress(file=console.file, disable=quiet)


def track(items: Iterable, description: str, total: int | None = None, quiet: bool = False) -> Iterator:
    """``rich.progress.track`` on a terminal (stderr), plain lines otherwise."""
    from rich.console import Console

    console = Console(stderr=True)
    if quiet or console.is_terminal:
        from rich.progress import track as rich_track

        yield from rich_track(items, description=description, total=total, disable=quiet, console=console)
        return
    items = list(items) if total is None else items
    bar = PlainProgress(file=sys.stderr)
    task = bar.add_task(description, total=len(items) if total is None else total)
    for item in items:
        yield item
        bar.advance(task)
