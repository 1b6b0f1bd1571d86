"""A sync's progress on stderr, and the end-of-sync summary.

On a terminal with rich installed (the ``cli`` extra) the progress is a rich bar: calls
delivered of the total, rate, the window being delivered, elapsed time and ETA. Anywhere
else (a pipe, a log file, or no rich) it is a plain line every few seconds and one at the end.
Every figure comes from :class:`~callscaler_async.sync.SyncProgress`: the total is the
server's count, the ETA uses the limit the server reports.
"""

from __future__ import annotations

import math
import time
from typing import Protocol, TextIO

from ..sync import SyncProgress, SyncSummary

__all__ = [
    "PlainProgress",
    "ProgressDisplay",
    "format_duration",
    "progress_display",
    "render_line",
    "summary_lines",
]

# How often a plain display prints a line (a log should not fill with progress).
_PLAIN_EVERY = 5.0


def format_duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _rate(progress: SyncProgress, waited: float = 0.0) -> str:
    """Calls per second over this run (a resume's earlier calls do not count)."""
    done = progress.delivered - progress.delivered_at_start
    elapsed = progress.elapsed + waited
    if elapsed <= 0 or done <= 0:
        return "? calls/s"
    return f"{done / elapsed:,.0f} calls/s"


def _window(progress: SyncProgress) -> str:
    if progress.window is None:
        return f"windows {progress.windows_done}/{progress.windows}"
    start, last = progress.window
    span = f"{start:%Y-%m-%d}" if start.date() == last.date() else f"{start:%Y-%m-%d}..{last:%m-%d}"
    return f"window {progress.windows_done + 1}/{progress.windows} {span}"


def render_line(progress: SyncProgress, label: str = "sync") -> str:
    """One plain line: ``sync  3,000/12,000 calls 25%  410 calls/s  window 2/9 ...``."""
    total = progress.estimated_total
    if total is not None:
        share = progress.delivered / total if total else 1.0
        count = f"{progress.delivered:,}/{total:,} calls {share:4.0%}"
    else:
        count = f"{progress.delivered:,} calls (total not counted yet)"
    return (
        f"  {label}  {count}  {_rate(progress)}  {_window(progress)}  "
        f"elapsed {format_duration(progress.elapsed)}  ETA {format_duration(progress.eta)}"
    )


class ProgressDisplay(Protocol):
    def __call__(self, progress: SyncProgress) -> None: ...

    def finish(self) -> None:
        """Show the last state and release the terminal (call it even after an error)."""
        ...


class PlainProgress:
    """A line every few seconds (not on every batch) and the last state at ``finish``."""

    def __init__(self, stream: TextIO, *, label: str = "sync") -> None:
        self.stream = stream
        self.label = label
        self._last_print = -math.inf
        self._last: SyncProgress | None = None
        self._printed: SyncProgress | None = None

    def __call__(self, progress: SyncProgress) -> None:
        self._last = progress
        now = time.monotonic()
        if now - self._last_print >= _PLAIN_EVERY:
            self._last_print = now
            self._print(progress)

    def _print(self, progress: SyncProgress) -> None:
        self._printed = progress
        self.stream.write(render_line(progress, self.label) + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self._last is not None and self._last is not self._printed:
            self._print(self._last)


class RichProgress:
    """A rich progress bar, redrawn by rich's own refresh thread until ``finish``.

    Between batches (the gate waiting for the rate limit's window) the redraws move the rate
    and the ETA on with the clock, from the last event.
    """

    def __init__(self, stream: TextIO, *, label: str = "sync") -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            ProgressColumn,
            TaskProgressColumn,
            TextColumn,
        )
        from rich.progress import Task as RichTask
        from rich.text import Text

        display = self

        class _Live(ProgressColumn):
            def __init__(self, part: str) -> None:
                super().__init__()
                self.part = part

            def render(self, task: RichTask) -> Text:
                return Text(
                    display._live(self.part), style="magenta" if self.part == "rate" else ""
                )

        self._console = Console(file=stream)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=None),
            TextColumn("{task.fields[count]}"),
            TaskProgressColumn(),
            _Live("rate"),
            TextColumn("[cyan]{task.fields[window]}"),
            _Live("eta"),
            console=self._console,
            refresh_per_second=4,
        )
        self._last: SyncProgress | None = None
        self._last_at = time.monotonic()
        self._task = self._progress.add_task(label, total=None, count="", window="")
        self._progress.start()
        self._stopped = False

    def _live(self, part: str) -> str:
        progress = self._last
        if progress is None:
            return "? calls/s" if part == "rate" else "ETA ?"
        waited = 0.0 if progress.finished else time.monotonic() - self._last_at
        if part == "rate":
            return _rate(progress, waited)
        return f"ETA {format_duration(progress.eta_after(waited))}"

    def __call__(self, progress: SyncProgress) -> None:
        self._last, self._last_at = progress, time.monotonic()
        total = progress.estimated_total
        window = _window(progress)
        if self._console.width < 110:  # the window's dates only where they fit
            window = f"window {min(progress.windows_done + 1, progress.windows)}/{progress.windows}"
        self._progress.update(
            self._task,
            total=total,
            completed=progress.delivered,
            count=f"{progress.delivered:,}/{total:,} calls"
            if total is not None
            else f"{progress.delivered:,} calls",
            window=window,
        )

    def finish(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._progress.stop()


def progress_display(stream: TextIO, *, label: str = "sync") -> ProgressDisplay:
    """A rich bar on a terminal when rich is installed; plain periodic lines otherwise."""
    if stream.isatty():
        try:
            return RichProgress(stream, label=label)
        except ImportError:
            pass
    return PlainProgress(stream, label=label)


def summary_lines(summary: SyncSummary) -> list[str]:
    limit = summary.rate_limit
    budget = f"{limit.requests:,} requests / {limit.period:g} s" if limit else "the rate limit"
    ratio = summary.elapsed_over_minimum
    if ratio is None:
        # The budget asked for no wait; the run may still have waited (another process's
        # requests still counted, a 429's pause), so say only what the budget needed.
        over = f"the budget's minimum is 0 s (every request fits in one window of {budget})"
    elif ratio < 1:
        # Faster than the sliding-window minimum: a fixed window reset early, or the
        # server's period is shorter than the configured one.
        over = (
            f"faster than the {format_duration(summary.minimum)} {budget} needs over a "
            "sliding window (the server's window reset sooner)"
        )
    else:
        minimum = format_duration(summary.minimum)
        over = f"{ratio:.2f}× the theoretical minimum ({minimum} at {budget})"
    return [
        f"  calls      {summary.items:,}"
        + ("  (resumed from a checkpoint)" if summary.resumed else ""),
        f"  range      {summary.since:%Y-%m-%d %H:%M:%S} .. {summary.until:%Y-%m-%d %H:%M:%S} UTC",
        f"  requests   {summary.requests:,} ({summary.pages:,} of them list pages)",
        f"  429s       {summary.rate_limited}",
        f"  elapsed    {format_duration(summary.elapsed)}, {over}",
    ]
