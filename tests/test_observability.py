"""Logging, hooks, raw responses and OpenTelemetry spans, against the fake API over HTTP."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import callscaler_async as cs
from callscaler_async._transport import (
    APIResponse,
    RateLimitWaitEvent,
    RequestEvent,
    ResponseEvent,
    RetryEvent,
)
from callscaler_async.testing import FakeCallScaler

HUGE = cs.RateLimit(requests=10_000, period=60.0)


def make(fake: FakeCallScaler, key: str | None = None, **kwargs: Any) -> cs.CallScaler:
    return cs.CallScaler(
        key or fake.api_key,
        base_url=fake.base_url,
        rate_limit=HUGE,
        business=f"obs-{id(fake)}-{key is None}",
        **kwargs,
    )


async def test_logs_never_show_the_key(
    fake: FakeCallScaler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="callscaler_async")
    call_id = fake.calls_data[0]["id"]
    async with make(fake) as client:
        # One fault per call: every queued fault applies to the next matching request.
        fake.faults.fail_next(1, status=503, path="calls")
        page = await client.calls.list(per_page=5, status="answered")
        assert len(page.items) == 5
        fake.faults.rate_limit_next(1, retry_after=1, path="calls")
        await client.calls.get(call_id)
        with pytest.raises(cs.NotFoundError):
            await client.calls.get("00000000-0000-4000-8000-000000000000")
    async with make(fake, fake.revoked_key) as revoked:
        with pytest.raises(cs.AuthenticationError) as info:
            await revoked.calls.list()
        assert fake.revoked_key not in str(info.value)

    text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for key in (fake.api_key, fake.revoked_key):
        assert key not in text
        assert key[15:] not in text  # not even the secret part alone
    levels = {r.levelno for r in caplog.records}
    assert {logging.DEBUG, logging.INFO, logging.WARNING} <= levels
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    # DEBUG: the request line with its query and attempt, and statuses.
    assert any(
        lvl == logging.DEBUG and "GET /api/v1/calls?" in m and "attempt 1" in m
        for lvl, m in messages
    )
    assert any(lvl == logging.DEBUG and "-> 200" in m for lvl, m in messages)
    # INFO: retries and the pause after a 429, by route template, never with a query.
    infos = [m for lvl, m in messages if lvl == logging.INFO]
    assert any("429" in m and "paused" in m for m in infos)
    assert any("503" in m and "retry" in m for m in infos)
    assert any("waited" in m and "429" in m for m in infos)
    assert not any("?" in m or "per_page" in m for lvl, m in messages if lvl >= logging.INFO)
    # WARNING: the 401 names the key by its public prefix only.
    warnings = [m for lvl, m in messages if lvl == logging.WARNING]
    assert any("401" in m and fake.revoked_key[:15] in m for m in warnings)


async def test_hooks_sync_and_async(fake: FakeCallScaler, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Any] = []

    def on_request(event: RequestEvent) -> None:
        seen.append(event)

    async def on_response(event: ResponseEvent) -> None:
        await asyncio.sleep(0)
        seen.append(event)

    def on_retry(event: RetryEvent) -> None:
        seen.append(event)

    async def on_wait(event: RateLimitWaitEvent) -> None:
        seen.append(event)

    call_id = fake.calls_data[0]["id"]
    async with make(
        fake,
        on_request=on_request,
        on_response=on_response,
        on_retry=on_retry,
        on_rate_limit_wait=on_wait,
    ) as client:
        await client.calls.get(call_id)
        first_request, first_response = seen[:2]
        assert isinstance(first_request, RequestEvent)
        assert first_request.route == "calls/{id}"
        assert first_request.path == f"/api/v1/calls/{call_id}"
        assert first_request.attempt == 1 and first_request.business == client.business
        assert isinstance(first_response, ResponseEvent)
        assert first_response.status == 200 and first_response.elapsed >= 0
        assert "X-RateLimit-Remaining" in first_response.headers

        seen.clear()
        fake.faults.fail_next(1, status=502, path="calls")
        await client.calls.get(call_id)
        fake.faults.rate_limit_next(1, retry_after=1, path="calls")
        await client.calls.get(call_id)
        retries = [e for e in seen if isinstance(e, RetryEvent)]
        assert [(r.attempt, type(r.error)) for r in retries] == [
            (1, cs.InternalServerError),
            (1, cs.RateLimitError),
        ]
        assert retries[0].delay is not None and retries[1].delay is None
        assert retries[0].route == "calls/{id}" and retries[0].business == client.business
        waits = [e for e in seen if isinstance(e, RateLimitWaitEvent)]
        assert waits and waits[-1].reason == "paused_after_429" and waits[-1].waited > 0.3
        assert waits[-1].priority == "normal"
        statuses = [e.status for e in seen if isinstance(e, ResponseEvent)]
        assert statuses == [502, 200, 429, 200]
        assert [e.attempt for e in seen if isinstance(e, RequestEvent)] == [1, 2, 1, 2]

    def broken(event: Any) -> None:
        raise RuntimeError("hook bug")

    async with make(fake, on_response=broken) as client:
        await client.calls.get(call_id)  # a failing hook is logged, never fatal
    assert "hook bug" in caplog.text


async def test_with_raw_response(fake: FakeCallScaler) -> None:
    ids = [c["id"] for c in fake.calls_data[:20]]
    async with make(fake) as client:
        raw = await client.with_raw_response.calls.get(ids[0])
        assert isinstance(raw, APIResponse)
        assert raw.status == 200 and raw.route == "calls/{id}" and raw.attempts == 1
        assert int(raw.headers["X-RateLimit-Remaining"]) >= 0
        call = raw.parse()
        assert isinstance(call, cs.Call) and str(call.id) == ids[0]
        assert raw.json()["data"]["call"]["id"] == ids[0]

        typed = await client.with_raw_response(client.calls.list(per_page=3))
        assert typed.parse().items and len(typed.parse().items) == 3
        low = await client.with_options(priority="low").with_raw_response.account.balance()
        assert isinstance(low.parse(), cs.Balance)

        # Concurrent tasks each get their own answer (unlike client.last_response).
        answers = await asyncio.gather(*(client.with_raw_response.calls.get(i) for i in ids))
        assert [a.json()["data"]["call"]["id"] for a in answers] == ids
        assert client._transport.requests_sent == 23  # 1 + 1 + 1 + 20: no second requests

        with pytest.raises(TypeError, match="single answer"):
            await client.with_raw_response.calls.recording(ids[0])
        with pytest.raises(AttributeError):
            _ = client.with_raw_response.calls._send
        with pytest.raises(cs.NotFoundError):
            await client.with_raw_response.calls.get("00000000-0000-4000-8000-000000000000")


async def test_raw_response_keeps_an_undecodable_body(
    aiohttp_echo: tuple[str, list[dict[str, str]]],
) -> None:
    url, _ = aiohttp_echo
    async with cs.CallScaler(
        "cs_key_abcdefgh" + "z" * 24,
        base_url=url + "/api/v1/",
        rate_limit=HUGE,
        business="echo-raw",
    ) as client:
        raw = await client.with_raw_response.calls.get("a1b2c3d4-e5f6-7890-abcd-ef1234567890")
        assert raw.status == 200 and raw.json() == {"data": {"balance_cents": 1}}
        with pytest.raises(cs.ResponseDecodeError):
            raw.parse()


async def test_opentelemetry_spans(fake: FakeCallScaler) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    call_id = fake.calls_data[0]["id"]
    async with make(fake, tracer_provider=provider) as client:
        await client.calls.get(call_id)
        fake.faults.fail_next(2, status=503, path="calls")
        await client.calls.list(per_page=2)
        fake.faults.rate_limit_next(1, retry_after=1, path="calls")
        await client.calls.get(call_id)
        with pytest.raises(cs.NotFoundError):
            await client.calls.get("00000000-0000-4000-8000-000000000000")
    ok, retried, paused, missing = exporter.get_finished_spans()
    assert ok.name == "GET calls/{id}"
    attrs = dict(ok.attributes or {})
    assert attrs["http.request.method"] == "GET"
    assert attrs["url.template"] == "calls/{id}"
    assert attrs["http.response.status_code"] == 200
    assert attrs["callscaler.attempts"] == 1
    assert attrs["callscaler.rate_limit.wait_seconds"] >= 0
    assert attrs["server.address"] == "127.0.0.1"

    attrs = dict(retried.attributes or {})
    assert retried.name == "GET calls"
    assert attrs["callscaler.attempts"] == 3
    assert attrs["http.request.resend_count"] == 2
    assert attrs["http.response.status_code"] == 200
    assert [e.name for e in retried.events].count("retry") == 2

    attrs = dict(paused.attributes or {})
    assert attrs["callscaler.attempts"] == 2
    assert attrs["callscaler.rate_limit.wait_seconds"] > 0.3  # the pause after the 429
    assert "rate_limit_wait" in [e.name for e in paused.events]

    assert missing.status.status_code == StatusCode.ERROR
    assert dict(missing.attributes or {})["http.response.status_code"] == 404
    assert dict(missing.attributes or {})["error.type"] == "NotFoundError"
    provider.shutdown()
