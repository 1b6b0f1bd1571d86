"""The in-process business rate gate: one per business per event loop.

Tasks queue at the gate in priority order (``high`` before ``normal`` before ``low``, first
come first served within a priority); one timer wakes the queue when the state in
``_state.GateState`` says a slot frees. Nothing polls: N waiting tasks cost one timer.

Why aiolimiter is not the main pacer: a leaky bucket that lets a burst of ``N`` through
(capacity ``N``) and drains at ``N / P`` admits ``2N - 1`` in some window of ``P`` (so
``AsyncLimiter(60, 60)`` allows 119 a minute), and one that is window-safe
(capacity ``b``, drain ``r`` with ``b + r·P <= N``) cannot use the budget's bursts. The sliding
ledger of ``GateState`` is exact. aiolimiter paces where a leaky bucket is the right shape:
the staggered restart after a 429 pause, configured as ``AsyncLimiter(1, P / (N - 1))``
(at most ``1 + (N - 1) = N`` admissions in any window of ``P``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import heapq
import itertools
import logging
import random
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from .. import _loops
from .._errors import RateLimitError
from ._config import Priority, RateLimit, RateLimitSnapshot, priority_rank
from ._state import GateState, HeaderReading, Ticket, parse_rate_headers

if TYPE_CHECKING:
    # Imported where a pause begins: aiolimiter's __init__ reads its own version through
    # importlib.metadata (~7 ms at import), and most processes never see a 429.
    from aiolimiter import AsyncLimiter

__all__ = ["BusinessRateGate", "business_key", "gate_for", "max_wait_refusal"]

logger = logging.getLogger("callscaler_async.ratelimit")


def business_key(api_key: str, origin: str | None = None) -> str:
    """A stable, secret-free name for the business behind a key (when none is given).

    With ``origin`` (scheme, host and port of the API) the same key used against two
    servers (a sandbox and production, two fakes in one test run) names two businesses:
    each server counts its own budget, and a 429 from one must not pause the other.
    """
    material = api_key if origin is None else f"{api_key}\n{origin}"
    digest = hashlib.sha256(material.encode()).hexdigest()[:16]
    return f"key-{digest}"


def max_wait_refusal(
    business: str,
    *,
    wait: float,
    max_wait: float | None,
    waited: float,
    retry_at: float,
    shared: bool = False,
) -> RateLimitError:
    """The local refusal of a request that would wait longer than ``max_wait`` at the gate.

    No request was sent, so the message says so (it is not the API's 429). ``wait`` is how
    much longer from now the next slot is expected, ``waited`` how long this request had
    already queued: refused up front (``waited`` 0) the wait exceeds ``max_wait``; refused at
    the deadline, the wait so far is ``max_wait`` and ``wait`` comes on top of it.
    """
    wait = max(wait, 0.0)
    gate = "shared rate gate" if shared else "rate gate"
    limit = f"max_wait={max_wait:g}s" if max_wait is not None else "max_wait"
    if waited > 0:
        detail = (
            f"waited {waited:.1f}s ({limit}) at the {gate} of business {business!r} and the "
            f"next slot is expected in about {wait:.1f}s more"
        )
    else:
        detail = (
            f"the {gate} of business {business!r} expects the next slot in about {wait:.1f}s, "
            f"longer than {limit}"
        )
    return RateLimitError(
        f"refused locally, no request sent to the API: {detail}",
        status=429,
        code="max_wait_exceeded",
        retry_after=wait,
        retry_at=retry_at,
    )


class BusinessRateGate:
    """Admits the requests of one business so the server never answers 429.

    Shared by every client of the business in this event loop (see ``gate_for``).

    >>> async def main() -> None:
    ...     gate = BusinessRateGate(RateLimit(requests=60, period=60.0), name="acme")
    ...     ticket = await gate.acquire()
    ...     gate.complete(ticket, status=200, headers={})
    """

    def __init__(
        self,
        rate_limit: RateLimit,
        *,
        name: str,
        wall_clock: Callable[[], float] | None = None,
        pause_jitter: float | None = None,
    ) -> None:
        self._rate_limit = rate_limit
        self._name = name
        self._state = GateState(rate_limit.requests, rate_limit.period)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_binding = -1  # set with _loop (see _loops.bind)
        self._wall_clock = wall_clock
        self._anchor_unix = 0.0
        self._anchor_loop = 0.0
        self._heap: list[tuple[int, int, asyncio.Future[Ticket]]] = []
        self._order = itertools.count()
        self._waiting = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._pause_jitter = (
            pause_jitter if pause_jitter is not None else min(1.0, rate_limit.period / 60)
        )
        self._stagger_until = 0.0
        self._restart_pacer: AsyncLimiter | None = None
        self._foreign_watch = ForeignShareWatch(name, rate_limit.period)
        self._share = rate_limit.requests if rate_limit.share else None
        self._server_view: HeaderReading | None = None  # latest headers, when a share
        self.requests_admitted = 0

    # ------------------------------------------------------------------ basics

    @property
    def name(self) -> str:
        return self._name

    @property
    def rate_limit(self) -> RateLimit:
        return self._rate_limit

    @property
    def state(self) -> GateState:
        return self._state

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = _loops.running_loop_for(f"rate gate {self._name!r}", self._loop)
        if self._loop is None:
            self._loop = loop
            self._loop_binding = _loops.bind(loop)
            self._anchor_unix = time.time()
            self._anchor_loop = loop.time()
        return loop

    def unix_now(self) -> float:
        """Unix time, anchored to the loop clock (monotonic; virtual under looptime)."""
        return self._unix_at(None)

    def _unix_at(self, now: float | None) -> float:
        """Unix time at loop time ``now`` (None: the loop's current time); the wall clock's
        reading when one was given."""
        if self._wall_clock is not None:
            return self._wall_clock()
        if now is None:
            assert self._loop is not None
            now = self._loop.time()
        return self._anchor_unix + (now - self._anchor_loop)

    # ---------------------------------------------------------------- admission

    def try_acquire(self) -> Ticket | None:
        """Admit at once when nobody waits and a slot is free; else None (``await acquire``).

        The transport's fast path: no coroutine, no future, no timer when budget is free.
        """
        loop = self._loop
        if loop is None or not _loops.is_running(loop, self._loop_binding):
            loop = self._bind()  # first use, or the wrong loop (raises)
        now = loop.time()
        if self._heap or now < self._stagger_until:
            return None
        if self._state.capacity(now) <= 0:
            return None
        return self._admit(now)

    async def acquire(
        self, *, priority: Priority = "normal", max_wait: float | None = None
    ) -> Ticket:
        """Wait for a slot. Cancelling the caller cancels the wait and gives the slot back."""
        loop = self._bind()
        rank = priority_rank(priority)
        if max_wait is not None and max_wait < 0:
            raise ValueError(f"max_wait must be >= 0 seconds, got {max_wait!r}")
        admitted = self.try_acquire()
        if admitted is not None:
            return admitted
        now = loop.time()
        if max_wait is not None:
            estimate = self._estimate_ready(now, rank)
            if estimate is not None and estimate - now > max_wait:
                raise self._too_long(estimate, now, max_wait, waited=0.0)
        fut: asyncio.Future[Ticket] = loop.create_future()
        heapq.heappush(self._heap, (rank, next(self._order), fut))
        self._waiting += 1
        if logger.isEnabledFor(logging.DEBUG):
            ready = self._state.next_time(now)
            logger.debug(
                "rate gate %s: queued (priority %s, %d waiting, next slot in %s)",
                self._name,
                priority,
                self._waiting,
                "an answer" if ready is None else f"{max(ready - now, 0.0):.3f}s",
            )
        self._pump()
        try:
            if max_wait is None:
                ticket = await fut
            else:
                try:
                    async with asyncio.timeout(max_wait):
                        ticket = await fut
                except TimeoutError:
                    now = loop.time()
                    estimate = self._estimate_ready(now, rank) or now + self._rate_limit.period
                    raise self._too_long(estimate, now, max_wait, waited=max_wait) from None
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # Admitted in the same instant we were cancelled: hand the slot back.
                self._state.abandon(fut.result())
            else:
                fut.cancel()
            self._pump()
            raise
        finally:
            self._waiting -= 1
        return ticket

    def _admit(self, now: float) -> Ticket:
        self.requests_admitted += 1
        return self._state.admit(now)

    def _estimate_ready(self, now: float, rank: int) -> float | None:
        ready = self._state.next_time(now)
        if ready is None:
            return None
        ahead = sum(1 for r, _, f in self._heap if r <= rank and not f.done())
        return ready + (ahead // self._state.limit) * self._rate_limit.period

    def _too_long(
        self, estimate: float, now: float, max_wait: float, *, waited: float
    ) -> RateLimitError:
        return max_wait_refusal(
            self._name, wait=estimate - now, max_wait=max_wait, waited=waited, retry_at=estimate
        )

    def _pump(self) -> None:
        loop = self._loop
        if loop is None or not self._heap:
            return  # nobody waits (a pending timer finds the same and does nothing)
        now = loop.time()
        heap = self._heap
        state = self._state
        pacer = self._restart_pacer if now < self._stagger_until else None
        paced_until: float | None = None
        while heap:
            fut = heap[0][2]
            if fut.done():
                heapq.heappop(heap)
                continue
            if state.capacity(now) <= 0:
                break
            if pacer is not None and not _take_now(pacer):
                # Restarting after a 429 pause: one admission per pacer slot, so the
                # waiters that piled up during the pause do not all go in one instant.
                paced_until = now + pacer.time_period / pacer.max_rate
                break
            heapq.heappop(heap)
            fut.set_result(self._admit(now))
        # Drop cancelled waiters so the heap does not grow with them.
        while heap and heap[0][2].done():
            heapq.heappop(heap)
        if not heap:
            return
        ready = paced_until if paced_until is not None else state.next_time(now)
        if ready is None:
            return  # an answer will call _pump
        if self._timer is not None:
            if now < self._timer_at <= ready:
                return
            self._timer.cancel()
        self._timer_at = max(ready, now)
        self._timer = loop.call_at(self._timer_at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

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
        now = loop.time()
        reading = parse_rate_headers(headers) if headers else None
        if (
            self._share is not None
            and reading is not None
            and reading.limit is not None
            and reading.limit > self._share
        ):
            # A share of the business's budget (CALLSCALER_WORKERS, a rate_limit divided by
            # hand): the server's Remaining and Reset count the other shares' requests too.
            # Read as ours they would let this process spend its neighbours' budget (all of
            # them the same Remaining at once) and hold their spending against ours. The
            # sliding ledger of the share alone keeps every window within the sum of shares.
            self._server_view = reading  # still shown by snapshot(): the server's word
            reading = reading._replace(remaining=None, reset_unix=None)
        state = self._state
        was_paused_until = state.paused_until
        if status == 429:
            wait = retry_after if retry_after is not None else self._rate_limit.period
            retry_after = wait + random.uniform(0.0, self._pause_jitter)
        paused = state.complete(ticket, now, self._unix_at(now), reading, status, retry_after)
        if paused is not None and paused > was_paused_until:
            self._begin_pause(now, paused)
        if state.foreign or self._foreign_watch.since is not None:
            self._foreign_watch.observe(now, state.foreign)
        if self._heap:
            self._pump()

    def _begin_pause(self, now: float, until: float) -> None:
        limit = self._state.limit
        period = self._rate_limit.period
        self._stagger_until = until + period
        from aiolimiter import AsyncLimiter

        self._restart_pacer = AsyncLimiter(1, period / max(limit - 1, 1))
        logger.info(
            "rate gate %s: the server answered 429; pausing every request of this business "
            "for %.2fs, then releasing them staggered",
            self._name,
            until - now,
        )

    def abandon(self, ticket: Ticket) -> None:
        self._state.abandon(ticket)
        self._pump()

    # ----------------------------------------------------------------- reading

    def snapshot(self) -> RateLimitSnapshot:
        state = self._state
        loop = self._loop

        def to_datetime(loop_time: float | None) -> dt.datetime | None:
            if loop_time is None or loop is None:
                return None
            unix = self.unix_now() + (loop_time - loop.time())
            return dt.datetime.fromtimestamp(unix, tz=dt.UTC)

        paused = None
        if loop is not None and state.paused_until > loop.time():
            paused = to_datetime(state.paused_until)
        limit, remaining, reset_unix = state.server_limit, state.remaining, state.reset_unix
        view = self._server_view
        if view is not None:
            limit, remaining, reset_unix = view.limit, view.remaining, view.reset_unix
        reset = dt.datetime.fromtimestamp(reset_unix, tz=dt.UTC) if reset_unix is not None else None
        return RateLimitSnapshot(
            limit=limit,
            remaining=remaining,
            reset_at=reset,
            paused_until=paused,
            waiting=self._waiting,
            in_flight=state.in_flight,
            foreign=state.foreign,
            probing=state.probing,
            rate_limited=state.rate_limited,
        )

    def __repr__(self) -> str:
        return (
            f"BusinessRateGate(name={self._name!r}, requests={self._rate_limit.requests}, "
            f"period={self._rate_limit.period})"
        )


class ForeignShareWatch:
    """Says once, at WARNING, that someone else keeps spending this business's budget.

    The gate's state measures the foreign share (what the server counts beyond our own
    requests) and holds it as occupied, so the gate stays safe by itself; but each process
    then waits for the others' requests and they all earn 429s at the edges, which are
    logged only at INFO. The usual cause is several processes of one app (``uvicorn
    --workers``, gunicorn) each pacing the same key alone.

    Steadily: every answer for more than ``2.5`` periods showed a foreign share. A sighting
    is held for a period, and a process restarted while its predecessor's requests were still
    counted sees them for at most one period (they age out), so a restart shows a foreign
    share for at most two periods and does not warn. After a 429 a sighting is held for three
    periods: then someone else did spend the budget, and the warning is due.
    """

    __slots__ = ("_name", "_period", "_seen", "since", "warned")

    def __init__(self, name: str, period: float) -> None:
        self._name = name
        self._period = period
        self.since: float | None = None  # loop time of the first answer of the current run
        self._seen = 0  # answers of the current run
        self.warned = False

    def observe(self, now: float, foreign: int) -> None:
        if not foreign:
            self.since = None
            self._seen = 0
            return
        if self.since is None:
            self.since = now
        self._seen += 1
        if self.warned or self._seen < 3 or now - self.since < 2.5 * self._period:
            return
        self.warned = True
        logger.warning(
            "rate gate %s: for %.0fs the API has counted requests of this business that were "
            "not sent by this process (%d in the latest answer): likely several processes of "
            "this app (uvicorn or gunicorn --workers) each pacing the budget alone, so they "
            "wait for each other and earn 429s. Share one budget through Redis "
            "(CALLSCALER_REDIS_URL with CallScalerClients, or rate_limiter='redis://...'), "
            "or give each process a static share (CALLSCALER_WORKERS=N, or a rate_limit "
            "divided by N)",
            self._name,
            now - self.since,
            foreign,
        )


def _take_now(limiter: AsyncLimiter) -> bool:
    """Take one unit of ``limiter`` if it has capacity right now, without awaiting."""
    if not limiter.has_capacity():
        return False
    acquiring = limiter.acquire()
    try:
        acquiring.send(None)  # with capacity, acquire() completes without suspending
    except StopIteration:
        return True
    acquiring.close()  # pragma: no cover - capacity was checked in the same instant
    return False


_registry: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, BusinessRateGate]] = (
    weakref.WeakKeyDictionary()
)


def gate_for(business: str, rate_limit: RateLimit) -> BusinessRateGate:
    """The one gate of ``business`` in the running event loop, created on first use.

    Clients of the same business share it; clients of different businesses never block
    each other. A second client asking for the same business with a different limit is an
    error, not a silent override.
    """
    loop = asyncio.get_running_loop()
    gates = _registry.setdefault(loop, {})
    gate = gates.get(business)
    if gate is None:
        gate = gates[business] = BusinessRateGate(rate_limit, name=business)
    elif gate.rate_limit != rate_limit:
        raise ValueError(
            f"business {business!r} already has a rate gate with {gate.rate_limit}; "
            f"a client asked for {rate_limit}. Clients of one business must agree on its limit."
        )
    return gate
