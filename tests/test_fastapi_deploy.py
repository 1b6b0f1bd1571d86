"""The FastAPI example deployed as in production: several worker processes, one budget.

Every part runs in its own process: the fake API (``callscaler sandbox``, 20 requests per
2 s, fixed window), a real ``redis-server``, the app under ``uvicorn --workers 4`` (or
gunicorn with ``--preload``), and a driver that opens a new connection for every request so
they spread over the workers. The fake's own count of 429s is the verdict.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import pytest
import redis

from tests.deploy import AppServer, Drive, Sandbox, drive
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]

pytestmark = pytest.mark.timeout(180)

LIMIT, PERIOD = 20, 2.0
REQUESTS = 80  # four periods of budget: the first burst, then three paced periods


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    fake = Sandbox(limit=LIMIT, period=PERIOD).start()
    try:
        yield fake
    finally:
        fake.stop()


def app_env(fake: Sandbox, **extra: str) -> dict[str, str]:
    env = {
        "CALLSCALER_API_KEY": fake.api_key,
        "CALLSCALER_BASE_URL": fake.base_url,
        "CALLSCALER_RATE_LIMIT": f"{LIMIT}/{PERIOD:g}s",
        "CALLSCALER_MAX_WAIT": "30",
    }
    for name in ("CALLSCALER_REDIS_URL", "CALLSCALER_WORKERS"):
        env[name] = ""  # nothing inherited from the environment running the tests
    env.update(extra)
    return env


def run(app: AppServer, n: int = REQUESTS) -> dict[int, int]:
    app.start()
    try:
        result = asyncio.run(drive(app.url, n, concurrency=20))
    finally:
        app.stop()
    return dict(result.statuses)


def test_four_uvicorn_workers_share_one_budget_through_redis(
    sandbox: Sandbox, redis_server: RedisServer
) -> None:
    app = AppServer(env=app_env(sandbox, CALLSCALER_REDIS_URL=redis_server.url))
    try:
        assert run(app) == {200: REQUESTS}
        log = app.log()
    finally:
        app.close()
    requests, rate_limited = sandbox.stop()
    assert (requests, rate_limited) == (REQUESTS, 0)  # no 429, no extra API request
    assert "not sent by this process" not in log


def test_four_workers_without_redis_warn_and_a_static_share_earns_no_429() -> None:
    # Each worker pacing the whole budget alone: the WARNING names the cause and the fixes.
    # It waits for 2.5 periods of answers that all show the others' requests, and a worker's
    # first answers may show none: eight periods of traffic, not four.
    n = 2 * REQUESTS
    fake = Sandbox(limit=LIMIT, period=PERIOD).start()
    app = AppServer(env=app_env(fake))
    try:
        statuses = run(app, n)
        log = app.log()
    finally:
        app.close()
        requests, rate_limited = fake.stop()
    assert statuses == {200: n}  # the retries hid the 429s from the app's users...
    assert rate_limited > 0 and requests == n + rate_limited  # ...not from the API
    warnings = [line for line in log.splitlines() if "not sent by this process" in line]
    assert 1 <= len(warnings) <= 4, log  # at most one per worker
    assert "several processes of this app" in warnings[0]
    assert "CALLSCALER_REDIS_URL" in warnings[0] and "CALLSCALER_WORKERS" in warnings[0]

    # The fix without Redis: each worker a quarter of the budget.
    fake = Sandbox(limit=LIMIT, period=PERIOD).start()
    app = AppServer(env=app_env(fake, CALLSCALER_WORKERS="4"))
    try:
        statuses = run(app)
        log = app.log()
    finally:
        app.close()
        requests, rate_limited = fake.stop()
    assert statuses == {200: REQUESTS}
    assert (requests, rate_limited) == (REQUESTS, 0)
    assert "not sent by this process" not in log


def test_gunicorn_preload_with_a_limiter_built_before_the_fork(
    sandbox: Sandbox, redis_server: RedisServer
) -> None:
    pytest.importorskip("gunicorn")
    app = AppServer(
        env=app_env(sandbox, CALLSCALER_REDIS_URL=redis_server.url),
        server="gunicorn",
        app="tests.preload_app:app",
        preload=True,
    )
    inspector = redis.Redis.from_url(redis_server.url)
    try:
        app.start()
        try:
            result = asyncio.run(drive(app.url, REQUESTS, concurrency=20))
            # Each worker's ledger entries carry its own token (drawn after the fork).
            held = inspector.zrange("callscaler:rl:{preload}:rel", 0, -1)
            tokens = {entry.decode().rsplit(":", 1)[0] for entry in held}
        finally:
            app.stop()
    finally:
        app.close()
        inspector.close()
    assert dict(result.statuses) == {200: REQUESTS}
    assert sandbox.stop() == (REQUESTS, 0)
    assert len(tokens) >= 2, tokens  # several workers served, none shares another's identity


def test_a_restart_under_load_gets_the_budget_back_at_once(
    sandbox: Sandbox, redis_server: RedisServer
) -> None:
    """SIGTERM mid-run, start again at once: nothing of the old workers' stays in Redis
    beyond their answers, and the new workers serve the rest with no 429 and no refusal
    (max_wait 15 s: slots held until the in-flight timeout, 60 s, would refuse them all)."""
    env = app_env(sandbox, CALLSCALER_REDIS_URL=redis_server.url, CALLSCALER_MAX_WAIT="15")
    app = AppServer(env=env)
    inspector = redis.Redis.from_url(redis_server.url)
    total = 100
    progress = Drive()

    async def main() -> tuple[int, int]:
        load = asyncio.create_task(drive(app.url, total, concurrency=10, out=progress))
        while len(progress.results) < total // 3:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(app.stop, signal.SIGTERM)
        held = (
            inspector.zcard("callscaler:rl:{main}:fly"),
            inspector.zcard("callscaler:rl:{main}:live"),
        )
        await asyncio.to_thread(app.start)
        await load
        return held

    try:
        app.start()
        fly, live = asyncio.run(main())
    finally:
        app.close()
        inspector.close()
    assert (fly, live) == (0, 0)  # every old worker said goodbye: nothing left in flight
    assert dict(progress.statuses) == {200: total}
    assert progress.refused > 0  # the load did run into the restart
    assert sandbox.stop() == (total, 0)
