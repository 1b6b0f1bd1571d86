"""The FastAPI integration, served by a real uvicorn on 127.0.0.1 and driven over HTTP.

The example app (``examples/fastapi_app.py``) runs against the fake API: one client for the
whole app, one aiohttp session, one rate gate; nothing left open after shutdown; a request
waiting at the rate gate does not hold up other handlers.
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI

import callscaler_async as cs
from callscaler_async.contrib.fastapi import CallScalerClients
from callscaler_async.ratelimit import gate_for
from callscaler_async.testing import FakeCallScaler

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastapi_app.py"
SECRET = "test-secret-0123456789abcdef"


def load_example(monkeypatch: pytest.MonkeyPatch, fake: FakeCallScaler) -> ModuleType:
    """A fresh copy of the example module, configured for ``fake`` through its environment."""
    monkeypatch.setenv("CALLSCALER_API_KEY", fake.api_key)
    monkeypatch.setenv("CALLSCALER_BASE_URL", fake.base_url)
    monkeypatch.setenv("CALLSCALER_RATE_LIMIT", "10000")
    monkeypatch.setenv("CALLSCALER_WEBHOOK_SECRET", SECRET)
    name = f"fastapi_app_under_test_{id(fake)}"
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


@asynccontextmanager
async def serve_app(app: Any) -> AsyncIterator[str]:
    """Run ``app`` on a real uvicorn server (this event loop) at a free 127.0.0.1 port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level="warning",
        ws="none",
        http="h11",
        backlog=2048,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn stopped during startup")
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def other_tasks_settle() -> set[asyncio.Task[Any]]:
    """Tasks other than this one still pending after a short grace period."""
    current = asyncio.current_task()
    for _ in range(100):
        pending = {t for t in asyncio.all_tasks() if t is not current and not t.done()}
        if not pending:
            return pending
        await asyncio.sleep(0.02)
    return pending


async def test_500_concurrent_requests_share_one_session_and_gate(
    fake: FakeCallScaler, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = load_example(monkeypatch, fake)
    fake.reset_stats()
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    async with serve_app(example.app) as url:
        client: cs.CallScaler = example.clients.get()
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
            answers = await asyncio.gather(
                *(http.get("/calls", params={"limit": 5}) for _ in range(500))
            )
            assert {a.status_code for a in answers} == {200}
            assert all(len(a.json()["calls"]) == 5 for a in answers)
            transport = client._transport
            session = transport._session
            assert session is not None
            assert transport.sessions_created == 1
            assert transport.requests_sent == 500
            assert fake.stats.requests == 500
            # One gate for the business, the one every client of "main" in this loop shares.
            assert transport.gate is gate_for("main", cs.RateLimit(requests=10000, period=60.0))
            assert client.rate_limit is not None and client.rate_limit.in_flight == 0
    # Shutdown closed the client and its session, and left nothing running.
    assert client.closed
    assert session.closed
    with pytest.raises(RuntimeError, match="not open"):
        example.clients.get()
    assert await other_tasks_settle() == set()


async def test_a_rate_limit_wait_does_not_block_other_handlers(
    fake: FakeCallScaler, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = load_example(monkeypatch, fake)
    async with serve_app(example.app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        client: cs.CallScaler = example.clients.get()
        # Warm up: the gate learns the server's headers.
        assert (await http.get("/calls", params={"limit": 1})).status_code == 200
        fake.faults.rate_limit_next(1, retry_after=2, path="calls")
        loop = asyncio.get_running_loop()
        started = loop.time()
        slow = asyncio.create_task(http.get("/calls", params={"limit": 3}))
        async with asyncio.timeout(5):
            while fake.stats.rate_limited == 0:
                await asyncio.sleep(0.01)
        snapshot = client.rate_limit
        assert snapshot is not None and snapshot.paused_until is not None
        # The business is paused for ~2 s; handlers that do not call the API answer now.
        for _ in range(5):
            t0 = loop.time()
            health = await http.get("/healthz")
            assert health.status_code == 200
            assert loop.time() - t0 < 0.5
        hook = await http.post(
            "/webhooks/callscaler",
            content=b'{"event": "call.failed", "call": {"id": "a1b2c3d4-e5f6-7890-abcd-'
            b'ef1234567890", "status": "failed", "started_at": "2026-03-23T14:30:00Z"}}',
            headers={"X-CallScaler-Secret": SECRET, "Content-Type": "application/json"},
        )
        assert hook.status_code == 200
        assert not slow.done()
        answer = await slow
        assert answer.status_code == 200
        assert len(answer.json()["calls"]) == 3
        assert loop.time() - started >= 1.0  # it really waited for the pause
        recent = (await http.get("/webhooks/recent")).json()
        assert [e["event"] for e in recent] == ["call.failed"]


async def test_number_stats_and_errors(
    fake: FakeCallScaler, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = load_example(monkeypatch, fake)
    number_id = next(iter(fake.business("acme").numbers))
    async with serve_app(example.app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        stats = await http.get(f"/numbers/{number_id}/stats", params={"days": 365})
        assert stats.status_code == 200, stats.text
        body = stats.json()
        assert body["number"]["id"] == number_id
        assert "count" in body["totals"]
        missing = await http.get("/numbers/00000000-0000-4000-8000-000000000000/stats")
        assert missing.status_code == 404
        fake.faults.fail_next(10, status=500)
        failing = await http.get("/calls")
        assert failing.status_code == 502
        assert failing.json()["upstream_status"] == 500


async def test_several_businesses_and_an_app_owned_session(fake: FakeCallScaler) -> None:
    clients = CallScalerClients()
    huge = cs.RateLimit(requests=10000, period=60.0)
    clients.add("acme", api_key=fake.api_key, base_url=fake.base_url, rate_limit=huge)
    clients.add("globex", api_key=fake.other_business_key, base_url=fake.base_url, rate_limit=huge)
    sessions: list[aiohttp.ClientSession] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            sessions.append(session)
            async with clients.open(session=session):
                yield
            assert not session.closed  # the clients leave an app-owned session open

    app = FastAPI(lifespan=lifespan)
    by_path = clients.from_path("business", aliases={"a": "acme"})
    by_header = clients.from_header("X-Business")

    @app.get("/{business}/calls")
    async def calls(client: cs.CallScaler = Depends(by_path)) -> dict[str, Any]:  # noqa: B008
        page = await client.calls.list(per_page=1)
        return {"business": client.business, "total": page.total}

    @app.get("/balance")
    async def balance(client: cs.CallScaler = Depends(by_header)) -> dict[str, Any]:  # noqa: B008
        await client.account.balance()
        return {"business": client.business}

    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        acme = (await http.get("/acme/calls")).json()
        globex = (await http.get("/globex/calls")).json()
        assert acme["business"] == "acme" and globex["business"] == "globex"
        assert acme["total"] == len(fake.business("acme").calls)
        assert globex["total"] == len(fake.business("globex").calls)
        assert (await http.get("/a/calls")).json()["business"] == "acme"
        assert (await http.get("/initech/calls")).status_code == 404
        assert (await http.get("/balance")).status_code == 400
        answer = await http.get("/balance", headers={"X-Business": "globex"})
        assert answer.json() == {"business": "globex"}

        # A pause of acme (a 429) does not hold up globex: separate gates.
        fake.faults.rate_limit_next(1, retry_after=2, path="calls")
        loop = asyncio.get_running_loop()
        paused = asyncio.create_task(http.get("/acme/calls"))
        async with asyncio.timeout(5):
            while fake.stats.rate_limited == 0:
                await asyncio.sleep(0.01)
        t0 = loop.time()
        other = await http.get("/balance", headers={"X-Business": "globex"})
        assert other.status_code == 200 and loop.time() - t0 < 0.5
        assert not paused.done()
        assert (await paused).status_code == 200
        for name in ("acme", "globex"):
            assert clients.get(name)._transport.sessions_created == 0
    assert sessions and sessions[0].closed
    assert await other_tasks_settle() == set()


async def test_dependency_outside_the_lifespan_is_a_clear_error() -> None:
    clients = CallScalerClients()
    with pytest.raises(RuntimeError, match="lifespan"):
        clients.get()
    clients.add("main", api_key="cs_key_abcdefgh" + "x" * 20)
    with pytest.raises(ValueError, match="already"):
        clients.add("main")
    with pytest.raises(TypeError, match="open"):
        clients.add("other", session=object())
