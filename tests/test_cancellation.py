"""Cancelling any operation at any instant: it ends promptly and leaves nothing behind.

Each operation is started against the fake (real sockets), its internal queues kept full by a
slow consumer, and cancelled at a seeded random moment of loop time (``CANCEL_SEEDS`` moments
per operation, default 200). After every cancellation: ``CancelledError`` reached the caller
within one second of loop time, no task of the SDK is left, nothing was reported to the
loop's exception handler ("Task was destroyed but it is pending", "exception was never
retrieved", an async generator closed while running), and the same client still works.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import callscaler_async as cs
from callscaler_async.sync import MemoryStore
from callscaler_async.testing import FakeCallScaler

SEEDS = int(os.environ.get("CANCEL_SEEDS", "200"))
LIMIT = 1.0  # seconds of loop time from cancel() to the task being done


def huge() -> cs.RateLimit:
    return cs.RateLimit(requests=100_000, period=60.0)


class LoopReports:
    """Everything handed to the loop's exception handler while installed."""

    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []
        self.loop = asyncio.get_running_loop()
        self.previous = self.loop.get_exception_handler()

    def __enter__(self) -> LoopReports:
        self.loop.set_exception_handler(lambda loop, context: self.contexts.append(context))
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.set_exception_handler(self.previous)

    def messages(self) -> list[str]:
        return [f"{c.get('message')}: {c.get('exception')!r}" for c in self.contexts]


def sdk_tasks(baseline: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    # The fake's own request handlers may still be sleeping out their latency; they are the
    # server's, not the SDK's.
    return {
        task
        for task in asyncio.all_tasks() - baseline
        if not getattr(task.get_coro(), "__qualname__", "").startswith("RequestHandler.")
        and not task.done()
    }


async def cancel_at(
    start: Callable[[], Awaitable[Any]], delay: float
) -> tuple[float, str, set[asyncio.Task[Any]]]:
    """Run ``start()`` as a task and cancel it after ``delay`` s of loop time.

    Returns the loop time from cancel() until the task is done *and* every SDK task it
    started has ended (an abandoned ``async for`` is closed by the loop's async-generator
    hook, in a task of its own: that counts), how it ended, and the SDK tasks still left
    once ``LIMIT`` has passed.
    """
    loop = asyncio.get_running_loop()
    baseline = asyncio.all_tasks()
    task = asyncio.ensure_future(start())
    await asyncio.sleep(delay)
    if task.done():
        outcome = "finished" if task.exception() is None else repr(task.exception())
        return 0.0, outcome, sdk_tasks(baseline)
    cancelled_at = loop.time()
    task.cancel()
    # Generous: a hang shows up as a failed bound, not as a stuck test.
    await asyncio.wait([task], timeout=60)
    while sdk_tasks(baseline) and loop.time() - cancelled_at <= LIMIT:
        await asyncio.sleep(0.001)
    elapsed = loop.time() - cancelled_at
    if not task.done():
        outcome = "still running"
    elif task.cancelled():
        outcome = "cancelled"
    else:
        outcome = f"swallowed the cancellation: {task.exception()!r}"
    return elapsed, outcome, sdk_tasks(baseline)


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeCallScaler]:
    async with FakeCallScaler(calls=400, seed=5, rate_limit=100_000, latency=0.05) as server:
        yield server


@pytest_asyncio.fixture
async def client(fake: FakeCallScaler) -> AsyncIterator[cs.CallScaler]:
    async with cs.CallScaler(
        fake.api_key, base_url=fake.base_url, rate_limit=huge(), business="cancel"
    ) as c:
        yield c


def sync_range(fake: FakeCallScaler) -> tuple[dt.datetime, dt.datetime]:
    stamps = sorted(dt.datetime.fromisoformat(c["started_at"]) for c in fake.calls_data)
    return stamps[0].replace(microsecond=0), stamps[-1].replace(microsecond=0)


def operations(
    fake: FakeCallScaler, client: cs.CallScaler, tmp: Path
) -> dict[str, Callable[[random.Random], Callable[[], Awaitable[Any]]]]:
    """name -> make the operation for one seed."""
    since, until = sync_range(fake)
    recorded = next(c["id"] for c in fake.calls_data if c["recording_url"])

    def sync_run(rng: random.Random) -> Callable[[], Awaitable[Any]]:
        async def slow_sink(batch: list[cs.Call]) -> None:
            await asyncio.sleep(0.3)  # the producers' queues fill up meanwhile

        window = dt.timedelta(days=60)
        job = client.calls.sync(since=since, until=until, window=window, concurrency=4)
        return lambda: job.run(slow_sink, store=MemoryStore())

    def sync_iter(rng: random.Random) -> Callable[[], Awaitable[Any]]:
        window = dt.timedelta(days=60)

        async def go() -> None:
            async for _ in client.calls.sync(since=since, until=until, window=window):
                await asyncio.sleep(0.01)

        return go

    def walk(rng: random.Random) -> Callable[[], Awaitable[Any]]:
        async def go() -> None:
            async for _ in client.calls.list(per_page=10, concurrency=8):
                await asyncio.sleep(0.01)  # eight pages prefetched and waiting

        return go

    def pages(rng: random.Random) -> Callable[[], Awaitable[Any]]:
        async def go() -> None:
            async for _ in client.calls.list(per_page=10, concurrency=8).pages():
                await asyncio.sleep(0.1)

        return go

    def download(rng: random.Random) -> Callable[[], Awaitable[Any]]:
        async def go() -> None:
            async for _ in client.calls.recording(recorded):
                await asyncio.sleep(0.01)

        return go

    def download_save(rng: random.Random) -> Callable[[], Awaitable[Any]]:
        target = tmp / "recording.mp3"

        async def go() -> None:
            await client.calls.recording(recorded).save(target)

        return go

    def export(rng: random.Random) -> Callable[[], Awaitable[Any]]:
        async def go() -> None:
            async for _ in client.calls.export():
                await asyncio.sleep(0.001)

        return go

    def gate(rng: random.Random) -> Callable[[], Awaitable[Any]]:
        async def go() -> None:
            # Two requests use the budget; the third waits at the gate for the next window.
            await client.with_options(priority="low").account.balance()

        return go

    return {
        "sync_run": sync_run,
        "sync_iter": sync_iter,
        "walk": walk,
        "pages": pages,
        "download": download,
        "download_save": download_save,
        "export": export,
        "gate": gate,
    }


@pytest.mark.slow
@pytest.mark.looptime
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "name",
    ["sync_run", "sync_iter", "walk", "pages", "download", "download_save", "export", "gate"],
)
async def test_cancelled_at_random_moments_ends_within_a_second(
    name: str, fake: FakeCallScaler, tmp_path: Path
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        await sweep(name, fake, tmp_path, stack)


async def sweep(
    name: str, fake: FakeCallScaler, tmp_path: Path, stack: contextlib.AsyncExitStack
) -> None:
    limit = huge()
    if name.startswith("sync"):  # two windows of ~600 calls: six pages, more than a queue holds
        fake = await stack.enter_async_context(
            FakeCallScaler(calls=1200, seed=5, rate_limit=100_000, latency=0.05)
        )
    if name == "gate":  # a business with a budget of two requests a minute
        limit = cs.RateLimit(2, 60.0)
        fake = await stack.enter_async_context(
            FakeCallScaler(calls=20, seed=5, rate_limit=2, period=60.0)
        )
    async with cs.CallScaler(
        fake.api_key, base_url=fake.base_url, rate_limit=limit, business=f"cancel-{name}"
    ) as client:
        make = operations(fake, client, tmp_path)[name]
        loop = asyncio.get_running_loop()
        if name == "gate":
            await client.account.balance()
            await client.account.balance()
        began = loop.time()
        await make(random.Random(-1))()
        duration = loop.time() - began  # uncancelled; the moments fall inside it
        assert duration > 0.05
        worst = 0.0
        outcomes: dict[str, int] = {}
        with LoopReports() as reports:
            for seed in range(SEEDS):
                rng = random.Random(seed)
                if name == "gate":
                    await asyncio.sleep(60.0)  # a fresh window, then use it up
                    await client.account.balance()
                    await client.account.balance()
                # (At the gate: well inside the wait for the next window.)
                delay = rng.uniform(0.0, 0.5 if name == "gate" else duration * 0.95)
                elapsed, outcome, left = await cancel_at(make(rng), delay)
                assert outcome in ("cancelled", "finished"), f"seed {seed}: {outcome}"
                assert not left, f"seed {seed}: tasks left pending: {left}"
                assert elapsed <= LIMIT, f"seed {seed}: {elapsed:.3f} s from cancel() to done"
                worst = max(worst, elapsed)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                if name != "gate":
                    await client.account.balance()  # the client still works
            gc.collect()
            for _ in range(3):
                await asyncio.sleep(0)
        assert not reports.contexts, reports.messages()
    # Most moments fell while the operation was running, not after it finished.
    assert outcomes.get("cancelled", 0) >= SEEDS * 0.8, outcomes
    print(f"{name}: {SEEDS} moments, {outcomes}, longest cancel-to-done {worst:.3f} s")


async def test_a_sync_cancelled_in_real_time_ends_and_leaves_nothing(
    fake: FakeCallScaler,
) -> None:
    """No virtual clock: real sockets, a real thread writing the file, a real delay."""
    since, until = sync_range(fake)
    fake.latency = 0.01
    baseline = asyncio.all_tasks()

    async def slow_sink(batch: list[cs.Call]) -> None:
        await asyncio.sleep(0.05)

    async with cs.CallScaler(
        fake.api_key, base_url=fake.base_url, rate_limit=huge(), business="cancel-real"
    ) as client:
        with LoopReports() as reports:
            job = client.calls.sync(since=since, until=until, window=dt.timedelta(days=3))
            task = asyncio.ensure_future(job.run(slow_sink, store=MemoryStore()))
            await asyncio.sleep(0.3)
            assert not task.done()
            task.cancel()
            await asyncio.wait([task], timeout=30)
            assert task.cancelled()
            assert not sdk_tasks(baseline)
            assert await client.account.balance()
            gc.collect()
            await asyncio.sleep(0)
        assert not reports.contexts, reports.messages()
