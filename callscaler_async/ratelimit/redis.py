"""The business rate gate shared through Redis: one budget for every process and host.

``RedisRateLimiter`` implements the ``RateGate`` protocol like ``local.BusinessRateGate``, but
the authority on *when* a request may go is a schedule kept in Redis, shared by every process
that names the same business (and key prefix).

The algorithm
-------------
Redis holds, per business, a sorted list of the last ``limit`` *reservation times* (integer
microseconds of Redis's own clock, ``TIME``; no float ever touches the schedule). A Lua
script, run atomically with ``EVALSHA``, reserves ``n`` slots at once::

    r = max(now, pause_until, last_reserved, entry_limit_back + period_us + margin_us)

appends each ``r``, trims the list to its last ``limit`` entries and returns ``r - now`` for
each slot. The caller sleeps until its slot (on the loop clock) and sends.

Why it is safe: reservations are appended in non-decreasing order and each one is at least
``period + margin`` after the reservation ``limit`` places before it. So any ``limit + 1``
consecutive reservations span more than ``period``: no window of length ``period`` holds more
than ``limit`` of them, whichever process made them. As ``_state`` explains, a server that
counts at most ``limit`` in every window never answers 429, whether it runs a fixed window, a
sliding log or a token bucket. Only Redis's clock is used for the schedule, so the hosts'
clocks need not agree.

The margin (``latency_margin``, default ``max(10 ms, period / 200)``) covers what separates a
reservation time from the moment the server counts the request. A process maps a slot to its
loop clock as *answer received + wait*, never earlier than Redis meant (Redis read its clock
before we got the answer); it is late by at most the Redis round trip plus the wake-up delay.
A waiter that wakes more than half the margin after its slot (event loop blocked) does not
use it and reserves again; a Redis round trip longer than half the margin is logged once
(raise ``latency_margin``). The other half covers the network jitter between the processes
and the API server, which counts a request when it arrives.

Cost: one Redis round trip per *batch*, not per request. In a process, one pump task
reserves ``k = min(waiting, limit)`` slots per call and hands them out in priority order
(``high`` > ``normal`` > ``low``, first come first served within a priority); it reserves the
next batch only shortly before the current one is used up, so a process never hoards the
future and a late ``high`` request still goes before queued ``low`` ones at the next batch.
A cancelled waiter returns at once and its slot goes to the next local waiter (or is kept
briefly for the next arrival; unused, it is only budget lost, never a 429).

A 429 reported by any process (``complete(status=429, retry_after=...)``) sets the shared
``pause_until`` (the maximum with any pause already set) and re-spaces the schedule so the
restart after the pause is staggered (``limit`` slots spread over one period, like the local
gate's restart); no reservation is ever earlier than ``pause_until``. Slots another process
reserved before the 429 was reported are still used: at most one batch per process.

Keys expire when the business is idle (``PEXPIRE`` of two periods plus any pause).

Redis unreachable: with ``fallback="error"`` (default) ``acquire`` raises
``RateLimiterUnavailable``; with ``fallback="local"`` a warning is logged once and the process
paces alone through a local ``BusinessRateGate`` (seeded with its own recent sends) until the
limiter is closed. Socket timeouts are short, so the gate never hangs on Redis.

The local ``GateState`` still reads the ``X-RateLimit-*`` headers for ``snapshot()`` and lowers
the limit used when the server announces a smaller one; the shared schedule alone decides
admission.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import logging
import time
import urllib.parse
import weakref
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from .._errors import RateLimitError, RateLimiterUnavailable
from ._config import Priority, RateLimit, RateLimitSnapshot, priority_rank
from ._state import GateState, Ticket, parse_rate_headers
from .local import BusinessRateGate

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

__all__ = ["RedisRateLimiter"]

logger = logging.getLogger("callscaler_async.ratelimit")

_US: Final = 1_000_000
# Handed to queued waiters instead of a slot when the gate switches to the local fallback.
_USE_LOCAL: Final = float("-inf")
# Socket timeouts of the client we create: the gate must never hang on Redis.
_SOCKET_TIMEOUT: Final = 2.0

# KEYS: schedule list, pause key. ARGV: n, limit, keep, period_us, margin_us, ttl_ms.
_RESERVE_LUA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
local period = tonumber(ARGV[4])
local margin = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local pause = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local raw = redis.call('LRANGE', KEYS[1], -limit, -1)
local log = {}
for i = 1, #raw do log[i] = tonumber(raw[i]) end
local waits = {}
for i = 1, n do
  local r = now
  if pause > r then r = pause end
  local m = #log
  if m > 0 and log[m] > r then r = log[m] end
  if m >= limit then
    local back = log[m - limit + 1] + period + margin
    if back > r then r = back end
  end
  log[m + 1] = r
  redis.call('RPUSH', KEYS[1], string.format('%.0f', r))
  waits[i] = r - now
end
redis.call('LTRIM', KEYS[1], -keep, -1)
local extra = 0
if pause > now then extra = math.floor((pause - now) / 1000) end
redis.call('PEXPIRE', KEYS[1], ttl + extra)
return waits
"""

# KEYS: schedule list, pause key. ARGV: wait_us, limit, period_us, ttl_ms.
# Sets pause_until = max(existing, now + wait) and merges ``limit`` phantom reservations
# spaced period/limit apart ending just before pause_until, so the next ``limit`` real
# reservations after the pause are staggered over one period. Phantom entries only ever make
# later reservations later (the merged list's k-th latest entry is never earlier than the
# real one), so the window guarantee holds. Returns pause_until - now (microseconds).
_PAUSE_LUA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local old = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local untilt = now + wait
if old > untilt then untilt = old end
local ms = math.floor((untilt - now) / 1000) + ttl
redis.call('SET', KEYS[2], string.format('%.0f', untilt), 'PX', ms)
local raw = redis.call('LRANGE', KEYS[1], -limit, -1)
local merged = {}
for i = 1, #raw do merged[#merged + 1] = tonumber(raw[i]) end
local step = math.floor(period / limit)
for i = 1, limit do
  merged[#merged + 1] = untilt - period + (i - 1) * step
end
table.sort(merged)
redis.call('DEL', KEYS[1])
local first = #merged - limit + 1
if first < 1 then first = 1 end
for i = first, #merged do
  redis.call('RPUSH', KEYS[1], string.format('%.0f', merged[i]))
end
redis.call('PEXPIRE', KEYS[1], ms)
return untilt - now
"""


def _import_redis() -> Any:
    try:
        import redis.asyncio as aioredis
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "RedisRateLimiter needs redis-py: pip install callscaler-async[redis]"
        ) from exc
    return aioredis


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        user = parts.username or ""
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "<unparseable redis URL>"


class _Unavailable(Exception):
    """Internal: Redis could not be reached (wraps the redis-py error)."""


class _Waiter:
    """One task queued at the gate; ``slot`` is the loop time it was handed (or None)."""

    __slots__ = ("fut", "rank")

    def __init__(self, fut: asyncio.Future[float], rank: int) -> None:
        self.fut = fut
        self.rank = rank


class RedisRateLimiter:
    """Paces every process of one business through a schedule kept in Redis.

    ``business`` names the budget (every process that shares it must use the same name,
    ``rate_limit`` and ``key_prefix``). Pass ``client`` to reuse a ``redis.asyncio.Redis``
    (not closed by ``aclose``); otherwise one is created from ``redis_url`` with short socket
    timeouts.

    >>> async def main() -> None:
    ...     gate = RedisRateLimiter("redis://localhost:6379/0", business="acme")
    ...     ticket = await gate.acquire()
    ...     gate.complete(ticket, status=200, headers={})
    ...     await gate.aclose()
    """

    def __init__(
        self,
        redis_url: str,
        *,
        business: str,
        rate_limit: RateLimit = RateLimit(60, 60.0),  # noqa: B008 - frozen, immutable
        key_prefix: str = "callscaler:rl:",
        fallback: Literal["error", "local"] = "error",
        latency_margin: float | None = None,
        client: aioredis.Redis | None = None,
    ) -> None:
        if fallback not in ("error", "local"):
            raise ValueError(f"fallback must be 'error' or 'local', got {fallback!r}")
        if not business:
            raise ValueError("business must be a non-empty name")
        period = rate_limit.period
        margin = latency_margin if latency_margin is not None else max(0.01, period / 200)
        if not margin >= 0:
            raise ValueError(f"latency_margin must be >= 0 seconds, got {latency_margin!r}")
        self._aioredis = _import_redis()
        self._url = redis_url
        self._safe_url = redact_url(redis_url)
        self._business = business
        self._rate_limit = rate_limit
        self._fallback = fallback
        self._margin = float(margin)
        self._margin_us = round(margin * _US)
        self._period_us = round(period * _US)
        self._ttl_ms = int(2 * period * 1000) + 1000
        self._log_key = f"{key_prefix}{{{business}}}:log"
        self._pause_key = f"{key_prefix}{{{business}}}:pause"
        self._own_client = client is None
        self._client: aioredis.Redis | None = client
        self._reserve_script: AsyncScript | None = None
        self._pause_script: AsyncScript | None = None
        self._state = GateState(rate_limit.requests, period)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._anchor_unix = 0.0
        self._anchor_loop = 0.0
        self._heap: list[tuple[int, int, _Waiter]] = []
        self._order = itertools.count()
        self._waiting = 0
        self._spare: list[float] = []  # reserved slots (loop time) no waiter took yet
        self._horizon = 0.0  # loop time of the latest slot handed out
        self._pump_task: asyncio.Task[None] | None = None
        self._pause_tasks: set[asyncio.Task[None]] = set()
        self._paused_until = 0.0  # loop time, from our own 429s
        self._local_gate: BusinessRateGate | None = None
        # Tickets issued by the local fallback gate (by id; dropped when the ticket dies).
        self._local_tickets: set[int] = set()
        self._sent: deque[float] = deque()  # our recent admissions (loop time)
        self._rtt_warned = False
        self._last_rtt_slow = False
        self._closed = False
        # Counters: Redis calls made, requests admitted, reserved slots left unused.
        self.redis_calls = 0
        self.slots_lost = 0
        self.requests_admitted = 0

    # ------------------------------------------------------------------ basics

    @property
    def name(self) -> str:
        return self._business

    @property
    def rate_limit(self) -> RateLimit:
        return self._rate_limit

    @property
    def state(self) -> GateState:
        return self._state

    @property
    def using_fallback(self) -> bool:
        """True once Redis failed and ``fallback="local"`` made this process pace alone."""
        return self._local_gate is not None

    def __repr__(self) -> str:
        return (
            f"RedisRateLimiter(url={self._safe_url!r}, business={self._business!r}, "
            f"requests={self._rate_limit.requests}, period={self._rate_limit.period})"
        )

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._anchor_unix = time.time()
            self._anchor_loop = loop.time()
        elif self._loop is not loop:
            raise RuntimeError(
                f"rate gate {self._business!r} belongs to another event loop; create the "
                "limiter inside the event loop that uses it (one limiter per loop)"
            )
        if self._closed:
            raise RuntimeError(f"rate gate {self._business!r} is closed")
        return loop

    def unix_now(self) -> float:
        assert self._loop is not None
        return self._anchor_unix + (self._loop.time() - self._anchor_loop)

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            # One retry: a pooled connection the server dropped (restart, idle timeout) is
            # reopened once. A retried reservation can only waste budget, never overspend it.
            self._client = self._aioredis.Redis.from_url(
                self._url,
                socket_timeout=_SOCKET_TIMEOUT,
                socket_connect_timeout=_SOCKET_TIMEOUT,
                retry=Retry(NoBackoff(), 1),
            )
        return self._client

    def _scripts(self) -> tuple[AsyncScript, AsyncScript]:
        if self._reserve_script is None or self._pause_script is None:
            client = self._redis()
            self._reserve_script = client.register_script(_RESERVE_LUA)
            self._pause_script = client.register_script(_PAUSE_LUA)
        return self._reserve_script, self._pause_script

    def _limit(self) -> int:
        return max(1, min(self._rate_limit.requests, self._state.limit))

    async def _call(self, which: Literal["reserve", "pause"], args: list[int]) -> Any:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        reserve, pause = self._scripts()
        script = reserve if which == "reserve" else pause
        self.redis_calls += 1
        try:
            return await script(keys=[self._log_key, self._pause_key], args=args)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise _Unavailable(f"{type(exc).__name__}: {exc}") from exc

    # ---------------------------------------------------------------- admission

    async def acquire(
        self, *, priority: Priority = "normal", max_wait: float | None = None
    ) -> Ticket:
        """Wait for a slot in the shared schedule; cancelling the caller returns at once."""
        loop = self._bind()
        rank = priority_rank(priority)
        if max_wait is not None and max_wait < 0:
            raise ValueError(f"max_wait must be >= 0 seconds, got {max_wait!r}")
        deadline = None if max_wait is None else loop.time() + max_wait
        while True:
            if self._local_gate is not None:
                return await self._acquire_local(priority, deadline, max_wait)
            slot = await self._wait_for_slot(loop, rank, deadline, max_wait)
            if slot is None:
                continue  # switched to the local fallback while waiting
            try:
                delay = slot - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            except BaseException:
                self._release(slot)
                raise
            now = loop.time()
            if now > slot + self._margin / 2 or slot < self._paused_until:
                # Woke too late to use the slot safely (blocked loop), or a 429 paused the
                # business meanwhile: reserve again.
                logger.debug(
                    "rate gate %s: slot %.3fs late or paused; reserving again",
                    self._business,
                    now - slot,
                )
                self.slots_lost += 1
                continue
            return self._admit(now)

    def _admit(self, now: float) -> Ticket:
        self.requests_admitted += 1
        sent = self._sent
        sent.append(now)
        horizon = now - self._rate_limit.period
        while sent and sent[0] <= horizon:
            sent.popleft()
        return self._state.admit(now)

    async def _wait_for_slot(
        self,
        loop: asyncio.AbstractEventLoop,
        rank: int,
        deadline: float | None,
        max_wait: float | None,
    ) -> float | None:
        """Queue until the pump hands us a slot (loop time); None: use the fallback."""
        fut: asyncio.Future[float] = loop.create_future()
        waiter = _Waiter(fut, rank)
        heapq.heappush(self._heap, (rank, next(self._order), waiter))
        self._waiting += 1
        self._kick()
        try:
            if deadline is None:
                slot = await fut
            else:
                try:
                    async with asyncio.timeout_at(deadline):
                        slot = await fut
                except TimeoutError:
                    now = loop.time()
                    raise self._too_long(self._estimate(now, rank), now, max_wait) from None
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._release(fut.result())  # handed a slot the instant we were cancelled
            else:
                fut.cancel()
            raise
        finally:
            self._waiting -= 1
        if slot == _USE_LOCAL:
            return None
        if deadline is not None and slot > deadline:
            self._release(slot)
            now = loop.time()
            raise self._too_long(slot, now, max_wait)
        return slot

    def _estimate(self, now: float, rank: int) -> float:
        ahead = sum(1 for r, _, w in self._heap if r <= rank and not w.fut.done())
        base = max(self._horizon, self._paused_until, now)
        return base + (ahead // self._limit()) * self._rate_limit.period

    def _too_long(self, estimate: float, now: float, max_wait: float | None) -> RateLimitError:
        wait = max(estimate - now, 0.0)
        return RateLimitError(
            f"the shared rate limit of business {self._business!r} allows the next request "
            f"in about {wait:.1f}s, longer than max_wait={max_wait:g}s",
            status=429,
            code="max_wait_exceeded",
            retry_after=wait,
            retry_at=estimate,
        )

    def _pop_waiter(self) -> _Waiter | None:
        heap = self._heap
        while heap:
            waiter = heapq.heappop(heap)[2]
            if not waiter.fut.done():
                return waiter
        return None

    def _live_waiters(self) -> int:
        return sum(1 for _, _, w in self._heap if not w.fut.done())

    def _release(self, slot: float) -> None:
        """A reserved slot nobody will use: hand it to the next waiter, else keep it."""
        loop = self._loop
        if loop is None or slot + self._margin / 2 < loop.time():
            self.slots_lost += 1
            return
        waiter = self._pop_waiter()
        if waiter is not None:
            waiter.fut.set_result(slot)
        else:
            heapq.heappush(self._spare, slot)

    def _use_spares(self) -> None:
        loop = self._loop
        assert loop is not None
        spare = self._spare
        limit = loop.time() - self._margin / 2
        while spare and self._heap:
            slot = heapq.heappop(spare)
            if slot < limit or slot < self._paused_until:
                self.slots_lost += 1
                continue
            waiter = self._pop_waiter()
            if waiter is None:
                heapq.heappush(spare, slot)
                break
            waiter.fut.set_result(slot)
        while spare and spare[0] < limit:
            heapq.heappop(spare)
            self.slots_lost += 1

    def _kick(self) -> None:
        self._use_spares()
        if self._pump_task is None and self._heap:
            assert self._loop is not None
            self._pump_task = self._loop.create_task(self._pump())

    async def _pump(self) -> None:
        """Reserve slots in batches for the local waiters: one Redis call in flight at most."""
        loop = self._loop
        assert loop is not None
        try:
            while not self._closed:
                self._use_spares()
                waiting = self._live_waiters()
                if not waiting or self._local_gate is not None:
                    return
                # Reserve the next batch only shortly before the current one is used up.
                lead = max(self._margin, 0.05 * self._rate_limit.period / self._limit())
                ahead = self._horizon - lead - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                    continue
                if self._pause_tasks:
                    # Our own 429 must reach Redis before we reserve past it.
                    await asyncio.gather(*self._pause_tasks, return_exceptions=True)
                waiting = self._live_waiters()
                if not waiting:
                    return
                limit = self._limit()
                k = min(waiting, limit)
                sent_at = loop.time()
                try:
                    waits = await self._call(
                        "reserve",
                        [
                            k,
                            limit,
                            max(limit, self._rate_limit.requests),
                            self._period_us,
                            self._margin_us,
                            self._ttl_ms,
                        ],
                    )
                except _Unavailable as exc:
                    self._on_unavailable(str(exc))
                    return
                now = loop.time()
                self._check_rtt(now - sent_at)
                slots = sorted(now + int(w) / _US for w in waits)
                for slot in slots:
                    waiter = self._pop_waiter()
                    if waiter is None:
                        heapq.heappush(self._spare, slot)
                    else:
                        waiter.fut.set_result(slot)
                if slots:
                    self._horizon = max(self._horizon, slots[-1])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never leave waiters hanging on a bug or a Redis error
            logger.exception("rate gate %s: the Redis pump failed", self._business)
            self._fail_waiters(
                RateLimiterUnavailable(
                    f"the Redis rate limiter of business {self._business!r} at "
                    f"{self._safe_url} failed: {type(exc).__name__}"
                )
            )
        finally:
            self._pump_task = None
            if not self._closed and self._live_waiters() and self._local_gate is None:
                # Waiters arrived while we were finishing up.
                self._pump_task = loop.create_task(self._pump())

    def _check_rtt(self, rtt: float) -> None:
        # A slot is mapped to our clock when the answer arrives, so it is late by at most
        # the answer's way back. Warn when round trips are slow twice in a row (the first
        # call of a connection also connects and loads the scripts).
        slow = rtt > self._margin / 2
        if slow and self._last_rtt_slow and not self._rtt_warned:
            self._rtt_warned = True
            logger.warning(
                "rate gate %s: Redis round trips take %.1f ms, more than half the latency "
                "margin (%.1f ms); raise latency_margin to keep the shared schedule exact",
                self._business,
                rtt * 1000,
                self._margin * 1000,
            )
        self._last_rtt_slow = slow

    def _fail_waiters(self, exc: BaseException) -> None:
        while (waiter := self._pop_waiter()) is not None:
            waiter.fut.set_exception(exc)

    def _on_unavailable(self, detail: str) -> None:
        if self._fallback == "error":
            self._fail_waiters(
                RateLimiterUnavailable(
                    f"cannot reach Redis at {self._safe_url} for the rate limit of business "
                    f"{self._business!r} ({detail}); pass fallback='local' to pace this "
                    "process alone when Redis is down"
                )
            )
            return
        self._start_fallback(detail)
        # Wake every queued waiter: acquire() loops and takes the local gate.
        while (waiter := self._pop_waiter()) is not None:
            waiter.fut.set_result(_USE_LOCAL)

    def _start_fallback(self, detail: str) -> None:
        if self._local_gate is not None:
            return
        loop = self._loop
        assert loop is not None
        logger.warning(
            "rate gate %s: cannot reach Redis at %s (%s); this process now paces the "
            "business alone with a local gate (other processes are not counted)",
            self._business,
            self._safe_url,
            detail,
        )
        gate = BusinessRateGate(self._rate_limit, name=self._business)
        gate._bind()
        # Seed it with our own sends of the last period, held as if answered now.
        now = loop.time()
        horizon = now - self._rate_limit.period
        state = gate.state
        for sent in self._sent:
            if sent > horizon:
                ticket = state.admit(now)
                state.complete(ticket, now, unix_now=gate.unix_now(), status=None)
        self._local_gate = gate

    async def _acquire_local(
        self, priority: Priority, deadline: float | None, max_wait: float | None
    ) -> Ticket:
        gate = self._local_gate
        assert gate is not None and self._loop is not None
        remaining = None if deadline is None else max(deadline - self._loop.time(), 0.0)
        try:
            ticket = await gate.acquire(priority=priority, max_wait=remaining)
        except RateLimitError as exc:
            if exc.code == "max_wait_exceeded" and max_wait is not None:
                exc.args = (
                    f"the rate limit of business {self._business!r} allows the next request "
                    f"in about {exc.retry_after or 0.0:.1f}s, longer than max_wait={max_wait:g}s",
                )
                exc.message = exc.args[0]
            raise
        self._local_tickets.add(id(ticket))
        weakref.finalize(ticket, self._local_tickets.discard, id(ticket))
        self.requests_admitted += 1
        return ticket

    # ----------------------------------------------------------------- feedback

    def complete(
        self,
        ticket: Ticket,
        *,
        status: int | None,
        headers: Mapping[str, str] | None,
        retry_after: float | None = None,
    ) -> None:
        loop = self._loop
        if loop is None or ticket.done:
            return
        if id(ticket) in self._local_tickets and self._local_gate is not None:
            self._local_gate.complete(
                ticket, status=status, headers=headers, retry_after=retry_after
            )
            return
        now = loop.time()
        reading = parse_rate_headers(headers) if headers else None
        paused = self._state.complete(
            ticket,
            now,
            unix_now=self.unix_now(),
            headers=reading,
            status=status,
            retry_after=retry_after,
        )
        if status == 429:
            wait = retry_after if retry_after is not None else self._rate_limit.period
            if paused is not None:
                self._paused_until = max(self._paused_until, paused)
            logger.info(
                "rate gate %s: the server answered 429; pausing every process of this "
                "business for %.2fs",
                self._business,
                wait,
            )
            if self._local_gate is None and not self._closed:
                task = loop.create_task(self._report_pause(wait))
                self._pause_tasks.add(task)
                task.add_done_callback(self._pause_tasks.discard)

    async def _report_pause(self, wait: float) -> None:
        limit = self._limit()
        try:
            left = await self._call(
                "pause", [max(round(wait * _US), 0), limit, self._period_us, self._ttl_ms]
            )
        except _Unavailable as exc:
            logger.warning(
                "rate gate %s: could not share a 429 pause through Redis at %s (%s)",
                self._business,
                self._safe_url,
                exc,
            )
            return
        assert self._loop is not None
        self._paused_until = max(self._paused_until, self._loop.time() + int(left) / _US)

    def abandon(self, ticket: Ticket) -> None:
        """The admitted request was never sent (its reserved slot is simply unused)."""
        if id(ticket) in self._local_tickets and self._local_gate is not None:
            self._local_gate.abandon(ticket)
            return
        self._state.abandon(ticket)

    # ----------------------------------------------------------------- reading

    def snapshot(self) -> RateLimitSnapshot:
        if self._local_gate is not None:
            local = self._local_gate.snapshot()
            state = self._state
            return attrs.evolve(
                local,
                limit=local.limit if local.limit is not None else state.server_limit,
                remaining=local.remaining if local.remaining is not None else state.remaining,
                waiting=local.waiting + self._waiting,
                in_flight=local.in_flight + state.in_flight,
                rate_limited=local.rate_limited + state.rate_limited,
            )
        state = self._state
        loop = self._loop
        paused = None
        if loop is not None and self._paused_until > loop.time():
            unix = self.unix_now() + (self._paused_until - loop.time())
            paused = dt.datetime.fromtimestamp(unix, tz=dt.UTC)
        reset = (
            dt.datetime.fromtimestamp(state.reset_unix, tz=dt.UTC)
            if state.reset_unix is not None
            else None
        )
        return RateLimitSnapshot(
            limit=state.server_limit,
            remaining=state.remaining,
            reset_at=reset,
            paused_until=paused,
            waiting=self._waiting,
            in_flight=state.in_flight,
            foreign=state.foreign,
            probing=state.probing,
            rate_limited=state.rate_limited,
        )

    # ------------------------------------------------------------------ closing

    async def aclose(self) -> None:
        """Stop the pump and close the Redis client if this limiter created it."""
        if self._closed:
            return
        self._closed = True
        task = self._pump_task
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._fail_waiters(RuntimeError(f"rate gate {self._business!r} was closed"))
        for pending in list(self._pause_tasks):
            try:
                await pending
            except Exception:  # pragma: no cover - logged inside
                pass
        client = self._client
        if client is not None and self._own_client:
            self._client = None
            await client.aclose()

    async def __aenter__(self) -> RedisRateLimiter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
