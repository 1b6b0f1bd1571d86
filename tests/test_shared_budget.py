"""One budget across processes: who owns the limiter, identity after fork, goodbye and
crash, the deployment settings, the max_wait refusal, and the warning about a budget
spent by other processes of the app."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
import yarl

import callscaler_async as cs
from callscaler_async.contrib.fastapi import CallScalerClients, parse_rate_limit
from callscaler_async.ratelimit import BusinessRateGate, RateLimit
from callscaler_async.ratelimit.local import ForeignShareWatch
from callscaler_async.ratelimit.redis import RedisRateLimiter
from callscaler_async.testing import FakeCallScaler
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]

ROOT = Path(__file__).resolve().parent.parent
PERIOD = 1.0


# ------------------------------------------------------------------- client ownership


async def test_a_limiter_built_from_a_url_is_closed_with_its_client(
    fake: FakeCallScaler, redis_server: RedisServer
) -> None:
    rate = RateLimit(10, PERIOD)
    async with cs.CallScaler(
        fake.api_key, base_url=fake.base_url, rate_limit=rate, rate_limiter=redis_server.url,
        business="owned",
    ) as client:  # fmt: skip
        await client.account.balance()
        limiter = client._own_limiter
        assert isinstance(limiter, RedisRateLimiter) and limiter.rate_limit == rate
    assert limiter._closed
    inspector = aioredis.Redis.from_url(redis_server.url)
    try:  # the goodbye released everything it held
        assert await inspector.zcard("callscaler:rl:{owned}:fly") == 0
        assert await inspector.zcard("callscaler:rl:{owned}:live") == 0
    finally:
        await inspector.aclose()


async def test_a_given_limiter_is_left_to_its_owner(
    fake: FakeCallScaler, redis_server: RedisServer
) -> None:
    limiter = RedisRateLimiter(redis_server.url, business="given", rate_limit=RateLimit(10, 1.0))
    try:
        async with cs.CallScaler(
            fake.api_key, base_url=fake.base_url, rate_limiter=limiter
        ) as client:
            await client.account.balance()
            assert client._rate_limit_config == limiter.rate_limit  # taken from the limiter
        assert not limiter._closed
        ticket = await limiter.acquire()  # still usable by its owner
        limiter.complete(ticket, status=200, headers={})
    finally:
        await limiter.aclose()


def test_rate_limit_and_rate_limiter_must_agree(redis_server: RedisServer) -> None:
    limiter = RedisRateLimiter(redis_server.url, business="agree", rate_limit=RateLimit(10, 1.0))
    with pytest.raises(ValueError, match=r"rate_limit=.*differs from the rate_limiter's"):
        cs.CallScaler("cs_key_x", rate_limit=RateLimit(60, 60.0), rate_limiter=limiter)
    same = cs.CallScaler("cs_key_x", rate_limit=RateLimit(10, 1.0), rate_limiter=limiter)
    assert same._rate_limit_config == RateLimit(10, 1.0)
    with pytest.raises(ValueError, match=r"redis:// .*URL"):
        cs.CallScaler("cs_key_x", rate_limiter="localhost:6379")


# ------------------------------------------------------------ deployment from the env


def test_rate_limit_specs() -> None:
    assert parse_rate_limit("60") == RateLimit(60, 60.0)
    assert parse_rate_limit("60", period=10) == RateLimit(60, 10.0)
    assert parse_rate_limit("60/60s") == RateLimit(60, 60.0)
    assert parse_rate_limit("20/2s") == RateLimit(20, 2.0)
    assert parse_rate_limit(" 100 / 1m ") == RateLimit(100, 60.0)
    assert parse_rate_limit("1000/h") == RateLimit(1000, 3600.0)
    assert parse_rate_limit("5/0.5") == RateLimit(5, 0.5)
    for bad in ("", "sixty", "60/", "60/2d", "-1/2s", "60/60s/2"):
        with pytest.raises(ValueError, match="is not 'N' or 'N/<period>'"):
            parse_rate_limit(bad)
    with pytest.raises(ValueError, match="requests must be an int >= 1"):
        parse_rate_limit("0/2s")


async def open_with(env: dict[str, str], **kwargs: object) -> cs.CallScaler:
    clients = CallScalerClients(environ=env)
    clients.add("main", api_key="cs_key_test", **kwargs)
    async with clients.open():
        return clients.get()


async def test_clients_take_budget_redis_and_share_from_the_environment(
    redis_server: RedisServer,
) -> None:
    client = await open_with({"CALLSCALER_RATE_LIMIT": "20", "CALLSCALER_RATE_PERIOD": "2"})
    assert client._rate_limit_config == RateLimit(20, 2.0)
    client = await open_with({"CALLSCALER_RATE_LIMIT": "20/2s", "CALLSCALER_WORKERS": "4"})
    assert client._rate_limit_config == RateLimit(5, 2.0, share=True)
    # An explicit rate_limit is the business's whole budget; the share still divides it.
    client = await open_with({"CALLSCALER_WORKERS": "3"}, rate_limit=RateLimit(30, 60.0))
    assert client._rate_limit_config == RateLimit(10, 60.0, share=True)
    env = {"CALLSCALER_RATE_LIMIT": "20/2s", "CALLSCALER_REDIS_URL": redis_server.url,
           "CALLSCALER_WORKERS": "4"}  # fmt: skip
    client = await open_with(env)
    assert isinstance(client._own_limiter, type(None))  # closed and dropped with the client
    assert client._rate_limit_config == RateLimit(20, 2.0)  # Redis shares the whole budget


async def test_clients_close_the_redis_limiter_they_built(redis_server: RedisServer) -> None:
    clients = CallScalerClients(environ={"CALLSCALER_REDIS_URL": redis_server.url})
    clients.add("main", api_key="cs_key_test", rate_limit=RateLimit(20, 2.0))
    async with clients.open():
        limiter = clients.get()._own_limiter
        assert isinstance(limiter, RedisRateLimiter)
        assert limiter.rate_limit == RateLimit(20, 2.0) and limiter.name == "main"
    assert limiter._closed


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CALLSCALER_WORKERS": "0"}, "CALLSCALER_WORKERS must be an integer >= 1"),
        ({"CALLSCALER_WORKERS": "four"}, "CALLSCALER_WORKERS must be an integer >= 1"),
        ({"CALLSCALER_RATE_LIMIT": "3/1s", "CALLSCALER_WORKERS": "4"}, "cannot be shared by"),
        ({"CALLSCALER_RATE_PERIOD": "soon"}, "CALLSCALER_RATE_PERIOD must be seconds"),
        ({"CALLSCALER_RATE_PERIOD": "0"}, "CALLSCALER_RATE_PERIOD must be > 0"),
        ({"CALLSCALER_RATE_LIMIT": "60/min!"}, "CALLSCALER_RATE_LIMIT: rate limit"),
        (
            {"CALLSCALER_RATE_LIMIT": "60/60s", "CALLSCALER_RATE_PERIOD": "30"},
            "name different periods",
        ),
    ],
)
async def test_bad_deployment_settings_are_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await open_with(env)


# ------------------------------------------------------- identity, goodbye and crash

FORK = textwrap.dedent(
    """
    import asyncio, os, sys
    from callscaler_async.ratelimit._config import RateLimit
    from callscaler_async.ratelimit.redis import RedisRateLimiter

    gate = RedisRateLimiter(sys.argv[1], business="fork", rate_limit=RateLimit(10, 1.0))

    async def take(n):
        for _ in range(n):
            gate.complete(await gate.acquire(), status=200, headers={})
        await gate.aclose()
        return gate._token

    async def parent_first():
        ticket = await gate.acquire()   # bound, token drawn, a Redis connection open
        gate.complete(ticket, status=200, headers={})
        return gate._token

    before = asyncio.run(parent_first())
    pid = os.fork()
    if pid == 0:
        print("child", asyncio.run(take(3)), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
    print("parent", before, flush=True)
    """
)


async def test_a_limiter_used_before_fork_gets_a_new_identity_in_the_child(
    redis_server: RedisServer,
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", FORK, redis_server.url],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    tokens = dict(line.split() for line in out.stdout.splitlines())
    assert tokens["child"] and tokens["parent"] and tokens["child"] != tokens["parent"]
    inspector = aioredis.Redis.from_url(redis_server.url)
    try:  # 1 + 3 requests, none overwriting another's id (the parent's is unreported)
        held = await inspector.zcard("callscaler:rl:{fork}:rel")
        held += await inspector.zcard("callscaler:rl:{fork}:fly")
        assert held == 4
    finally:
        await inspector.aclose()


async def test_a_graceful_close_releases_requests_cut_off_in_flight(
    redis_server: RedisServer,
) -> None:
    rate = RateLimit(2, PERIOD)
    leaving = RedisRateLimiter(redis_server.url, business="bye", rate_limit=rate)
    staying = RedisRateLimiter(redis_server.url, business="bye", rate_limit=rate)
    try:
        await leaving.acquire()
        await leaving.acquire()  # both sent, never answered: cut off by the shutdown
        t0 = time.monotonic()
        await leaving.aclose()
        ticket = await staying.acquire()
        waited = time.monotonic() - t0
        staying.complete(ticket, status=200, headers={})
    finally:
        await staying.aclose()
    # Held as answered at the goodbye: one period, not the 60 s in-flight timeout (the slack
    # is for a busy machine; the contrast is 60 s).
    assert PERIOD - 0.05 <= waited <= PERIOD + 2.0, waited


HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from callscaler_async.ratelimit._config import RateLimit
    from callscaler_async.ratelimit.redis import RedisRateLimiter

    async def main():
        gate = RedisRateLimiter(sys.argv[1], business="crash", rate_limit=RateLimit(2, 1.0),
                                liveness_timeout=float(sys.argv[2]))
        await gate.acquire()
        await gate.acquire()
        print("holding", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_a_killed_process_holds_its_slots_only_until_its_lease_ends(
    redis_server: RedisServer,
) -> None:
    lease = 0.5
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_server.url, str(lease)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "holding"
    t0 = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    alive = RedisRateLimiter(redis_server.url, business="crash", rate_limit=RateLimit(2, PERIOD))
    try:
        ticket = await alive.acquire()
        waited = time.monotonic() - t0
        alive.complete(ticket, status=200, headers={})
    finally:
        await alive.aclose()
    # The lease ended at most `lease` after the kill; then one period: not 60 s + a period
    # (the slack is for a busy machine).
    assert waited <= lease + PERIOD + 2.0, waited


# ------------------------------------------------------------------ max_wait refusal


@pytest.mark.looptime
async def test_a_refusal_at_the_deadline_says_how_long_it_waited() -> None:
    gate = BusinessRateGate(RateLimit(1, 60.0), name="deadline")
    ticket = await gate.acquire()  # in flight: when a slot frees depends on its answer
    with pytest.raises(cs.RateLimitError) as info:
        await gate.acquire(max_wait=30.0)
    message = info.value.message
    assert message.startswith("refused locally, no request sent to the API: waited 30.0s")
    assert "(max_wait=30s)" in message and "longer than" not in message
    assert info.value.code == "max_wait_exceeded"
    gate.complete(ticket, status=200, headers={})


@pytest.mark.looptime
async def test_a_refusal_up_front_compares_the_wait_with_max_wait() -> None:
    gate = BusinessRateGate(RateLimit(1, 60.0), name="upfront")
    gate.complete(await gate.acquire(), status=200, headers={})
    with pytest.raises(cs.RateLimitError) as info:
        await gate.acquire(max_wait=30.0)
    message = info.value.message
    assert "expects the next slot in about 60.0s, longer than max_wait=30s" in message
    assert info.value.retry_after is not None and info.value.retry_after > 30.0


# ------------------------------------------------------- warning: budget spent by others


def test_a_steady_foreign_share_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="callscaler_async.ratelimit")
    watch = ForeignShareWatch("acme", 2.0)
    # A predecessor's requests, seen for two periods (its restart): no warning.
    for t in (0.0, 1.0, 2.0, 3.0, 4.0):
        watch.observe(t, 3)
    watch.observe(4.5, 0)
    assert not caplog.records
    # Seen in every answer for longer than 2.5 periods: one warning, then silence.
    for i in range(40):
        watch.observe(10.0 + i * 0.5, 5)
    assert len(caplog.records) == 1
    text = caplog.records[0].getMessage()
    assert "several processes of this app" in text
    assert "CALLSCALER_REDIS_URL" in text and "CALLSCALER_WORKERS=N" in text


# ------------------------------------------------------------------------------ CLI


def test_cli_commands_share_the_budget_through_redis(redis_server: RedisServer) -> None:
    from click.testing import CliRunner

    from callscaler_async.cli import main
    from callscaler_async.ratelimit import business_key
    from tests.test_cli import ThreadedFake

    with ThreadedFake(calls=50, seed=3, rate_limit=10_000, period=60.0) as fake:
        env = {
            "CALLSCALER_API_KEY": fake.api_key,
            "CALLSCALER_BASE_URL": fake.base_url,
            "CALLSCALER_REDIS_URL": redis_server.url,
        }
        result = CliRunner().invoke(main, ["numbers", "list", "--json"], env=env)
        assert result.exit_code == 0, result.output
        origin = str(yarl.URL(fake.base_url).origin()).lower()
        business = business_key(fake.api_key, origin)
    inspector = redis.Redis.from_url(redis_server.url)
    try:  # paced through the ledger, then closed: its answers reported, its lease ended
        assert inspector.zcard(f"callscaler:rl:{{{business}}}:rel") >= 1
        assert inspector.zcard(f"callscaler:rl:{{{business}}}:fly") == 0
        assert inspector.zcard(f"callscaler:rl:{{{business}}}:live") == 0
    finally:
        inspector.close()


# --------------------------------------------------------------------- a static share


@pytest.mark.looptime
async def test_a_share_paces_by_its_own_ledger_not_the_servers_remaining() -> None:
    """Limit 2 of a server's 10: Remaining 8 is the other shares' budget too, not ours."""
    gate = BusinessRateGate(RateLimit(2, 60.0, share=True), name="share")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for remaining in (9, 8):
        ticket = await gate.acquire()
        gate.complete(ticket, status=200, headers={
            "X-RateLimit-Limit": "10", "X-RateLimit-Remaining": str(remaining),
        })  # fmt: skip
    third = await gate.acquire()
    assert loop.time() - t0 >= 60.0  # waited for its own first slot, not the server's 8
    gate.complete(third, status=200, headers={})
    snapshot = gate.snapshot()
    assert (snapshot.limit, snapshot.remaining) == (10, 8)  # the server's word, still shown
    assert snapshot.foreign == 0  # the other shares' requests are not held against ours


@pytest.mark.looptime
async def test_a_limit_that_is_not_a_share_takes_the_servers_remaining() -> None:
    """Configured 2, a server (a sandbox) announcing 10 with 8 left: its word wins."""
    gate = BusinessRateGate(RateLimit(2, 60.0), name="not-a-share")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for remaining in (9, 8, 7):
        ticket = await gate.acquire()
        gate.complete(ticket, status=200, headers={
            "X-RateLimit-Limit": "10", "X-RateLimit-Remaining": str(remaining),
        })  # fmt: skip
    assert loop.time() - t0 < 60.0
