"""Rate-gate benchmark: this SDK vs a naive limiter vs a reactive client, side by side.

Real time, real HTTP to a server in this process, at a scaled limit (60 requests per 1 s by
default; the README's scale is ``--period 3``, 60 per 3 s). Servers: the fake API with each
of its window algorithms (``fixed``, ``sliding`` log, token ``bucket``, sliding-window
``counter``), and a small aiohttp app whose admission and rate headers come from the
``limits`` library (``limits-fixed``, ``limits-moving``, ``limits-counter``: its fixed
window, moving window and sliding-window counter strategies, in-memory storage; Reset is
its ``get_window_stats`` reset time rounded up). Each run starts at a chosen phase of the
server's aligned window (``--phases``, default 0.05, 0.5 and 0.9 of the period). Three
clients send the same number of requests with the same concurrency:

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
  (``limits``' fixed window starts at its first hit, so there it is the sliding log's.)
* sliding-window counter (windows aligned to multiples of P; at phase ``f`` of a window a
  request is admitted while ``floor(prev * (1 - f) + cur) + 1 <= N``), from a full budget at
  start phase ``φ``: ``(1 - φ) * P + (M - N - 1) * P / N``. Checked, and it holds: the first N
  go at once (all in the first window); in the next window ``prev = N`` and the ``k``-th
  request needs ``N * (1 - f) + (k - 1) < N``, that is ``f > (k - 1) / N``, so one more every
  ``P / N`` from the window's start, ``(1 - φ) * P`` after ours; the window after that sees
  ``prev = N`` again, so the pace carries on. No other schedule is faster: sending ``a <= N``
  in the first window leaves ``N + ceil(a * f)`` by phase ``f`` of the second, largest for
  ``a = N``; by induction the same holds window after window. It is an infimum (each
  admission is strictly after its instant) and it assumes zero latency, as the others do.

M <= N needs no wait (minimum 0; the ratio is not shown). The elapsed time also includes the
last answer's round trip, which the minimum does not: the ratio is slightly against the
clients. ``--repeat`` runs every row that many times (the machine may be busy: read the
spread, not one number).

Also: CPU per admitted request with 10,000 tasks waiting at one gate (no HTTP).

    python benchmarks/bench_gate.py [--requests 300] [--limit 60] [--period 1.0] [--tasks 50]
                                    [--repeat 1] [--phases 0.05,0.5,0.9]
                                    [--algorithms fixed,sliding,bucket,counter,limits-fixed,
                                                  limits-moving,limits-counter]
                                    [--clients sdk,naive,reactive]

(The ``limits`` servers need ``pip install limits``; their periods are whole seconds.)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from aiolimiter import AsyncLimiter

import callscaler_async as cs
from callscaler_async.testing import FakeCallScaler

LIMIT = 60  # the default; --limit changes it
_RUNS = itertools.count()


def theoretical_minimum(
    algorithm: str, requests: int, period: float, phase: float, limit: int = LIMIT
) -> float:
    """Seconds between the first and the last admission the server's algorithm allows."""
    if requests <= limit:
        return 0.0
    if algorithm == "bucket":
        return (requests - limit) * period / limit
    if algorithm in ("counter", "limits-counter"):
        return (period - phase) + (requests - limit - 1) * period / limit
    later_batches = math.ceil(requests / limit) - 1  # batches after the first, full budget
    if algorithm == "fixed":
        # The first window ends (period - phase) after the start; then whole windows.
        return (period - phase) + (later_batches - 1) * period
    return later_batches * period


class Server:
    """Where the clients send: the fake API, or the ``limits`` app."""

    base_url: str
    api_key: str
    served: int
    rejected: int

    def now(self) -> float:
        raise NotImplementedError


class FakeServer(Server):
    def __init__(self, fake: FakeCallScaler) -> None:
        self.fake = fake
        self.base_url = fake.base_url
        self.api_key = fake.api_key

    def now(self) -> float:
        return self.fake.now()

    @property  # type: ignore[override]
    def served(self) -> int:
        return self.fake.stats.by_status.get(200, 0)

    @property  # type: ignore[override]
    def rejected(self) -> int:
        return self.fake.stats.rate_limited


LIMITS_KEY = "cs_key_bench0000000000000000"
BALANCE = (
    b'{"data":{"balance_cents":1250,"low_balance_threshold_cents":500,'
    b'"auto_recharge":false,"auto_recharge_amount_cents":0}}'
)


class LimitsServer(Server):
    """``GET account/balance`` behind one strategy of the ``limits`` library."""

    def __init__(self, strategy: str, limit: int, period: float) -> None:
        import limits
        import limits.aio.strategies as strategies

        cls = {
            "limits-fixed": strategies.FixedWindowRateLimiter,
            "limits-moving": strategies.MovingWindowRateLimiter,
            "limits-counter": strategies.SlidingWindowCounterRateLimiter,
        }[strategy]
        if period != int(period):
            raise SystemExit("the limits servers need a whole number of seconds (--period)")
        self.item = limits.RateLimitItemPerSecond(limit, int(period))
        self.limiter = cls(limits.aio.storage.MemoryStorage())
        self.api_key = LIMITS_KEY
        self.served = 0
        self.rejected = 0
        self._runner: web.AppRunner | None = None

    def now(self) -> float:
        return time.time()  # the library's own clock

    async def handle(self, request: web.Request) -> web.Response:
        from email.utils import formatdate

        ok = await self.limiter.hit(self.item, "acme")
        stats = await self.limiter.get_window_stats(self.item, "acme")
        now = time.time()
        headers = {
            "X-RateLimit-Limit": str(self.item.amount),
            "X-RateLimit-Remaining": str(stats.remaining),
            "X-RateLimit-Reset": str(math.ceil(stats.reset_time)),
            "Date": formatdate(now, usegmt=True),
        }
        if not ok:
            self.rejected += 1
            wait = max(1, math.ceil(stats.reset_time - now))
            headers["Retry-After"] = str(wait)
            body = b'{"error":"rate_limit_exceeded","retry_after":%d}' % wait
            return web.Response(status=429, body=body, headers=headers,
                                content_type="application/json")  # fmt: skip
        self.served += 1
        return web.Response(body=BALANCE, headers=headers, content_type="application/json")

    async def __aenter__(self) -> LimitsServer:
        app = web.Application()
        app.router.add_get("/api/v1/account/balance", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/api/v1/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
        timer = self.limiter.storage.timer  # type: ignore[attr-defined]
        if timer is not None and not timer.done():
            timer.cancel()


async def run_sdk(
    fake: Server, requests: int, tasks: int, period: float, limit: int
) -> int:
    async with cs.CallScaler(
        fake.api_key,
        base_url=fake.base_url,
        rate_limit=cs.RateLimit(limit, period),
        # A fresh business per run: an id() can be reused once its object is gone, and a
        # gate (with all it learnt of another server) would then carry over.
        business=f"bench-{next(_RUNS)}",
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
    fake: Server,
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
    algorithm: str,
    client: str,
    requests: int,
    tasks: int,
    period: float,
    limit: int = LIMIT,
    start_phase: float = 0.3,
) -> dict[str, float]:
    if algorithm.startswith("limits-"):
        async with LimitsServer(algorithm, limit, period) as server:
            return await one_on(server, algorithm, client, requests, tasks, period, limit,
                                start_phase)  # fmt: skip
    async with FakeCallScaler(
        calls=10, rate_limit=limit, period=period, algorithm=algorithm
    ) as fake:
        return await one_on(FakeServer(fake), algorithm, client, requests, tasks, period,
                            limit, start_phase)  # fmt: skip


async def one_on(
    fake: Server,
    algorithm: str,
    client: str,
    requests: int,
    tasks: int,
    period: float,
    limit: int,
    start_phase: float,
) -> dict[str, float]:
    # Start at the chosen phase of the server's aligned window, so runs are comparable.
    phase_target = start_phase * period
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
    served = fake.served
    rejected = fake.rejected
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
    parser.add_argument(
        "--algorithms",
        default="fixed,sliding,bucket,counter,limits-fixed,limits-moving,limits-counter",
    )
    parser.add_argument("--phases", default="0.05,0.5,0.9", help="start phases of the window")
    parser.add_argument("--clients", default="sdk,naive,reactive")
    args = parser.parse_args()
    print(
        f"{args.requests} requests, {args.tasks} tasks, limit {args.limit} per "
        f"{args.period:g} s (fake API in-process, real time)\n"
    )
    header = (
        f"{'server':<14} {'phase':>5} {'client':<9} {'served':>6} {'429s':>5} "
        f"{'elapsed s':>9} {'min s':>6} {'ratio':>6}"
    )
    print(header, flush=True)
    print("-" * len(header))
    ratios: dict[tuple[str, float, str], list[float]] = {}
    rejected: dict[tuple[str, float, str], int] = {}
    phases = [float(p) for p in args.phases.split(",")]
    for algorithm in args.algorithms.split(","):
        for phase in phases:
            for client in args.clients.split(","):
                for _ in range(args.repeat):
                    row = await one(
                        algorithm, client, args.requests, args.tasks, args.period,
                        args.limit, phase,
                    )  # fmt: skip
                    ratio = row["elapsed"] / row["minimum"] if row["minimum"] else float("nan")
                    key = (algorithm, phase, client)
                    ratios.setdefault(key, []).append(ratio)
                    rejected[key] = rejected.get(key, 0) + int(row["429s"])
                    print(
                        f"{algorithm:<14} {phase:>5.2f} {client:<9} {row['served']:>6.0f} "
                        f"{row['429s']:>5.0f} {row['elapsed']:>9.2f} {row['minimum']:>6.2f} "
                        f"{ratio:>6.3f}",
                        flush=True,
                    )
    if args.repeat > 1:
        print(f"\nratio over {args.repeat} runs (min / median / max), 429s in all runs:")
        for (algorithm, phase, client), values in ratios.items():
            print(
                f"{algorithm:<14} {phase:>5.2f} {client:<9} {min(values):.3f} / "
                f"{statistics.median(values):.3f} / {max(values):.3f}   "
                f"{rejected[algorithm, phase, client]:>4} 429s"
            )
    per, admitted = await gate_cpu()
    print(
        "\ngate CPU per admitted request, 10,000 tasks waiting: "
        f"{per * 1e6:.1f} µs ({admitted} admitted)"
    )


if __name__ == "__main__":
    asyncio.run(main())
