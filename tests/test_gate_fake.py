"""The business gate end to end: real HTTP to the fake API in each window algorithm.

looptime makes the scaled windows (60 requests per 3 s) virtual, so many windows take
milliseconds. Every test counts what reached the server: requests, 429s, admission times.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from typing import Any

import pytest

import callscaler_async as cs
from callscaler_async.testing import FakeCallScaler

ALGORITHMS = ["fixed", "sliding", "bucket", "counter"]
# Start phases of the server's aligned window: just after a boundary, half-way, just before.
PHASES = [0.02, 0.5, 0.97]
ANCHOR_WINDOWS = 595_000_000  # a Unix time far from ours: the gate learns the offset from Date
LIMIT, PERIOD = 60, 3.0
_names = itertools.count()


def business() -> str:
    return f"gate-test-{next(_names)}"


def max_in_any_window(times: list[float], period: float) -> int:
    times = sorted(times)
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - period:
            j += 1
        best = max(best, i - j + 1)
    return best


def fake_at_phase(
    algorithm: str, phase: float, limit: int, period: float, **kwargs: Any
) -> FakeCallScaler:
    """A fake whose clock starts at ``phase`` of one of its aligned windows."""
    anchor = ANCHOR_WINDOWS * period + phase * period
    return FakeCallScaler(
        rate_limit=limit, period=period, algorithm=algorithm, clock_anchor_unix=anchor,
        **kwargs,
    )  # fmt: skip


def server_minimum(algorithm: str, n: int, limit: int, period: float, phase: float) -> float:
    """Seconds between the first and the n-th admission the server's algorithm allows."""
    if n <= limit:
        return 0.0
    if algorithm == "bucket":
        return (n - limit) * period / limit
    if algorithm == "fixed":
        return (1 - phase) * period + (math.ceil(n / limit) - 2) * period
    if algorithm == "counter":
        return (1 - phase) * period + (n - limit - 1) * period / limit
    return (math.ceil(n / limit) - 1) * period


async def hammer(client: cs.CallScaler, tasks: int, total: int) -> None:
    work = iter(range(total))

    async def worker() -> None:
        for _ in work:
            await client.account.balance()

    await asyncio.gather(*(worker() for _ in range(tasks)))


@pytest.mark.looptime
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("tasks", [1, 50, 1000])
async def test_zero_429_over_many_windows(algorithm: str, tasks: int, phase: float) -> None:
    async with fake_at_phase(algorithm, phase, LIMIT, PERIOD, calls=10) as fake:
        async with cs.CallScaler(
            fake.api_key,
            base_url=fake.base_url,
            rate_limit=cs.RateLimit(LIMIT, PERIOD),
            business=business(),
        ) as client:
            loop = asyncio.get_running_loop()
            start = loop.time()
            total = 600 if tasks > 1 else 200
            await hammer(client, tasks, total)
            elapsed = loop.time() - start
        assert fake.stats.rate_limited == 0
        assert fake.stats.requests == total
        if algorithm == "sliding":
            # The strictest server: never more than the limit in any window. (A fixed window
            # or a full bucket legitimately admits more across a Reset, and the gate uses it.)
            admitted = [r.time for r in fake.stats.log if r.status == 200]
            assert max_in_any_window(admitted, PERIOD) <= LIMIT
        # Whole budget used: 600 at 60 per 3 s cannot take less than the server's minimum,
        # and the gate should not take much more.
        minimum = server_minimum(algorithm, total, LIMIT, PERIOD, phase)
        assert elapsed >= minimum - PERIOD
        if tasks > 1:
            assert elapsed <= minimum * 1.10 + 0.5, (elapsed, minimum)


@pytest.mark.looptime
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_two_keys_of_one_business_share_one_gate(algorithm: str, phase: float) -> None:
    async with fake_at_phase(algorithm, phase, LIMIT, PERIOD, calls=10) as fake:
        name = business()
        first_key, second_key = fake.api_keys[0], fake.api_keys[1]
        async with (
            cs.CallScaler(first_key, base_url=fake.base_url, rate_limit=cs.RateLimit(LIMIT, PERIOD),
                          business=name) as a,
            cs.CallScaler(second_key, base_url=fake.base_url,
                          rate_limit=cs.RateLimit(LIMIT, PERIOD), business=name) as b,
        ):  # fmt: skip
            assert a._transport.gate is b._transport.gate
            await asyncio.gather(hammer(a, 30, 300), hammer(b, 30, 300))
        assert fake.stats.rate_limited == 0
        assert fake.stats.requests == 600


@pytest.mark.looptime
async def test_other_businesses_do_not_block_each_other() -> None:
    async with FakeCallScaler(calls=10, rate_limit=LIMIT, period=PERIOD) as fake:
        async with (
            cs.CallScaler(fake.api_key, base_url=fake.base_url,
                          rate_limit=cs.RateLimit(LIMIT, PERIOD), business=business()) as a,
            cs.CallScaler(fake.other_business_key, base_url=fake.base_url,
                          rate_limit=cs.RateLimit(LIMIT, PERIOD), business=business()) as b,
        ):  # fmt: skip
            assert a._transport.gate is not b._transport.gate
            loop = asyncio.get_running_loop()
            start = loop.time()
            # Each business spends its own full window: together 120 requests, no waiting.
            await asyncio.gather(hammer(a, 60, 60), hammer(b, 60, 60))
            assert loop.time() - start < PERIOD / 2
        assert fake.stats.rate_limited == 0


@pytest.mark.looptime
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_foreign_consumer_is_learned_from_headers(algorithm: str, phase: float) -> None:
    async with fake_at_phase(algorithm, phase, LIMIT, PERIOD, calls=10) as fake:
        async with cs.CallScaler(
            fake.api_key,
            base_url=fake.base_url,
            rate_limit=cs.RateLimit(LIMIT, PERIOD),
            business=business(),
        ) as client:
            await hammer(client, 10, 20)
            stop = asyncio.Event()

            async def cron_job() -> None:  # another system spends a quarter of the budget
                while not stop.is_set():
                    await fake.consume("acme", 1)
                    await asyncio.sleep(0.2)

            other = asyncio.create_task(cron_job())
            await hammer(client, 20, 300)
            stop.set()
            await other
            assert client.rate_limit is not None
        # Learned from Remaining alone: collisions stay rare (see test_gate_simulated). Under
        # a token bucket our answered slots' fading tail (held in case the server is a
        # counter) hides part of the other consumer's share: a few more collisions there.
        bound = 15 if algorithm == "bucket" else 10
        assert fake.stats.rate_limited <= bound, fake.stats.rate_limited


@pytest.mark.looptime
async def test_an_injected_429_pauses_everyone_exactly_once() -> None:
    async with FakeCallScaler(calls=10, rate_limit=1000, period=PERIOD) as fake:
        async with cs.CallScaler(
            fake.api_key,
            base_url=fake.base_url,
            rate_limit=cs.RateLimit(1000, PERIOD),
            business=business(),
        ) as client:
            fake.faults.rate_limit_next(1, retry_after=5)
            loop = asyncio.get_running_loop()
            start = loop.time()
            first = asyncio.create_task(client.account.balance())
            await asyncio.sleep(0.01)  # the 429 arrives; now everyone else queues behind it
            others = [asyncio.create_task(client.account.balance()) for _ in range(50)]
            await asyncio.gather(first, *others)
            snapshot = client.rate_limit
            assert snapshot is not None
            assert snapshot.rate_limited == 1
            gate = client._transport.gate
            assert isinstance(gate, cs.BusinessRateGate)
            assert gate.state.pauses == 1
        assert fake.stats.rate_limited == 1
        after = [r.time for r in fake.stats.log if r.status == 200]
        assert len(after) == 51
        assert min(after) >= start + 5.0
        assert fake.stats.requests == 52


@pytest.mark.looptime
async def test_max_wait_raises_instead_of_waiting() -> None:
    # Early in the server's fixed window: its end (when a slot frees) is far more than
    # max_wait away. On the wall clock's phase, a window about to end frees one in time.
    async with fake_at_phase("fixed", 0.02, 5, 60.0, calls=10) as fake:
        async with cs.CallScaler(
            fake.api_key, base_url=fake.base_url, rate_limit=cs.RateLimit(5, 60.0),
            business=business(),
        ) as client:  # fmt: skip
            await hammer(client, 5, 5)
            hurried = client.with_options(max_wait=2.0)
            with pytest.raises(cs.RateLimitError) as info:
                await hurried.account.balance()
            assert info.value.retry_at is not None
            assert info.value.retry_after is not None
            assert info.value.retry_after > 2.0
        assert fake.stats.requests == 5
        assert fake.stats.rate_limited == 0


@pytest.mark.looptime
async def test_caller_timeout_cancels_the_wait_and_returns_the_slot() -> None:
    async with FakeCallScaler(calls=10, rate_limit=2, period=10.0) as fake:
        async with cs.CallScaler(
            fake.api_key, base_url=fake.base_url, rate_limit=cs.RateLimit(2, 10.0),
            business=business(),
        ) as client:  # fmt: skip
            await hammer(client, 2, 2)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1.0):
                    await client.account.balance()
            snapshot = client.rate_limit
            assert snapshot is not None
            assert snapshot.waiting == 0
            assert snapshot.in_flight == 0
            await hammer(client, 2, 2)  # the budget comes back whole
        assert fake.stats.requests == 4
        assert fake.stats.rate_limited == 0


@pytest.mark.looptime
async def test_low_priority_bulk_yields_to_interactive_calls() -> None:
    async with FakeCallScaler(calls=10, rate_limit=10, period=PERIOD) as fake:
        async with cs.CallScaler(
            fake.api_key, base_url=fake.base_url, rate_limit=cs.RateLimit(10, PERIOD),
            business=business(),
        ) as client:  # fmt: skip
            bulk = client.with_options(priority="low")
            loop = asyncio.get_running_loop()
            bulk_task = asyncio.create_task(hammer(bulk, 50, 100))
            await asyncio.sleep(PERIOD * 2 + 0.5)  # the bulk walk now saturates the budget
            start = loop.time()
            await client.account.balance()
            waited = loop.time() - start
            bulk_task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await bulk_task
        # An interactive call waits at most for the next free slot, not behind 50 bulk tasks.
        assert waited <= PERIOD + 0.5
        assert fake.stats.rate_limited == 0


# ----------------------------------------------------- every algorithm, every start phase


@pytest.mark.looptime
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_two_concurrent_walks_earn_no_429(algorithm: str, phase: float) -> None:
    """Two ``async for`` walks of one business, 80 pages at 10 per 2 s."""
    limit, period = 10, 2.0
    async with fake_at_phase(algorithm, phase, limit, period, calls=400) as fake:
        async with cs.CallScaler(
            fake.api_key, base_url=fake.base_url, rate_limit=cs.RateLimit(limit, period),
            business=business(),
        ) as client:  # fmt: skip

            async def walk() -> int:
                return len([c async for c in client.calls.list(per_page=10)])

            loop = asyncio.get_running_loop()
            start = loop.time()
            counts = await asyncio.gather(walk(), walk())
            elapsed = loop.time() - start
        assert counts == [400, 400]
        assert fake.stats.rate_limited == 0
        # 40 pages each, plus each walk's second look at page 1 (a concurrent walk's check
        # that nothing shifted the list under it).
        assert fake.stats.requests == 82
        # Not much slower than the server's own minimum (from a full budget at this phase).
        assert elapsed <= server_minimum(algorithm, 82, limit, period, phase) * 1.10 + 0.5


@pytest.mark.looptime
async def test_one_key_against_two_servers_gets_two_gates() -> None:
    """The same key string against two servers (two fakes of one seed): a 429 from one
    must not pause the other; against one server the clients share the gate."""
    async with FakeCallScaler(calls=10) as first, FakeCallScaler(calls=10) as second:
        assert first.api_key == second.api_key
        limit = cs.RateLimit(LIMIT, PERIOD)
        async with (
            cs.CallScaler(first.api_key, base_url=first.base_url, rate_limit=limit) as a,
            cs.CallScaler(first.api_key, base_url=first.base_url, rate_limit=limit) as a2,
            cs.CallScaler(second.api_key, base_url=second.base_url, rate_limit=limit) as b,
        ):
            await asyncio.gather(a.account.balance(), a2.account.balance(), b.account.balance())
            assert a._transport.gate is a2._transport.gate
            assert a._transport.gate is not b._transport.gate
            assert a.business != b.business and first.api_key not in a.business
            first.faults.rate_limit_next(1, retry_after=30)
            paused = asyncio.create_task(a.account.balance())
            await asyncio.sleep(0.01)  # the 429 arrived: `a`'s business pauses for 30 s
            loop = asyncio.get_running_loop()
            start = loop.time()
            await b.account.balance()
            assert loop.time() - start < 1.0
            await paused
            assert loop.time() - start >= 29.0
        assert first.stats.rate_limited == 1
        assert second.stats.rate_limited == 0


@pytest.mark.looptime
@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_an_unexpected_429_costs_at_most_a_period_after_the_pause(algorithm: str) -> None:
    """An unexpected 429 (another consumer, a wrong limit) pauses the business until its
    ``retry_after``; after that, the rest of the walk takes no more than one period over the
    least any client could need for it (the server's minimum from a full budget), so the
    staggered restart is never the slow part."""
    total, retry_after = 300, 2
    async with fake_at_phase(algorithm, 0.5, LIMIT, PERIOD, calls=10) as fake:
        async with cs.CallScaler(
            fake.api_key, base_url=fake.base_url, rate_limit=cs.RateLimit(LIMIT, PERIOD),
            business=business(), max_retries=5,
        ) as client:  # fmt: skip

            async def inject() -> None:
                while fake.stats.requests < 100:
                    await asyncio.sleep(0.01)
                fake.faults.rate_limit_next(1, retry_after=retry_after)

            injector = asyncio.create_task(inject())
            await hammer(client, 50, total)
            await injector
        log = fake.stats.log
    assert fake.stats.rate_limited == 1
    refused = next(r.time for r in log if r.status == 429)
    after = [r.time for r in log if r.status == 200 and r.time > refused]
    assert min(after) >= refused + retry_after
    resumed = min(after)  # the pause's end (plus its small jitter)
    rest = max(after) - resumed
    least = server_minimum(algorithm, len(after), LIMIT, PERIOD, 0.0)
    # (Slack: a few probes' round trips, and the restart's random jitter.)
    assert rest <= least + PERIOD + 0.25, (rest, least, len(after))
