"""Progress of the long commands (sync, import, ingest-file, segment recompute, campaign sends).

    with progress_reporter("sync shop", unit="records") as report:
        await sync(hub, connector, progress=report)      # the library calls report(done, total)

The library code takes a plain callback, ``report(done, total)`` (``total`` None while unknown: a sync
cannot know how many records the source still has), and knows nothing of terminals. Here it becomes:

* on a terminal (stderr is a TTY): a rich progress bar with the count, the percentage, the rate, the elapsed
  time and the ETA (a spinner and the count while the total is unknown);
* elsewhere (cron, CI, a pipe, a log collector): a plain line at most every ``PLAIN_EVERY`` seconds and one
  at the end, e.g. ``cdp-hub sync shop: 12,000/40,000 records (30%), 2,400/s, ETA 12s``.

Progress goes to stderr, so stdout holds only the command's result (JSON with ``--json``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["PLAIN_EVERY", "ProgressReport", "plain_line", "progress_reporter"]

ProgressReport = Callable[[int, int | None], None]
"""``report(done, total)``: how far a long operation is; ``total`` is None when it is not known."""

PLAIN_EVERY = 5.0
"""Seconds between two plain progress lines (not a terminal): often enough to see it move, rarely enough for
a log."""


def plain_line(label: str, unit: str, done: int, total: int | None, elapsed: float) -> str:
    """One plain progress line: count, percentage and ETA when the total is known, the rate."""
    rate = done / elapsed if elapsed > 0 else 0.0
    text = f"cdp-hub {label}: {done:,}" + (f"/{total:,}" if total else "") + f" {unit}"
    if total:
        text += f" ({min(100, done * 100 // total)}%)"
    text += f", {rate:,.0f}/s"
    if total and rate > 0 and done < total:
        text += f", ETA {_duration((total - done) / rate)}"
    return text + f", {_duration(elapsed)} elapsed"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class _PlainReporter:
    """Plain lines, at most one per ``every`` seconds, and the last state when closed."""

    def __init__(self, label: str, unit: str, stream: TextIO, every: float) -> None:
        self.label, self.unit, self.stream, self.every = label, unit, stream, every
        self.started = time.monotonic()
        self.last_line = self.started
        self.done = 0
        self.total: int | None = None
        self.written: tuple[int, int | None] | None = None  # the state the last line showed

    def __call__(self, done: int, total: int | None = None) -> None:
        self.done, self.total = done, total if total is not None else self.total
        now = time.monotonic()
        if now - self.last_line >= self.every:
            self.last_line = now
            self._write(now)

    def close(self) -> None:
        """The last state, unless a line said it already (or nothing ever happened: no line about nothing)."""
        if (self.done, self.total) != (self.written or (0, None)):
            self._write(time.monotonic())

    def _write(self, now: float) -> None:
        self.written = (self.done, self.total)
        print(plain_line(self.label, self.unit, self.done, self.total, now - self.started), file=self.stream,
              flush=True)


@contextmanager
def progress_reporter(label: str, *, unit: str = "records", enabled: bool = True, stream: TextIO | None = None,
                      every: float = PLAIN_EVERY) -> Iterator[ProgressReport]:
    """A :data:`ProgressReport` for the duration of the block (see the module docstring); ``enabled=False``
    (``--quiet``) reports nothing."""
    out = stream if stream is not None else sys.stderr
    if not enabled:
        yield _silent
        return
    if not _is_terminal(out):
        plain = _PlainReporter(label, unit, out, every)
        try:
            yield plain
        finally:
            plain.close()
        return

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        Task,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class CountColumn(ProgressColumn):
        """``1,200/4,000 bytes``, or ``1,200 records`` while the total is unknown."""

        def render(self, task: Task) -> Text:
            done = f"{int(task.completed):,}" + ("" if task.total is None else f"/{int(task.total):,}")
            return Text(f"{done} {unit}", style="progress.download")

    class EtaOrRateColumn(ProgressColumn):
        """``ETA 0:01:05`` when the total is known, else the rate: the most a count without an end can say."""

        def render(self, task: Task) -> Text:
            if task.total is not None:
                if task.time_remaining is None:  # no rate measured yet
                    return Text("ETA -:--:--", style="progress.remaining")
                minutes, seconds = divmod(int(task.time_remaining), 60)
                hours, minutes = divmod(minutes, 60)
                return Text(f"ETA {hours}:{minutes:02d}:{seconds:02d}", style="progress.remaining")
            return Text(f"{task.speed or 0:,.0f}/s", style="progress.data.speed")

    bar = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), CountColumn(),
                   TaskProgressColumn(), TimeElapsedColumn(), EtaOrRateColumn(), console=Console(file=out),
                   transient=False)
    task = bar.add_task(label, total=None)

    def report(done: int, total: int | None = None) -> None:
        bar.update(task, completed=done, total=total if total is not None else bar.tasks[0].total)

    with bar:
        yield report


def _silent(done: int, total: int | None = None) -> None:
    """``--quiet``: progress reported to no one."""


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        return False
