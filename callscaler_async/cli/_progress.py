"""A one-line progress display on stderr and the end-of-sync summary (no dependency)."""

from __future__ import annotations

import math
import time
from typing import TextIO

from ..ratelimit import RateLimit
from ..sync import SyncProgress, SyncSummary

__all__ = ["ProgressLine", "format_duration", "summary_lines"]

_BAR = 24


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


def eta_seconds(progress: SyncProgress, limit: RateLimit) -> float | None:
    """Time left: the larger of what the rate budget allows and what the walk achieves."""
    total = progress.estimated_total
    if total is None:
        return None
    left = max(total - progress.delivered, 0)
    if left == 0:
        return 0.0
    budget = (progress.requests_left or 0) * limit.period / limit.requests
    if progress.elapsed > 0.5 and progress.delivered >= max(total // 20, 1):
        observed = left * progress.elapsed / progress.delivered
        return max(budget, observed)
    return budget


class ProgressLine:
    """Redraws one ``\\r`` line on a terminal; prints a plain line every few seconds otherwise."""

    def __init__(self, stream: TextIO, limit: RateLimit, *, label: str = "sync") -> None:
        self.stream = stream
        self.limit = limit
        self.label = label
        self.tty = stream.isatty()
        self._last_draw = 0.0
        self._drawn = False
        self._last: SyncProgress | None = None

    def __call__(self, progress: SyncProgress) -> None:
        self._last = progress
        now = time.monotonic()
        if now - self._last_draw < (0.1 if self.tty else 2.0):
            return
        self._last_draw = now
        self._draw(progress)

    def render(self, progress: SyncProgress) -> str:
        total = progress.estimated_total
        if total:
            share = min(progress.delivered / total, 1.0)
            filled = int(share * _BAR)
            bar = "█" * filled + "░" * (_BAR - filled)
            approx = "" if progress.windows_counted >= progress.windows else "~"
            count = f"{progress.delivered:>7,}/{approx}{total:,} calls {bar} {share:4.0%}"
        else:
            count = f"{progress.delivered:>7,} calls"
        eta = eta_seconds(progress, self.limit)
        return (
            f"  {self.label}  {count}  pages {progress.pages:,}  "
            f"windows {progress.windows_done}/{progress.windows}  "
            f"{format_duration(progress.elapsed)}  ETA {format_duration(eta)}"
        )

    def _draw(self, progress: SyncProgress) -> None:
        line = self.render(progress)
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """Draw the last state (so the line ends at 100 %) and end the line."""
        if self._last is not None:
            self._draw(self._last)
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
        self._drawn = False


def summary_lines(summary: SyncSummary) -> list[str]:
    ratio = summary.elapsed_over_minimum
    over = (
        f"{ratio:.2f}× the theoretical minimum ({format_duration(summary.minimum)})"
        if ratio is not None
        else "no wait needed (every request fit in one rate-limit window)"
    )
    return [
        f"  calls      {summary.items:,}"
        + ("  (resumed from a checkpoint)" if summary.resumed else ""),
        f"  range      {summary.since:%Y-%m-%d %H:%M:%S} .. {summary.until:%Y-%m-%d %H:%M:%S} UTC",
        f"  requests   {summary.requests:,} ({summary.pages:,} pages)",
        f"  429s       {summary.rate_limited}",
        f"  elapsed    {format_duration(summary.elapsed)}, {over}",
    ]
