"""The client against the fake API over real HTTP on 127.0.0.1: every endpoint, every rule."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

import callscaler_async as cs
from callscaler_async.testing import FakeCallScaler


def huge() -> cs.RateLimit:
    return cs.RateLimit(requests=10_000, period=60.0)


# ----------------------------------------------------------------- construction


def test_missing_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CALLSCALER_API_KEY", raising=False)
    with pytest.raises(ValueError, match="CALLSCALER_API_KEY"):
        cs.CallScaler()


def test_environment_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLSCALER_API_KEY", "cs_key_abcd1234SECRETSECRETSECRET")
    monkeypatch.setenv("CALLSCALER_BASE_URL", "http://127.0.0.1:9/api/v1/")
    client = cs.CallScaler()
    assert client.base_url == "http://127.0.0.1:9/api/v1/"
    monkeypatch.delenv("CALLSCALER_BASE_URL")
    assert cs.CallScaler().base_url == "https://callscaler.com/api/v1/"


def test_repr_shows_the_prefix_only() -> None:
    secret = "cs_key_abcd1234" + "S3CRET" * 6
    client = cs.CallScaler(secret, base_url="https://callscaler.com/api/v1/")
    text = repr(client) + str(client)
    assert "cs_key_abcd1234" in text
    assert "S3CRET" not in text


def test_plain_http_to_a_remote_host_is_refused() -> None:
    with pytest.raises(ValueError, match="allow_insecure_http"):
        cs.CallScaler("cs_key_x", base_url="http://api.example.com/api/v1/")
    cs.CallScaler("cs_key_x", base_url="http://api.example.com/", allow_insecure_http=True)


@pytest.mark.parametrize(
    "base_url",
    ["https://h.example/v1?tenant=2", "https://h.example/v1/#top", "https://h.example/v1?"],
)
def test_base_url_with_a_query_or_fragment_is_refused(base_url: str) -> None:
    # The request paths are appended to the base URL's path: a query would be lost.
    with pytest.raises(ValueError, match="query or a fragment"):
        cs.CallScaler("cs_key_x", base_url=base_url)


@pytest.mark.parametrize(
    "base_url",
    [
        "https://api.callscaler.com/v1",
        "https://API.CallScaler.com/v1/",
        "https://bücher.example/api v1/",
        "http://[::1]:8080/api%20x/v1/",
        "http://127.0.0.1:8080",
    ],
)
def test_request_urls_are_base_plus_path(base_url: str) -> None:
    # url_for appends the SDK's (already encoded) paths to the parsed base without parsing
    # again: it must give the URL a parse of the whole string gives.
    call_id = str(uuid.uuid4())
    client = cs.CallScaler("cs_key_x", base_url=base_url, allow_insecure_http=True)
    transport = client._transport
    for path in (f"calls/{call_id}", "call-flows", f"calls/{call_id}/recording"):
        url = transport.url_for(path)
        expected = URL(str(transport.base_url) + path)
        assert url == expected
        assert str(url) == str(expected)
        assert (url.host, url.port, url.raw_path) == (
            expected.host,
            expected.port,
            expected.raw_path,
        )


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_retries": -1}, ValueError),
        ({"timeout": 0}, ValueError),
        ({"rate_limit": (60, 60)}, TypeError),
        ({"priority": "urgent"}, ValueError),
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        cs.CallScaler("cs_key_x", **kwargs)  # type: ignore[arg-type]


def test_rate_limit_validates() -> None:
    with pytest.raises(ValueError, match="requests"):
        cs.RateLimit(requests=0)
    with pytest.raises(ValueError, match="period"):
        cs.RateLimit(period=float("nan"))


# -------------------------------------------------------------------- reading


async def test_calls_list_get_and_iterate(client: cs.CallScaler, fake: FakeCallScaler) -> None:
    page = await client.calls.list(per_page=10)
    assert isinstance(page, cs.Page)
    assert len(page.items) == 10
    assert page.total == 250
    assert page.has_next_page
    assert all(isinstance(c, cs.Call) for c in page.items)
    first = page.items[0]
    assert isinstance(first.id, uuid.UUID)
    assert first.started_at.tzinfo is not None
    assert first.started_at.utcoffset() == dt.timedelta(0)
    again = await client.calls.get(first.id)
    assert again == first
    ids = [c.id async for c in client.calls.list()]
    assert len(ids) == 250
    assert len(set(ids)) == 250
    pages = [p async for p in client.calls.list(per_page=100).pages()]
    assert [len(p.items) for p in pages] == [100, 100, 50]


async def test_calls_filters_are_sent_and_checked(client: cs.CallScaler) -> None:
    answered = [c async for c in client.calls.list(status="answered")]
    assert answered
    assert all(c.status == "answered" for c in answered)
    qualified = [c async for c in client.calls.list(qualified=True)]
    assert all(c.qualified for c in qualified)
    newest = (await client.calls.list(per_page=1)).items[0].started_at
    since = newest - dt.timedelta(days=3)
    recent = [c async for c in client.calls.list(date_from=since)]
    assert recent
    assert all(c.started_at >= since for c in recent)
    with pytest.raises(ValueError, match="naive"):
        client.calls.list(date_from=dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="per_page"):
        client.calls.list(per_page=500)
    with pytest.raises(ValueError, match="UUID"):
        await client.calls.get("not-a-uuid")
    with pytest.raises(TypeError):
        client.calls.list(unknown_filter=1)  # type: ignore[call-arg]


async def test_total_zero(client: cs.CallScaler) -> None:
    future = dt.date(2099, 1, 1)
    page = await client.calls.list(date_from=future)
    assert page.total == 0
    assert page.items == []
    assert not page.has_next_page
    assert [c async for c in client.calls.list(date_from=future)] == []


async def test_max_items(client: cs.CallScaler) -> None:
    got = [c async for c in client.calls.list(per_page=20, max_items=45)]
    assert len(got) == 45


async def test_transcription_recording_export(
    client: cs.CallScaler, fake: FakeCallScaler, tmp_path: Path
) -> None:
    calls = [c async for c in client.calls.list()]
    with_text = next(c for c in calls if c.has_transcription)
    transcription = await client.calls.transcription(with_text.id)
    assert transcription.call_id == with_text.id
    assert transcription.segments
    with_audio = next(c for c in calls if c.recording_url)
    target = tmp_path / "call.mp3"
    written = await client.calls.recording(with_audio.id).save(target)
    assert written == target.stat().st_size > 0
    chunks = [chunk async for chunk in client.calls.recording(with_audio.id)]
    assert b"".join(chunks) == target.read_bytes()
    # The storage host is another origin: it must never see the API key.
    assert fake.stats.storage_log
    assert not any(entry.authorization_header_present for entry in fake.stats.storage_log)
    rows = [row async for row in client.calls.export(status="missed")]
    assert rows
    assert {row["status"] for row in rows} == {"missed"}
    missed = [c async for c in client.calls.list(status="missed")]
    assert {row["id"] for row in rows} == {str(c.id) for c in missed}


async def test_numbers_endpoints(client: cs.CallScaler, fake: FakeCallScaler) -> None:
    numbers = [n async for n in client.numbers.list()]
    assert len(numbers) == 12
    one = await client.numbers.get(numbers[0].id)
    assert one.id == numbers[0].id
    assert isinstance(one.monthly_cost, cs.Money)
    available = await client.numbers.search(area_code="573", limit=3)
    assert 1 <= len(available) <= 3
    bought = await client.numbers.purchase(available[0].phone_number, friendly_name="Spring ads")
    assert bought.friendly_name == "Spring ads"
    assert len(fake.purchases) == 1
    renamed = await client.numbers.update(bought.id, friendly_name="Summer ads")
    assert renamed.friendly_name == "Summer ads"
    released = await client.numbers.release(bought.id)
    assert released.deleted
    assert released.id == bought.id
    with pytest.raises(ValueError, match=r"E\.164"):
        await client.numbers.purchase("5735551234")
    with pytest.raises(ValueError, match="at least one"):
        await client.numbers.update(bought.id)


async def test_number_name_variant(client: cs.CallScaler, fake: FakeCallScaler) -> None:
    fake.faults.number_name_field = "name"
    numbers = [n async for n in client.numbers.list()]
    assert all(n.friendly_name for n in numbers)


async def test_call_flow_endpoints(client: cs.CallScaler) -> None:
    flows = [f async for f in client.call_flows.list()]
    assert len(flows) == 4
    flow = await client.call_flows.get(flows[0].id)
    assert flow.steps
    created = await client.call_flows.create(
        name="After hours",
        steps=[
            {"type": "greeting", "message": "Thanks for calling"},
            {"type": "voicemail"},
            {"type": "holographic_agent", "beam": 3},
        ],
        settings={"recording": True, "whisper": False, "press1": False},
    )
    assert created.name == "After hours"
    assert created.steps[2].type == "holographic_agent"
    replaced = await client.call_flows.update(
        created.id, name="After hours v2", steps=[{"type": "voicemail"}]
    )
    assert replaced.version > created.version
    versions = [v async for v in client.call_flows.versions(created.id)]
    assert len(versions) >= 2
    deleted = await client.call_flows.delete(created.id)
    assert deleted.deleted
    with pytest.raises(cs.NotFoundError):
        await client.call_flows.get(created.id)


async def test_analytics_and_balance(client: cs.CallScaler) -> None:
    report = await client.analytics.calls(group_by=["status"], metrics=["count", "avg_duration"])
    assert report.rows
    counted = sum(int(row.metrics["count"] or 0) for row in report.rows)
    assert counted == 250
    with pytest.raises(ValueError, match="at most 3"):
        await client.analytics.calls(group_by=["source", "status", "date", "month"])
    with pytest.raises(ValueError, match="unknown"):
        await client.analytics.calls(group_by=["planet"])
    balance = await client.account.balance()
    assert isinstance(balance.balance, cs.Money)
    assert str(balance.balance).startswith("$")


async def test_legacy_envelope(client: cs.CallScaler, fake: FakeCallScaler) -> None:
    fake.faults.legacy_envelope = True
    page = await client.calls.list(per_page=5)
    assert len(page.items) == 5
    call = await client.calls.get(page.items[0].id)
    assert call.id == page.items[0].id
    assert (await client.account.balance()).balance is not None


# --------------------------------------------------------------------- errors


async def test_revoked_key_is_401_and_not_retried(fake: FakeCallScaler) -> None:
    async with cs.CallScaler(
        fake.revoked_key, base_url=fake.base_url, rate_limit=huge(), business="revoked"
    ) as client:
        fake.reset_stats()
        with pytest.raises(cs.AuthenticationError) as info:
            await client.calls.list()
        assert info.value.status == 401
        assert fake.stats.requests == 1
        assert fake.revoked_key[15:] not in str(info.value)


async def test_readonly_key_is_403(fake: FakeCallScaler) -> None:
    async with cs.CallScaler(
        fake.readonly_key, base_url=fake.base_url, rate_limit=huge(), business="readonly"
    ) as client:
        await client.numbers.list()
        with pytest.raises(cs.PermissionDeniedError, match="role"):
            await client.numbers.purchase("+15735550000")


async def test_not_found(client: cs.CallScaler) -> None:
    with pytest.raises(cs.NotFoundError) as info:
        await client.calls.get(uuid.uuid4())
    assert info.value.status == 404


async def test_flat_error_shape(client: cs.CallScaler, fake: FakeCallScaler) -> None:
    fake.faults.flat_errors = True
    with pytest.raises(cs.NotFoundError) as info:
        await client.calls.get(uuid.uuid4())
    assert info.value.code


@pytest.mark.parametrize("body", ["json", "html", "empty"])
async def test_5xx_is_retried_for_get(
    client: cs.CallScaler, fake: FakeCallScaler, body: str
) -> None:
    fake.faults.fail_next(2, status=502, body=body)
    fake.reset_stats()
    balance = await client.account.balance()
    assert balance is not None
    assert fake.stats.requests == 3


async def test_5xx_gives_up_after_max_retries(fake: FakeCallScaler) -> None:
    async with cs.CallScaler(
        fake.api_key, base_url=fake.base_url, rate_limit=huge(), max_retries=1, business="giveup"
    ) as client:
        fake.faults.fail_next(5, status=503, body="html")
        fake.reset_stats()
        with pytest.raises(cs.InternalServerError) as info:
            await client.account.balance()
        assert info.value.status == 503
        assert "non-JSON" in str(info.value)
        assert fake.stats.requests == 2


async def test_purchase_is_never_retried(client: cs.CallScaler, fake: FakeCallScaler) -> None:
    available = await client.numbers.search(limit=2)
    fake.faults.fail_next(1, status=500, path="numbers/purchase")
    fake.reset_stats()
    with pytest.raises(cs.InternalServerError):
        await client.numbers.purchase(available[0].phone_number)
    assert fake.stats.requests == 1
    fake.faults.drop_next(1, path="numbers/purchase")
    with pytest.raises(cs.APIConnectionError):
        await client.numbers.purchase(available[0].phone_number)
    assert fake.stats.requests == 2


async def test_dropped_connection_retried_for_get(
    client: cs.CallScaler, fake: FakeCallScaler
) -> None:
    fake.faults.drop_next(1)
    calls = await client.calls.list(per_page=3)
    assert len(calls.items) == 3


async def test_truncated_json_is_retried_then_reported(fake: FakeCallScaler) -> None:
    async with cs.CallScaler(
        fake.api_key, base_url=fake.base_url, rate_limit=huge(), max_retries=1, business="trunc"
    ) as client:
        fake.faults.truncate_next(1)
        assert await client.account.balance()
        fake.faults.truncate_next(2)
        with pytest.raises(cs.ResponseDecodeError):
            await client.account.balance()


async def test_timeout_is_an_api_timeout_error(fake: FakeCallScaler) -> None:
    async with cs.CallScaler(
        fake.api_key,
        base_url=fake.base_url,
        rate_limit=huge(),
        timeout=0.2,
        max_retries=0,
        business="slow",
    ) as client:
        fake.faults.slow_next(1, delay=2.0)
        with pytest.raises(cs.APITimeoutError):
            await client.account.balance()


async def test_connection_refused(unused_tcp_port: int) -> None:
    async with cs.CallScaler(
        "cs_key_abcd1234xyz",
        base_url=f"http://127.0.0.1:{unused_tcp_port}/api/v1/",
        rate_limit=huge(),
        max_retries=2,
        business="refused",
    ) as client:
        with pytest.raises(cs.APIConnectionError, match="cannot connect"):
            await client.account.balance()


async def test_response_size_limit(fake: FakeCallScaler) -> None:
    async with cs.CallScaler(
        fake.api_key,
        base_url=fake.base_url,
        rate_limit=huge(),
        max_response_bytes=1000,
        business="small",
    ) as client:
        with pytest.raises(cs.ResponseTooLargeError):
            await client.calls.list(per_page=100)
        # Downloads stream and are not limited.
        call = next(c for c in (await client.calls.list(per_page=1)).items)
        del call


# ------------------------------------------------------------------ transport


async def test_cross_origin_redirect_drops_the_key(
    client: cs.CallScaler, fake: FakeCallScaler, aiohttp_echo: tuple[str, list[dict[str, str]]]
) -> None:
    echo_url, seen = aiohttp_echo
    fake.faults.redirect_to(f"{echo_url}/elsewhere", path="account/balance")
    fake.reset_stats()
    balance = await client.account.balance()  # the other origin answers, without our key
    assert balance.balance == cs.Money.from_cents(1)
    assert fake.stats.log[0].authorization_header_present
    assert seen
    assert "authorization" not in {name.lower() for name in seen[0]}  # case-insensitive
    assert seen[0]["User-Agent"].startswith("callscaler-async/")


async def test_user_agent_and_bearer(aiohttp_echo: tuple[str, list[dict[str, str]]]) -> None:
    echo_url, seen = aiohttp_echo
    async with cs.CallScaler(
        "cs_key_abcd1234secret", base_url=f"{echo_url}/api/v1/", rate_limit=huge(), business="echo"
    ) as client:
        await client.account.balance()
    assert seen[0]["Authorization"] == "Bearer cs_key_abcd1234secret"
    assert seen[0]["User-Agent"] == f"callscaler-async/{cs.__version__}"


async def test_injected_session_is_not_closed(fake: FakeCallScaler) -> None:
    async with aiohttp.ClientSession() as session:
        async with cs.CallScaler(
            fake.api_key, base_url=fake.base_url, session=session, rate_limit=huge(), business="s"
        ) as client:
            await client.account.balance()
        assert not session.closed


async def test_closed_client_refuses(fake: FakeCallScaler) -> None:
    client = cs.CallScaler(fake.api_key, base_url=fake.base_url, rate_limit=huge(), business="c")
    await client.account.balance()
    await client.aclose()
    with pytest.raises(cs.CallScalerError, match="closed"):
        await client.account.balance()


def test_client_from_another_loop_is_a_clear_error() -> None:
    async def make() -> cs.CallScaler:
        client = cs.CallScaler("cs_key_x", base_url="http://127.0.0.1:9/", business="loops")
        async with client:
            pass
        return cs.CallScaler("cs_key_x", base_url="http://127.0.0.1:9/", business="loops2")

    client = asyncio.run(make())

    async def first() -> None:
        client._transport._bind_loop()

    async def second() -> None:
        with pytest.raises(RuntimeError, match="another event loop"):
            await client.account.balance()

    asyncio.run(first())
    asyncio.run(second())


async def test_rate_limit_snapshot(client: cs.CallScaler) -> None:
    assert client.rate_limit is None
    await client.account.balance()
    snapshot = client.rate_limit
    assert snapshot is not None
    assert snapshot.limit == 10_000
    assert snapshot.remaining is not None
    assert snapshot.reset_at is not None
    assert snapshot.reset_at.tzinfo is not None
