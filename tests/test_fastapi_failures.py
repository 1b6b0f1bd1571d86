"""What a client of the app receives when a CallScaler call fails (``add_error_handlers``).

A real uvicorn serves a small app on 127.0.0.1; the fake API (a real aiohttp server) fails
on demand; the test is the app's client, over HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI

import callscaler_async as cs
from callscaler_async.contrib.fastapi import CallScalerClients, add_error_handlers
from callscaler_async.testing import FakeCallScaler


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed


def make_app(**client_kwargs: Any) -> FastAPI:
    clients = CallScalerClients(environ={})
    clients.add("main", **client_kwargs)
    app = FastAPI(lifespan=clients.lifespan)
    app.state.clients = clients
    add_error_handlers(app)

    @app.get("/calls")
    async def calls(client: cs.CallScaler = Depends(clients.client)) -> dict[str, int]:  # noqa: B008
        page = await client.calls.list(per_page=1)
        return {"total": page.total}

    return app


@asynccontextmanager
async def serve(
    app: FastAPI, *, graceful: float = 5.0
) -> AsyncIterator[tuple[str, uvicorn.Server]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="on", log_level="warning", ws="none", http="h11",
        timeout_graceful_shutdown=graceful,  # type: ignore[arg-type]
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        await task
        sock.close()


def kwargs(fake: FakeCallScaler, **extra: Any) -> dict[str, Any]:
    return {"api_key": fake.api_key, "base_url": fake.base_url, "max_retries": 0, **extra}


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        return await http.get("/calls")


async def test_max_wait_refusal_is_503_with_retry_after_and_sends_nothing(
    fake: FakeCallScaler,
) -> None:
    # A share of one request a minute: the fake's higher limit and Remaining are the other
    # shares' budget, so the second request must wait for this one's slot.
    app = make_app(**kwargs(fake, rate_limit=cs.RateLimit(1, 60.0, share=True), max_wait=0.5))
    async with serve(app) as (url, _):
        assert (await get(url)).status_code == 200
        sent = fake.stats.requests
        refused = await get(url)
    assert refused.status_code == 503
    body = refused.json()
    assert body["error"] == "rate_limited" and body["source"] == "local"
    assert "upstream_status" not in body  # the API was not asked
    assert body["message"].startswith("refused locally, no request sent to the API")
    assert "longer than max_wait=0.5s" in body["message"]
    retry = int(refused.headers["Retry-After"])
    assert 55 <= retry <= 60 and body["retry_after"] == retry  # the slot frees ~60 s later
    assert fake.stats.requests == sent


async def test_api_429_after_retries_is_503_with_the_apis_retry_after(
    fake: FakeCallScaler,
) -> None:
    app = make_app(**kwargs(fake))
    async with serve(app) as (url, _):
        fake.faults.rate_limit_next(1, retry_after=7)
        response = await get(url)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    body = response.json()
    assert body == {
        "error": "rate_limited",
        "message": body["message"],
        "retry_after": 7,
        "source": "api",
        "upstream_status": 429,
    }
    assert fake.api_key not in response.text


async def test_redis_down_is_503_saying_so(fake: FakeCallScaler) -> None:
    pytest.importorskip("redis")
    app = make_app(**kwargs(fake, rate_limiter=f"redis://127.0.0.1:{closed_port()}/0"))
    async with serve(app) as (url, _):
        response = await get(url)
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "rate_limiter_unavailable"
    assert "shared rate limiter (Redis) cannot be reached" in body["message"]
    assert fake.stats.requests == 0


async def test_upstream_5xx_is_502(fake: FakeCallScaler) -> None:
    app = make_app(**kwargs(fake))
    async with serve(app) as (url, _):
        fake.faults.fail_next(1, status=503)
        response = await get(url)
    assert response.status_code == 502
    assert response.json()["upstream_status"] == 503
    assert "Retry-After" not in response.headers


async def test_unreachable_api_is_502(fake: FakeCallScaler) -> None:
    base = f"http://127.0.0.1:{closed_port()}/api/v1/"
    app = make_app(**kwargs(fake, base_url=base))
    async with serve(app) as (url, _):
        response = await get(url)
    assert response.status_code == 502
    assert response.json()["error"] == "upstream_unreachable"


async def test_api_timeout_is_504(fake: FakeCallScaler) -> None:
    app = make_app(**kwargs(fake, timeout=0.2))
    async with serve(app) as (url, _):
        fake.faults.slow_next(1, delay=3.0)
        response = await get(url)
    assert response.status_code == 504
    assert response.json()["error"] == "upstream_timeout"


async def test_a_gate_wait_cut_off_by_shutdown_is_a_clean_503(
    fake: FakeCallScaler, caplog: pytest.LogCaptureFixture
) -> None:
    """The graceful-shutdown timeout (0.5 s) is shorter than the wait at the gate (60 s)."""
    app = make_app(**kwargs(fake, rate_limit=cs.RateLimit(1, 60.0, share=True)))
    caplog.set_level(logging.INFO)
    async with serve(app, graceful=0.5) as (url, server):
        assert (await get(url)).status_code == 200
        waiting = asyncio.create_task(get(url))
        client = app.state.clients.get()
        async with asyncio.timeout(10):
            while client.rate_limit is None or client.rate_limit.waiting == 0:
                await asyncio.sleep(0.01)  # until it queues at the gate
        assert not waiting.done()
        server.should_exit = True
        async with asyncio.timeout(10):
            response = await waiting
    assert response.status_code == 503
    assert response.json()["error"] == "shutting_down"
    assert response.headers["Retry-After"] == "1"
    assert not [r for r in caplog.records if "Exception in ASGI application" in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info]  # no traceback anywhere
    assert fake.stats.requests == 1
