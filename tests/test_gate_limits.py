"""The business gate against a rate limiter we did not write: the ``limits`` library.

``limits`` (used by Flask-Limiter and slowapi) does the admission in a small aiohttp app that
serves ``GET /api/v1/account/balance``: each of its strategies (fixed window, moving window,
sliding-window counter) in turn, with its async in-memory storage. The ``X-RateLimit-*``
headers come from the library's own window statistics (``get_window_stats``), as an API
built on it would send them: Remaining as it is, Reset rounded up to the second.

The library reads ``time.time()``; here that clock is the event loop's, so looptime makes
the windows virtual like everywhere else in the tests (nothing else of the library is
touched).
"""

from __future__ import annotations

import asyncio
import math
import types
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email.utils import formatdate

import limits
import limits.aio.storage.memory
import limits.aio.strategies
import orjson
import pytest
from aiohttp import web

import callscaler_async as cs

STRATEGIES: dict[str, type[limits.aio.strategies.RateLimiter]] = {
    "fixed-window": limits.aio.strategies.FixedWindowRateLimiter,
    "moving-window": limits.aio.strategies.MovingWindowRateLimiter,
    "sliding-window-counter": limits.aio.strategies.SlidingWindowCounterRateLimiter,
}
# Start phases of the library's aligned windows (the counter's; the fixed window starts at
# its first hit): just after a boundary, half-way, just before.
PHASES = [0.02, 0.5, 0.97]
KEY = "cs_key_limits0000000000000000"


class LimitsServer:
    """An API answering ``account/balance`` behind one ``limits`` strategy."""

    def __init__(self, strategy: str, limit: int, period: int, clock: Callable[[], float]):
        self.clock = clock
        self.item = limits.RateLimitItemPerSecond(limit, period)
        self.limiter = STRATEGIES[strategy](limits.aio.storage.MemoryStorage())
        self.served = 0
        self.rejected = 0
        self.admitted: list[float] = []

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"error": "unauthorized"}, status=401)
        ok = await self.limiter.hit(self.item, "acme")
        stats = await self.limiter.get_window_stats(self.item, "acme")
        now = self.clock()
        headers = {
            "X-RateLimit-Limit": str(self.item.amount),
            "X-RateLimit-Remaining": str(stats.remaining),
            "X-RateLimit-Reset": str(math.ceil(stats.reset_time)),
            "Date": formatdate(now, usegmt=True),
        }
        if not ok:
            self.rejected += 1
            wait = max(1, math.ceil(stats.reset_time - now))
            body = {"error": "rate_limit_exceeded", "message": "slow down", "retry_after": wait}
            headers["Retry-After"] = str(wait)
            return web.Response(
                status=429, body=orjson.dumps(body), content_type="application/json",
                headers=headers,
            )  # fmt: skip
        self.served += 1
        self.admitted.append(now)
        balance = {
            "balance_cents": 1250,
            "low_balance_threshold_cents": 500,
            "auto_recharge": False,
            "auto_recharge_amount_cents": 0,
        }
        return web.Response(
            body=orjson.dumps({"data": balance}), content_type="application/json",
            headers=headers,
        )  # fmt: skip


@asynccontextmanager
async def limits_server(
    monkeypatch: pytest.MonkeyPatch, strategy: str, limit: int, period: int, phase: float
) -> AsyncIterator[tuple[LimitsServer, str]]:
    loop = asyncio.get_running_loop()
    anchor = 596_000_000 * period + phase * period - loop.time()

    def clock() -> float:
        return anchor + loop.time()

    virtual = types.SimpleNamespace(time=clock)
    monkeypatch.setattr(limits.aio.storage.memory, "time", virtual)
    monkeypatch.setattr(limits.aio.strategies, "time", virtual)
    server = LimitsServer(strategy, limit, period, clock)
    app = web.Application()
    app.router.add_get("/api/v1/account/balance", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield server, f"http://127.0.0.1:{port}/api/v1/"
    finally:
        await runner.cleanup()
        timer = server.limiter.storage.timer  # type: ignore[union-attr]
        if timer is not None and not timer.done():
            timer.cancel()


async def hammer(client: cs.CallScaler, tasks: int, total: int) -> None:
    work = iter(range(total))

    async def worker() -> None:
        for _ in work:
            await client.account.balance()

    await asyncio.gather(*(worker() for _ in range(tasks)))


@pytest.mark.looptime
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("tasks", [1, 50])
async def test_zero_429_against_every_limits_strategy(
    monkeypatch: pytest.MonkeyPatch, strategy: str, phase: float, tasks: int
) -> None:
    limit, period, total = 30, 3, 300
    async with (
        limits_server(monkeypatch, strategy, limit, period, phase) as (server, url),
        cs.CallScaler(
            KEY, base_url=url, rate_limit=cs.RateLimit(limit, period),
            business=f"limits-{strategy}-{phase}-{tasks}",
        ) as client,
    ):  # fmt: skip
        loop = asyncio.get_running_loop()
        start = loop.time()
        await hammer(client, tasks, total)
        elapsed = loop.time() - start
    assert server.rejected == 0
    assert server.served == total
    # The library never admits more than 30 per 3 s in a row: 300 take at least 9 periods
    # (less one for a fixed window's first, or a counter's phase); not much more either.
    assert elapsed >= (total / limit - 2) * period
    if tasks > 1:
        assert elapsed <= (total / limit) * period * 1.15 + 1.0, elapsed


@pytest.mark.looptime
@pytest.mark.parametrize("strategy", list(STRATEGIES))
async def test_two_walks_after_a_quiet_spell(
    monkeypatch: pytest.MonkeyPatch, strategy: str
) -> None:
    """Bursts after quiet spells: each one starts from whatever the last one left."""
    limit, period = 10, 2
    async with (
        limits_server(monkeypatch, strategy, limit, period, 0.5) as (server, url),
        cs.CallScaler(
            KEY, base_url=url, rate_limit=cs.RateLimit(limit, period), business=f"quiet-{strategy}"
        ) as client,
    ):  # fmt: skip
        for quiet in (0.3, 1.1, 2.7, 0.0, 5.0):
            await hammer(client, 20, 25)
            await asyncio.sleep(quiet)
    assert server.rejected == 0
    assert server.served == 125
