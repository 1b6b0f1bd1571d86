"""Shared fixtures: the fake API (from the shipped pytest plugin) and a client bound to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

import callscaler_async as cs
from callscaler_async.testing import FakeCallScaler


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> object:
    # looptime's hook asks the event-loop policy for a loop even in synchronous tests, which
    # creates a loop nobody closes (a ResourceWarning, an error here). Sync tests need none.
    if pyfuncitem.get_closest_marker("asyncio") is None:
        pyfuncitem.funcargs.pop("event_loop_policy", None)
    return (yield)


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeCallScaler]:
    async with FakeCallScaler(
        calls=250, numbers=12, call_flows=4, seed=1, rate_limit=10_000, period=60.0
    ) as server:
        yield server


@pytest_asyncio.fixture
async def client(fake: FakeCallScaler) -> AsyncIterator[cs.CallScaler]:
    # A huge limit: these tests are about the API surface, not pacing.
    async with cs.CallScaler(
        fake.api_key,
        base_url=fake.base_url,
        rate_limit=cs.RateLimit(requests=10_000, period=60.0),
        business=f"surface-{id(fake)}",
    ) as c:
        yield c


@pytest_asyncio.fixture
async def aiohttp_echo() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A plain aiohttp server on another port (another origin) that records request headers."""
    seen: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"data": {"balance_cents": 1}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


from redis_server import redis_server  # noqa: E402, F401  (the real redis-server fixture)
