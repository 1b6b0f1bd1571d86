"""Faults against the fake over real sockets: each ends as documented, nothing hangs or leaks.

Every test runs on virtual time (looptime): backoffs, slow answers and 429 pauses cost no real
time. ``harness`` checks at the end that no task outlived the fake and the client.

The bulk tests inject a seeded random fault into every request the fake receives and check
the only two acceptable outcomes: every call delivered exactly once, or a typed
``CallScalerError``. Seeds: ``RELIABILITY_SEEDS`` (default 200) per test; a failure names its
seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import os
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

import callscaler_async as cs
from callscaler_async.testing import FakeCallScaler
from callscaler_async.testing._faults import PendingFault

SEEDS = int(os.environ.get("RELIABILITY_SEEDS", "200"))
_names = itertools.count()


def huge() -> cs.RateLimit:
    return cs.RateLimit(requests=10_000, period=60.0)


@contextlib.asynccontextmanager
async def harness(
    *,
    calls: int = 60,
    rate_limit: int = 10_000,
    period: float = 60.0,
    algorithm: str = "fixed",
    client_limit: cs.RateLimit | None = None,
    seed: int = 7,
    **options: Any,
) -> AsyncIterator[tuple[FakeCallScaler, cs.CallScaler]]:
    """A fresh fake and client; afterwards no task of either may still exist."""
    baseline = asyncio.all_tasks()
    async with (
        FakeCallScaler(
            calls=calls, seed=seed, rate_limit=rate_limit, period=period, algorithm=algorithm
        ) as fake,
        cs.CallScaler(
            fake.api_key,
            base_url=fake.base_url,
            rate_limit=client_limit or huge(),
            business=f"reliability-{next(_names)}",
            **options,
        ) as client,
    ):
        yield fake, client
    await assert_no_stray_tasks(baseline)


async def assert_no_stray_tasks(baseline: set[asyncio.Task[Any]]) -> None:
    for _ in range(5):
        await asyncio.sleep(0)
    # The fake's own handlers may still sleep out a slow_next after the client gave up; they
    # are the server's, not the SDK's.
    stray = {
        task
        for task in asyncio.all_tasks() - baseline
        if not getattr(task.get_coro(), "__qualname__", "").startswith("RequestHandler.")
    }
    assert not stray, f"tasks left running: {stray}"


def ids(calls: list[cs.Call]) -> list[str]:
    return [str(c.id) for c in calls]


async def collect(
    walk: AsyncIterable[cs.Call],
    into: list[str],
    after: int | None = None,
    then: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Append every id of ``walk`` to ``into``; after ``after`` items, await ``then()``."""
    async for call in walk:
        into.append(str(call.id))
        if then is not None and len(into) == after:
            await then()


# ------------------------------------------------------------------ connection refused


@pytest.mark.looptime
async def test_connection_refused_is_retried_then_a_typed_error(unused_tcp_port: int) -> None:
    retries: list[int] = []
    baseline = asyncio.all_tasks()
    async with cs.CallScaler(
        "cs_key_abcd1234xyzxyzxyz",
        base_url=f"http://127.0.0.1:{unused_tcp_port}/api/v1/",
        rate_limit=huge(),
        max_retries=2,
        business="refused",
        on_retry=lambda event: retries.append(event.attempt),
    ) as client:
        with pytest.raises(cs.APIConnectionError, match="cannot connect") as info:
            await client.account.balance()
    assert not isinstance(info.value, cs.APITimeoutError)
    assert retries == [1, 2]
    await assert_no_stray_tasks(baseline)


@pytest.mark.looptime
async def test_connection_refused_then_server_up_succeeds(unused_tcp_port: int) -> None:
    fake = FakeCallScaler(calls=20, port=unused_tcp_port, rate_limit=10_000)

    async def start_server(event: Any) -> None:
        await fake.start()

    try:
        async with cs.CallScaler(
            fake.api_key,
            base_url=f"http://127.0.0.1:{unused_tcp_port}/api/v1/",
            rate_limit=huge(),
            business="refused-then-up",
            on_retry=start_server,
        ) as client:
            page = await client.calls.list(per_page=5)
        assert len(page.items) == 5
        assert fake.stats.requests == 1  # the refused attempt never reached anyone
    finally:
        await fake.close()


# ------------------------------------------------------------------ broken bodies


@pytest.mark.looptime
async def test_reset_mid_body_is_retried() -> None:
    async with harness() as (fake, client):
        fake.faults.reset_mid_body_next(2)
        page = await client.calls.list(per_page=10)
        assert ids(page.items) == [c["id"] for c in fake.calls_data[:10]]
        assert fake.stats.requests == 3


@pytest.mark.looptime
async def test_reset_mid_body_every_time_is_a_connection_error() -> None:
    async with harness(max_retries=2) as (fake, client):
        fake.faults.reset_mid_body_next(10)
        with pytest.raises(cs.APIConnectionError, match="connection failed"):
            await client.calls.list(per_page=10)
        assert fake.stats.requests == 3


@pytest.mark.looptime
async def test_truncated_json_is_retried_then_a_decode_error() -> None:
    async with harness(max_retries=2) as (fake, client):
        fake.faults.truncate_next(2)
        page = await client.calls.list(per_page=10)
        assert len(page.items) == 10
        assert fake.stats.requests == 3
        fake.reset_stats()
        fake.faults.truncate_next(10)
        with pytest.raises(cs.ResponseDecodeError, match="not valid JSON"):
            await client.calls.list(per_page=10)
        assert fake.stats.requests == 3


# ------------------------------------------------------------------ proxy pages


@pytest.mark.looptime
@pytest.mark.parametrize("status", [502, 503, 504])
async def test_html_proxy_page_without_rate_headers_is_retried(status: int) -> None:
    # A real budget: the header-less pages must not confuse the gate into a stall or a burst.
    async with harness(rate_limit=20, period=3.0, client_limit=cs.RateLimit(20, 3.0)) as (
        fake,
        client,
    ):
        fake.faults.fail_next(2, status=status, body="html")
        assert await client.account.balance()
        assert fake.stats.requests == 3
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(client.account.balance() for _ in range(60)))
        assert fake.stats.rate_limited == 0
        assert loop.time() - start <= 3 * 3.0 + 1.0  # 63 requests at 20 per 3 s


@pytest.mark.looptime
@pytest.mark.parametrize("status", [502, 503, 504])
async def test_html_proxy_page_every_time_names_the_status(status: int) -> None:
    async with harness(max_retries=1) as (fake, client):
        fake.faults.fail_next(5, status=status, body="html")
        with pytest.raises(cs.InternalServerError) as info:
            await client.account.balance()
        assert info.value.status == status
        assert "non-JSON" in str(info.value) and "nginx" in str(info.value)
        assert fake.stats.requests == 2


# ------------------------------------------------------------------ slow and silent servers


@pytest.mark.looptime
async def test_answer_slower_than_timeout_is_retried() -> None:
    async with harness(timeout=2.0) as (fake, client):
        loop = asyncio.get_running_loop()
        start = loop.time()
        fake.faults.slow_next(1, delay=30.0)
        assert len((await client.calls.list(per_page=10)).items) == 10
        assert fake.stats.requests == 2
        assert 2.0 <= loop.time() - start < 2.0 + 1.0  # timeout + at most one first backoff


@pytest.mark.looptime
async def test_on_request_hooks_do_not_spend_the_timeout_of_a_redirect() -> None:
    # The timeout bounds the exchange (redirect hops included) from the moment the request
    # leaves: a slow on_request hook before it is not the server's time.
    async def slow_hook(event: cs.RequestEvent) -> None:
        await asyncio.sleep(0.8)

    async with harness(timeout=1.0, max_retries=0, on_request=slow_hook) as (fake, client):
        fake.faults.redirect_to(f"{fake.base_url}account/balance", path="account/balance", n=1)
        fake.faults.slow_next(1, delay=0.3, path="account/balance")  # the first hop
        await client.account.balance()
        assert fake.stats.requests == 2


@pytest.mark.looptime
async def test_always_slow_is_a_timeout_error_and_a_post_is_sent_once() -> None:
    async with harness(timeout=2.0, max_retries=2) as (fake, client):
        fake.faults.slow_next(10, delay=30.0)
        with pytest.raises(cs.APITimeoutError, match="timeout"):
            await client.account.balance()
        assert fake.stats.requests == 3
        fake.faults.clear()
        fake.reset_stats()
        fake.faults.slow_next(10, delay=30.0)
        with pytest.raises(cs.APITimeoutError):
            await client.numbers.purchase("+15735550199")
        assert fake.stats.requests == 1  # a purchase that may have happened is not repeated


@pytest.mark.looptime
async def test_server_closed_mid_walk_is_a_typed_error_not_a_hang() -> None:
    async with harness(calls=250, max_retries=2, timeout=5.0) as (fake, client):
        seen: list[str] = []
        walk = collect(client.calls.list(per_page=10, concurrency=2), seen, 15, fake.close)
        with pytest.raises(cs.APIConnectionError):
            await walk
        assert len(seen) == len(set(seen)) < 250


@pytest.mark.looptime
async def test_server_silent_mid_walk_is_a_timeout_not_a_hang() -> None:
    async with harness(calls=250, max_retries=1, timeout=5.0) as (fake, client):
        seen: list[str] = []

        async def go_silent() -> None:
            fake.faults.slow_next(1000, delay=3600.0)

        walk = collect(client.calls.list(per_page=10, concurrency=3), seen, 15, go_silent)
        with pytest.raises(cs.APITimeoutError):
            await walk
        assert len(seen) == len(set(seen)) < 250


# ------------------------------------------------------------------ more tasks than connections


@pytest.mark.looptime
async def test_requests_beyond_the_connection_limit_queue_for_a_connection() -> None:
    """250 concurrent requests, 100 connections (the default), 1 s per answer: three waves."""
    async with harness() as (fake, client):
        call_id = (await client.calls.list(per_page=1)).items[0].id
        fake.reset_stats()
        fake.latency = 1.0
        loop = asyncio.get_running_loop()
        start = loop.time()
        calls = await asyncio.gather(*(client.calls.get(call_id) for _ in range(250)))
        assert loop.time() - start == pytest.approx(3.0, abs=0.1)
        assert {c.id for c in calls} == {call_id}
        assert fake.stats.requests == 250


@pytest.mark.looptime
async def test_waiting_for_a_connection_counts_against_the_timeout() -> None:
    """A request that waited 3 s for a connection has 2 s of its 5 s left: not enough."""
    async with harness(timeout=5.0, max_retries=0) as (fake, client):
        call_id = (await client.calls.list(per_page=1)).items[0].id
        fake.latency = 3.0
        results = await asyncio.gather(
            *(client.calls.get(call_id) for _ in range(150)), return_exceptions=True
        )
        assert sum(isinstance(r, cs.Call) for r in results) == 100
        assert sum(isinstance(r, cs.APITimeoutError) for r in results) == 50


async def requests_in_flight_and_queued(
    fake: FakeCallScaler, client: cs.CallScaler
) -> tuple[Any, list[asyncio.Task[cs.Call]]]:
    """150 concurrent calls.get, 1 s answers, half a second in: 100 hold the connections
    (the default limit), 50 queue for one. Returns the call id and the tasks."""
    call_id = (await client.calls.list(per_page=1)).items[0].id
    fake.latency = 1.0
    tasks = [asyncio.create_task(client.calls.get(call_id)) for _ in range(150)]
    await asyncio.sleep(0.5)
    return call_id, tasks


@pytest.mark.looptime
async def test_cancelled_while_waiting_for_a_connection_loses_no_connection() -> None:
    async with harness() as (fake, client):
        call_id, tasks = await requests_in_flight_and_queued(fake, client)
        for task in tasks[:10] + tasks[100:]:
            task.cancel()  # 10 holding a connection, 50 queued for one
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert sum(isinstance(d, asyncio.CancelledError) for d in done) == 60
        assert sum(isinstance(d, cs.Call) for d in done) == 90
        # Every connection is free again: 100 at once take one wave.
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(client.calls.get(call_id) for _ in range(100)))
        assert loop.time() - start == pytest.approx(1.0, abs=0.1)


@pytest.mark.looptime
async def test_closing_the_client_ends_requests_queued_for_a_connection() -> None:
    async with harness() as (fake, client):
        _, tasks = await requests_in_flight_and_queued(fake, client)
        await client.aclose()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        # A typed error for each (none was cancelled by its caller), nothing left waiting.
        assert all(isinstance(d, cs.APIConnectionError) for d in done), {type(d) for d in done}
        assert all("closed" in str(d) for d in done)


@pytest.mark.looptime
async def test_requests_queued_for_a_connection_get_one_first_come_first_served() -> None:
    async with harness(calls=60) as (fake, client):
        ids = [c.id for c in (await client.calls.list(per_page=30)).items]
        fake.latency = 1.0
        holding = [asyncio.create_task(client.calls.get(ids[0])) for _ in range(100)]
        await asyncio.sleep(0.5)
        fake.reset_stats()
        queued = []
        for call_id in ids[1:21]:  # queued one after another, in this order
            queued.append(asyncio.create_task(client.calls.get(call_id)))
            await asyncio.sleep(0.01)
        await asyncio.gather(*holding, *queued)
        assert [record.path for record in fake.stats.log] == [f"calls/{i}" for i in ids[1:21]]


@pytest.mark.looptime
async def test_no_connection_is_lost_to_failed_requests() -> None:
    """Every way a request can end gives its connection back: 150 at once (50 of them
    queued for a connection), 20 of which meet each fault in turn, then a full wave."""
    faults: list[tuple[Callable[[FakeCallScaler], None], str | None]] = [
        (lambda fake: fake.faults.fail_next(20, status=500), "InternalServerError"),
        # (aiohttp itself resends a GET whose reused connection was dropped: either outcome)
        (lambda fake: fake.faults.drop_next(20), None),
        (lambda fake: fake.faults.truncate_next(20), "ResponseDecodeError"),
        (lambda fake: fake.faults.slow_next(20, 5.0), "APITimeoutError"),  # past the timeout
        (lambda fake: fake.faults.redirect_to("http://127.0.0.1:9/x", n=20), "APIConnectionError"),
    ]
    async with harness(max_retries=0, timeout=2.0) as (fake, client):
        call_id = (await client.calls.list(per_page=1)).items[0].id
        seen: Counter[str] = Counter()
        for inject, kind in faults:
            inject(fake)
            fake.latency = 0.5
            outcomes = await asyncio.gather(
                *(client.calls.get(call_id) for _ in range(140)),
                *(client.calls.get(uuid.uuid4()) for _ in range(10)),  # 404
                return_exceptions=True,
            )
            kinds = Counter(type(o).__name__ for o in outcomes)
            if kind is not None:
                assert kinds[kind] == 20, kinds
            assert kinds["NotFoundError"] == 10
            seen.update(kinds)
        assert seen["Call"] >= 5 * 120
        # And 100 at once still take one wave.
        fake.latency = 1.0
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(client.calls.get(call_id) for _ in range(100)))
        assert loop.time() - start == pytest.approx(1.0, abs=0.1)


@pytest.mark.looptime
async def test_the_connection_limit_of_a_callers_session_is_respected() -> None:
    async with (
        FakeCallScaler(calls=10, seed=7, rate_limit=10_000) as fake,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=10)) as session,
        cs.CallScaler(
            fake.api_key,
            base_url=fake.base_url,
            rate_limit=huge(),
            business=f"reliability-{next(_names)}",
            session=session,
        ) as client,
    ):
        call_id = (await client.calls.list(per_page=1)).items[0].id
        fake.latency = 1.0
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(client.calls.get(call_id) for _ in range(25)))
        assert loop.time() - start == pytest.approx(3.0, abs=0.1)


# ------------------------------------------------------------------ 429 storms


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("header", "body"), [(True, True), (True, False), (False, True), (False, False)]
)
async def test_429_storm_is_waited_out(header: bool, body: bool) -> None:
    period = 3.0
    async with harness(client_limit=cs.RateLimit(100, period)) as (fake, client):
        loop = asyncio.get_running_loop()
        start = loop.time()
        fake.faults.rate_limit_next(3, retry_after=5, header=header, body=body)
        assert await client.account.balance()
        elapsed = loop.time() - start
        assert fake.stats.requests == 4
        pause = 5.0 if header or body else period  # no hint: at least one period
        assert elapsed >= 3 * pause
        # The 429's X-RateLimit-Reset (5 s ahead) may also be honoured; then jitter, restart.
        assert elapsed <= 3 * (5.0 + 2.0) + 2 * period


@pytest.mark.looptime
@pytest.mark.parametrize(("header", "body"), [(True, False), (False, True), (False, False)])
async def test_429_storm_longer_than_retries_is_a_rate_limit_error(
    header: bool, body: bool
) -> None:
    async with harness(max_retries=2, client_limit=cs.RateLimit(100, 3.0)) as (fake, client):
        fake.faults.rate_limit_next(10, retry_after=4, header=header, body=body)
        with pytest.raises(cs.RateLimitError) as info:
            await client.account.balance()
        assert fake.stats.requests == 3
        assert info.value.retry_after == (4.0 if header or body else None)


@pytest.mark.looptime
async def test_429_storm_under_concurrency_pauses_the_business_once() -> None:
    async with harness(client_limit=cs.RateLimit(100, 3.0)) as (fake, client):
        await client.account.balance()
        fake.faults.rate_limit_next(5, retry_after=2)
        results = await asyncio.gather(*(client.account.balance() for _ in range(50)))
        assert len(results) == 50
        # The 429s hit requests already in flight; after the pause nothing else was refused.
        assert fake.stats.rate_limited == 5
        assert fake.stats.requests == 1 + 50 + 5


# ------------------------------------------------------------------ odd Reset headers


@pytest.mark.looptime
@pytest.mark.parametrize("reset", ["past", "far"])
@pytest.mark.parametrize("algorithm", ["fixed", "sliding", "bucket"])
async def test_reset_in_the_past_or_years_ahead(reset: str, algorithm: str) -> None:
    limit, period, total = 30, 3.0, 300
    async with harness(
        rate_limit=limit,
        period=period,
        algorithm=algorithm,
        client_limit=cs.RateLimit(limit, period),
    ) as (fake, client):
        fake.faults.reset_header = reset  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        start = loop.time()
        work = iter(range(total))

        async def worker() -> None:
            for _ in work:
                await client.account.balance()

        await asyncio.gather(*(worker() for _ in range(20)))
        elapsed = loop.time() - start
        assert fake.stats.rate_limited == 0  # no burst
        assert fake.stats.requests == total
        minimum = (total // limit - 1) * period
        assert elapsed <= minimum * 1.5 + period, (elapsed, minimum)  # no stall


# ------------------------------------------------------------------ page-level faults


@pytest.mark.looptime
async def test_total_changing_between_pages_inserts() -> None:
    async with harness() as (fake, client):
        original = [c["id"] for c in fake.calls_data]
        fake.faults.insert_calls_per_list_request = 2
        got = ids([c async for c in client.calls.list(per_page=10, concurrency=1)])
        assert len(got) == len(set(got))
        assert set(original) <= set(got)
        assert set(got) <= {c["id"] for c in fake.calls_data}


@pytest.mark.looptime
async def test_total_changing_between_pages_jitter() -> None:
    """Totals that lie by a few items, the data unchanged: every walk either delivers the
    list exactly or stops with a typed error naming the inconsistency; both happen."""
    outcomes: Counter[str] = Counter()
    for seed in range(30):
        async with harness(calls=60, seed=seed) as (fake, client):
            original = [c["id"] for c in fake.calls_data]
            fake.faults.total_jitter = 3
            got: list[str] = []
            try:
                await collect(client.calls.list(per_page=10, concurrency=2), got)
            except (cs.ResponseDecodeError, cs.InconsistentPagesError) as exc:
                outcomes[type(exc).__name__] += 1
                named = "total" in str(exc) or "changed" in str(exc)
                assert named, f"seed {seed}: the error names no inconsistency"
                assert len(got) == len(set(got)) and set(got) <= set(original)
            else:
                outcomes["complete"] += 1
                assert sorted(got) == sorted(original), f"seed {seed}"
    assert outcomes["complete"] > 0, outcomes
    assert sum(n for kind, n in outcomes.items() if kind != "complete") > 0, outcomes


@pytest.mark.looptime
async def test_sync_rewalks_a_window_whose_total_changes() -> None:
    async with harness(calls=250) as (fake, client):
        original = {c["id"] for c in fake.calls_data}
        biz = fake.business("acme")
        since = dt.datetime.fromtimestamp(biz.calls[-1].ts, tz=dt.UTC)
        until = dt.datetime.fromtimestamp(biz.calls[0].ts, tz=dt.UTC)
        requests = 0

        def mutate(event: Any) -> None:
            nonlocal requests
            requests += 1
            fake.faults.delete_calls_per_list_request = 1 if requests <= 3 else 0
            fake.faults.insert_calls_per_list_request = 1

        client._transport.hooks.on_request.append(mutate)
        sync = client.calls.sync(
            since=since, until=until, window=dt.timedelta(days=200), strategy="pages"
        )
        got = ids([c async for c in sync])
        assert len(got) == len(set(got))
        still_there = original & {c["id"] for c in fake.calls_data}
        assert still_there <= set(got) <= original
        assert sync.rewalks >= 1


@pytest.mark.looptime
@pytest.mark.parametrize("per_page", [10, 100])
async def test_pages_shorter_than_per_page(per_page: int) -> None:
    async with harness(calls=250) as (fake, client):
        fake.faults.short_pages = True
        got = ids([c async for c in client.calls.list(per_page=per_page)])
        assert got == [c["id"] for c in fake.calls_data]


@pytest.mark.looptime
@pytest.mark.parametrize("at", [1, 3, 6])
async def test_empty_page_before_total_is_a_named_error(at: int) -> None:
    async with harness() as (fake, client):
        fake.faults.empty_page_at = at
        seen: list[str] = []
        walk = collect(client.calls.list(per_page=10, concurrency=2), seen)
        with pytest.raises(cs.ResponseDecodeError, match=f"page {at} is empty"):
            await walk
        assert seen == [c["id"] for c in fake.calls_data[: (at - 1) * 10]]


@pytest.mark.looptime
@pytest.mark.parametrize("seed", range(8))
async def test_empty_last_page_after_deletions_ends_the_walk(seed: int) -> None:
    """Half the list deleted (at random positions) right after the first page: page 2
    comes back short or empty, and the calls the deletions moved onto page 1's offsets are
    still delivered before the walk ends."""
    async with harness(calls=20, seed=seed) as (fake, client):
        seen: list[str] = []

        async def delete_ten() -> None:
            fake.faults.delete_calls_next(10)

        walk = client.calls.list(per_page=10, concurrency=1)
        await collect(walk, seen, 10, delete_ten)
        surviving = {c["id"] for c in fake.calls_data}
        assert len(surviving) == 10
        assert len(seen) == len(set(seen))
        assert surviving <= set(seen), f"missed {len(surviving - set(seen))} calls"


@pytest.mark.looptime
@pytest.mark.parametrize("concurrency", [1, 8])
@pytest.mark.parametrize(("deletes", "inserts"), [(1, 0), (3, 0), (1, 1), (3, 1), (0, 2)])
async def test_walks_deliver_every_surviving_call_while_calls_come_and_go(
    concurrency: int, deletes: int, inserts: int
) -> None:
    """250 calls, per_page 12: up to a quarter of a page deleted at random positions on every
    request, new calls inserted at the head. ``async for`` and ``.pages()`` deliver every
    call that was there from start to end, once."""
    for seed in range(6):
        for use_pages in (False, True):
            async with harness(calls=250, seed=seed) as (fake, client):
                original = {c["id"] for c in fake.calls_data}
                newest = max(c["started_at"] for c in fake.calls_data)
                fake.faults.delete_calls_per_list_request = deletes
                fake.faults.insert_calls_per_list_request = inserts
                walk = client.calls.list(per_page=12, concurrency=concurrency)
                if use_pages:
                    calls = [c async for page in walk.pages() for c in page.items]
                else:
                    calls = [c async for c in walk]
                got = ids(calls)
                surviving = original & {c["id"] for c in fake.calls_data}
                where = f"seed {seed}, {'pages' if use_pages else 'items'}"
                assert len(got) == len(set(got)), f"{where}: duplicates"
                assert not surviving - set(got), f"{where}: missed {surviving - set(got)}"
                # Anything else is a call inserted at the head during the walk.
                assert all(
                    c.started_at > dt.datetime.fromisoformat(newest)
                    for c in calls if str(c.id) not in original
                ), where  # fmt: skip


@pytest.mark.looptime
async def test_a_list_changing_faster_than_it_can_be_reread_is_a_typed_error() -> None:
    """Three pages' worth deleted and as many inserted on every request: a walk either still
    proves it complete (and is), or raises InconsistentPagesError; never ends short."""
    outcomes: Counter[str] = Counter()
    for seed in range(6):
        async with harness(calls=250, seed=seed) as (fake, client):
            original = {c["id"] for c in fake.calls_data}
            fake.faults.delete_calls_per_list_request = 30
            fake.faults.insert_calls_per_list_request = 30
            got: list[str] = []
            try:
                await collect(client.calls.list(per_page=10, concurrency=8), got)
            except cs.InconsistentPagesError as exc:
                outcomes["error"] += 1
                named = "changed while it was walked" in str(exc)
                assert named, f"seed {seed}: the error names no inconsistency"
            else:
                outcomes["complete"] += 1
                surviving = original & {c["id"] for c in fake.calls_data}
                assert surviving <= set(got), f"seed {seed}: ended short"
            assert len(got) == len(set(got))
    assert outcomes["error"] > 0, outcomes


# ------------------------------------------------------------------ bulk walk, random faults


def random_faults(
    rng: random.Random, fake: FakeCallScaler, rate: float, timeout: float, deletes: int
) -> Callable[[str], Any]:
    """A ``Faults.take`` replacement: a seeded random fault (or none) for each request.

    The first ``deletes`` requests also delete a random call (the data changes mid-walk).
    """
    requests = itertools.count(1)

    def take(path: str) -> list[PendingFault]:
        fake.faults.delete_calls_per_list_request = 1 if next(requests) <= deletes else 0
        if rng.random() >= rate:
            return []
        kind = rng.choice(["fail", "proxy", "drop", "reset", "truncate", "429", "slow"])
        if kind == "fail":
            return [PendingFault("fail", 1, status=rng.choice([500, 502, 503, 504]))]
        if kind == "proxy":
            status = rng.choice([502, 503, 504])
            return [PendingFault("fail", 1, status=status, body=rng.choice(["html", "empty"]))]
        if kind == "drop":
            return [PendingFault("drop", 1)]
        if kind == "reset":
            return [PendingFault("reset_mid_body", 1)]
        if kind == "truncate":
            return [PendingFault("truncate", 1)]
        if kind == "429":
            return [
                PendingFault(
                    "rate_limit",
                    1,
                    retry_after=rng.randint(1, 3),
                    header=rng.random() < 0.5,
                    body_retry_after=rng.random() < 0.5,
                )
            ]
        return [PendingFault("slow", 1, delay=timeout * rng.choice([0.5, 1.5]))]

    return take


async def bulk_run(seed: int, mode: str) -> tuple[str, int]:
    """One seeded walk; returns (outcome, requests). Asserts the exactly-once contract."""
    rng = random.Random(seed)
    timeout = 2.0
    async with harness(
        calls=60 if mode == "list" else 150,
        max_retries=3,
        timeout=timeout,
        client_limit=cs.RateLimit(1000, 3.0),
    ) as (fake, client):
        biz = fake.business("acme")
        original = {c["id"] for c in fake.calls_data}
        fake.faults.short_pages = rng.random() < 0.25
        if rng.random() < 0.1:
            fake.faults.empty_page_at = rng.randint(1, 8)
        if mode == "list" and rng.random() < 0.25:
            fake.faults.insert_calls_per_list_request = rng.randint(1, 3)
        deletes = rng.choice([0, 0, 2, 5])
        fake.faults.take = random_faults(  # type: ignore[method-assign,assignment]
            rng, fake, rate=0.3, timeout=timeout, deletes=deletes
        )
        got: list[str] = []
        outcome = "complete"
        try:
            if mode == "list":
                concurrency = rng.choice([1, 2, 8])
                pager = client.calls.list(per_page=10, concurrency=concurrency)
                async for call in pager:
                    got.append(str(call.id))
            else:
                if rng.random() < 0.3:
                    fake.faults.insert_calls_per_list_request = 1
                since = dt.datetime.fromtimestamp(biz.calls[-1].ts, tz=dt.UTC)
                until = dt.datetime.fromtimestamp(biz.calls[0].ts, tz=dt.UTC)
                window = dt.timedelta(days=rng.choice([10, 30, 200]))
                async for call in client.calls.sync(since=since, until=until, window=window):
                    got.append(str(call.id))
        except cs.CallScalerError as exc:
            outcome = type(exc).__name__
        dupes = [k for k, n in Counter(got).items() if n > 1]
        assert not dupes, f"seed {seed}: duplicates {dupes}"
        existed = original | {c["id"] for c in fake.calls_data}
        assert set(got) <= existed, f"seed {seed}: ids that never existed"
        if outcome == "complete":
            missing = (original & {c["id"] for c in fake.calls_data}) - set(got)
            assert not missing, f"seed {seed}: silently lost {len(missing)} calls"
        return outcome, fake.stats.requests


@pytest.mark.looptime
@pytest.mark.parametrize("mode", ["list", "sync"])
async def test_bulk_walk_under_random_faults_is_exactly_once_or_raises(mode: str) -> None:
    outcomes: Counter[str] = Counter()
    requests = 0
    for seed in range(SEEDS):
        outcome, sent = await asyncio.wait_for(bulk_run(seed, mode), timeout=3600)
        outcomes[outcome] += 1
        requests += sent
    # Both outcomes are exercised: most runs survive their faults, some give up typed.
    assert outcomes["complete"] >= SEEDS // 2, outcomes
    assert outcomes["complete"] < SEEDS, outcomes
    print(f"{mode}: {SEEDS} seeds, {requests} requests, outcomes {dict(outcomes)}")
