"""The business gate against simulated servers of all four window algorithms.

No sockets here: a request is a sleep to the server, a decision by the server's limiter (the
same limiter classes the fake API uses), and a sleep back. Virtual time (looptime) makes a
hundred windows take milliseconds, so these tests run many windows and many tasks.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
from fractions import Fraction

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from callscaler_async.ratelimit import BusinessRateGate, RateLimit
from callscaler_async.ratelimit._state import (
    GateState,
    HeaderReading,
    Ticket,
    parse_rate_headers,
    staircase_releases,
)
from callscaler_async.testing._ratelimit import make_limiter

ALGORITHMS = ["fixed", "sliding", "bucket", "counter"]
ANCHOR = 1_790_000_001.25  # not a multiple of the period: windows start mid-way
# Start phases of the server's aligned 3 s window: just after a boundary, half-way, just before.
PHASES = [0.02, 0.5, 0.97]


def anchor_at(phase: float, period: float = 3.0) -> float:
    return 596_000_000 * period + phase * period


def server_minimum(algorithm: str, n: int, limit: int, period: float, phase: float) -> float:
    """Seconds between the first and the n-th admission the server's algorithm allows, from
    a full budget at ``phase`` of its aligned window."""
    if n <= limit:
        return 0.0
    if algorithm == "bucket":
        return (n - limit) * period / limit
    if algorithm == "fixed":
        return (1 - phase) * period + (math.ceil(n / limit) - 2) * period
    if algorithm == "counter":
        return (1 - phase) * period + (n - limit - 1) * period / limit
    return (math.ceil(n / limit) - 1) * period


class SimServer:
    def __init__(
        self,
        algorithm: str,
        limit: int,
        period: float,
        *,
        latency: float = 0.01,
        jitter: float = 0.0,
        anchor: float = ANCHOR,
    ) -> None:
        self.anchor = anchor
        self.limiter = make_limiter(algorithm, limit, period)
        self.limit = limit
        self.latency = latency
        self.jitter = jitter
        self.served = 0
        self.rejected = 0
        self.rng = random.Random(7)
        self.admit_times: list[float] = []

    def now(self) -> float:
        return self.anchor + asyncio.get_running_loop().time()

    def headers(self, now: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.limiter.remaining(now)),
            "X-RateLimit-Reset": str(math.ceil(self.limiter.reset(now))),
            "Date": email.utils.formatdate(now, usegmt=True),
        }

    async def call(self, gate: BusinessRateGate) -> int:
        ticket = await gate.acquire()
        one_way = self.latency + self.rng.uniform(0, self.jitter)
        await asyncio.sleep(one_way)
        now = self.now()
        if self.limiter.try_acquire(now):
            status = 200
            self.served += 1
            self.admit_times.append(now)
            headers = self.headers(now)
            retry_after = None
        else:
            status = 429
            self.rejected += 1
            retry_after = max(1, math.ceil(self.limiter.retry_after(now)))
            headers = {**self.headers(now), "Retry-After": str(retry_after)}
        await asyncio.sleep(self.latency + self.rng.uniform(0, self.jitter))
        gate.complete(ticket, status=status, headers=headers, retry_after=retry_after)
        return status

    async def foreign(self, n: int) -> int:
        """Another consumer of the same business spending n requests at once."""
        spent = 0
        for _ in range(n):
            spent += self.limiter.try_acquire(self.now())
        return spent


def make_gate(limit: int = 60, period: float = 3.0) -> BusinessRateGate:
    loop = asyncio.get_running_loop()
    return BusinessRateGate(
        RateLimit(requests=limit, period=period),
        name="sim",
        wall_clock=lambda: ANCHOR + loop.time(),
    )


async def run_workers(server: SimServer, gate: BusinessRateGate, tasks: int, total: int) -> None:
    queue = iter(range(total))

    async def worker() -> None:
        for _ in queue:
            status = await server.call(gate)
            while status == 429:  # a retry, as the transport would do
                status = await server.call(gate)

    await asyncio.gather(*(worker() for _ in range(tasks)))


@pytest.mark.looptime
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("tasks", [1, 50, 1000])
async def test_no_429_over_many_windows(algorithm: str, tasks: int, phase: float) -> None:
    server = SimServer(algorithm, 60, 3.0, latency=0.01, jitter=0.005, anchor=anchor_at(phase))
    gate = make_gate_at(anchor_at(phase))
    loop = asyncio.get_running_loop()
    start = loop.time()
    await run_workers(server, gate, tasks, 600)
    elapsed = loop.time() - start
    assert server.rejected == 0
    assert server.served == 600
    # 600 requests at 60 per 3 s: at least the server's own minimum after the first burst.
    minimum = server_minimum(algorithm, 600, 60, 3.0, phase)
    assert elapsed >= minimum - 3.0
    if tasks > 1:
        # (A sliding log's bursts can fragment: our answered slots fade over a second period
        # in case the server is a counter, so they free at a probe's answer, not on time.)
        assert elapsed <= minimum * 1.15 + 1.0, elapsed


@pytest.mark.looptime
async def test_fixed_window_early_reset_is_used_once_clocks_are_known() -> None:
    """A fixed window restores the budget at its Reset; the probe there finds it at once.

    The probe waits for Reset under the least favourable clock offset the Date headers
    allow; answers that straddle a second boundary pin the offset, after which the probe
    goes right at the Reset.
    """
    server = SimServer("fixed", 60, 3.0, latency=0.005)
    gate = make_gate()
    loop = asyncio.get_running_loop()
    for _ in range(12):  # a trickle across a second boundary: the offset becomes known
        await server.call(gate)
        await asyncio.sleep(0.1)
    assert gate.state._skew_hi - gate.state._skew_lo < 0.15
    start = loop.time()
    await run_workers(server, gate, 60, 600)
    elapsed = loop.time() - start
    assert server.rejected == 0
    # A sliding-only client needs 10 more periods here (the 12 warm-up requests hold slots);
    # with the probe each burst goes at the window boundary instead.
    assert elapsed < 10 * 3.0 - 0.5, elapsed


@pytest.mark.looptime
@pytest.mark.parametrize("algorithm", ["sliding", "bucket", "counter"])
async def test_probe_at_reset_is_safe_on_other_algorithms(algorithm: str) -> None:
    server = SimServer(algorithm, 60, 3.0, latency=0.005)
    gate = make_gate()
    await run_workers(server, gate, 60, 600)
    assert server.rejected == 0
    assert gate.state.probing


@pytest.mark.looptime
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_foreign_consumer_is_learned_from_headers(algorithm: str, phase: float) -> None:
    server = SimServer(algorithm, 60, 3.0, latency=0.01, anchor=anchor_at(phase))
    gate = make_gate_at(anchor_at(phase))
    await run_workers(server, gate, 20, 30)
    # Someone else spends a quarter of the budget behind our back, steadily.
    stop = asyncio.Event()

    async def other_key() -> None:
        while not stop.is_set():
            await server.foreign(1)
            await asyncio.sleep(0.2)

    spender = asyncio.create_task(other_key())
    await run_workers(server, gate, 20, 300)
    stop.set()
    await spender
    # The gate learns the other consumer only from answers: after a quiet spell it sends a
    # few scouts before the rest, and holds the largest share it saw. A consumer that keeps
    # spending after our last look can still collide now and then: at most a few percent.
    assert server.rejected <= 10, server.rejected


@pytest.mark.looptime
async def test_a_429_pauses_everyone_once() -> None:
    limit, period = 60, 3.0
    gate = make_gate(limit, period)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tickets = [await gate.acquire() for _ in range(5)]
    gate.complete(tickets[0], status=429, headers={}, retry_after=2.0)
    for t in tickets[1:]:
        gate.complete(t, status=200, headers={})
    assert gate.state.pauses == 1
    admitted: list[float] = []

    async def one() -> None:
        ticket = await gate.acquire()
        admitted.append(loop.time())
        gate.complete(ticket, status=200, headers={})

    await asyncio.gather(*(one() for _ in range(10)))
    assert min(admitted) >= t0 + 2.0
    # Released staggered, not all at one instant.
    assert len(set(admitted)) > 1
    assert gate.state.pauses == 1


@pytest.mark.looptime
async def test_cancelled_waiter_gives_its_place_back() -> None:
    gate = make_gate(2, 3.0)
    first = [await gate.acquire() for _ in range(2)]
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0.1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    for t in first:
        gate.complete(t, status=200, headers={})
    assert gate.snapshot().waiting == 0
    # Both slots come back; nothing was leaked to the cancelled waiter. (Without a Reset
    # header an answer's slot fades over the second period after it: a sliding-window
    # counter may still weigh it. The second slot is whole again 1.5 periods later.)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    again = [await gate.acquire() for _ in range(2)]
    assert loop.time() - t0 <= 1.5 * 3.0 + 0.01
    assert gate.state.in_flight == 2
    for t in again:
        gate.abandon(t)
    assert gate.state.in_flight == 0


@pytest.mark.looptime
async def test_max_wait_raises_rate_limit_error_with_retry_at() -> None:
    from callscaler_async import RateLimitError

    gate = make_gate(2, 60.0)
    held = [await gate.acquire() for _ in range(2)]
    for t in held:
        gate.complete(t, status=200, headers={})
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(RateLimitError) as info:
        await gate.acquire(max_wait=1.0)
    assert loop.time() - t0 < 1.0 + 1e-9  # raised at once, not after waiting
    assert info.value.retry_at is not None and info.value.retry_at >= t0 + 59.0


@pytest.mark.looptime
async def test_high_priority_goes_before_low() -> None:
    gate = make_gate(1, 1.0)
    held = await gate.acquire()
    order: list[str] = []

    async def take(priority: str) -> None:
        ticket = await gate.acquire(priority=priority)  # type: ignore[arg-type]
        order.append(priority)
        gate.complete(ticket, status=200, headers={})

    lows = [asyncio.create_task(take("low")) for _ in range(3)]
    await asyncio.sleep(0)
    high = asyncio.create_task(take("high"))
    await asyncio.sleep(0)
    gate.complete(held, status=200, headers={})
    await asyncio.gather(*lows, high)
    assert order[0] == "high"


def test_state_is_exact_without_a_loop() -> None:
    """The sans-I/O core with plain numbers: N per P, never more, in any window."""
    state = GateState(3, 10.0)
    sends: list[float] = []
    now = 0.0
    for _ in range(12):
        at = state.next_time(now)
        assert at is not None
        now = at
        ticket = state.admit(now)
        sends.append(now)
        state.complete(ticket, now + 0.5, unix_now=ANCHOR + now + 0.5)
    for i, t in enumerate(sends):
        in_window = [s for s in sends if t <= s < t + 10.0]
        assert len(in_window) <= 3, (i, in_window)


def test_headers_are_parsed_leniently() -> None:
    reading = parse_rate_headers(
        {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "-3", "X-RateLimit-Reset": "soon"}
    )
    assert reading.limit == 60 and reading.remaining == 0 and reading.reset_unix is None
    assert parse_rate_headers({}).limit is None


async def test_absurdly_large_header_values_count_as_absent() -> None:
    # A 400-digit number parses as an int but not as a float: it once escaped complete()
    # as an OverflowError and left the request in flight for good (its slot lost).
    huge = "1" * 400
    headers = {"X-RateLimit-Limit": huge, "X-RateLimit-Remaining": huge, "X-RateLimit-Reset": huge}
    reading = parse_rate_headers(headers)
    assert (reading.limit, reading.remaining, reading.reset_unix) == (None, None, None)
    assert parse_rate_headers({"X-RateLimit-Reset": "1e400"}).reset_unix is None
    gate = make_gate()
    ticket = gate.try_acquire()
    assert ticket is not None
    gate.complete(ticket, status=200, headers=headers)
    assert ticket.done and gate.state.in_flight == 0


def test_headers_are_found_in_any_case_in_aiohttp_headers() -> None:
    headers = CIMultiDictProxy(
        CIMultiDict(
            {"x-ratelimit-limit": "60", "X-RATELIMIT-REMAINING": "7", "x-RateLimit-Reset": "100"}
        )
    )
    reading = parse_rate_headers(headers)
    assert (reading.limit, reading.remaining, reading.reset_unix) == (60, 7, 100.0)


def test_header_authority_counts_only_answers_that_arrived_after_the_send() -> None:
    """Remaining speaks for the requests the server had counted when it answered: ours
    answered before the send are in it; those in flight and answered meanwhile may not be."""
    state = GateState(10, 60.0)
    # No Reset header: no probe and no calibration shot to take budget aside.
    answer = HeaderReading(limit=10, remaining=6, reset_unix=None, date_unix=U + 2.0)
    early = state.admit(0.0)
    state.complete(early, 0.1, unix_now=U + 0.1)  # answered before the next ones were sent
    slow, fast = state.admit(1.0), state.admit(1.0)
    state.complete(fast, 1.2, unix_now=U + 1.2)  # answered while `slow` was on its way
    last = state.admit(1.5)
    # `slow` answers with Remaining 6: what the server would admit besides `last` (in
    # flight) and `fast` (answered after `slow` was sent: the server may not have counted it).
    state.complete(slow, 2.0, unix_now=U + 2.0, headers=answer)
    assert state._obs_uncounted == 2
    # Ledger: 10 - 1 in flight - 3 answered = 6; header: 6 - 2 = 4. The ledger rules.
    assert state.capacity(2.0) == 6
    state.complete(last, 2.5, unix_now=U + 2.5, headers=answer)
    # Of ours, only `slow` answered while `last` was on its way; nothing is in flight.
    assert state._obs_uncounted == 1
    assert state.capacity(2.5) == 6  # 10 - 4 answered; the header says 6 - 1


def test_exact_rates() -> None:
    # The scaled limit used in tests has exact arithmetic: 60 per 3 s is 20 per second.
    assert Fraction(60) / Fraction(3) == 20


# ------------------------------------------------------------------ calibration shots

U = 1_000_000.0  # Unix time minus loop time in the sans-I/O tests (dyadic: exact floats)
RTT = 1 / 128


def reading(remaining: int, reset: float, date: float, limit: int = 4) -> HeaderReading:
    return HeaderReading(limit=limit, remaining=remaining, reset_unix=reset, date_unix=date)


def test_shot_pins_the_clock_offset_and_brings_the_probe_forward() -> None:
    """A fixed window of 4 per 4 s on a server whose clock agrees with ours.

    The first answer comes 0.75 s into a second: ``Date`` says only that the offset lies in
    [-0.758, 0.25], so the probe would wait until 0.76 s after Reset, later than our own
    slots free. One request of the burst is held back and sent just after the server's next
    second boundary; its answer pins the offset and the probe goes right at Reset.
    """
    state = GateState(4, 4.0, reset_margin=1 / 64)
    reset = U + 8.0  # the window is [U + 4, U + 8) on the server's clock
    now = 4.75
    first = state.admit(now)
    now += RTT
    state.complete(first, now, unix_now=U + now, headers=reading(3, reset, U + 4.0), status=200)
    assert (state._skew_lo, state._skew_hi) == (-0.7578125, 0.25)
    # The ledger grants 3; one is held for the shot, aimed at the boundary U + 5 under the
    # tested offset -1/64 (just below zero), at our U + 5.015625.
    assert state.capacity(now) == 2
    burst = [state.admit(now), state.admit(now)]
    assert state.capacity(now) == 0
    assert state.next_time(now) == 5.015625
    now += RTT
    for ticket, left in zip(burst, [2, 1], strict=True):
        state.complete(ticket, now, unix_now=U + now, headers=reading(left, reset, U + 4.0))
    now = 5.015625
    assert state.capacity(now) == 1
    shot = state.admit(now)
    assert state.shots == 1
    now += RTT
    # The server's clock read U + 5 already: the offset is at least -1/64 - RTT.
    state.complete(shot, now, unix_now=U + now, headers=reading(0, reset, U + 5.0), status=200)
    assert state._skew_lo == -0.0234375
    assert state.capacity(now) == 0
    # The probe goes at Reset under that offset (plus the margin): 8.0390625, not 8.7734375,
    # which is after the first slot frees by the ledger (4.7578125 + 4).
    assert state.next_time(now) == 8 - state._skew_lo + 1 / 64 == 8.0390625
    assert state.rate_limited == 0


def test_shot_that_lands_early_lowers_the_upper_bound() -> None:
    """Same first answer, but the server's clock is half a second behind ours.

    The gate cannot tell this from the previous test until the shot: sent at our U + 5.016,
    it reaches the server at its U + 4.516, whose Date (U + 4) lowers the upper bound to the
    offset tested; the lower bound stays.
    """
    state = GateState(4, 4.0, reset_margin=1 / 64)
    skew = -0.5
    reset = U + 8.0
    now = 4.75  # the server's U + 4.25
    first = state.admit(now)
    now += RTT
    state.complete(first, now, unix_now=U + now, headers=reading(3, reset, U + 4.0))
    assert (state._skew_lo, state._skew_hi) == (-0.7578125, 0.25)
    assert state.capacity(now) == 2
    burst = [state.admit(now), state.admit(now)]
    assert state.next_time(now) == 5.015625
    for ticket, left in zip(burst, [2, 1], strict=True):
        state.complete(
            ticket, now + RTT, unix_now=U + now + RTT, headers=reading(left, reset, U + 4.0)
        )
    now = 5.015625
    shot = state.admit(now)
    assert U + now + skew < U + 5.0  # written before the server's boundary: Date says U + 4
    now += RTT
    state.complete(shot, now, unix_now=U + now, headers=reading(0, reset, U + 4.0))
    assert (state._skew_lo, state._skew_hi) == (-0.7578125, -0.015625)
    assert state.rate_limited == 0


def test_no_shot_under_a_sliding_log_or_a_token_bucket() -> None:
    """Shots could only delay a sliding log's slots or a bucket's tokens: none is planned.

    Sliding log: Reset is ``ceil(oldest + period)``, so the first second boundary after the
    burst is ``Reset - period`` (excluded) and the next is more than the gain away. Token
    bucket: Reset (full again) is within ``(limit - Remaining)`` refills plus a second.
    """
    for remaining, reset in [(3, U + 9.0), (3, U + 6.0)]:  # sliding log, token bucket
        state = GateState(4, 4.0, reset_margin=1 / 64)
        now = 4.75
        first = state.admit(now)
        now += RTT
        state.complete(first, now, unix_now=U + now, headers=reading(remaining, reset, U + 4.0))
        assert state.capacity(now) == 3
        assert [state.admit(now) for _ in range(3)] and state.shots == 0
        assert state._hold == 0


def test_no_shot_while_another_consumer_spends_the_budget() -> None:
    state = GateState(4, 4.0, reset_margin=1 / 64)
    now = 4.75
    first = state.admit(now)
    now += RTT
    # The server counts 2 where we sent 1: someone else spent one.
    state.complete(first, now, unix_now=U + now, headers=reading(2, U + 8.0, U + 4.0))
    assert state.foreign == 1
    assert state.capacity(now) == 2 and state._hold == 0


def make_gate_at(anchor: float, limit: int = 60, period: float = 3.0) -> BusinessRateGate:
    loop = asyncio.get_running_loop()
    return BusinessRateGate(
        RateLimit(requests=limit, period=period),
        name="sim",
        wall_clock=lambda: anchor + loop.time(),
    )


# The first burst goes 0.875 s into a second (and into a 3 s window): Date alone leaves the
# offset's lower bound 0.875 s loose, the worst case for the probe.
LATE_ANCHOR = 1_790_000_001.875


# Where the first burst goes: (anchor, seconds left in its window, how late every burst is
# without shots). At LATE_ANCHOR a shot from the ledger's own free slots fits in the first
# window. At phase 0.9 (0.7 s into a second, 0.3 s before the window ends) none fits; the
# second window's burst goes on the server's word alone (the ledger still holds the first
# burst), so that is the budget its shot is held from.
SHOT_STARTS = {"ledger": (LATE_ANCHOR, 2.125, 0.8), "word": (anchor_at(0.9), 0.3, 0.6)}


@pytest.mark.looptime
@pytest.mark.parametrize("budget", sorted(SHOT_STARTS))
@pytest.mark.parametrize("shots", [True, False])
async def test_fixed_window_bursts_go_at_the_boundary_once_a_shot_pinned_the_clock(
    shots: bool, budget: str
) -> None:
    anchor, first_window_left, late = SHOT_STARTS[budget]
    server = SimServer("fixed", 60, 3.0, latency=0.005, anchor=anchor)
    gate = make_gate_at(anchor)
    if not shots:
        gate.state._shots_left = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    await run_workers(server, gate, 50, 600)
    elapsed = loop.time() - start
    assert server.rejected == 0
    assert server.served == 600
    # 600 at 60 per window: the 10th window opens 8 periods after the first one ends.
    minimum = first_window_left + 8 * 3.0
    if shots:
        assert gate.state.shots >= 1
        assert elapsed < minimum + 0.1, elapsed
    else:
        # Without shots every burst waits out the loose bound of the clock offset.
        assert elapsed > minimum + late, elapsed
    # Every window the server saw got at most its 60 (0 429s says the same).
    windows: dict[int, int] = {}
    for t in server.admit_times:
        windows[math.floor(t / 3.0)] = windows.get(math.floor(t / 3.0), 0) + 1
    assert max(windows.values()) <= 60


@pytest.mark.looptime
@pytest.mark.parametrize("algorithm", ["sliding", "bucket"])
async def test_no_shots_against_sliding_and_bucket_servers(algorithm: str) -> None:
    server = SimServer(algorithm, 60, 3.0, latency=0.005, anchor=LATE_ANCHOR)
    gate = make_gate_at(LATE_ANCHOR)
    await run_workers(server, gate, 50, 600)
    assert server.rejected == 0
    assert gate.state.shots == 0


def test_snapshot_says_in_words_what_each_field_means() -> None:
    import datetime as dt

    from callscaler_async.ratelimit import RateLimitSnapshot

    reset = dt.datetime(2026, 1, 5, 10, 31, tzinfo=dt.UTC)
    snapshot = RateLimitSnapshot(60, 12, reset, waiting=3, in_flight=2, foreign=13)
    assert str(snapshot) == (
        "rate limit: 12 of 60 left, resets 2026-01-05 10:31:00Z; 3 waiting, 2 in flight, "
        "13 recently spent by another consumer"
    )
    assert repr(snapshot).startswith("RateLimitSnapshot(limit=60, remaining=12, ")
    assert repr(snapshot).endswith(f"  # {snapshot}")
    assert eval(repr(snapshot), {"RateLimitSnapshot": RateLimitSnapshot, "datetime": dt}) == (
        snapshot
    )
    paused = RateLimitSnapshot(
        None, None, None, paused_until=reset, probing=False, rate_limited=1
    )
    assert str(paused) == (
        "rate limit: no answer from the server yet; paused after a 429 until "
        "2026-01-05 10:31:00Z, 0 waiting, 0 in flight, 1 answered 429 so far, "
        "no request at Reset (the server refused one)"
    )


# ------------------------------------------------------------ sliding-window counter rules


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_remaining_is_exactly_what_each_limiter_admits(algorithm: str) -> None:
    """Under every algorithm of the fake, Remaining at an instant is how many requests it
    admits one after the other at that instant (plain numbers, no clock)."""
    rng = random.Random(3)
    for trial in range(200):
        limiter = make_limiter(algorithm, 10, 2.0)
        now = 1_000_000.0 + rng.uniform(0, 2)
        for _ in range(rng.randint(0, 40)):
            now += rng.choice([0.0, 0.01, 0.1, 0.37, 1.0, 2.5])
            limiter.try_acquire(now)
        now += rng.uniform(0, 3)
        remaining = limiter.remaining(now)
        admitted = 0
        while limiter.try_acquire(now):
            admitted += 1
        assert admitted == remaining, (trial, algorithm)
        assert limiter.remaining(now) == 0
        assert limiter.retry_after(now) > 0


def test_counter_burst_weighs_into_the_next_window() -> None:
    """10 at phase 0.5 of a window weigh 10 * (1 - f) at phase f of the next one."""
    limiter = make_limiter("counter", 10, 2.0)
    for _ in range(10):
        assert limiter.try_acquire(1.0)
    assert not limiter.try_acquire(1.5)
    assert limiter.reset(1.5) == 2.0  # the end of the aligned window [0, 2)
    assert limiter.remaining(2.0) == 0  # the new window starts with prev = 10
    assert limiter.remaining(2.3) == 2  # floor(10 * 0.85) = 8
    assert limiter.remaining(3.0) == 5
    assert limiter.retry_after(2.0) == pytest.approx(0.0, abs=1e-6)
    assert limiter.remaining(5.0) == 10  # two windows later nothing weighs


def test_counter_tail_bounds_the_burst_by_its_window() -> None:
    """Sans-I/O: the gate's ledger after a burst under a counter of 10 per 2 s.

    The burst goes at the server's U + 1.0, half-way through its window [U, U + 2); the
    answers say Reset U + 2 (the window's end, on a multiple of the period) and Date U + 1.
    Each slot is held until a period after its answer, then fades over the period after the
    window's end, never weighing less than the counter does."""
    state = GateState(10, 2.0)
    now = 1.0
    burst = [state.admit(now) for _ in range(10)]
    assert state.capacity(now) == 0
    now += RTT
    for left, ticket in zip(range(9, -1, -1), burst, strict=True):
        answer = HeaderReading(limit=10, remaining=left, reset_unix=U + 2.0, date_unix=U + 1.0)
        state.complete(ticket, now, unix_now=U + now, headers=answer, status=200)
    # Nothing by the ledger until the period is over; the probe goes just after Reset (its
    # margin: 1% of the period), where the counter's new window has room for one.
    assert state.capacity(2.0) == 0
    assert state.next_time(now) == pytest.approx(2.0 + RTT + 0.01)
    # A period after the answers, each slot still weighs (U + 4 + RTT - t) / 2: half.
    after = now + 2.0 + 1e-5
    assert state.capacity(after) == 1  # (what it knows is 2 s old: one scout goes first)
    ledger = state.limit - state.in_flight - len(state._recent) - state._tail_weight(after)
    assert ledger == 5
    server = make_limiter("counter", 10, 2.0)
    for _ in range(10):
        server.try_acquire(U + 1.0)
    assert server.remaining(U + after) >= 5  # floor(10 * (1 - 0.504)) = 4: Remaining 6
    # Two periods after the window's end nothing of the burst weighs.
    assert state.limit - state._tail_weight(now + 3.0 + 1e-5) == 10


def test_without_date_a_slot_fades_over_two_periods() -> None:
    state = GateState(4, 2.0)
    tickets = [state.admit(0.0) for _ in range(4)]
    for ticket in tickets:
        state.complete(ticket, 0.5, unix_now=U + 0.5)  # no headers at all
    assert state.capacity(2.5) == 0  # full for a period after the answer
    assert state.capacity(3.5 + 1e-5) == 2  # half faded: 4 * 0.5 = 2 still held
    assert state.next_time(2.5) == pytest.approx(2.5, abs=1e-4)  # the first at once
    assert state.capacity(4.5 + 1e-5) == 4


def test_the_fresh_remaining_caps_the_ledger() -> None:
    """An answer's Remaining lower than the ledger's free slots (someone else spends the
    budget, or the server counts differently): no more than Remaining goes."""
    state = GateState(10, 60.0)
    first = state.admit(0.0)
    answer = HeaderReading(limit=10, remaining=2, reset_unix=None, date_unix=U)
    state.complete(first, 0.1, unix_now=U + 0.1, headers=answer, status=200)
    assert state.capacity(0.1) == 2  # the ledger alone would say 9


def test_probe_waits_for_requests_still_in_flight() -> None:
    """Under a counter, a request in flight at Reset may be counted in the new window: the
    probe goes ``period / limit`` later for each."""
    state = GateState(10, 2.0)
    burst = [state.admit(1.0) for _ in range(10)]
    for left, ticket in zip(range(9, 0, -1), burst[:9], strict=True):
        answer = HeaderReading(limit=10, remaining=left, reset_unix=U + 2.0, date_unix=U + 1.0)
        state.complete(ticket, 1.0 + RTT, unix_now=U + 1.0 + RTT, headers=answer)
    # One request of the burst is still on its way: the probe waits one step (0.2 s) more.
    assert state.next_time(1.5) == pytest.approx(2.0 + RTT + 0.01 + 0.2)


def test_staircase_releases_hold_at_least_a_counters_weight() -> None:
    """A whole-slot ledger (the Redis gate's) that releases a group of answers as
    ``staircase_releases`` says keeps at least a sliding-window counter's weight of them held
    at every instant, ``held(t) >= k * min(1, (fades_at - t) / period)``, holds each slot at
    least a period after its answer (what a log and a bucket need), and never moves a
    release later as the group grows (so releases handed out may only be brought forward)."""
    rng = random.Random(15)
    period = 3.0
    eps = 1e-9
    for _ in range(400):
        limit = rng.randint(1, 80)
        k = rng.randint(1, limit)  # no window counts more than the limit
        fades_at = rng.randint(3000, 6000) / 1000
        # Answers in arrival order, mostly increasing, sometimes out of order.
        answers = [rng.randint(0, 3000) / 1000 for _ in range(k)]
        if rng.random() < 0.5:
            answers.sort()
        releases = staircase_releases(answers, fades_at, limit, period)
        assert all(r >= a + period - eps for a, r in zip(answers, releases, strict=True))
        # The instants where the count of held slots drops, and just before each.
        instants = sorted({t + d for t in releases for d in (-1e-6, 0.0)} | {fades_at - period})
        for t in instants:
            held = sum(1 for r in releases if r > t + eps)
            weight = k * min(1.0, max(0.0, (fades_at - t) / period))
            assert held >= weight - 1e-6, (limit, k, fades_at, t, held, weight)
        for j in range(1, k):
            before = staircase_releases(answers[:j], fades_at, limit, period)
            assert all(b >= r - eps for b, r in zip(before, releases, strict=False))


def test_staircase_releases_at_a_steady_pace_cost_one_step() -> None:
    """Answers spread evenly over their window (a steady pace): each slot is held a period
    and at most one step (``period / limit``) longer, the latest one until the fade ends."""
    limit, period = 60, 3.0
    window_end = 3.0
    answers = [window_end - period + (i + 1) * period / limit for i in range(limit)]
    releases = staircase_releases(answers, window_end + period, limit, period)
    holds = [r - a for a, r in zip(answers, releases, strict=True)]
    assert max(holds) <= period + period / limit + 1e-9
    assert min(holds) >= period - 1e-9


def _burst_then_probe(state: GateState, probe_remaining: int, limit: int | None = 10) -> float:
    """A burst of 10 at the server's U + 1.5 (its window [U, U + 4) of a limit of 10 per 4 s),
    answered with Remaining 9..0 and Date U + 1; then, a period after the answers, the one
    request the ledger grants goes, answered with ``probe_remaining`` and Date U + 5.
    Returns the loop time of that answer."""
    now = 1.5
    burst = [state.admit(now) for _ in range(10)]
    now += RTT
    for left, ticket in zip(range(9, -1, -1), burst, strict=True):
        answer = HeaderReading(limit=limit, remaining=left, reset_unix=U + 4.0, date_unix=U + 1)
        state.complete(ticket, now, unix_now=U + now, headers=answer, status=200)
    at = now + 4.0 + 1e-5
    assert state.capacity(at) == 1
    ticket = state.admit(at)
    now = at + RTT
    answer = HeaderReading(limit=limit, remaining=probe_remaining, reset_unix=None, date_unix=U + 5)
    state.complete(ticket, now, unix_now=U + now, headers=answer, status=200)
    return now


def test_a_remaining_no_counter_could_report_drops_the_fading_tail() -> None:
    """Sans-I/O: the burst was counted at the server's U + 1 - RTT at the earliest (its Date
    second, less a round trip), in the window [U, U + 4). The probe's answer was written by
    U + 6 + RTT (its Date second, and a round trip), at phase 0.502 of the next window at the
    latest, where a counter still weighs the burst ``floor(10 * 0.498) = 4``: it could report
    6 at most. A sliding log has forgotten the burst and reports 9. Nine proves the server is
    no counter: the slots held as a counter's fading tail are free at once, and later ones
    free a period after their answer."""
    state = GateState(10, 4.0)
    now = _burst_then_probe(state, probe_remaining=9)
    assert not state.counter_possible
    assert state._tail_weight(now) == 0
    assert state.limit - state.in_flight - len(state._recent) == 9
    late = [state.admit(now) for _ in range(9)]
    for ticket in late:
        state.complete(ticket, now + RTT, unix_now=U + now + RTT, status=200)
    later = now + RTT + 4.0 + 1e-5
    state.capacity(later)  # (1: what it knows is a period old, so one scout goes first)
    assert state.limit - len(state._recent) - state._tail_weight(later) == 10


@pytest.mark.parametrize("remaining", [0, 3, 6])
def test_a_remaining_a_counter_could_report_keeps_the_fading_tail(remaining: int) -> None:
    """6 is the most a counter could report there; the server's own counter reports 3."""
    server = make_limiter("counter", 10, 4.0)
    for _ in range(10):
        assert server.try_acquire(U + 1.5)
    assert server.try_acquire(U + 5.5 + 2 * RTT)
    assert server.remaining(U + 5.5 + 2 * RTT) == 3
    state = GateState(10, 4.0)
    now = _burst_then_probe(state, probe_remaining=remaining)
    assert state.counter_possible
    assert state._tail_weight(now) > 0


def _shared_burst_then_probe(
    state: GateState, probe_remaining: int, *, others_answered_late: bool = False
) -> None:
    """The burst of ``_burst_then_probe`` split between two processes sharing a ledger:
    three requests are ours, seven another process's, reported to us as shared evidence
    (sent no earlier than the server's U + 1.5, answered by U + 1.5 + RTT). Then our one
    request a period later, answered with ``probe_remaining``. ``others_answered_late``:
    their answers are bounded only by an instant after our last request went."""
    now = 1.5
    mine = [state.admit(now) for _ in range(3)]
    now += RTT
    for left, ticket in zip((9, 8, 7), mine, strict=True):
        answer = HeaderReading(limit=10, remaining=left, reset_unix=U + 4.0, date_unix=U + 1)
        state.complete(ticket, now, unix_now=U + now, headers=answer, status=200)
    at = now + 4.0 + 1e-5
    answered = U + (at + RTT / 2 if others_answered_late else 1.5 + RTT)
    state.add_shared_evidence([(U + 1.5, answered)] * 7)
    ticket = state.admit(at)
    now = at + RTT
    answer = HeaderReading(limit=10, remaining=probe_remaining, reset_unix=None, date_unix=U + 5)
    state.complete(ticket, now, unix_now=U + now, headers=answer, status=200)


def test_the_requests_of_processes_sharing_a_ledger_prove_the_server_no_counter() -> None:
    """Sans-I/O: at the probe a counter still weighs a burst of ten ``floor(10 * 0.498) = 4``
    and could report 6 at most; from our three alone it weighs 1 and could report 9. A
    sliding log reports 9: the other process's seven make the proof."""
    shared = GateState(10, 4.0)
    _shared_burst_then_probe(shared, 9)
    assert shared.counter_possible is False
    # Answered (for all we know) after our request went: the server may have counted them
    # after it wrote our Remaining, so they prove nothing, and our three alone cannot.
    late = GateState(10, 4.0)
    _shared_burst_then_probe(late, 9, others_answered_late=True)
    assert late.counter_possible is True


@pytest.mark.parametrize("remaining", [3, 6])
def test_shared_evidence_keeps_a_counter_that_could_have_answered(remaining: int) -> None:
    state = GateState(10, 4.0)
    _shared_burst_then_probe(state, remaining)
    assert state.counter_possible


def test_a_counter_proof_needs_the_servers_limit() -> None:
    """Without ``X-RateLimit-Limit`` the server's limit may be larger than ours: a high
    Remaining then proves nothing."""
    state = GateState(10, 4.0)
    _burst_then_probe(state, probe_remaining=9, limit=None)
    assert state.counter_possible


@pytest.mark.looptime
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("algorithm", ["fixed", "sliding", "bucket"])
async def test_the_other_algorithms_are_told_from_a_counter(algorithm: str, phase: float) -> None:
    """Within two periods of the first burst an answer proves each of them no counter, so
    the ledger frees their slots a period after each answer. (Bursts just before a window's
    end look alike under a sliding log and a counter: there the counter weighs them a few
    percent a period later, and the proof may never come; it costs as little, and a log's or
    a bucket's bursts then go by what the server said at the end of the last one.)"""
    anchor = anchor_at(phase)
    server = SimServer(algorithm, 60, 3.0, latency=0.01, jitter=0.005, anchor=anchor)
    gate = make_gate_at(anchor)
    loop = asyncio.get_running_loop()
    start = loop.time()
    workers = asyncio.create_task(run_workers(server, gate, 50, 600))
    while gate.state.counter_possible and not workers.done():
        await asyncio.sleep(0.01)
    if phase < 0.9:
        assert not gate.state.counter_possible
        assert loop.time() - start <= 2 * 3.0
    await workers
    assert server.rejected == 0


@pytest.mark.looptime
@pytest.mark.parametrize("phase", PHASES)
async def test_a_counter_is_never_ruled_out(phase: float) -> None:
    """Not even with another consumer spending a quarter of the budget: ruling it out would
    free its slots a period after their answers, where it still weighs them."""
    anchor = anchor_at(phase)
    server = SimServer("counter", 60, 3.0, latency=0.01, jitter=0.005, anchor=anchor)
    gate = make_gate_at(anchor)
    workers = asyncio.create_task(run_workers(server, gate, 50, 600))
    while not workers.done():
        await server.foreign(1)
        await asyncio.sleep(0.2)
        assert gate.state.counter_possible
    await workers
    assert server.rejected <= 10


def test_a_429_takes_the_counter_proof_back() -> None:
    state = GateState(10, 4.0)
    now = _burst_then_probe(state, probe_remaining=9)
    assert not state.counter_possible
    ticket = state.admit(now)
    state.complete(ticket, now + RTT, unix_now=U + now + RTT, status=429, retry_after=1.0)
    assert state.counter_possible


def test_the_ledger_holds_the_larger_total_not_each_requests_larger_weight() -> None:
    """Sans-I/O: 10 requests paced through the window [U + 4, U + 8) of a counter of 10 per
    4 s. Half-way through the next window the counter weighs them ``10 * 0.5 = 5``; a sliding
    log still counts the 4 answered in the last 4 s. The server is one or the other, so 5
    slots are free. (Holding each request by the larger of its two weights would hold
    4 + 6 * 0.5 = 7 and free 3.)"""
    state = GateState(10, 4.0)
    server = make_limiter("counter", 10, 4.0)
    for k in range(10):
        sent = 4.25 + 0.3 * k
        ticket = state.admit(sent)
        assert server.try_acquire(U + sent)
        answer = HeaderReading(
            limit=10,
            remaining=server.remaining(U + sent),
            reset_unix=U + 8.0,
            date_unix=float(math.floor(U + sent)),
        )
        state.complete(ticket, sent + RTT, unix_now=U + sent + RTT, headers=answer, status=200)
    assert state.counter_possible
    assert len(state._recent) == 10
    half_way = 10.0
    state.capacity(half_way)
    assert len(state._recent) == 4
    assert state.limit - state._held(half_way) == 5
    assert server.remaining(U + half_way) == 5
    assert state._ledger_frees_at(half_way) == half_way


@pytest.mark.parametrize("offset", [k / 16 for k in range(-7, 8)])
def test_a_counters_offset_narrows_around_the_true_one(offset: float) -> None:
    """Sans-I/O, against the counter limiter itself with its clock ``offset`` ahead of ours
    (10 per 4 s): a burst at our 1.5, then one request a period after its answers. From the
    Remaining values the gate narrows the offsets a counter can have: never past the true
    one, and the ledger it recomputes with them never frees more than the counter admits."""
    period = 4.0
    server = make_limiter("counter", 10, period)
    state = GateState(10, period)

    def answer(ticket: Ticket, sent: float) -> None:
        served = U + sent + RTT / 2 + offset  # the server's clock when it counts and answers
        assert server.try_acquire(served)
        reading = HeaderReading(
            limit=10,
            remaining=server.remaining(served),
            reset_unix=math.ceil(server.reset(served)),
            date_unix=float(math.floor(served)),
        )
        state.complete(ticket, sent + RTT, unix_now=U + sent + RTT, headers=reading, status=200)

    for ticket in [state.admit(1.5) for _ in range(10)]:
        answer(ticket, 1.5)
    later = 1.5 + RTT + period + 1e-5
    assert state.capacity(later) == 1
    answer(state.admit(later), later)
    assert state.counter_possible
    lo, hi = state._counter_offsets()
    assert lo <= offset <= hi
    if offset >= 1 / 8:
        # The counter weighs the burst less than it would with the least offsets (whose
        # window ends later): its Remaining rules them out, beyond what Date headers say.
        assert lo > state._skew_lo + 1 / 16
    else:
        assert lo == state._skew_lo  # (a low Remaining agrees with every offset)
    t = later + RTT
    while t < 1.5 + 3 * period:
        state.capacity(t)
        assert state.limit - state.in_flight - state._held(t) <= server.remaining(U + t + offset)
        t += 1 / 32


def test_a_probe_relies_on_its_reset_only_while_nothing_went_after_that_answer() -> None:
    """A server rounds Reset up to the second: the slot it frees may free before it, and a
    request admitted meanwhile (by the ledger, or the server's word) may take it. The probe
    at that Reset is then void; the answer of the request that went brings a fresh one."""

    def burst() -> GateState:
        state = GateState(4, 4.0)
        tickets = [state.admit(1.25) for _ in range(4)]
        for left, ticket in zip(range(3, -1, -1), tickets, strict=True):
            answer = HeaderReading(limit=4, remaining=left, reset_unix=U + 3.0, date_unix=U + 1)
            state.complete(ticket, 1.25 + RTT, unix_now=U + 1.25 + RTT, headers=answer, status=200)
        return state

    quiet = burst()
    assert quiet.capacity(4.5) == 1  # the probe, before any slot of the ledger frees
    busy = burst()
    busy.admit(2.0)  # (as if a slot had freed early)
    assert busy.capacity(4.5) == 0
    assert busy.next_time(4.5) is None or busy.next_time(4.5) > 5.0


def _run_of_five(statuses: list[int | None]) -> tuple[GateState, float]:
    """A gate of 10 per 2 s whose ledger still holds a burst answered without rate headers
    (a counter may weigh it for two periods), and five requests sent at once after the
    server (a log) freed it, answered with Remaining 9 down to 5: the last-sent first."""
    state = GateState(10, 2.0)
    for ticket in [state.admit(0.0) for _ in range(10)]:
        state.complete(ticket, RTT, unix_now=U + RTT, status=200)
    now = 2.0 + RTT + 1 / 1024
    assert state.capacity(now) == 1  # the ledger: a counter may still weigh nine of ten
    run = [state.admit(now) for _ in range(5)]  # (as the server's word allowed)
    now += RTT
    for left, ticket, status in zip(range(5, 10), reversed(run), statuses, strict=True):
        answer = HeaderReading(limit=10, remaining=left, reset_unix=None, date_unix=None)
        state.complete(ticket, now, unix_now=U + now, headers=answer, status=status)
        now += 1 / 256
    return state, now


def test_a_run_all_answered_goes_by_its_least_remaining() -> None:
    """The last-sent request's answer came first, with four others on their way: its own
    word grants 5 - 4 = 1, and the later answers of earlier-sent requests are not the
    server's latest word. Once all five are answered, the one the server counted last said
    what it still admits after all of them, and the least Remaining (5) is no more."""
    state, now = _run_of_five([200] * 5)
    assert state.in_flight == 0
    assert state.capacity(now) == 5


@pytest.mark.parametrize("failed", [None, 429])
def test_a_run_with_a_failure_has_no_least_remaining(failed: int | None) -> None:
    """A request that got no answer may be counted at any time, and a 429 says the picture
    is wrong: the run's least Remaining is then not the server's word."""
    state, now = _run_of_five([200] * 4 + [failed])
    assert state.capacity(now) <= 1
