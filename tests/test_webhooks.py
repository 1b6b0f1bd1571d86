"""Webhooks: event parsing through the converter, secret check, de-duplication, limits, router."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from test_fastapi import serve_app

import callscaler_async as cs
from callscaler_async.contrib.fastapi import webhook_router
from callscaler_async.webhooks import (
    InMemoryDeliveryStore,
    WebhookAuthError,
    WebhookEvent,
    WebhookEventType,
    WebhookPayloadError,
    WebhookReceiver,
    WebhookRejected,
    parse_event,
    verify_secret,
)

SECRET = "webhook-secret-0123456789"
CALL = {
    "id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
    "status": "answered",
    "started_at": "2026-03-23T14:30:00Z",
    "caller_number": "+15735551234",
    "cost_cents": 12,
    "brand_new_field": {"nested": True},
}


def body(event: str = "call.completed", **extra: Any) -> bytes:
    return orjson.dumps({"event": event, "call": CALL, **extra})


# ------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "name", ["call.completed", "call.missed", "call.voicemail", "call.failed", "call.ended"]
)
def test_known_events_decode_the_call(name: str) -> None:
    event = parse_event(body(name, id="evt_1", occurred_at="2026-03-23T14:35:00Z"))
    assert event.event == name and event.event.is_known
    assert isinstance(event.call, cs.Call)
    assert event.call.cost == cs.Money.from_cents(12)
    assert event.id == "evt_1"
    assert event.occurred_at is not None and event.occurred_at.tzinfo is not None
    assert event.raw["call"]["brand_new_field"] == {"nested": True}
    assert event.is_legacy == (name == "call.ended")


def test_unknown_events_and_fields_survive() -> None:
    event = parse_event(orjson.dumps({"event": "number.released", "number": {"id": "x"}}))
    assert event.event == "number.released" and not event.event.is_known
    assert event.call is None
    assert event.raw["number"] == {"id": "x"}
    odd = parse_event(orjson.dumps({"type": "call.transferred", "call": {"weird": 1}}))
    assert odd.event == WebhookEventType("call.transferred") and odd.call is None


def test_other_shapes() -> None:
    nested = parse_event(orjson.dumps({"event": "call.missed", "data": {"call": CALL}}))
    assert nested.call is not None and str(nested.call.id) == CALL["id"]
    flat = parse_event(orjson.dumps({"event": "call.ended", **CALL}))
    assert flat.call is not None and flat.id is None  # the call's id is not a delivery id


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (orjson.dumps({"event": 5, "call": CALL}), "$.event"),
        (orjson.dumps({"call": CALL}), "event name"),
        (orjson.dumps({"event": "call.completed"}), "needs a call"),
        (orjson.dumps({"event": "call.completed", "call": {**CALL, "id": 7}}), "$.call.id"),
        (
            orjson.dumps({"event": "call.missed", "call": {**CALL, "duration_seconds": "9"}}),
            "$.call.duration_seconds",
        ),
        (orjson.dumps({"event": "call.missed", "call": CALL, "occurred_at": 3}), "occurred_at"),
    ],
)
def test_bad_payloads_name_the_problem(payload: bytes, where: str) -> None:
    with pytest.raises(WebhookPayloadError) as info:
        parse_event(payload)
    assert where in str(info.value)


def test_dedupe_key() -> None:
    assert parse_event(body(id="evt_9")).dedupe_key == "id:evt_9"
    a = parse_event(body())
    b = parse_event(orjson.dumps({"call": CALL, "event": "call.completed"}))  # reordered
    c = parse_event(body("call.missed"))
    assert a.dedupe_key == b.dedupe_key != c.dedupe_key
    assert a.dedupe_key.startswith("sha256:")


# -------------------------------------------------------------------------- secret


def test_verify_secret() -> None:
    verify_secret({"X-CallScaler-Secret": SECRET}, SECRET)
    verify_secret({"x-callscaler-secret": SECRET}, ["old-secret-0123456789", SECRET])
    for headers in (
        {},
        {"X-CallScaler-Secret": ""},
        {"X-CallScaler-Secret": "nope"},
        {"X-CallScaler-Secret": "sécret-ünïcode-☃"},
    ):
        with pytest.raises(WebhookAuthError):
            verify_secret(headers, SECRET)
    with pytest.raises(ValueError, match="16"):
        WebhookReceiver(secret="short")


# ------------------------------------------------------------------------ receiver


async def test_receiver_dedupes_and_refuses_before_processing() -> None:
    store = InMemoryDeliveryStore()
    receiver = WebhookReceiver(secret=SECRET, store=store, max_body_bytes=2000)
    ok = {"X-CallScaler-Secret": SECRET}
    first = await receiver.receive(ok, body(id="evt_1"))
    again = await receiver.receive(ok, body(id="evt_1"))
    assert not first.duplicate and again.duplicate and len(store) == 1
    for headers, payload, status in [
        ({}, body(id="evt_2"), 401),
        ({"X-CallScaler-Secret": "wrong"}, body(id="evt_2"), 401),
        (ok, b"{", 400),
        (ok, b"", 400),
        (ok, body(id="evt_2", pad="x" * 3000), 413),
        ({**ok, "Content-Length": "999999"}, b"{}", 413),
    ]:
        with pytest.raises(WebhookRejected) as info:
            await receiver.receive(headers, payload)
        assert info.value.status == status
    assert len(store) == 1  # nothing refused was claimed
    await receiver.forget(first)
    assert not (await receiver.receive(ok, body(id="evt_1"))).duplicate


async def test_streamed_body_is_not_read_past_the_limit() -> None:
    receiver = WebhookReceiver(secret=SECRET, max_body_bytes=10_000)
    pulled = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(1000):
            pulled += 1
            yield b"x" * 1000

    with pytest.raises(WebhookRejected) as info:
        await receiver.receive({"X-CallScaler-Secret": SECRET}, chunks())
    assert info.value.status == 413 and "10000" in info.value.message
    assert pulled == 11
    unread = 0

    async def never() -> AsyncIterator[bytes]:
        nonlocal unread
        unread += 1
        yield b"{}"

    with pytest.raises(WebhookRejected):
        await receiver.receive({}, never())
    assert unread == 0  # no secret: the body is not even read


async def test_in_memory_store_ttl_and_bound() -> None:
    now = [0.0]
    store = InMemoryDeliveryStore(max_entries=3, clock=lambda: now[0])
    assert await store.claim("a", 10)
    assert not await store.claim("a", 10)
    now[0] = 11
    assert await store.claim("a", 10)  # expired: a fresh claim
    for key in "bcde":
        assert await store.claim(key, 100)
    assert len(store) == 3


# -------------------------------------------------------------------- FastAPI router


async def test_router_over_http() -> None:
    handled: list[WebhookEvent] = []
    release = asyncio.Event()

    async def handler(event: WebhookEvent) -> None:
        await release.wait()  # slow work: the answer must not wait for it
        handled.append(event)
        if event.id == "evt_boom":
            raise RuntimeError("handler bug")

    app = FastAPI()
    app.include_router(webhook_router(handler, secret=SECRET, max_body_bytes=4000))
    ok = {"X-CallScaler-Secret": SECRET}
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        path = "/webhooks/callscaler"
        first = await asyncio.wait_for(http.post(path, content=body(id="evt_1"), headers=ok), 2)
        assert first.status_code == 200
        assert first.json() == {"ok": True, "event": "call.completed", "duplicate": False}
        assert handled == []  # answered before the handler finished
        again = await http.post(path, content=body(id="evt_1"), headers=ok)
        assert again.json()["duplicate"] is True
        refused = [
            await http.post(path, content=body(id="evt_2")),
            await http.post(
                path, content=body(id="evt_2"), headers={**ok, "X-CallScaler-Secret": "x"}
            ),
            await http.post(path, content=b"<html>", headers=ok),
            await http.post(
                path, content=orjson.dumps({"event": "call.missed", "call": 1}), headers=ok
            ),
            await http.post(path, content=body(id="evt_3", pad="y" * 5000), headers=ok),
        ]
        assert [r.status_code for r in refused] == [401, 401, 400, 400, 413]
        assert all("error" in r.json() for r in refused)
        assert "limit is 4000" in refused[-1].json()["error"]
        boom = await http.post(path, content=body(id="evt_boom"), headers=ok)
        assert boom.status_code == 200
        release.set()
        async with asyncio.timeout(5):
            while len(handled) < 2:
                await asyncio.sleep(0.01)
    assert [e.id for e in handled] == ["evt_1", "evt_boom"]
