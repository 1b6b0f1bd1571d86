"""Per-business rate limiters of the fake: fixed window, sliding log, token bucket and
sliding-window counter.

All four take the fake's Unix time ``now`` (a float derived from ``loop.time()``, so it is
virtual under ``looptime``) and keep O(limit) state. They share one small interface:

* ``try_acquire(now) -> bool``: admit (and count) one request, or refuse without counting.
* ``remaining(now) -> int``: value of ``X-RateLimit-Remaining``.
* ``reset(now) -> float``: Unix time for ``X-RateLimit-Reset`` (the server rounds it up):

  - fixed: the end of the current window, ``(floor(now / period) + 1) * period``;
  - sliding: the moment the oldest admitted request leaves the window
    (``oldest + period``, when Remaining next goes up), or ``now`` if the log is empty;
  - bucket: the moment the bucket is full again, ``now + (capacity - tokens) / rate``;
  - counter: the end of the current aligned window, as for ``fixed`` (what servers running
    the weighted two-window estimate commonly send). Unlike a fixed window's, this Reset
    does not restore the budget: the previous window's weight only fades over the next one.

* ``retry_after(now) -> float``: seconds until a request would be admitted (0 if now).

Remaining is exactly how many requests the limiter would admit at that instant, one after
the other, under every algorithm.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

__all__ = [
    "ALGORITHMS",
    "FixedWindow",
    "RateLimiter",
    "SlidingLog",
    "SlidingWindowCounter",
    "TokenBucket",
    "make_limiter",
]


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


class SlidingWindowCounter:
    """The weighted two-window estimate (Cloudflare's sliding-window counter).

    Windows are aligned to Unix multiples of ``period``. At phase ``f`` of the current window
    (``f = now / period - floor(now / period)``) a request is admitted while
    ``floor(prev * (1 - f) + cur) + 1 <= limit``, ``prev`` being the previous window's count
    and ``cur`` the current one's. So a burst at the start of a window still weighs almost
    its whole size at the start of the next, and fades linearly over it.

    Remaining: ``limit - cur - floor(prev * (1 - f))`` (at least 0), exactly how many more it
    would admit at that instant (``cur`` is an integer, so the floor of the sum is ``cur``
    plus the floor of the weight). Reset: the end of the current window.
    """

    __slots__ = ("cur", "limit", "period", "prev", "window")

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self.window = -1
        self.cur = 0
        self.prev = 0

    def _roll(self, now: float) -> float:
        """Move to the window of ``now``; return the phase ``f`` in [0, 1)."""
        scaled = now / self.period
        w = math.floor(scaled)
        if w != self.window:
            self.prev = self.cur if w == self.window + 1 else 0
            self.cur = 0
            self.window = w
        return scaled - w

    def _weighed(self, now: float) -> int:
        f = self._roll(now)
        return self.cur + math.floor(self.prev * (1.0 - f))

    def try_acquire(self, now: float) -> bool:
        if self._weighed(now) + 1 > self.limit:
            return False
        self.cur += 1
        return True

    def remaining(self, now: float) -> int:
        return max(0, self.limit - self._weighed(now))

    def reset(self, now: float) -> float:
        return (math.floor(now / self.period) + 1) * self.period

    def retry_after(self, now: float) -> float:
        f = self._roll(now)
        if self.cur + math.floor(self.prev * (1.0 - f)) < self.limit:
            return 0.0
        end = (self.window + 1) * self.period
        room = self.limit - self.cur
        if room > 0 and self.prev > 0:
            # prev * (1 - f) must fall below ``room``: at phase 1 - room / prev (just after).
            at = self.window * self.period + (1.0 - room / self.prev) * self.period
            if at < end:
                # Admitted only strictly after that instant: never answer "now" to a refusal.
                return max(at - now, 1e-6)
        # Not in this window: in the next one ``cur`` becomes ``prev`` and weighs
        # ``cur * (1 - f)``, below the limit as soon as f > 1 - limit / cur (cur <= limit).
        return end + max(0.0, 1.0 - self.limit / self.cur) * self.period - now


ALGORITHMS: dict[
    str,
    type[FixedWindow] | type[SlidingLog] | type[TokenBucket] | type[SlidingWindowCounter],
] = {
    "fixed": FixedWindow,
    "sliding": SlidingLog,
    "bucket": TokenBucket,
    "counter": SlidingWindowCounter,
}


def make_limiter(algorithm: str, limit: int, period: float) -> RateLimiter:
    """Build the limiter named ``algorithm`` ("fixed", "sliding", "bucket" or "counter")."""
    try:
        cls = ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(f"unknown rate-limit algorithm {algorithm!r}") from None
    return cls(limit, period)
