"""Rate-gate benchmark: this SDK vs a naive limiter vs a reactive client, side by side.

Real time, real HTTP to the fake API in this process, at a scaled limit (60 requests per
1 s by default; the issue's scale is ``--period 3``, 60 per 3 s). For each server window
algorithm (fixed, sliding, token bucket) three clients send the same number of requests with
the same concurrency:

  sdk       callscaler_async.CallScaler with its business gate
  naive     aiohttp + AsyncLimiter(60, period) (the usual recipe), retrying each 429 after
            retry_after
  reactive  aiohttp with no pacing, retrying each 429 after retry_after (what peer SDKs do)

Reported: requests served, 429s received, elapsed (first send to last answer), and elapsed
over the theoretical minimum. The minimum is the time the server's own algorithm needs between
admitting the first and the M-th of M requests at limit N per period P, every server starting
with a full budget (the fake's limiters do), for a client that knows the algorithm and the
server's clock exactly and has zero latency:

* sliding log: N at once, then the next N when the first N leave the log, one period later:
  ``(ceil(M / N) - 1) * P``;
* token bucket (capacity N, refill N / P per second, full at the start): N at once, then one
  per refill: ``(M - N) * P / N``;
* fixed window (windows aligned to multiples of P on the server's clock): N at once, the
  next N when the current window ends, ``P - phase`` later (``phase``: the server time into
  its window at the start, measured), then N per window: ``(P - phase) + (ceil(M / N) - 2) * P``.

M <= N needs no wait (minimum 0; the ratio is not shown). The elapsed time also includes the
last answer's round trip, which the minimum does not: the ratio is slightly against the
clients. ``--repeat`` runs every row that many times (the machine may be busy: read the
spread, not one number).

Also: CPU per admitted request with 10,000 tasks waiting at one gate (no HTTP).

    python benchmarks/bench_gate.py [--requests 300] [--limit 60] [--period 1.0] [--tasks 50]
                                    [--repeat 1] [--algorithms fixed,sliding,bucket]
                                    [--clients sdk,naive,reactive]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiolimiter import AsyncLimiter

import callscaler_async as cs
from callscaler_async.testing import FakeCallScaler

LIMIT = 60  # the default; --limit changes it


def theoretical_minimum(
    algorithm: str, requests: int, period: float, phase: float, limit: int = LIMIT
) -> float:
    """Seconds between the first and the last admission the server's algorithm allows."""
    if requests <= limit:
        return 0.0
    if algorithm == "bucket":
        return (requests - limit) * period / limit
    later_batches = math.ceil(requests / limit) - 1  # batches after the first, full budget
    if algorithm == "fixed":
        # The first window ends (period - phase) after the start; then whole windows.
        return (period - phase) + (later_batches - 1) * period
    return later_batches * period


async def run_sdk(
    fake: FakeCallScaler, requests: int, tasks: int, period: float, limit: int
) -> int:
    async with cs.CallScaler(
        fake.api_key,
        base_url=fake.base_url,
        rate_limit=cs.RateLimit(limit, period),
        business=f"bench-{id(fake)}",
        max_retries=50,
    ) as client:
        work = iter(range(requests))

        async def worker() -> None:
            for _ in work:
                await client.account.balance()

        await asyncio.gather(*(worker() for _ in range(tasks)))
        snapshot = client.rate_limit
        return snapshot.rate_limited if snapshot else 0


async def run_raw(
    fake: FakeCallScaler,
    requests: int,
    tasks: int,
    pace: Callable[[], Awaitable[None]] | None,
) -> int:
    url = f"{fake.base_url}account/balance"
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    limited = 0
    async with aiohttp.ClientSession(headers=headers) as session:
        work = iter(range(requests))

        async def worker() -> None:
            nonlocal limited
            for _ in work:
                while True:
                    if pace is not None:
                        await pace()
                    async with session.get(url) as resp:
                        body = await resp.read()
                        if resp.status != 429:
                            break
                        limited += 1
                        retry = float(resp.headers.get("Retry-After", "1"))
                        del body
                    await asyncio.sleep(retry)

        await asyncio.gather(*(worker() for _ in range(tasks)))
    return limited


async def one(
    algorithm: str, client: str, requests: int, tasks: int, period: float, limit: int = LIMIT
) -> dict[str, float]:
    async with FakeCallScaler(
        calls=10, rate_limit=limit, period=period, algorithm=algorithm
    ) as fake:
        # Start right after a window boundary plus a fixed offset, so runs are comparable.
        phase_target = 0.3 * period
        now = fake.now()
        wait = (phase_target - now % period) % period
        await asyncio.sleep(wait)
        phase = fake.now() % period
        loop = asyncio.get_running_loop()
        start = loop.time()
        if client == "sdk":
            await run_sdk(fake, requests, tasks, period, limit)
        elif client == "naive":
            limiter = AsyncLimiter(limit, period)
            await run_raw(fake, requests, tasks, limiter.acquire)
        else:
            await run_raw(fake, requests, tasks, None)
        elapsed = loop.time() - start
        served = fake.stats.by_status.get(200, 0)
        rejected = fake.stats.rate_limited
    minimum = theoretical_minimum(algorithm, requests, period, phase, limit)
    return {"served": served, "429s": rejected, "elapsed": elapsed, "minimum": minimum}


async def gate_cpu(waiting: int = 10_000) -> tuple[float, int]:
    """CPU seconds per admission with ``waiting`` tasks queued at one gate (no HTTP)."""
    gate = cs.BusinessRateGate(cs.RateLimit(requests=1000, period=0.05), name="cpu")

    async def task() -> None:
        ticket = await gate.acquire()
        gate.complete(ticket, status=200, headers=None)

    cpu0 = time.process_time()
    await asyncio.gather(*(task() for _ in range(waiting)))
    cpu = time.process_time() - cpu0
    return cpu / waiting, gate.requests_admitted


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--limit", type=int, default=LIMIT)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1, help="runs of every row")
    parser.add_argument("--algorithms", default="fixed,sliding,bucket")
    parser.add_argument("--clients", default="sdk,naive,reactive")
    args = parser.parse_args()
    print(
        f"{args.requests} requests, {args.tasks} tasks, limit {args.limit} per "
        f"{args.period:g} s (fake API in-process, real time)\n"
    )
    header = (
        f"{'server':<8} {'client':<9} {'served':>6} {'429s':>5} "
        f"{'elapsed s':>9} {'min s':>6} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    ratios: dict[tuple[str, str], list[float]] = {}
    rejected: dict[tuple[str, str], int] = {}
    for algorithm in args.algorithms.split(","):
        for client in args.clients.split(","):
            for _ in range(args.repeat):
                row = await one(
                    algorithm, client, args.requests, args.tasks, args.period, args.limit
                )
                ratio = row["elapsed"] / row["minimum"] if row["minimum"] else float("nan")
                ratios.setdefault((algorithm, client), []).append(ratio)
                rejected[algorithm, client] = rejected.get((algorithm, client), 0) + int(
                    row["429s"]
                )
                print(
                    f"{algorithm:<8} {client:<9} {row['served']:>6.0f} {row['429s']:>5.0f} "
                    f"{row['elapsed']:>9.2f} {row['minimum']:>6.2f} {ratio:>6.3f}"
                )
    if args.repeat > 1:
        print(f"\nratio over {args.repeat} runs (min / median / max), 429s in all runs:")
        for (algorithm, client), values in ratios.items():
            print(
                f"{algorithm:<8} {client:<9} {min(values):.3f} / "
                f"{statistics.median(values):.3f} / {max(values):.3f}   "
                f"{rejected[algorithm, client]:>4} 429s"
            )
    per, admitted = await gate_cpu()
    print(
        "\ngate CPU per admitted request, 10,000 tasks waiting: "
        f"{per * 1e6:.1f} µs ({admitted} admitted)"
    )


if __name__ == "__main__":
    asyncio.run(main())
