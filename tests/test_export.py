"""The typed CSV export and the sync by export, against the fake and hand-made CSV servers."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import itertools
import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import callscaler_async as cs
from callscaler_async._csv import CSVRecords
from callscaler_async.models import Call, CallStatus
from callscaler_async.sync import JSONFileStore, JSONLinesSink, SyncError
from callscaler_async.testing import FakeCallScaler

ROOT = Path(__file__).resolve().parent.parent
BIG = cs.RateLimit(requests=100_000, period=60.0)
_names = itertools.count()


def _ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def client_for(fake: FakeCallScaler, **kw: Any) -> cs.CallScaler:
    return cs.CallScaler(
        fake.api_key, base_url=fake.base_url, rate_limit=kw.pop("rate_limit", BIG),
        business=f"export-test-{next(_names)}", **kw,
    )  # fmt: skip


def span(fake: FakeCallScaler) -> tuple[dt.datetime, dt.datetime]:
    stamps = [_ts(c["started_at"]) for c in fake.calls_data]
    return min(stamps), max(stamps)


async def assert_no_stray_tasks(baseline: set[asyncio.Task[Any]]) -> None:
    for _ in range(5):
        await asyncio.sleep(0)
    stray = {
        task
        for task in asyncio.all_tasks() - baseline
        if not getattr(task.get_coro(), "__qualname__", "").startswith("RequestHandler.")
    }
    assert not stray, f"tasks left running: {stray}"


# ------------------------------------------------------------------ CSV records


CELL = st.lists(
    st.sampled_from([*list("ab ,\"\n\r;'\t"), "é", "Zoë", "李", "\u2028", "\x85", "🙂"]),
    max_size=12,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.lists(CELL, min_size=1, max_size=5), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
    bom=st.booleans(),
)
def test_csv_records_are_those_of_the_whole_text_however_the_bytes_are_cut(
    rows: list[list[str]], cuts: list[int], bom: bool
) -> None:
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n").writerows(rows)
    data = ("\ufeff" if bom else "").encode() + text.getvalue().encode()
    expected = [row for row in csv.reader(io.StringIO(text.getvalue(), newline="")) if row]
    stream = CSVRecords()
    got: list[list[str]] = []
    last = 0
    for cut in sorted({min(c, len(data)) for c in cuts}):  # cuts fall inside UTF-8 sequences too
        got.extend(stream.feed(data[last:cut]))
        last = cut
    got.extend(stream.feed(data[last:]))
    got.extend(stream.finish())
    assert got == expected
    assert not stream.unterminated


# ------------------------------------------------------------------ export == pages

TRICKY = st.lists(
    st.sampled_from([*list("aZ ,\"\n\r'"), "Zoë", "Ñ", "李雷", "\u2028", "🙂", "\\"]),
    min_size=1,
    max_size=16,
).map("".join)
OPTIONAL = (
    "number_id", "call_flow_id", "call_flow_name", "caller_name", "caller_city",
    "caller_state", "destination_number", "direction", "duration_seconds", "recording_url",
    "has_transcription", "source", "utm_source", "utm_term", "gclid", "qualified", "ai_score",
    "ai_category", "cost_cents", "value_cents", "created_at",
)  # fmt: skip
EDIT = st.one_of(
    st.tuples(st.just("status"), st.sampled_from(["transferred", "on-hold", "x_y", "Missed"])),
    st.tuples(st.just("direction"), st.sampled_from(["internal", "forwarded"])),
    st.tuples(st.sampled_from(OPTIONAL), st.none()),
    st.tuples(st.sampled_from(["caller_name", "caller_city", "call_flow_name"]), TRICKY),
    st.tuples(st.just("ai_score"), st.sampled_from([0, 100, 42.5, 99.25])),
    st.tuples(st.just("cost_cents"), st.integers(min_value=0, max_value=10**12)),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # fmt: skip
@given(
    seed=st.integers(min_value=0, max_value=3),
    edits=st.lists(st.tuples(st.integers(min_value=0, max_value=119), EDIT), max_size=25),
    bounds=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    filters=st.sampled_from([{}, {"status": "missed"}, {"qualified": True}, {"status": "busy"}]),
)
def test_export_and_pages_give_identical_calls(
    seed: int,
    edits: list[tuple[int, tuple[str, Any]]],
    bounds: tuple[float, float],
    filters: dict[str, Any],
) -> None:
    async def check() -> None:
        async with FakeCallScaler(calls=120, seed=seed, rate_limit=100_000) as fake:
            data = fake.calls_data
            for index, (field, value) in edits:  # the fields edited do not change the order
                data[index][field] = value
            lo, hi = span(fake)
            a, b = sorted(bounds)
            date_from = (lo + (hi - lo) * a).replace(microsecond=0)
            date_to = (lo + (hi - lo) * b).replace(microsecond=0)
            async with client_for(fake) as client:
                window = {"date_from": date_from, "date_to": date_to, **filters}
                exported = [c async for c in client.calls.export(**window).calls()]
                paged = [c async for c in client.calls.list(**window)]
            assert exported == paged
            if any(field == "status" for _, (field, _) in edits) and not filters:
                assert all(isinstance(c.status, CallStatus) for c in exported)

    asyncio.run(check())


async def test_unknown_statuses_nulls_and_tricky_names_survive_the_export() -> None:
    async with FakeCallScaler(calls=50, seed=2, rate_limit=100_000) as fake:
        data = fake.calls_data
        data[0]["status"] = "transferred"
        data[1]["caller_name"] = 'O\'Brien, "Zoë"\r\nLi Lei 李雷\u2028🙂'
        for field in ("caller_name", "ai_score", "cost_cents", "qualified", "created_at"):
            data[2][field] = None
        async with client_for(fake) as client:
            calls = [c async for c in client.calls.export().calls()]
            rows = [r async for r in client.calls.export()]
    assert calls[0].status == "transferred" and calls[0].status.value == "transferred"
    assert calls[1].caller_name == data[1]["caller_name"]
    assert calls[2].caller_name is None and calls[2].ai_score is None
    assert calls[2].cost is None and calls[2].qualified is None and calls[2].created_at is None
    assert rows[1]["caller_name"] == data[1]["caller_name"] and rows[2]["cost_cents"] == ""


# ------------------------------------------------------------------ hand-made CSV


@pytest_asyncio.fixture
async def csv_server() -> AsyncIterator[tuple[str, dict[str, bytes]]]:
    """An API look-alike whose ``calls/export`` streams ``bodies["csv"]`` in 7-byte chunks."""
    bodies: dict[str, bytes] = {}

    async def export(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        body = bodies["csv"]
        for i in range(0, len(body), 7):
            await resp.write(body[i : i + 7])
            if "pause" in bodies:  # each piece its own read on the client's side
                await asyncio.sleep(0.001)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/api/v1/calls/export", export)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/api/v1/", bodies
    finally:
        await runner.cleanup()


HEADER = "id,status,started_at,caller_name,caller_city,qualified,cost_cents,ai_score,internal"
ID1 = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
ID2 = "0b6f2c1e-9a7d-4e55-8c3b-2f1d0e9a8b7c"


async def read_calls(base_url: str) -> list[Call]:
    async with cs.CallScaler(
        "cs_key_abcd1234secretsecret", base_url=base_url, rate_limit=BIG, business="csv-made"
    ) as client:
        return [c async for c in client.calls.export().calls()]


async def test_quoted_newlines_commas_quotes_and_non_ascii_names(
    csv_server: tuple[str, dict[str, bytes]],
) -> None:
    base_url, bodies = csv_server
    name = 'Zoë "Zee" Ñúñez, Jr.\r\nsecond line\nthird 李雷 🙂'
    city = "Saint-Étienne\u2028Loire"  # U+2028 is no line end in CSV: left unquoted by csv
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(HEADER.split(","))
    writer.writerow([ID1, "answered", "2026-03-23T14:30:00Z", name, city, "true", "125", "87",
                     "x,y"])  # fmt: skip
    writer.writerow([ID2, "transferred", "2026-03-23T10:00:00+02:00", "", "", "", "", "", ""])
    bodies["csv"] = "\ufeff".encode() + text.getvalue().encode()
    first, second = await read_calls(base_url)
    assert first.caller_name == name and first.caller_city == city
    assert first.qualified is True and first.cost == cs.Money.from_cents(125)
    assert first.ai_score == 87.0 and first.started_at == dt.datetime(
        2026, 3, 23, 14, 30, tzinfo=dt.UTC
    )
    assert second.status == "transferred" and second.caller_name is None
    assert second.started_at == dt.datetime(2026, 3, 23, 8, 0, tzinfo=dt.UTC)
    assert second.qualified is None and second.cost is None


async def test_a_header_that_arrives_in_pieces(csv_server: tuple[str, dict[str, bytes]]) -> None:
    base_url, bodies = csv_server
    rows = [f'{ID1},answered,2026-03-23T14:30:00Z,Zoë,"a,b",true,1,2,x'] * 3
    bodies["csv"] = "\r\n".join([HEADER, *rows, ""]).encode()
    bodies["pause"] = b""
    calls = await read_calls(base_url)
    assert len(calls) == 3 and calls[0].caller_city == "a,b" and calls[0].caller_name == "Zoë"


@pytest.mark.parametrize(
    ("row", "number", "column", "message"),
    [
        (f"{ID1},answered,2026-03-23T14:30:00Z,a,b,yes,1,2,x", 2, "qualified", "true or false"),
        (f"{ID1},answered,2026-03-23T14:30:00Z,a,b,true,1.5,2,x", 2, "cost_cents", "integer"),
        (f"{ID1},answered,2026-03-23T14:30:00Z,a,b,true,1,nan,x", 2, "ai_score", "number"),
        (f"{ID1},answered,yesterday,a,b,true,1,2,x", 2, "started_at", "ISO 8601"),
        ("not-a-uuid,answered,2026-03-23T14:30:00Z,a,b,true,1,2,x", 2, "id", "UUID"),
        (f"{ID1},,2026-03-23T14:30:00Z,a,b,true,1,2,x", 2, "status", "required cell empty"),
        (f"{ID1},answered,2026-03-23T14:30:00Z,a", 2, None, "4 cells, the header 9"),
        (f'{ID1},answered,2026-03-23T14:30:00Z,"a,b', 2, None, "inside a quoted cell"),
    ],
)
async def test_a_bad_cell_names_its_row_and_column(
    csv_server: tuple[str, dict[str, bytes]],
    row: str,
    number: int,
    column: str | None,
    message: str,
) -> None:
    base_url, bodies = csv_server
    good = f"{ID2},missed,2026-03-23T14:30:00Z,a,b,false,0,,"
    bodies["csv"] = f"{HEADER}\r\n{good}\r\n{row}\r\n".encode()
    if "quoted" in message:
        bodies["csv"] = f"{HEADER}\r\n{good}\r\n{row}".encode()
    with pytest.raises(cs.ResponseDecodeError) as info:
        await read_calls(base_url)
    assert info.value.row == number and info.value.column == column
    assert message in str(info.value) and f"row {number}" in str(info.value)


async def test_export_of_a_header_without_a_required_column(
    csv_server: tuple[str, dict[str, bytes]],
) -> None:
    base_url, bodies = csv_server
    bodies["csv"] = f"id,status\r\n{ID1},answered\r\n".encode()
    with pytest.raises(cs.ResponseDecodeError) as info:
        await read_calls(base_url)
    assert info.value.column == "started_at" and "missing from the header" in str(info.value)


# ------------------------------------------------------------------ sync by export


async def sync_ids(
    fake: FakeCallScaler, strategy: str = "auto", **kw: Any
) -> tuple[list[str], cs.sync.SyncSummary]:
    lo, hi = span(fake)
    got: list[str] = []

    async def sink(batch: list[Call]) -> None:
        got.extend(str(c.id) for c in batch)

    async with client_for(fake) as client:
        job = client.calls.sync(
            since=lo, until=hi, window=kw.pop("window", dt.timedelta(days=10)),
            strategy=strategy,  # type: ignore[arg-type]
        )  # fmt: skip
        summary = await job.run(sink, **kw)
    return got, summary


@pytest.mark.looptime
async def test_sync_by_export_two_requests_per_window_and_says_so() -> None:
    async with FakeCallScaler(calls=3000, seed=4, rate_limit=100_000) as fake:
        want = {c["id"] for c in fake.calls_data}
        got, summary = await sync_ids(fake, "auto", window=dt.timedelta(days=30))
        pages_got, pages = await sync_ids(fake, "pages", window=dt.timedelta(days=30))
        by_route = fake.stats.by_path
    windows = summary.windows_exported
    assert len(got) == len(set(got)) == 3000 and set(got) == want == set(pages_got)
    assert summary.strategy == "export" and pages.strategy == "pages"
    assert windows >= 4 and summary.windows_redone == 0
    assert summary.requests == 2 * windows  # one count and one export per window
    assert pages.requests >= 30 and summary.requests * 3 < pages.requests
    assert by_route["GET calls/export"] == windows


@pytest.mark.looptime
async def test_progress_counts_rows_as_they_stream() -> None:
    async with FakeCallScaler(calls=2400, seed=4, rate_limit=100_000) as fake:
        seen: list[cs.sync.SyncProgress] = []
        got, summary = await sync_ids(
            fake, "export", window=dt.timedelta(days=400), on_progress=seen.append
        )
    assert summary.windows_exported == 1 and len(got) == 2400
    streaming = [p.delivered for p in seen if p.windows_done == 0]
    assert len(streaming) >= 4 and streaming == sorted(streaming) and streaming[-1] == 2400
    # (The events before the first export's header say "pages": nothing decided yet.)
    assert all(p.strategy == "export" for p in seen if p.delivered)
    counted = [p.total_estimate for p in seen if p.total_estimate is not None]
    assert counted and counted[0] == 2400  # the range's count, before the rows streamed in


@pytest.mark.looptime
async def test_auto_pages_the_whole_sync_when_the_header_lacks_a_field(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with FakeCallScaler(calls=1500, seed=4, rate_limit=100_000) as fake:
        want = {c["id"] for c in fake.calls_data}
        fake.faults.export_missing_column = "utm_content"
        with caplog.at_level(logging.INFO, logger="callscaler_async.sync"):
            got, summary = await sync_ids(fake, "auto")
        exports = fake.stats.by_path["GET calls/export"]
        with pytest.raises(SyncError, match="header lacks utm_content"):
            await sync_ids(fake, "export")
    assert len(got) == len(set(got)) and set(got) == want
    assert summary.strategy == "pages" and exports == 1  # one probe, then pages throughout
    said = [r for r in caplog.records if "not possible" in r.getMessage()]
    assert (
        len(said) == 1 and said[0].levelno == logging.INFO and "utm_content" in said[0].getMessage()
    )


@pytest.mark.looptime
@pytest.mark.parametrize(
    "fault",
    ["cut", "cut_clean", "cut_first_row", "fewer", "more", "extra_column", "missing_later",
     "export_500", "export_drop"],
)  # fmt: skip
@pytest.mark.parametrize("strategy", ["auto", "export"])
async def test_every_export_fault_ends_exact(fault: str, strategy: str) -> None:
    async with FakeCallScaler(calls=2000, seed=6, rate_limit=100_000) as fake:
        want = {c["id"] for c in fake.calls_data}
        faults = fake.faults
        if fault == "cut":
            faults.cut_export_next(3, after_rows=37)
        elif fault == "cut_clean":
            faults.cut_export_next(3, after_rows=37, clean=True)
        elif fault == "cut_first_row":
            faults.cut_export_next(2, after_rows=0)
        elif fault == "fewer":
            faults.miscount_export_next(3, rows=-2)
        elif fault == "more":
            faults.miscount_export_next(3, rows=5)
        elif fault == "extra_column":
            faults.export_extra_column = "internal_note"
        elif fault == "export_500":
            faults.fail_next(8, status=500, path="calls/export")
        elif fault == "export_drop":
            faults.drop_next(8, path="calls/export")
        if fault == "missing_later":  # the server changes its columns in the middle of a sync
            counts = 0

            def on_request(event: Any) -> None:  # each window's count precedes its export
                nonlocal counts
                if event.route == "calls":
                    counts += 1
                    if counts == 3:
                        faults.export_missing_column = "source"

            got, summary = await sync_ids_hooked(fake, strategy, on_request)
        else:
            got, summary = await sync_ids(fake, strategy)
    dupes = [k for k, n in Counter(got).items() if n > 1]
    assert not dupes, f"delivered twice: {dupes}"
    assert set(got) == want, f"lost {len(want - set(got))}"
    assert summary.items == len(want)
    if fault in ("cut", "cut_clean", "fewer", "missing_later", "cut_first_row"):
        assert summary.windows_redone >= 1
    if fault in ("more", "extra_column"):  # repeated rows are skipped by id: nothing to redo
        assert summary.strategy == "export" and summary.windows_redone == 0


async def sync_ids_hooked(
    fake: FakeCallScaler, strategy: str, on_request: Any
) -> tuple[list[str], cs.sync.SyncSummary]:
    lo, hi = span(fake)
    got: list[str] = []

    async def sink(batch: list[Call]) -> None:
        got.extend(str(c.id) for c in batch)

    async with client_for(fake, on_request=on_request) as client:
        job = client.calls.sync(
            since=lo, until=hi, window=dt.timedelta(days=10), strategy=strategy,  # type: ignore[arg-type]
        )  # fmt: skip
        summary = await job.run(sink)
    return got, summary


@pytest.mark.looptime
@pytest.mark.parametrize("seed", range(30))
async def test_random_export_faults_exactly_once_or_a_typed_error(seed: int) -> None:
    rng = random.Random(seed)
    async with FakeCallScaler(calls=1200, seed=seed, rate_limit=100_000) as fake:
        original = {c["id"] for c in fake.calls_data}
        faults = fake.faults
        for _ in range(rng.randint(1, 6)):
            kind = rng.choice(["cut", "clean", "count", "drop", "fail", "delete", "insert"])
            if kind == "cut":
                faults.cut_export_next(rng.randint(1, 3), after_rows=rng.randint(0, 80))
            elif kind == "clean":
                faults.cut_export_next(1, after_rows=rng.randint(0, 80), clean=True)
            elif kind == "count":
                faults.miscount_export_next(rng.randint(1, 3), rows=rng.choice([-3, -1, 1, 4]))
            elif kind == "drop":
                faults.drop_next(rng.randint(1, 3), path=rng.choice(["calls/export", None]))
            elif kind == "fail":
                faults.fail_next(rng.randint(1, 5), status=rng.choice([500, 502, 503]))
            elif kind == "delete":
                faults.delete_calls_per_list_request = rng.randint(1, 2)
            else:
                faults.insert_calls_per_list_request = 1
        if rng.random() < 0.3:
            faults.export_extra_column = "x_internal"
        outcome = "complete"
        got: list[str] = []
        try:
            got, _ = await sync_ids(
                fake, rng.choice(["auto", "export"]), window=dt.timedelta(days=rng.choice([5, 20]))
            )
        except cs.CallScalerError as exc:
            outcome = type(exc).__name__
        survivors = original & {c["id"] for c in fake.calls_data}
    assert len(got) == len(set(got)), f"seed {seed}: a duplicate"
    assert set(got) <= original | {c["id"] for c in fake.calls_data}
    if outcome == "complete":
        assert survivors <= set(got), f"seed {seed}: lost {len(survivors - set(got))}"


# ------------------------------------------------------------------ cancellation


@pytest.mark.looptime
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1, 0.12, 0.2, 0.25, 0.3, 0.35])
async def test_cancel_a_sync_by_export_at_any_instant(tmp_path: Path, delay: float) -> None:
    baseline = asyncio.all_tasks()
    async with FakeCallScaler(calls=3000, seed=8, rate_limit=100_000, latency=0.1) as fake:
        lo, hi = span(fake)
        async with client_for(fake) as client:
            job = client.calls.sync(since=lo, until=hi, window=dt.timedelta(days=20))
            out = tmp_path / "c.jsonl"
            task = asyncio.ensure_future(
                job.run(JSONLinesSink(out), store=JSONFileStore(tmp_path / "cp.json"))
            )
            await asyncio.sleep(delay)
            loop = asyncio.get_running_loop()
            cancelled_at = loop.time()
            assert not task.done()  # the whole sync takes about 0.4 s (latency 0.1 s)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert loop.time() - cancelled_at < 0.05  # prompt: no request is waited for
            await assert_no_stray_tasks(baseline | {asyncio.current_task()})  # type: ignore[operator]
            # And the cancelled sync resumes exactly once.
            summary = await client.calls.sync(since=lo, until=hi, window=dt.timedelta(days=20)).run(
                JSONLinesSink(out), store=JSONFileStore(tmp_path / "cp.json")
            )
    ids = [json.loads(line)["id"] for line in out.read_bytes().splitlines()]
    assert len(ids) == len(set(ids)) == 3000 == summary.items
    assert summary.strategy == "export"


# ------------------------------------------------------------------ kill and resume

WORKER = textwrap.dedent(
    """
    import asyncio, datetime as dt, sys
    import callscaler_async as cs
    from callscaler_async.sync import JSONFileStore, JSONLinesSink

    api_key, base_url, since, until, out, slow = sys.argv[1:7]

    class SlowSink(JSONLinesSink):
        async def write(self, batch):
            await super().write(batch)
            await asyncio.sleep(float(slow))  # time for the test to kill us mid-window

    async def main():
        async with cs.CallScaler(api_key, base_url=base_url) as client:
            run = client.calls.sync(
                since=dt.datetime.fromisoformat(since), until=dt.datetime.fromisoformat(until),
                window=dt.timedelta(days=400), strategy="export",
            )
            summary = await run.run(SlowSink(out), store=JSONFileStore(out + ".checkpoint.json"))
            print(summary.items, summary.strategy, summary.requests, summary.resumed)

    asyncio.run(main())
    """
)


@pytest.mark.timeout(120)
async def test_sigkill_mid_export_then_resume_delivers_exactly_once(tmp_path: Path) -> None:
    async with FakeCallScaler(calls=4000, seed=9, rate_limit=100_000) as fake:
        lo, hi = span(fake)
        out = tmp_path / "calls.jsonl"
        checkpoint = Path(str(out) + ".checkpoint.json")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        args = [fake.api_key, fake.base_url, lo.isoformat(), hi.isoformat(), str(out)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER, *args, "0.2", env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        delivered = 0
        for _ in range(600):  # until a few batches of the one window are saved
            await asyncio.sleep(0.05)
            if checkpoint.exists():
                state = json.loads(checkpoint.read_text())
                delivered = state["delivered"]
                if delivered >= 1000:
                    break
        assert proc.returncode is None, (await proc.communicate())[1].decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        assert 1000 <= delivered < 4000 and state["windows_done"] == 0  # killed mid-export
        exports_before = fake.stats.by_path.get("GET calls/export", 0)
        resumed = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER, *args, "0", env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(resumed.communicate(), timeout=90)
        assert resumed.returncode == 0, stderr.decode()[-3000:]
        want = {c["id"] for c in fake.calls_data}
        exports = fake.stats.by_path["GET calls/export"] - exports_before
    items, strategy, _requests, was_resumed = stdout.decode().split()
    ids = [json.loads(line)["id"] for line in out.read_bytes().splitlines()]
    assert len(ids) == len(set(ids)), "a call was delivered twice"
    assert set(ids) == want and int(items) == len(want)
    assert strategy == "export" and was_resumed == "True" and exports == 1


@pytest.mark.looptime
@pytest.mark.parametrize("after", [1, 500, 1000, 1500])
async def test_cancel_while_the_export_streams(tmp_path: Path, after: int) -> None:
    baseline = asyncio.all_tasks()
    async with FakeCallScaler(calls=2500, seed=8, rate_limit=100_000, latency=0.05) as fake:
        lo, hi = span(fake)
        async with client_for(fake) as client:
            job = client.calls.sync(since=lo, until=hi, window=dt.timedelta(days=400))
            task: asyncio.Future[Any] | None = None

            def on_progress(progress: cs.sync.SyncProgress) -> None:
                if progress.delivered >= after and task is not None:
                    task.cancel()  # the one window's export is open, rows still to come

            store = JSONFileStore(tmp_path / "cp.json")
            task = asyncio.ensure_future(
                job.run(JSONLinesSink(tmp_path / "c.jsonl"), store=store, on_progress=on_progress)
            )
            with pytest.raises(asyncio.CancelledError):
                await task
            saved = await store.load(f"calls:{client.business}")
            assert saved is not None and 0 < saved.delivered < 2500 and saved.windows_done == 0
            await assert_no_stray_tasks(baseline | {asyncio.current_task()})  # type: ignore[operator]


# ------------------------------------------------------------------ CLI


@pytest.mark.parametrize("strategy", ["export", "pages", "auto"])
def test_cli_sync_calls_strategy(tmp_path: Path, strategy: str) -> None:
    from test_cli import ThreadedFake, invoke

    with ThreadedFake(calls=900, seed=9, rate_limit=10_000, period=60.0) as fake:
        out = tmp_path / "calls.jsonl"
        code, _, err = invoke(
            fake, "sync", "calls", "--since", "2026-01-01", "--until", "2026-11-01",
            "--out", str(out), "--strategy", strategy, "--quiet",
        )  # fmt: skip
        want = {c["id"] for c in fake.calls_data}
        exports = fake.stats.by_path.get("GET calls/export", 0)
    assert code == 0, err
    ids = [json.loads(line)["id"] for line in out.read_bytes().splitlines()]
    assert len(ids) == len(set(ids)) and set(ids) == want
    ran = "pages" if strategy == "pages" else "export"
    assert f"by {ran}," in err and "requests" in err
    assert (exports > 0) == (ran == "export")


def test_cli_sync_calls_refuses_an_unknown_strategy(tmp_path: Path) -> None:
    from test_cli import ThreadedFake, invoke

    with ThreadedFake(calls=10, seed=9, rate_limit=10_000, period=60.0) as fake:
        code, _, err = invoke(
            fake, "sync", "calls", "--since", "2026-01-01", "--out", str(tmp_path / "c.jsonl"),
            "--strategy", "fastest",
        )  # fmt: skip
        assert fake.stats.requests == 0
    assert code == 2 and "fastest" in err


def test_requests_left_follows_the_strategy() -> None:
    from callscaler_async.sync import SyncProgress

    common = {"business": "b", "windows_done": 3, "windows": 13, "pages": 0, "requests": 7,
              "elapsed": 1.0, "windows_counted": 4}  # fmt: skip
    export = SyncProgress(delivered=2000, total_estimate=3000, strategy="export", **common)
    pages = SyncProgress(delivered=2000, total_estimate=3000, strategy="pages", **common)
    assert export.requests_left == 2 * 10  # a count and an export per window left
    # The server counted 3,000 in the range, 2,000 delivered: 10 pages + a first page for
    # each of the 9 windows after the one in progress.
    assert pages.requests_left == 10 + 9
    assert SyncProgress(delivered=0, total_estimate=None, **common).requests_left is None
