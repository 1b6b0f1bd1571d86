"""``RetryPolicy``: its decisions as pure functions, and the transport obeying a policy passed
on the client or through ``with_options`` (fake API and a small aiohttp app, real sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

import callscaler_async as cs
from callscaler_async._retry import DEFAULT_RETRY
from callscaler_async.testing import FakeCallScaler


def huge() -> cs.RateLimit:
    return cs.RateLimit(requests=10_000, period=60.0)


# -- the policy alone -----------------------------------------------------------------------


def test_defaults_are_the_documented_rules() -> None:
    policy = cs.RetryPolicy()
    assert policy == DEFAULT_RETRY
    assert policy.max_retries == 3
    assert policy.statuses == {500, 502, 503, 504}
    assert policy.methods == {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}
    assert (policy.backoff_base, policy.backoff_cap, policy.retry_after_cap) == (0.5, 8.0, 60.0)
    assert policy.jitter and policy.rate_limited


@pytest.mark.parametrize(
    ("method", "status", "attempt", "retried"),
    [
        ("GET", 500, 1, True),
        ("GET", 504, 3, True),
        ("GET", 504, 4, False),  # 3 retries after the first attempt, then no more
        ("PUT", 502, 1, True),
        ("DELETE", 503, 1, True),
        ("POST", 500, 1, False),  # a purchase must not happen twice
        ("PATCH", 502, 1, False),
        ("GET", 501, 1, False),
        ("GET", 400, 1, False),
        ("GET", 401, 1, False),
        ("GET", 403, 1, False),
        ("GET", 404, 1, False),
        ("POST", 429, 1, True),  # refused unseen: safe for any method, after the pause
        ("GET", 429, 3, True),
        ("GET", 429, 4, False),
    ],
)
def test_status_decisions(method: str, status: int, attempt: int, retried: bool) -> None:
    assert DEFAULT_RETRY.retries_status(method, status, attempt) is retried


def test_connection_error_and_invalid_body_decisions() -> None:
    policy = DEFAULT_RETRY
    assert policy.retries_connection_error("GET", 1, reached=True)
    assert not policy.retries_connection_error("POST", 1, reached=True)
    assert policy.retries_connection_error("POST", 1, reached=False)  # nothing was sent
    assert not policy.retries_connection_error("GET", 4, reached=False)
    assert policy.retries_invalid_body("GET", 3)
    assert not policy.retries_invalid_body("POST", 1)
    assert not cs.RetryPolicy(max_retries=0).retries_connection_error("GET", 1, reached=False)


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    exact = cs.RetryPolicy(jitter=False)
    assert [exact.backoff(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert exact.backoff(10_000) == 8.0  # no overflow however many retries are allowed
    for n in range(1, 8):
        for _ in range(50):
            assert 0 <= DEFAULT_RETRY.backoff(n) <= exact.backoff(n)
    # Retry-After raises the delay, up to the cap; a malformed header is ignored.
    assert exact.backoff(1, "5") == 5.0
    assert exact.backoff(1, "3600") == 60.0
    assert cs.RetryPolicy(jitter=False, retry_after_cap=10.0).backoff(1, "3600") == 10.0
    assert exact.backoff(3, "0") == 2.0
    assert exact.backoff(1, "soon") == 0.5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_retries": -1},
        {"max_retries": True},
        {"max_retries": 1.5},
        {"backoff_cap": -1.0},
        {"backoff_base": float("nan")},
        {"retry_after_cap": "60"},
        {"statuses": {500}},  # a set, not a frozenset: policies are immutable values
        {"statuses": frozenset({401})},
        {"statuses": frozenset({429})},
        {"statuses": frozenset({200})},
        {"methods": frozenset({"get"})},
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        cs.RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_client_and_with_options_take_a_policy() -> None:
    key = "cs_key_0123456789abcdef"
    policy = cs.RetryPolicy(max_retries=6, backoff_cap=30.0)
    client = cs.CallScaler(key, retry=policy)
    assert client.options.retry is policy and client.options.max_retries == 6
    assert cs.CallScaler(key).options.retry is DEFAULT_RETRY
    assert cs.CallScaler(key, max_retries=1).options.retry == cs.RetryPolicy(max_retries=1)
    # max_retries= is a shorthand: it changes the count of the policy in effect, nothing else.
    view = client.with_options(max_retries=0)
    assert view.options.retry == cs.RetryPolicy(max_retries=0, backoff_cap=30.0)
    assert client.options.retry is policy  # the parent is unchanged
    other = cs.RetryPolicy(rate_limited=False)
    assert client.with_options(retry=other).options.retry is other
    assert client.with_options(retry=other, max_retries=2).options.retry.max_retries == 2
    assert client.with_options(priority="low").options.retry is policy
    with pytest.raises(TypeError):
        cs.CallScaler(key, retry=3)  # type: ignore[arg-type]
    # A falsy non-policy is refused too, not read as "no policy given" (the default, 3 retries).
    for falsy in (False, 0, ""):
        with pytest.raises(TypeError, match="max_retries=0"):
            cs.CallScaler(key, retry=falsy)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="max_retries=0"):
            client.with_options(retry=falsy)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        client.with_options(max_retries=-1)


# -- the transport obeys it -----------------------------------------------------------------


@pytest.mark.looptime
async def test_exact_backoff_sequence_through_the_fake(fake: FakeCallScaler) -> None:
    delays: list[float | None] = []
    async with cs.CallScaler(
        fake.api_key,
        base_url=fake.base_url,
        rate_limit=huge(),
        business="retry-exact",
        retry=cs.RetryPolicy(jitter=False, backoff_base=1.5, backoff_cap=4.0),
        on_retry=lambda event: delays.append(event.delay),
    ) as client:
        fake.faults.fail_next(3, status=503)
        fake.reset_stats()
        await client.account.balance()
        assert delays == [1.5, 3.0, 4.0]
        assert fake.stats.requests == 4


async def test_a_policy_can_retry_a_post(fake: FakeCallScaler) -> None:
    retry_posts = cs.RetryPolicy(methods=frozenset({"GET", "POST"}), backoff_base=0.0)
    async with cs.CallScaler(
        fake.api_key, base_url=fake.base_url, rate_limit=huge(), business="retry-post"
    ) as client:
        fake.faults.fail_next(1, status=502, path="numbers/search")
        with pytest.raises(cs.InternalServerError):
            await client.numbers.search(limit=1)  # the default: a POST is not retried
        fake.faults.fail_next(1, status=502, path="numbers/search")
        fake.reset_stats()
        found = await client.with_options(retry=retry_posts).numbers.search(limit=1)
        assert len(found) == 1 and fake.stats.requests == 2


async def test_with_options_max_retries_zero_raises_at_once(fake: FakeCallScaler) -> None:
    async with cs.CallScaler(
        fake.api_key,
        base_url=fake.base_url,
        rate_limit=huge(),
        business="retry-none",
        retry=cs.RetryPolicy(backoff_base=0.0),
    ) as client:
        fake.faults.fail_next(1, status=500)
        fake.reset_stats()
        with pytest.raises(cs.InternalServerError):
            await client.with_options(max_retries=0).account.balance()
        assert fake.stats.requests == 1
        fake.faults.fail_next(1, status=500)
        assert (await client.account.balance()).balance is not None  # the parent retries


async def test_statuses_decide_and_rate_limited_false_raises_the_429(
    fake: FakeCallScaler,
) -> None:
    only_502 = cs.RetryPolicy(statuses=frozenset({502}), backoff_base=0.0, rate_limited=False)
    async with cs.CallScaler(
        fake.api_key, base_url=fake.base_url, rate_limit=huge(), business="retry-which",
        retry=only_502,
    ) as client:  # fmt: skip
        fake.faults.fail_next(1, status=503)
        with pytest.raises(cs.InternalServerError):
            await client.account.balance()
        fake.faults.fail_next(1, status=502)
        await client.account.balance()
        fake.faults.rate_limit_next(1, retry_after=0)
        with pytest.raises(cs.RateLimitError):
            await client.account.balance()


@pytest_asyncio.fixture
async def busy_server() -> AsyncIterator[tuple[str, list[int]]]:
    """Answers 503 with ``Retry-After: 3600`` twice, then a balance."""
    hits: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(1)
        if len(hits) <= 2:
            return web.json_response(
                {"error": {"code": "503", "message": "busy"}},
                status=503,
                headers={"Retry-After": "3600"},
            )
        return web.json_response({"data": {"balance_cents": 1}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1/", hits
    finally:
        await runner.cleanup()


@pytest.mark.looptime
async def test_retry_after_is_capped_by_the_policy(busy_server: tuple[str, list[int]]) -> None:
    url, hits = busy_server
    delays: list[float | None] = []
    async with cs.CallScaler(
        "cs_key_0123456789abcdef",
        base_url=url,
        rate_limit=huge(),
        business="retry-after-cap",
        retry=cs.RetryPolicy(retry_after_cap=90.0),
        on_retry=lambda event: delays.append(event.delay),
    ) as client:
        balance = await client.account.balance()
    assert balance.balance == cs.Money(1)
    assert delays == [90.0, 90.0] and len(hits) == 3
