"""``callscaler demo``: the main job end to end against an in-process sandbox.

1. start the sandbox: thousands of calls, a time-scaled rate limit (60 requests per 2 s);
2. sync every call of the range into the SQLite database ``full.db`` with the progress line;
3. sync again into ``resumed.db`` and stop the sandbox half-way: the sync fails cleanly,
   and the database holds exactly the calls its checkpoint counts (one transaction each);
4. restart the sandbox on the same data and port, resume from the checkpoint;
5. check both databases hold every call of the range exactly once, print the summary.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

import click

from .._client import CallScaler
from .._errors import CallScalerError
from ..ratelimit import RateLimit
from ..sync import SQLiteStore, SyncProgress, SyncSummary
from ..testing import FakeCallScaler
from ._progress import format_duration, progress_display, summary_lines

__all__ = ["run_demo"]

LIMIT, PERIOD = 60, 2.0
_BY_STATUS = "select status, count(*) from calls group by 1"
# Weekly windows: the sandbox stopped half-way leaves windows that no request fetched yet.
WINDOW = dt.timedelta(days=7)


def _ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _query(path: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _ids(path: Path) -> list[str]:
    return [str(row[0]) for row in _query(path, "SELECT id FROM calls")]


def _say(text: str = "") -> None:
    click.echo(text)
    sys.stdout.flush()


async def run_demo(out: Path | None, n_calls: int) -> bool:
    workdir = out if out is not None else Path(tempfile.mkdtemp(prefix="callscaler-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return await _demo(workdir, n_calls, keep=out is not None)
    finally:
        if out is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _fake(n_calls: int, port: int = 0) -> FakeCallScaler:
    return FakeCallScaler(
        calls=n_calls, seed=7, rate_limit=LIMIT, period=PERIOD, algorithm="sliding",
        latency=0.02, port=port,
    )  # fmt: skip


def _client(fake: FakeCallScaler, name: str) -> CallScaler:
    return CallScaler(
        fake.api_key, base_url=fake.base_url, rate_limit=RateLimit(LIMIT, PERIOD),
        business="demo", max_retries=1,  # one business: every phase shares one gate
    )  # fmt: skip


async def _demo(workdir: Path, n_calls: int, *, keep: bool) -> bool:
    fake = await _fake(n_calls).start()
    port = fake.port
    stamps = sorted(_ts(c["started_at"]) for c in fake.calls_data)
    since = stamps[0].date()
    until = stamps[-1].replace(microsecond=0)
    expected = {
        c["id"] for c in fake.calls_data
        if dt.datetime.combine(since, dt.time(), dt.UTC) <= _ts(c["started_at"]) <= until
    }  # fmt: skip
    _say("callscaler demo: bulk sync against a local sandbox API")
    _say(f"  sandbox   {fake.base_url}  ({len(fake.calls_data):,} calls, key {fake.api_key[:15]}…)")
    _say(f"  limit     {LIMIT} requests / {PERIOD:g} s (time-scaled; the real API allows 60/min)")
    _say(f"  range     {since} .. {until:%Y-%m-%d %H:%M:%S} UTC: {len(expected):,} calls")
    _say(f"  files in  {workdir}")
    _say()
    results: list[tuple[str, SyncSummary]] = []
    try:
        # 1. A full sync.
        _say("1/3  full sync -> full.db (SQLite: the calls and the checkpoint in one file)")
        full = workdir / "full.db"
        async with _client(fake, "full") as client:
            progress = progress_display(sys.stderr, label="full  ")
            summary = await client.calls.sync(since=since, until=until, window=WINDOW).run(
                SQLiteStore(full), on_progress=progress
            )
            progress.finish()
        results.append(("full sync", summary))
        _say(
            f"     done: {summary.items:,} calls, {summary.requests} requests, "
            f"{format_duration(summary.elapsed)}"
        )
        _say()

        # 2. A second sync, the sandbox dies half-way.
        _say("2/3  second sync -> resumed.db; the sandbox is stopped half-way through")
        second = workdir / "resumed.db"
        killed = asyncio.Event()
        crash_at = len(expected) // 2
        progress = progress_display(sys.stderr, label="second")
        tasks: set[asyncio.Task[None]] = set()

        def kill_half_way(p: SyncProgress) -> None:
            progress(p)
            if p.delivered >= crash_at and not killed.is_set():
                killed.set()
                task = asyncio.ensure_future(fake.close())
                tasks.add(task)

        error: CallScalerError | None = None
        async with _client(fake, "second") as client:
            try:
                await client.calls.sync(since=since, until=until, window=WINDOW).run(
                    SQLiteStore(second), on_progress=kill_half_way
                )
            except CallScalerError as exc:
                error = exc
            finally:
                progress.finish()
                for task in tasks:
                    await task
        reader = SQLiteStore(second)
        try:
            saved = await reader.load(f"calls:{client.business}")
        finally:
            await reader.close()
        if error is None or saved is None:
            _say("     the sync finished before the sandbox went down (a very fast machine?)")
        else:
            rows = len(_ids(second))
            agree = "the same" if rows == saved.delivered else "NOT the same"
            _say(f"     sync failed as expected: {type(error).__name__}: {error}")
            _say(
                f"     resumed.db: {rows:,} calls in the table, {saved.delivered:,} in its "
                f"checkpoint ({agree}), window {saved.windows_done} of {saved.window_count}"
            )
        _say()

        # 3. Restart on the same data and port, resume.
        _say("3/3  sandbox restarted on the same data; resuming from the checkpoint")
        fake = await _fake(n_calls, port).start()
        async with _client(fake, "second") as client:
            progress = progress_display(sys.stderr, label="second")
            summary = await client.calls.sync(since=since, until=until, window=WINDOW).run(
                SQLiteStore(second), on_progress=progress
            )
            progress.finish()
        results.append(("resumed sync", summary))
        _say(
            f"     done: {summary.items:,} calls in total"
            + (" (resumed)" if summary.resumed else "")
        )
        _say()
    finally:
        await fake.close()

    ok = True
    _say("verification (ids in each database against the sandbox's own data):")
    for name in ("full.db", "resumed.db"):
        ids = _ids(workdir / name)
        unique = set(ids)
        dupes = len(ids) - len(unique)
        missing = len(expected - unique)
        extra = len(unique - expected)
        good = dupes == 0 and missing == 0 and extra == 0
        ok = ok and good
        mark = "ok" if good else "FAILED"
        _say(
            f"  {name:<14} {len(ids):>6,} rows, {dupes} duplicates, {missing} missing, "
            f"{extra} unexpected: {mark}"
        )
    _say()
    _say('select status, count(*) from calls group by 1 (full.db):')
    for status, count in _query(workdir / "full.db", _BY_STATUS):
        _say(f"  {status!s:<10} {count:>6,}")
    _say()
    for title, summary in results:
        _say(f"{title}:")
        for line in summary_lines(summary):
            _say(line)
    _say()
    if ok:
        _say(
            f"demo OK: {len(expected):,} calls synced twice, one sync interrupted and resumed, "
            "every call exactly once."
        )
        if keep:
            _say(f'query it yourself: sqlite3 {workdir / "full.db"} "{_BY_STATUS}"')
            _say("  (or, on Python 3.12+: python -m sqlite3 <file> \"<sql>\")")
        _say("next: `callscaler sandbox` for a local API to try, then `callscaler sync calls`.")
    return ok
