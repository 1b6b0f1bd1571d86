"""Hostile input and secrets: bad arguments refused before any request, big bodies refused
unread, the API key never shown and never sent where it does not belong."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import logging
import socket
import traceback
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

import callscaler_async as cs
from callscaler_async.testing import FakeCallScaler


def huge() -> cs.RateLimit:
    return cs.RateLimit(requests=10_000, period=60.0)


# ------------------------------------------------------------------ bad arguments

NAIVE = dt.datetime(2026, 10, 1, 12, 0)
BAD_CALLS: list[tuple[str, Callable[[Any], Any], type[Exception]]] = [
    ("call id not a uuid", lambda c: c.calls.get("123"), ValueError),
    ("call id injection", lambda c: c.calls.get("../numbers"), ValueError),
    ("call id int", lambda c: c.calls.get(42), TypeError),
    ("call id None", lambda c: c.calls.get(None), TypeError),
    ("transcription id", lambda c: c.calls.transcription("x" * 36), ValueError),
    ("recording id", lambda c: c.calls.recording("nope"), ValueError),
    ("number id", lambda c: c.numbers.get("not-a-uuid"), ValueError),
    ("release id", lambda c: c.numbers.release(""), ValueError),
    ("flow id", lambda c: c.call_flows.get("zz"), ValueError),
    ("flow versions id", lambda c: c.call_flows.versions("zz"), ValueError),
    ("naive date_from", lambda c: c.calls.list(date_from=NAIVE), ValueError),
    ("naive date_to", lambda c: c.calls.list(date_to=NAIVE), ValueError),
    ("naive export", lambda c: c.calls.export(date_from=NAIVE).__anext__(), ValueError),
    ("naive analytics", lambda c: c.analytics.calls(date_to=NAIVE), ValueError),
    ("naive sync since", lambda c: c.calls.sync(since=NAIVE), ValueError),
    (
        "naive sync until",
        lambda c: c.calls.sync(since=dt.date(2026, 1, 1), until=NAIVE),
        ValueError,
    ),
    ("date as string", lambda c: c.calls.list(date_from="2026-01-01"), TypeError),
    ("per_page 0", lambda c: c.calls.list(per_page=0), ValueError),
    ("per_page 101", lambda c: c.calls.list(per_page=101), ValueError),
    ("per_page negative", lambda c: c.numbers.list(per_page=-5), ValueError),
    ("per_page float", lambda c: c.call_flows.list(per_page=10.0), TypeError),
    ("per_page str", lambda c: c.calls.list(per_page="10"), TypeError),
    ("per_page bool", lambda c: c.calls.list(per_page=True), TypeError),
    ("page 0", lambda c: c.calls.list(page=0), ValueError),
    ("max_items negative", lambda c: c.calls.list(max_items=-1), ValueError),
    ("concurrency 0", lambda c: c.calls.list(concurrency=0), ValueError),
    ("unknown filter", lambda c: c.calls.list(stauts="answered"), TypeError),
    ("unknown numbers filter", lambda c: c.numbers.list(flow="x"), TypeError),
    ("unknown analytics arg", lambda c: c.analytics.calls(group="source"), TypeError),
    ("unknown group_by", lambda c: c.analytics.calls(group_by=["city"]), ValueError),
    ("unknown metric", lambda c: c.analytics.calls(metrics="sum"), ValueError),
    (
        "too many groups",
        lambda c: c.analytics.calls(group_by="source,status,date,week"),
        ValueError,
    ),
    ("qualified not bool", lambda c: c.calls.list(qualified="yes"), TypeError),
    ("status empty", lambda c: c.calls.list(status=""), TypeError),
    ("status int", lambda c: c.calls.list(status=3), TypeError),
    ("number_id filter", lambda c: c.calls.list(number_id="abc"), ValueError),
    ("phone not e164", lambda c: c.numbers.purchase("5735551234"), ValueError),
    ("phone int", lambda c: c.numbers.purchase(15735551234), ValueError),
    ("purchase name int", lambda c: c.numbers.purchase("+15735551234", friendly_name=3), TypeError),
    ("search limit", lambda c: c.numbers.search(limit=0), ValueError),
    ("search area", lambda c: c.numbers.search(area_code="57"), ValueError),
    ("update nothing", lambda c: c.numbers.update(uuid.uuid4()), ValueError),
    ("update name int", lambda c: c.numbers.update(uuid.uuid4(), friendly_name=1), TypeError),
    ("flow empty name", lambda c: c.call_flows.create(name=" ", steps=[]), ValueError),
    ("flow steps str", lambda c: c.call_flows.create(name="x", steps="dial"), TypeError),
    ("flow step no type", lambda c: c.call_flows.create(name="x", steps=[{}]), ValueError),
]


@pytest.mark.parametrize(
    ("call", "error"), [(c, e) for _, c, e in BAD_CALLS], ids=[n for n, _, _ in BAD_CALLS]
)
async def test_bad_arguments_are_refused_before_any_request(
    fake: FakeCallScaler,
    client: cs.CallScaler,
    call: Callable[[cs.CallScaler], Any],
    error: type[Exception],
) -> None:
    fake.reset_stats()

    async def attempt() -> None:
        result = call(client)
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            await result
        elif hasattr(result, "__aiter__"):
            async for _ in result:
                break

    with pytest.raises(error) as info:
        await attempt()
    assert type(info.value) is error  # not a subclass from deeper down
    assert str(info.value)
    assert fake.stats.requests == 0


# ------------------------------------------------------------------ response size


async def test_body_above_limit_is_refused_and_downloads_stream(fake: FakeCallScaler) -> None:
    async with cs.CallScaler(
        fake.api_key,
        base_url=fake.base_url,
        rate_limit=huge(),
        max_response_bytes=4000,
        business="size-limit",
    ) as client:
        with pytest.raises(cs.ResponseTooLargeError) as info:
            await client.calls.list(per_page=100)
        assert info.value.limit == 4000
        call = next(c for c in fake.calls_data if c["recording_url"])
        chunks = [chunk async for chunk in client.calls.recording(call["id"])]
        assert sum(map(len, chunks)) == fake.recording_size > 4000
        rows = [row async for row in client.calls.export()]
        assert len(rows) == len(fake.calls_data)


@pytest_asyncio.fixture
async def endless_server() -> AsyncIterator[tuple[str, list[int]]]:
    """An API look-alike that streams a chunked JSON body forever, counting what it sent."""
    sent = [0]

    async def handle(request: web.Request) -> web.StreamResponse:
        # Small kernel buffers on both ends (the client's below): what was sent beyond what
        # the client read is then a known, small amount.
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'{"data": {"calls": [')
        chunk = b'"' + b"x" * 65_534 + b'",'
        try:
            while sent[0] < 1 << 30:
                await resp.write(chunk)
                sent[0] += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1/", sent
    finally:
        await runner.cleanup()


BUFFER = 64 * 1024  # asked for each socket's kernel buffer (Linux doubles it)


def small_receive_buffer(family: Any, type_: Any, proto: Any) -> socket.socket:
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
    return sock


async def test_endless_body_is_cut_at_the_limit(endless_server: tuple[str, list[int]]) -> None:
    url, sent = endless_server
    limit = 1 << 20
    connector = aiohttp.TCPConnector(
        socket_factory=lambda info: small_receive_buffer(info[0], info[1], info[2])
    )
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        cs.CallScaler(
            "cs_key_abcd1234endless",
            base_url=url,
            rate_limit=huge(),
            max_response_bytes=limit,
            max_retries=0,
            business="endless",
            session=session,
        ) as client,
    ):
        with pytest.raises(cs.ResponseTooLargeError):
            await asyncio.wait_for(client.calls.list(), timeout=20)
    await asyncio.sleep(0.05)
    # Read up to the limit, then the connection was dropped: what the server got out is the
    # limit, the two kernel buffers (doubled) and the chunk in flight, not more.
    slack = 2 * 2 * BUFFER + 2 * 65_536
    print("endless: sent", sent[0], "limit", limit, "bound", limit + slack)
    assert sent[0] <= limit + slack, (sent[0], limit + slack)


# ------------------------------------------------------------------ the key never shows


@pytest.mark.looptime
async def test_key_never_in_repr_str_logs_or_tracebacks() -> None:
    async with FakeCallScaler(calls=30, rate_limit=10_000) as fake:
        await provoke_errors_and_scan_for_the_key(fake)


async def provoke_errors_and_scan_for_the_key(fake: FakeCallScaler) -> None:
    keys = {"main": fake.api_key, "revoked": fake.revoked_key, "viewer": fake.readonly_key}
    secrets = {name: key[15:] for name, key in keys.items()}
    assert all(len(s) >= 16 for s in secrets.values())
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s %(args)s"))
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    root.addHandler(keep)
    texts: list[str] = []

    def failing_hook(event: Any) -> None:
        raise RuntimeError("hook failed")

    errors: list[BaseException] = []
    try:
        clients = {
            name: cs.CallScaler(
                key,
                base_url=fake.base_url,
                rate_limit=cs.RateLimit(100, 3.0),
                business=f"secret-{name}",
                timeout=0.5,
                max_retries=1,
                on_response=failing_hook,
            )
            for name, key in keys.items()
        }
        main = clients["main"]
        texts += [repr(c) + str(c) for c in clients.values()]
        texts.append(repr(main.with_options(priority="low")))
        provocations: list[Callable[[], Any]] = [
            lambda: clients["revoked"].calls.list(),
            lambda: clients["viewer"].numbers.purchase("+15735550123"),
            lambda: main.calls.get(uuid.uuid4()),
        ]

        async def run(make: Callable[[], Any]) -> None:
            try:
                await make()
            except cs.CallScalerError as exc:
                errors.append(exc)

        for make in provocations:
            await run(make)
        arms: list[Callable[[], None]] = [
            lambda: fake.faults.rate_limit_next(3, retry_after=1),
            lambda: fake.faults.fail_next(3, status=503, body="html"),
            lambda: fake.faults.fail_next(3, status=500),
            lambda: fake.faults.slow_next(3, delay=2.0),
            lambda: fake.faults.drop_next(3),
            lambda: fake.faults.reset_mid_body_next(3),
            lambda: fake.faults.truncate_next(3),
        ]
        for arm in arms:
            arm()
            await run(lambda: main.account.balance())
            fake.faults.clear()
        assert len(errors) >= 8, errors
        await main.account.balance()
        texts.append(repr(main.last_response))
        texts.append(repr(main.rate_limit))
        for c in clients.values():
            await c.aclose()
    finally:
        root.removeHandler(handler)
        root.removeHandler(keep)
        root.setLevel(old_level)
    kinds = {type(e) for e in errors}
    assert {cs.AuthenticationError, cs.PermissionDeniedError, cs.RateLimitError} <= kinds
    assert {cs.InternalServerError, cs.APITimeoutError, cs.APIConnectionError} <= kinds
    for exc in errors:
        texts += [repr(exc), str(exc), "".join(traceback.format_exception(exc))]
        texts += [repr(vars(exc))]
    assert any(r.levelno == logging.DEBUG for r in records)
    assert any(r.exc_info for r in records)  # the failing hook, logged with its traceback
    texts.append(stream.getvalue())
    for record in records:
        texts.append(record.getMessage())
        texts.append(repr(record.__dict__))
    blob = "\n".join(texts)
    for name, key in keys.items():
        secret = secrets[name]
        # Not the whole secret, nor any part of it: any 8 characters of it in a row, or a
        # single character beyond the public prefix, is a leak.
        assert key[:16] not in blob, f"the {name} key leaked past its prefix"
        for i in range(len(secret) - 7):
            assert secret[i : i + 8] not in blob, f"part of the {name} key leaked"


# ------------------------------------------------------------------ where the key goes


async def test_bearer_never_follows_a_redirect_to_another_origin(
    fake: FakeCallScaler, client: cs.CallScaler, aiohttp_echo: tuple[str, list[dict[str, str]]]
) -> None:
    echo_url, seen = aiohttp_echo
    fake.faults.redirect_to(f"{echo_url}/elsewhere", path="account/balance")
    await client.account.balance()
    # Header names are case-insensitive: "authorization" is the same header.
    assert seen and all("authorization" not in {name.lower() for name in h} for h in seen)
    assert fake.stats.log[-1].authorization_header_present
    fake.faults.clear()
    call = next(c for c in fake.calls_data if c["recording_url"])
    data = b"".join([chunk async for chunk in client.calls.recording(call["id"])])
    assert data.startswith(b"ID3")
    assert fake.stats.storage_log
    assert not any(r.authorization_header_present for r in fake.stats.storage_log)


class _Resolver(AbstractResolver):
    """Resolves every name to 127.0.0.1 so a non-loopback *name* reaches a local server."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=self.port,
                family=socket.AF_INET,
                proto=0,
                flags=0,
            )
        ]

    async def close(self) -> None:
        pass


async def test_plain_http_to_a_remote_host_needs_explicit_opt_in(
    aiohttp_echo: tuple[str, list[dict[str, str]]],
) -> None:
    echo_url, seen = aiohttp_echo
    port = int(echo_url.rsplit(":", 1)[1])
    remote = f"http://api.callscaler.example:{port}/api/v1/"
    with pytest.raises(ValueError, match="plain http"):
        cs.CallScaler("cs_key_abcd1234remote", base_url=remote)
    with pytest.raises(ValueError, match="plain http"):
        cs.CallScaler("cs_key_abcd1234remote", base_url="http://10.0.0.8/api/v1/")
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=_Resolver(port))) as session,
        cs.CallScaler(
            "cs_key_abcd1234remote",
            base_url=remote,
            session=session,
            allow_insecure_http=True,
            rate_limit=huge(),
            business="insecure-opt-in",
        ) as client,
    ):
        await client.account.balance()
    assert seen[0]["Authorization"] == "Bearer cs_key_abcd1234remote"


# ------------------------------------------------------------------ 401 and 403


async def test_revoked_key_stops_at_once(fake: FakeCallScaler) -> None:
    async with cs.CallScaler(
        fake.revoked_key,
        base_url=fake.base_url,
        rate_limit=huge(),
        max_retries=5,
        business="revoked-once",
    ) as client:
        fake.reset_stats()
        with pytest.raises(cs.AuthenticationError) as info:
            await client.calls.get(uuid.uuid4())
        assert fake.stats.requests == 1
        assert info.value.status == 401
        assert "Invalid API key" in str(info.value)
        fake.reset_stats()
        fake.faults.flat_errors = True
        with pytest.raises(cs.AuthenticationError) as info:
            async for _ in client.calls.list(per_page=10):
                pass
        assert fake.stats.requests == 1
        assert "unauthorized" in str(info.value)


async def test_403_names_the_role_problem(fake: FakeCallScaler) -> None:
    async with cs.CallScaler(
        fake.readonly_key,
        base_url=fake.base_url,
        rate_limit=huge(),
        max_retries=5,
        business="viewer-403",
    ) as client:
        fake.reset_stats()
        with pytest.raises(cs.PermissionDeniedError, match="role") as info:
            await client.numbers.purchase("+15735550124")
        assert info.value.status == 403
        assert fake.stats.requests == 1
        fake.faults.flat_errors = True
        with pytest.raises(cs.PermissionDeniedError, match="role"):
            await client.call_flows.create(name="x", steps=[])
