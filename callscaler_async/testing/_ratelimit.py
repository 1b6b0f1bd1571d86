"""Per-business rate limiters of the fake: fixed window, sliding log, token bucket.

All three take the fake's Unix time ``now`` (a float derived from ``loop.time()``, so it is
virtual under ``looptime``) and keep O(limit) state. They share one small interface:

* ``try_acquire(now) -> bool``: admit (and count) one request, or refuse without counting.
* ``remaining(now) -> int``: value of ``X-RateLimit-Remaining``.
* ``reset(now) -> float``: Unix time for ``X-RateLimit-Reset`` (the server rounds it up):

  - fixed: the end of the current window, ``(floor(now / period) + 1) * period``;
  - sliding: the moment the oldest admitted request leaves the window
    (``oldest + period``, when Remaining next goes up), or ``now`` if the log is empty;
  - bucket: the moment the bucket is full again, ``now + (capacity - tokens) / rate``.

* ``retry_after(now) -> float``: seconds until a request would be admitted (0 if now).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

__all__ = ["ALGORITHMS", "FixedWindow", "RateLimiter", "SlidingLog", "TokenBucket", "make_limiter"]


class RateLimiter(Protocol):
    """What the server needs from a limiter."""

    limit: int
    period: float

    def try_acquire(self, now: float) -> bool: ...
    def remaining(self, now: float) -> int: ...
    def reset(self, now: float) -> float: ...
    def retry_after(self, now: float) -> float: ...


class FixedWindow:
    """Windows aligned to Unix multiples of ``period``; index = ``floor(now / period)``."""

    __slots__ = ("count", "limit", "period", "window")

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self.window = -1
        self.count = 0

    def _roll(self, now: float) -> None:
        w = math.floor(now / self.period)
        if w != self.window:
            self.window = w
            self.count = 0

    def try_acquire(self, now: float) -> bool:
        self._roll(now)
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def remaining(self, now: float) -> int:
        self._roll(now)
        return max(0, self.limit - self.count)

    def reset(self, now: float) -> float:
        return (math.floor(now / self.period) + 1) * self.period

    def retry_after(self, now: float) -> float:
        self._roll(now)
        return 0.0 if self.count < self.limit else self.reset(now) - now


class SlidingLog:
    """Admit iff fewer than ``limit`` admitted requests lie in ``(now - period, now]``."""

    __slots__ = ("limit", "log", "period")

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self.log: deque[float] = deque()

    def _prune(self, now: float) -> None:
        edge = now - self.period
        log = self.log
        while log and log[0] <= edge:
            log.popleft()

    def try_acquire(self, now: float) -> bool:
        self._prune(now)
        if len(self.log) >= self.limit:
            return False
        self.log.append(now)
        return True

    def remaining(self, now: float) -> int:
        self._prune(now)
        return max(0, self.limit - len(self.log))

    def reset(self, now: float) -> float:
        self._prune(now)
        return self.log[0] + self.period if self.log else now

    def retry_after(self, now: float) -> float:
        self._prune(now)
        if len(self.log) < self.limit:
            return 0.0
        # The (len - limit + 1)-th oldest must leave before one more fits; len == limit here.
        return self.log[len(self.log) - self.limit] + self.period - now


class TokenBucket:
    """Capacity ``limit``, refilled at ``limit / period`` tokens per second, starts full."""

    __slots__ = ("last", "limit", "period", "rate", "tokens")

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self.rate = limit / period
        self.tokens = float(limit)
        self.last: float | None = None

    def _refill(self, now: float) -> None:
        if self.last is not None and now > self.last:
            self.tokens = min(float(self.limit), self.tokens + (now - self.last) * self.rate)
        if self.last is None or now > self.last:
            self.last = now

    def try_acquire(self, now: float) -> bool:
        self._refill(now)
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def remaining(self, now: float) -> int:
        self._refill(now)
        return max(0, math.floor(self.tokens + 1e-9))

    def reset(self, now: float) -> float:
        self._refill(now)
        return now + (self.limit - self.tokens) / self.rate

    def retry_after(self, now: float) -> float:
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


ALGORITHMS: dict[str, type[FixedWindow] | type[SlidingLog] | type[TokenBucket]] = {
    "fixed": FixedWindow,
    "sliding": SlidingLog,
    "bucket": TokenBucket,
}


def make_limiter(algorithm: str, limit: int, period: float) -> RateLimiter:
    """Build the limiter named ``algorithm`` ("fixed", "sliding" or "bucket")."""
    try:
        cls = ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(f"unknown rate-limit algorithm {algorithm!r}") from None
    return cls(limit, period)
