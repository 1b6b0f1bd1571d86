"""Rate-limit configuration and the read-only snapshot users can inspect."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Literal, Protocol

import attrs

from ._state import Ticket

__all__ = ["Priority", "RateGate", "RateLimit", "RateLimitSnapshot", "priority_rank"]

Priority = Literal["high", "normal", "low"]

_RANKS: dict[str, int] = {"high": 0, "normal": 1, "low": 2}


def priority_rank(priority: str) -> int:
    try:
        return _RANKS[priority]
    except KeyError:
        raise ValueError(
            f"priority must be one of 'high', 'normal', 'low', got {priority!r}"
        ) from None


def _positive_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"RateLimit.{attribute.name} must be an int >= 1, got {value!r}")


def _positive_period(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"RateLimit.{attribute.name} must be a finite number > 0, got {value!r}")


@attrs.frozen(repr=False)
class RateLimit:
    """``requests`` per ``period`` seconds for one business (the API's is 60 per 60 s).

    ``share=True`` marks this process's fixed part of a budget divided between processes
    (``CALLSCALER_WORKERS``, or a limit divided by hand): the server's
    ``X-RateLimit-Remaining`` and ``Reset`` then count the other parts' requests too, so the
    gate paces the part by its own ledger alone instead of spending what the server says is
    left. Without it, a server announcing a higher limit than configured (a sandbox) is
    taken at its word.

    >>> RateLimit(requests=60, period=60.0)
    RateLimit(requests=60, period=60.0)
    >>> RateLimit(15, 60.0, share=True)
    RateLimit(requests=15, period=60.0, share=True)
    """

    requests: int = attrs.field(default=60, validator=_positive_int)
    period: float = attrs.field(default=60.0, validator=_positive_period)
    share: bool = attrs.field(
        default=False, kw_only=True, validator=attrs.validators.instance_of(bool)
    )

    def __repr__(self) -> str:
        share = ", share=True" if self.share else ""
        return f"RateLimit(requests={self.requests!r}, period={self.period!r}{share})"


@attrs.frozen(repr=False)
class RateLimitSnapshot:
    """What the gate knows now: the server's last word and our own pacing state.

    * ``limit``, ``remaining``, ``reset_at``: the latest ``X-RateLimit-Limit``,
      ``-Remaining`` (how many more the server would admit at that instant) and ``-Reset``
      (as an aware UTC datetime) headers; None before the first response that had them.
    * ``paused_until``: set while a 429 pauses every request of the business.
    * ``waiting``: tasks queued at the gate for a slot.
    * ``in_flight``: requests sent and not answered yet.
    * ``foreign``: requests the server counted recently that were not this gate's (another
      process, key or tool spending the same budget); held back from our own budget.
    * ``probing``: whether one request may go at ``X-RateLimit-Reset`` when nothing else
      allows one (turned off for good when such a request was refused).
    * ``rate_limited``: 429 answers received so far.

    ``print(client.rate_limit)`` says the same in words::

        rate limit: 12 of 60 left, resets 2026-01-05 10:31:00Z; 3 waiting, 2 in flight
    """

    limit: int | None
    remaining: int | None
    reset_at: dt.datetime | None
    paused_until: dt.datetime | None = None
    waiting: int = 0
    in_flight: int = 0
    foreign: int = 0
    probing: bool = True
    rate_limited: int = 0

    def __str__(self) -> str:
        def when(moment: dt.datetime) -> str:
            return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")

        if self.remaining is None:
            head = "rate limit: no answer from the server yet"
        else:
            of = f" of {self.limit}" if self.limit is not None else ""
            head = f"rate limit: {self.remaining}{of} left"
            if self.reset_at is not None:
                head += f", resets {when(self.reset_at)}"
        parts = [f"{self.waiting} waiting", f"{self.in_flight} in flight"]
        if self.paused_until is not None:
            parts.insert(0, f"paused after a 429 until {when(self.paused_until)}")
        if self.foreign:
            parts.append(f"{self.foreign} recently spent by another consumer")
        if self.rate_limited:
            parts.append(f"{self.rate_limited} answered 429 so far")
        if not self.probing:
            parts.append("no request at Reset (the server refused one)")
        return f"{head}; {', '.join(parts)}"

    def __repr__(self) -> str:
        return (
            f"RateLimitSnapshot(limit={self.limit!r}, remaining={self.remaining!r}, "
            f"reset_at={self.reset_at!r}, paused_until={self.paused_until!r}, "
            f"waiting={self.waiting!r}, in_flight={self.in_flight!r}, "
            f"foreign={self.foreign!r}, probing={self.probing!r}, "
            f"rate_limited={self.rate_limited!r})  # {self}"
        )


class RateGate(Protocol):
    """What the transport needs from a rate gate (local or shared through Redis)."""

    @property
    def name(self) -> str: ...

    @property
    def rate_limit(self) -> RateLimit: ...

    async def acquire(
        self, *, priority: Priority = "normal", max_wait: float | None = None
    ) -> Ticket:
        """Wait until a request may go; the caller must ``complete`` or ``abandon`` the ticket."""
        ...

    def complete(
        self,
        ticket: Ticket,
        *,
        status: int | None,
        headers: Mapping[str, str] | None,
        retry_after: float | None = None,
    ) -> None:
        """Record the answer (``status`` None: no answer, the request may have been counted)."""
        ...

    def abandon(self, ticket: Ticket) -> None:
        """The admitted request was never sent."""
        ...

    def snapshot(self) -> RateLimitSnapshot: ...
