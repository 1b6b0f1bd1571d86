"""Cancelling SDK operations at random moments, in real time: how long until they are done.

Each operation runs against the fake (real sockets, a little latency) with a slow consumer,
so the SDK's internal queues are full, and is cancelled after a seeded random delay inside
its uncancelled duration. Per operation: the moments tried, how many were cancelled (the
rest had finished), the longest time from ``cancel()`` until the task and every task it
started are done, and the tasks left pending afterwards (summed over the moments).

    .venv/bin/python benchmarks/bench_cancel.py [--moments 200]

(``tests/test_cancellation.py`` runs the same sweep under a virtual clock and asserts it.)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import random
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import callscaler_async as cs
from callscaler_async.sync import MemoryStore
from callscaler_async.testing import FakeCallScaler


async def aenumerate(items: AsyncIterator[Any]) -> AsyncIterator[tuple[int, Any]]:
    i = 0
    async for item in items:
        yield i, item
        i += 1


def sdk_tasks(baseline: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    return {
        t for t in asyncio.all_tasks() - baseline
        if not t.done()
        and not getattr(t.get_coro(), "__qualname__", "").startswith("RequestHandler.")
    }  # fmt: skip


async def sweep(
    name: str, make: Callable[[], Awaitable[Any]], moments: int
) -> tuple[int, float, int]:
    began = time.perf_counter()
    await make()
    duration = time.perf_counter() - began
    worst, left, cancelled = 0.0, 0, 0
    reports: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reports.append(context))
    for seed in range(moments):
        baseline = asyncio.all_tasks()
        task = asyncio.ensure_future(make())
        await asyncio.sleep(random.Random(seed).uniform(0, duration * 0.9))
        if task.done():
            continue
        cancelled += 1
        at = time.perf_counter()
        task.cancel()
        await asyncio.wait([task], timeout=60)
        while sdk_tasks(baseline) and time.perf_counter() - at < 5:
            await asyncio.sleep(0.001)
        worst = max(worst, time.perf_counter() - at)
        left += len(sdk_tasks(baseline))
    loop.set_exception_handler(None)
    if reports:
        print(f"  {name}: reported to the loop: {[c.get('message') for c in reports]}")
    return cancelled, worst, left


async def main() -> None:
    # The fake's server logs clients that hang up mid-answer: that is the point here.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moments", type=int, default=200)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    async with (
        FakeCallScaler(calls=1200, seed=5, rate_limit=10**6, latency=0.005) as fake,
        cs.CallScaler(
            fake.api_key, base_url=fake.base_url, rate_limit=cs.RateLimit(10**6, 60.0)
        ) as client,
    ):
        stamps = sorted(dt.datetime.fromisoformat(c["started_at"]) for c in fake.calls_data)
        since, until = stamps[0].replace(microsecond=0), stamps[-1].replace(microsecond=0)
        recorded = next(c["id"] for c in fake.calls_data if c["recording_url"])

        async def slow_sink(batch: list[cs.Call]) -> None:
            await asyncio.sleep(0.02)

        async def sync_run() -> None:
            job = client.calls.sync(since=since, until=until, window=dt.timedelta(days=60))
            await job.run(slow_sink, store=MemoryStore())

        async def sync_iter() -> None:
            async for i, _ in aenumerate(client.calls.sync(since=since, until=until)):
                if i % 20 == 0:
                    await asyncio.sleep(0.001)  # slower than the producers: queues full

        async def walk() -> None:
            async for i, _ in aenumerate(client.calls.list(per_page=20, concurrency=8)):
                if i % 5 == 0:
                    await asyncio.sleep(0.001)  # eight pages prefetched and waiting

        async def download() -> None:
            await client.calls.recording(recorded).save(tmp / "r.mp3")

        async def export() -> None:
            async for i, _ in aenumerate(client.calls.export()):
                if i % 20 == 0:
                    await asyncio.sleep(0.001)

        ops = {"sync.run": sync_run, "sync iteration": sync_iter, "list walk": walk,
               "recording.save": download, "export": export}  # fmt: skip
        print(f"{'operation':<16} {'moments':>7} {'cancelled':>9} "
              f"{'longest cancel->done':>20} {'tasks left':>10}")
        for name, make in ops.items():
            cancelled, worst, left = await sweep(name, make, args.moments)
            print(f"{name:<16} {args.moments:>7} {cancelled:>9} {worst * 1000:>17.1f} ms "
                  f"{left:>10}", flush=True)
    async with FakeCallScaler(calls=10, rate_limit=2, period=60.0) as slow, cs.CallScaler(
        slow.api_key, base_url=slow.base_url, rate_limit=cs.RateLimit(2, 60.0)
    ) as gated:
        await gated.account.balance()
        await gated.account.balance()
        worst, left = 0.0, 0
        for seed in range(args.moments):  # each waits at the gate for the next window
            baseline = asyncio.all_tasks()
            task = asyncio.ensure_future(gated.account.balance())
            await asyncio.sleep(random.Random(seed).uniform(0, 0.01))
            at = time.perf_counter()
            task.cancel()
            await asyncio.wait([task], timeout=60)
            worst = max(worst, time.perf_counter() - at)
            left += len(sdk_tasks(baseline))
        print(f"{'gate wait':<16} {args.moments:>7} {args.moments:>9} "
              f"{worst * 1000:>17.1f} ms {left:>10}")


if __name__ == "__main__":
    asyncio.run(main())
