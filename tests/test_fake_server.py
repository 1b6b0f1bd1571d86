"""The fake CallScaler API, driven with raw aiohttp requests (never the SDK)."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from callscaler_async.testing import FakeCallScaler, recording_bytes
from callscaler_async.testing.pytest_plugin import (  # noqa: F401
    callscaler_fake,
    callscaler_fake_factory,
)

ANCHOR = 1_800_000_000.0  # a multiple of 3 and of 60: fixed windows start exactly here


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeCallScaler]:
    async with FakeCallScaler(calls=120, rate_limit=1000, clock_anchor_unix=ANCHOR) as f:
        yield f


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def call(
    s: aiohttp.ClientSession, fake: FakeCallScaler, method: str, path: str, *,
    key: str | None = None, **kw: Any,
) -> tuple[int, Any, Any]:
    async with s.request(method, fake.base_url + path, headers=auth(key or fake.api_key),
                         allow_redirects=False, **kw) as r:
        raw = await r.read()
        try:
            body = await r.json(content_type=None) if raw else None
        except ValueError:
            body = raw
        return r.status, body, r.headers


# ---------------------------------------------------------------- shapes and endpoints

async def test_keys_and_base_url(fake: FakeCallScaler) -> None:
    assert fake.base_url.startswith("http://127.0.0.1:") and fake.base_url.endswith("/api/v1/")
    assert len(fake.api_keys) == 3 and fake.api_key == fake.api_keys[0]
    for k in [*fake.api_keys, fake.revoked_key, fake.readonly_key, fake.other_business_key]:
        assert k.startswith("cs_key_") and len(k) >= 7 + 8 + 32


async def test_calls_list_shape_order_and_pagination(fake, session) -> None:
    status, body, headers = await call(session, fake, "GET", "calls")
    assert status == 200
    data = body["data"]
    assert data["total"] == 120 and len(data["calls"]) == 25
    c = data["calls"][0]
    assert set(c) >= {"id", "number_id", "call_flow_id", "tracking_number", "status", "ai_score",
                      "cost_cents", "value_cents", "started_at", "created_at", "utm_source",
                      "recording_url", "has_transcription", "qualified", "gclid"}
    keys = [(x["started_at"], x["id"]) for x in data["calls"]]
    assert keys == sorted(keys, reverse=True)
    assert int(headers["X-RateLimit-Limit"]) == 1000
    assert "Date" in headers
    _, body, _ = await call(session, fake, "GET", "calls", params={"per_page": "500"})
    assert len(body["data"]["calls"]) == 100
    _, body, _ = await call(session, fake, "GET", "calls", params={"page": "99"})
    assert body["data"] == {"calls": [], "total": 120}
    seen = []
    for page in range(1, 6):
        _, body, _ = await call(session, fake, "GET", "calls",
                                params={"page": str(page), "per_page": "30"})
        seen += [x["id"] for x in body["data"]["calls"]]
    assert len(seen) == len(set(seen)) == 120
    for bad in ({"page": "0"}, {"per_page": "x"}, {"page": "-1"}):
        status, body, headers = await call(session, fake, "GET", "calls", params=bad)
        assert status == 400 and body["error"]["code"] == "400"
        assert "X-RateLimit-Remaining" in headers


async def test_calls_filters(fake, session) -> None:
    all_calls = fake.calls_data
    status, body, _ = await call(session, fake, "GET", "calls",
                                 params={"status": "answered", "per_page": "100"})
    want = [c for c in all_calls if c["status"] == "answered"]
    assert body["data"]["total"] == len(want)
    _, body, _ = await call(session, fake, "GET", "calls", params={"qualified": "true"})
    assert body["data"]["total"] == sum(c["qualified"] for c in all_calls)
    mid = all_calls[60]["started_at"]
    _, body, _ = await call(session, fake, "GET", "calls", params={"date_from": mid})
    assert body["data"]["total"] == sum(c["started_at"] >= mid for c in all_calls)
    _, body, _ = await call(session, fake, "GET", "calls", params={"date_to": mid})
    assert body["data"]["total"] == sum(c["started_at"] <= mid for c in all_calls)
    nid = all_calls[0]["number_id"]
    _, body, _ = await call(session, fake, "GET", "calls", params={"number_id": nid, "x": "1"})
    assert body["data"]["total"] == sum(c["number_id"] == nid for c in all_calls)
    status, _, _ = await call(session, fake, "GET", "calls", params={"date_from": "yesterday"})
    assert status == 400


async def test_call_get_transcription_404s(fake, session) -> None:
    c = fake.calls_data[0]
    status, body, _ = await call(session, fake, "GET", f"calls/{c['id']}")
    assert status == 200 and body["data"]["call"] == c
    with_t = next(x for x in fake.calls_data if x["has_transcription"])
    without = next(x for x in fake.calls_data if not x["has_transcription"])
    status, body, _ = await call(session, fake, "GET", f"calls/{with_t['id']}/transcription")
    t = body["data"]["transcription"]
    assert t["call_id"] == with_t["id"] and t["segments"][0]["speaker"] == "agent"
    status, body, _ = await call(session, fake, "GET", f"calls/{without['id']}/transcription")
    assert status == 404
    for path in ("calls/not-a-uuid", "calls/00000000-0000-4000-8000-000000000000", "nope"):
        status, body, headers = await call(session, fake, "GET", path)
        assert status == 404 and body["error"]["code"] == "404"
        assert "X-RateLimit-Reset" in headers


async def test_numbers_crud_and_purchase(fake, session) -> None:
    status, body, _ = await call(session, fake, "GET", "numbers")
    numbers = body["data"]["numbers"]
    assert body["data"]["total"] == 20
    assert {"id", "phone_number", "friendly_name", "type", "status", "call_flow_id",
            "call_flow_name", "group_id", "group_name", "number_source", "total_calls",
            "sms_enabled", "monthly_cost_cents", "created_at"} <= set(numbers[0])
    nid = numbers[0]["id"]
    _, body, _ = await call(session, fake, "GET", f"numbers/{nid}")
    assert body["data"]["number"]["id"] == nid
    _, body, _ = await call(session, fake, "POST", "numbers/search",
                            json={"area_code": "573", "type": "local", "limit": 3})
    avail = body["data"]["available_numbers"]
    assert len(avail) == 3 and avail[0]["phone_number"].startswith("+1573")
    _, body, _ = await call(session, fake, "POST", "numbers/purchase",
                            json={"phone_number": avail[0]["phone_number"],
                                  "friendly_name": "New"})
    new = body["data"]["number"]
    assert new["friendly_name"] == "New" and len(fake.purchases) == 1
    status, _, _ = await call(session, fake, "POST", "numbers/purchase",
                              json={"phone_number": avail[0]["phone_number"]})
    assert status == 400
    status, body, _ = await call(session, fake, "PATCH", f"numbers/{new['id']}",
                                 json={"friendly_name": "Renamed", "status": "paused"})
    assert body["data"]["number"]["friendly_name"] == "Renamed"
    assert body["data"]["number"]["status"] == "paused"
    status, body, _ = await call(session, fake, "DELETE", f"numbers/{new['id']}")
    assert body["data"] == {"deleted": True, "id": new["id"]}
    status, _, _ = await call(session, fake, "GET", f"numbers/{new['id']}")
    assert status == 404
    status, body, _ = await call(session, fake, "POST", "numbers/purchase", data=b"{not json")
    assert status == 400 and body["error"]["code"] == "400"


async def test_call_flows_crud_and_versions(fake, session) -> None:
    _, body, _ = await call(session, fake, "GET", "call-flows")
    assert body["data"]["total"] == 5
    flow = body["data"]["call_flows"][0]
    assert {"id", "name", "steps", "settings", "version", "assigned_numbers"} <= set(flow)
    steps = [{"type": "greeting", "message": "hi"}, {"type": "brand_new_type", "x": 1}]
    _, body, _ = await call(session, fake, "POST", "call-flows",
                            json={"name": "T", "steps": steps, "settings": {"whisper": True}})
    created = body["data"]["call_flow"]
    assert created["steps"] == steps and created["version"] == 1
    assert created["settings"] == {"recording": True, "whisper": True, "press1": False}
    _, body, _ = await call(session, fake, "PUT", f"call-flows/{created['id']}",
                            json={"name": "T2", "steps": steps[:1]})
    assert body["data"]["call_flow"]["version"] == 2
    _, body, _ = await call(session, fake, "GET", f"call-flows/{created['id']}/versions")
    assert [v["version"] for v in body["data"]["versions"]] == [2, 1]
    assert body["data"]["total"] == 2
    _, body, _ = await call(session, fake, "DELETE", f"call-flows/{created['id']}")
    assert body["data"]["deleted"] is True
    status, _, _ = await call(session, fake, "POST", "call-flows", json={"steps": []})
    assert status == 400


async def test_analytics_and_balance(fake, session) -> None:
    _, body, _ = await call(session, fake, "GET", "analytics/calls",
                            params={"group_by": "status,direction",
                                    "metrics": "count,avg_duration,qualified_pct,avg_ai_score"})
    data = body["data"]
    assert data["totals"]["count"] == 120
    assert sum(r["count"] for r in data["rows"]) == 120
    assert {"status", "direction", "avg_ai_score"} <= set(data["rows"][0])
    for params in ({"group_by": "bogus"}, {"metrics": "nope"},
                   {"group_by": "status,direction,date,month"}):
        status, body, _ = await call(session, fake, "GET", "analytics/calls", params=params)
        assert status == 400
    _, body, _ = await call(session, fake, "GET", "account/balance")
    assert set(body["data"]) == {"balance_cents", "low_balance_threshold_cents",
                                 "auto_recharge", "auto_recharge_amount_cents"}


async def test_export_csv(fake, session) -> None:
    async with session.get(fake.base_url + "calls/export", headers=auth(fake.api_key),
                           params={"status": "missed"}) as r:
        assert r.status == 200 and r.content_type == "text/csv"
        text = (await r.read()).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:2] == ["id", "number_id"]
    assert len(rows) - 1 == sum(c["status"] == "missed" for c in fake.calls_data)


async def test_recording_redirects_to_storage_origin(fake, session) -> None:
    c = next(x for x in fake.calls_data if x["recording_url"])
    status, _, headers = await call(session, fake, "GET", f"calls/{c['id']}/recording")
    assert status == 302
    location = headers["Location"]
    assert location.startswith(fake.storage_url) and not location.startswith(fake.base_url)
    async with session.get(location) as r:
        assert r.status == 200 and r.content_type == "audio/mpeg"
        assert r.content_length == fake.recording_size
        audio = await r.read()
    assert audio == recording_bytes(c["id"], fake.recording_size)
    assert fake.stats.storage_log[-1].authorization_header_present is False
    async with session.get(location, headers=auth(fake.api_key)) as r:
        await r.read()
    assert fake.stats.storage_log[-1].authorization_header_present is True
    async with session.get(location.split("?")[0] + "?sig=bad") as r:
        assert r.status == 403
    silent = next(x for x in fake.calls_data if x["recording_url"] is None)
    status, _, _ = await call(session, fake, "GET", f"calls/{silent['id']}/recording")
    assert status == 404


# ---------------------------------------------------------------- auth and businesses

async def test_auth(fake, session) -> None:
    async with session.get(fake.base_url + "calls") as r:
        assert r.status == 401 and "X-RateLimit-Limit" not in r.headers
        assert (await r.json())["error"]["message"] == "Invalid API key"
    status, _, headers = await call(session, fake, "GET", "calls", key="cs_key_deadbeef" + "x" * 32)
    assert status == 401 and "X-RateLimit-Limit" not in headers
    status, body, headers = await call(session, fake, "GET", "calls", key=fake.revoked_key)
    assert status == 401 and "X-RateLimit-Limit" in headers
    status, _, _ = await call(session, fake, "GET", "calls", key=fake.readonly_key)
    assert status == 200
    status, body, _ = await call(session, fake, "PATCH", f"numbers/{fake.calls_data[0]['id']}",
                                 key=fake.readonly_key, json={})
    assert status == 403 and "(viewer)" in body["error"]["message"]
    _, body, _ = await call(session, fake, "GET", "calls", key=fake.other_business_key)
    assert body["data"]["total"] == 24
    log = fake.stats.log
    assert log[0].authorization_header_present is False and log[0].status == 401
    assert log[-1].key_prefix == fake.other_business_key[:15]
    assert fake.stats.by_path["GET calls"] >= 5


# ---------------------------------------------------------------- rate limiting

async def _burst(session, fake, n: int, key: str | None = None) -> list[tuple[int, Any, Any]]:
    return [await call(session, fake, "GET", "account/balance", key=key) for _ in range(n)]


@pytest.mark.looptime
async def test_fixed_window(session) -> None:
    async with FakeCallScaler(calls=5, rate_limit=5, period=3.0, clock_anchor_unix=ANCHOR) as fk:
        res = await _burst(session, fk, 6)
        assert [r[0] for r in res] == [200] * 5 + [429]
        assert [int(r[2]["X-RateLimit-Remaining"]) for r in res[:5]] == [4, 3, 2, 1, 0]
        assert {int(r[2]["X-RateLimit-Reset"]) for r in res} == {int(ANCHOR) + 3}
        _, body, headers = res[5]
        assert body["error"] == "rate_limit_exceeded" and body["retry_after"] == 3
        assert headers["Retry-After"] == "3" and "Limit: 5 per 3s" in body["message"]
        # revoked keys and 429s consumed nothing; another business has its own budget
        assert (await call(session, fk, "GET", "calls", key=fk.revoked_key))[0] == 401
        assert (await _burst(session, fk, 1, key=fk.other_business_key))[0][0] == 200
        await asyncio.sleep(3.0)
        assert [r[0] for r in await _burst(session, fk, 5, key=fk.api_keys[1])] == [200] * 5
        assert fk.stats.rate_limited == 1


@pytest.mark.looptime
async def test_sliding_window(session) -> None:
    async with FakeCallScaler(rate_limit=3, period=3.0, algorithm="sliding",
                              clock_anchor_unix=ANCHOR) as fk:
        t0 = fk.now()
        await _burst(session, fk, 1)
        await asyncio.sleep(1.0)
        res = await _burst(session, fk, 3)
        assert [r[0] for r in res] == [200, 200, 429]
        # Reset = ceil(first admitted request + period): when Remaining next goes up
        assert int(res[1][2]["X-RateLimit-Reset"]) in (int(t0) + 3, int(t0) + 4)
        assert res[2][1]["retry_after"] == 2
        await asyncio.sleep(2.0)
        assert [r[0] for r in await _burst(session, fk, 2)] == [200, 429]


@pytest.mark.looptime
async def test_token_bucket(session) -> None:
    async with FakeCallScaler(rate_limit=3, period=3.0, algorithm="bucket",
                              clock_anchor_unix=ANCHOR) as fk:
        res = await _burst(session, fk, 4)
        assert [r[0] for r in res] == [200, 200, 200, 429]
        assert res[2][2]["X-RateLimit-Remaining"] == "0"
        # full again 3 s after the third request (which came a hair after ANCHOR), rounded up
        assert int(res[2][2]["X-RateLimit-Reset"]) in (int(ANCHOR) + 3, int(ANCHOR) + 4)
        assert res[3][1]["retry_after"] == 1
        await asyncio.sleep(1.0)
        assert [r[0] for r in await _burst(session, fk, 2)] == [200, 429]


@pytest.mark.looptime
async def test_consume_and_clock(session) -> None:
    async with FakeCallScaler(rate_limit=5, period=3.0, clock_anchor_unix=ANCHOR) as fk:
        assert await fk.consume("acme", 4) == 4
        await asyncio.sleep(1.5)
        assert abs(fk.now() - (ANCHOR + 1.5)) < 0.1
        res = await _burst(session, fk, 2)
        assert [r[0] for r in res] == [200, 429]
        assert "Fri, 15 Jan 2027" in res[0][2]["Date"]


# ---------------------------------------------------------------- faults

async def test_fail_faults(fake, session) -> None:
    fake.faults.fail_next(1, status=503, body="html")
    status, body, headers = await call(session, fake, "GET", "calls")
    assert status == 503 and b"<html>" in body and "X-RateLimit-Limit" not in headers
    fake.faults.fail_next(1, status=500, body="json")
    status, body, headers = await call(session, fake, "GET", "calls")
    assert status == 500 and body["error"]["code"] == "500" and "X-RateLimit-Limit" in headers
    fake.faults.fail_next(1, status=502, body="empty", path="numbers")
    assert (await call(session, fake, "GET", "calls"))[0] == 200
    assert (await call(session, fake, "GET", "numbers"))[0:2] == (502, None)


@pytest.mark.looptime
async def test_slow_drop_reset_truncate(fake, session) -> None:
    fake.faults.slow_next(1, 5.0)
    with pytest.raises(asyncio.TimeoutError):
        await call(session, fake, "GET", "calls", timeout=aiohttp.ClientTimeout(total=0.2))
    # aiohttp itself retries an idempotent request once after a silent disconnect
    fake.faults.drop_next(2)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(session, fake, "GET", "calls")
    assert fake.stats.log[-1].status == 0
    fake.faults.reset_mid_body_next(1)
    with pytest.raises(aiohttp.ClientPayloadError):
        await call(session, fake, "GET", "calls")
    fake.faults.truncate_next(1)
    async with session.get(fake.base_url + "calls", headers=auth(fake.api_key)) as r:
        raw = await r.read()
        assert r.status == 200 and r.content_length == len(raw)
    with pytest.raises(ValueError):
        __import__("json").loads(raw)
    assert (await call(session, fake, "GET", "calls"))[0] == 200


async def test_forced_429_and_redirect(fake, session) -> None:
    fake.faults.rate_limit_next(1, retry_after=7)
    status, body, headers = await call(session, fake, "GET", "calls")
    assert status == 429 and body["retry_after"] == 7 and headers["Retry-After"] == "7"
    fake.faults.rate_limit_next(1, header=False, body=False)
    status, body, headers = await call(session, fake, "GET", "calls")
    assert status == 429 and "retry_after" not in body and "Retry-After" not in headers
    fake.faults.redirect_to("http://elsewhere.invalid/x", path="account")
    status, _, headers = await call(session, fake, "GET", "account/balance")
    assert status == 302 and headers["Location"] == "http://elsewhere.invalid/x"
    fake.faults.clear()
    assert (await call(session, fake, "GET", "account/balance"))[0] == 200


async def test_flag_faults(fake, session) -> None:
    fake.faults.legacy_envelope = True
    fake.faults.number_name_field = "name"
    _, body, _ = await call(session, fake, "GET", "numbers")
    assert "data" not in body and "name" in body["numbers"][0]
    assert "friendly_name" not in body["numbers"][0]
    fake.faults.flat_errors = True
    _, body, _ = await call(session, fake, "GET", "nope")
    assert body == {"error": "not_found"}
    fake.faults.omit_rate_headers = True
    _, _, headers = await call(session, fake, "GET", "calls")
    assert "X-RateLimit-Remaining" not in headers
    fake.faults.omit_rate_headers = False
    fake.faults.reset_header = "past"
    _, _, headers = await call(session, fake, "GET", "calls")
    assert int(headers["X-RateLimit-Reset"]) < fake.now()
    fake.faults.reset_header = "far"
    _, _, headers = await call(session, fake, "GET", "calls")
    assert int(headers["X-RateLimit-Reset"]) > fake.now() + 365 * 86400


async def test_list_mutation_and_pagination_faults(fake, session) -> None:
    fake.faults.insert_calls_per_list_request = 2
    _, body, _ = await call(session, fake, "GET", "calls")
    assert body["data"]["total"] == 122
    assert body["data"]["calls"][0]["started_at"] >= fake.calls_data[2]["started_at"]
    fake.faults.insert_calls_per_list_request = 0
    fake.faults.delete_calls_per_list_request = 3
    _, body, _ = await call(session, fake, "GET", "calls")
    assert body["data"]["total"] == 119
    fake.faults.clear()
    fake.faults.short_pages = True
    _, body, _ = await call(session, fake, "GET", "calls", params={"per_page": "20"})
    assert 0 < len(body["data"]["calls"]) < 20
    fake.faults.short_pages = False
    fake.faults.empty_page_at = 2
    _, body, _ = await call(session, fake, "GET", "calls", params={"page": "2"})
    assert body["data"]["calls"] == [] and body["data"]["total"] == 119
    fake.faults.total_jitter = 5
    totals = set()
    for _ in range(8):
        _, body, _ = await call(session, fake, "GET", "calls")
        totals.add(body["data"]["total"])
    assert len(totals) > 1 and all(114 <= t <= 124 for t in totals)


# ---------------------------------------------------------------- plugin, determinism, load

async def test_plugin_fixtures(callscaler_fake, callscaler_fake_factory, session) -> None:  # noqa: F811
    other = await callscaler_fake_factory(calls=10, seed=1)
    _, body, _ = await call(session, other, "GET", "calls")
    assert body["data"]["total"] == 10
    _, body, _ = await call(session, callscaler_fake, "GET", "calls")
    assert body["data"]["total"] == 500


async def test_seed_is_deterministic() -> None:
    a, b = FakeCallScaler(seed=3), FakeCallScaler(seed=3)
    assert a.calls_data == b.calls_data and a.api_keys == b.api_keys
    assert FakeCallScaler(seed=4).calls_data != a.calls_data


@pytest.mark.looptime
async def test_many_concurrent_clients() -> None:
    async with FakeCallScaler(calls=50, rate_limit=100, period=3.0,
                              clock_anchor_unix=ANCHOR) as fk:
        conn = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=conn) as s:
            async def one() -> int:
                async with s.get(fk.base_url + "account/balance", headers=auth(fk.api_key)) as r:
                    await r.read()
                    return r.status
            statuses = await asyncio.gather(*(one() for _ in range(2000)))
        assert statuses.count(200) == 100 and statuses.count(429) == 1900
        assert fk.stats.requests == 2000
