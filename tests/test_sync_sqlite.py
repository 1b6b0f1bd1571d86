"""The sync into SQLite: one transaction per batch and its checkpoint, against the fake.

Real files, real SQLite, real subprocesses (a writer killed with SIGKILL, a process holding
the write lock); the fake API is served over real sockets by the test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import callscaler_async as cs
from callscaler_async.sync import (
    CALL_COLUMNS,
    JSONFileStore,
    SQLiteStore,
    SQLiteStoreError,
    SQLiteStoreLocked,
    SyncProgress,
)
from callscaler_async.testing import FakeCallScaler

ROOT = Path(__file__).resolve().parent.parent
BIG = cs.RateLimit(requests=1_000_000, period=60.0)
SINCE = dt.date(2026, 1, 1)
_names = itertools.count()


def _ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def until_of(fake: FakeCallScaler) -> dt.datetime:
    return max(_ts(c["started_at"]) for c in fake.calls_data)


def expected(fake: FakeCallScaler, until: dt.datetime) -> set[str]:
    lo = dt.datetime.combine(SINCE, dt.time(), dt.UTC)
    return {c["id"] for c in fake.calls_data if lo <= _ts(c["started_at"]) <= until}


def client_for(fake: FakeCallScaler, **kw: Any) -> cs.CallScaler:
    return cs.CallScaler(
        fake.api_key, base_url=fake.base_url, rate_limit=BIG,
        business=kw.pop("business", None) or f"sqlite-{next(_names)}", **kw,
    )  # fmt: skip


def snapshot(path: Path) -> tuple[list[str], dict[str, Any] | None]:
    """The ids in the table and the checkpoint, read in one transaction (a consistent view)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        db.execute("BEGIN")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        # A process killed while it opened the database may have left it without tables.
        ids = [r[0] for r in db.execute("SELECT id FROM calls")] if "calls" in tables else []
        row = (
            db.execute("SELECT body FROM callscaler_sync_checkpoints").fetchone()
            if "callscaler_sync_checkpoints" in tables
            else None
        )
        db.execute("COMMIT")
    finally:
        db.close()
    return ids, (json.loads(row[0]) if row else None)


def assert_consistent(path: Path, want: set[str]) -> dict[str, Any] | None:
    ids, checkpoint = snapshot(path)
    assert len(ids) == len(set(ids))
    assert set(ids) <= want, "a call outside the range"
    if checkpoint is None:
        assert ids == []
        return None
    # Every delivery is counted once in the checkpoint: a batch delivered twice would make
    # `delivered` larger than the table; a batch without its checkpoint, smaller.
    assert checkpoint["delivered"] == len(ids)
    assert set(checkpoint["window_ids"]) <= set(ids)
    return checkpoint


# ------------------------------------------------------------------------- the happy path


async def test_sync_into_sqlite_typed_columns_and_upsert(tmp_path: Path) -> None:
    db_path = tmp_path / "calls.db"
    async with FakeCallScaler(calls=700, seed=4, rate_limit=1_000_000) as fake:
        until = until_of(fake)
        want = expected(fake, until)
        async with client_for(fake) as client:
            summary = await client.calls.sync(since=SINCE, until=until).run(SQLiteStore(db_path))
            # A second full sync upserts: still one row per call.
            again = await client.calls.sync(since=SINCE, until=until).run(SQLiteStore(db_path))
        by_id = {c["id"]: c for c in fake.calls_data}
    assert summary.items == again.items == len(want)
    assert not again.resumed
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT count(*), count(DISTINCT id) FROM calls").fetchone() == (
            len(want), len(want),
        )  # fmt: skip
        info = {r[1]: (r[2], r[5]) for r in db.execute("PRAGMA table_info(calls)")}
        assert info == {name: (sql, 1 if name == "id" else 0) for name, sql in CALL_COLUMNS}
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM calls").fetchall()
        for row in rows:
            source = by_id[row["id"]]
            for name, _ in CALL_COLUMNS:
                value, api = row[name], source.get(name)
                if isinstance(api, bool):
                    assert value == int(api), name
                else:
                    assert value == api, (name, value, api)
        types = {
            name: {r[0] for r in db.execute(f"SELECT DISTINCT typeof({name}) FROM calls")}
            for name in ("id", "started_at", "cost_cents", "qualified", "duration_seconds")
        }
        assert types["id"] == {"text"} and types["started_at"] == {"text"}
        assert types["cost_cents"] <= {"integer", "null"} and "integer" in types["cost_cents"]
        assert types["qualified"] <= {"integer", "null"}
        assert types["duration_seconds"] <= {"integer", "null"}
        assert all(r["started_at"].endswith("Z") for r in rows)
        # The README's query.
        by_status = dict(db.execute("SELECT status, count(*) FROM calls GROUP BY 1").fetchall())
        assert sum(by_status.values()) == len(want)
    finally:
        db.close()


async def test_a_sqlite_store_refuses_another_checkpoint_store(tmp_path: Path) -> None:
    async with FakeCallScaler(calls=20, rate_limit=1_000_000) as fake, client_for(fake) as client:
        job = client.calls.sync(since=SINCE, until=until_of(fake))
        with pytest.raises(TypeError, match="keeps its own checkpoints"):
            await job.run(SQLiteStore(tmp_path / "c.db"), store=JSONFileStore(tmp_path / "x.json"))
        assert fake.stats.requests == 0


async def test_cancelled_at_random_moments_resumes_exactly(tmp_path: Path) -> None:
    db_path = tmp_path / "calls.db"
    rng = random.Random(11)
    async with FakeCallScaler(calls=4000, seed=6, rate_limit=1_000_000, latency=0.002) as fake:
        until = until_of(fake)
        want = expected(fake, until)
        cancels = mid_sync = 0
        for _ in range(200):
            async with client_for(fake, business="cancel") as client:
                job = client.calls.sync(since=SINCE, until=until, window=dt.timedelta(days=5))
                committed = asyncio.Queue[None]()
                seen = [-1]

                def progress(
                    p: SyncProgress, q: asyncio.Queue[None] = committed, seen: list[int] = seen
                ) -> None:
                    # Progress also comes when the sync starts and when its count arrives:
                    # only a delivered batch means a commit.
                    if p.delivered > seen[0] >= 0:
                        q.put_nowait(None)
                    seen[0] = p.delivered

                task = asyncio.ensure_future(job.run(SQLiteStore(db_path), on_progress=progress))
                # A few committed batches (so every run makes progress, however fast the
                # machine), then a random instant: mid-request, mid-commit, mid-close.
                for _ in range(rng.randrange(0, 3)):
                    getter = asyncio.ensure_future(committed.get())
                    await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                    getter.cancel()
                await asyncio.sleep(rng.uniform(0.0, 0.005))
                if task.done():
                    task.result()
                    break
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                cancels += 1
                checkpoint = assert_consistent(db_path, want)
                # Cancelled after its last commit (while closing): the sync is complete, and
                # running it again would start a new sync of the same range.
                if checkpoint is not None and checkpoint["finished"]:
                    break
                mid_sync += checkpoint is not None and checkpoint["delivered"] > 0
        else:
            pytest.fail("the sync never finished")
    print(f"{cancels} cancellations, {mid_sync} after some calls were committed")
    assert cancels >= 10 and mid_sync >= 5, (cancels, mid_sync)
    ids, checkpoint = snapshot(db_path)
    assert set(ids) == want and len(ids) == len(want)
    assert checkpoint is not None and checkpoint["finished"]
    assert checkpoint["delivered"] == len(want)


# ------------------------------------------------------------------------- real processes

CHILD = textwrap.dedent(
    """
    import asyncio, datetime as dt, sys
    import callscaler_async as cs
    from callscaler_async.sync import SQLiteStore

    key, base_url, db, since, until = sys.argv[1:6]

    async def main():
        async with cs.CallScaler(
            key, base_url=base_url, business="killed",
            rate_limit=cs.RateLimit(1_000_000, 60.0),
        ) as client:
            job = client.calls.sync(
                since=dt.date.fromisoformat(since), until=dt.datetime.fromisoformat(until),
                window=dt.timedelta(days=4), concurrency=4,
            )
            last = [None]

            def committed(p):
                # Progress also comes at the start and when the count arrives: a line per
                # committed batch only.
                if last[0] is not None and p.delivered > last[0]:
                    print(p.delivered, flush=True)
                last[0] = p.delivered

            summary = await job.run(SQLiteStore(db), on_progress=committed)
            print("done", summary.items, summary.resumed, flush=True)

    asyncio.run(main())
    """
)


async def _spawn(fake: FakeCallScaler, db_path: Path, until: dt.datetime) -> Any:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, fake.api_key, fake.base_url, str(db_path),
        SINCE.isoformat(), until.isoformat(),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_sigkill_at_50_random_moments_every_call_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(2026)
    kills = cycles = mid_sync = 0
    async with FakeCallScaler(calls=6000, seed=8, rate_limit=1_000_000, latency=0.003) as fake:
        until = until_of(fake)
        want = expected(fake, until)
        while kills < 50:
            # A cycle is one sync from an empty database to the end; a fast machine may
            # finish one before 50 kills, so cycles repeat until 50 kills landed mid-sync.
            cycles += 1
            db_path = tmp_path / f"cycle{cycles}.db"
            while True:
                proc = await _spawn(fake, db_path, until)
                assert proc.stdout is not None
                lines = rng.randrange(0, 4)  # committed batches to wait for, then a random delay
                finished = False
                for _ in range(lines):
                    line = await proc.stdout.readline()
                    if not line or line.startswith(b"done"):
                        finished = True
                        break
                if not finished:
                    await asyncio.sleep(rng.uniform(0.0, 0.03))
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGKILL)
                _, err = await proc.communicate()
                if proc.returncode == -signal.SIGKILL:
                    kills += 1
                    checkpoint = assert_consistent(db_path, want) if db_path.exists() else None
                    # Killed after the last commit, before the process exited: the sync is
                    # complete (running it again would start a new sync of the same range).
                    if checkpoint is not None and checkpoint["finished"]:
                        break
                    mid_sync += checkpoint is not None and checkpoint["delivered"] > 0
                    continue
                assert proc.returncode == 0, err.decode()[-3000:]
                break
            ids, checkpoint = snapshot(db_path)
            assert len(ids) == len(want) and set(ids) == want, "lost or duplicated calls"
            assert checkpoint is not None and checkpoint["finished"]
            assert checkpoint["delivered"] == len(want)
    print(f"{kills} kills over {cycles} syncs, {mid_sync} after some calls were committed")
    assert kills >= 50
    assert mid_sync >= kills // 2  # most kills land in the middle of a sync, not at start-up


READER_WRITER = textwrap.dedent(
    """
    import sqlite3, sys
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN IMMEDIATE")      # holds the write lock until told to let go
    print("locked", flush=True)
    sys.stdin.readline()
    db.execute("ROLLBACK")
    """
)


@pytest.mark.timeout(120)
async def test_readers_query_while_a_process_syncs(tmp_path: Path) -> None:
    db_path = tmp_path / "calls.db"
    # 10 ms per request: the sync lasts long enough for the reader to look many times.
    async with FakeCallScaler(calls=5000, seed=9, rate_limit=1_000_000, latency=0.01) as fake:
        until = until_of(fake)
        want = expected(fake, until)
        proc = await _spawn(fake, db_path, until)
        assert proc.stdout is not None
        # Progress comes at the start too: wait for a delivered batch (the table exists then).
        first = b"0"
        while first.strip() == b"0":
            first = await proc.stdout.readline()
        assert first.strip().isdigit(), first
        seen: list[int] = []
        while proc.returncode is None:
            # A reader in another connection, in its own transaction: never blocked by the
            # writer, never a batch without its checkpoint.
            checkpoint = await asyncio.to_thread(assert_consistent, db_path, want)
            assert checkpoint is not None
            seen.append(checkpoint["delivered"])
            try:
                await asyncio.wait_for(proc.wait(), 0.01)
            except TimeoutError:
                pass
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()[-3000:]
    assert seen == sorted(seen) and len(seen) >= 3
    assert seen[0] < len(want), "the reader only saw the finished table"
    ids, _ = snapshot(db_path)
    assert set(ids) == want


async def test_second_concurrent_sync_is_refused(tmp_path: Path) -> None:
    db_path = tmp_path / "calls.db"
    async with FakeCallScaler(calls=300, rate_limit=1_000_000) as fake:
        until = until_of(fake)
        writer = SQLiteStore(db_path)
        await writer.open(None)  # a sync in progress holds the database
        try:
            async with client_for(fake) as client:
                with pytest.raises(SQLiteStoreLocked, match="another sync is writing") as err:
                    await client.calls.sync(since=SINCE, until=until).run(SQLiteStore(db_path))
            assert str(db_path) in str(err.value)
        finally:
            await writer.close()
        # In another process too (the lock is the OS's, not this process's).
        holder = await asyncio.create_subprocess_exec(
            sys.executable, "-c",
            "import asyncio, sys\n"
            "from callscaler_async.sync import SQLiteStore\n"
            "async def main():\n"
            "    s = SQLiteStore(sys.argv[1]); await s.open(None)\n"
            "    print('open', flush=True); sys.stdin.readline(); await s.close()\n"
            "asyncio.run(main())\n",
            str(db_path), env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert holder.stdout is not None and holder.stdin is not None
        assert await holder.stdout.readline() == b"open\n"
        try:
            async with client_for(fake) as client:
                with pytest.raises(SQLiteStoreLocked):
                    await client.calls.sync(since=SINCE, until=until).run(SQLiteStore(db_path))
        finally:
            holder.stdin.write(b"\n")
            await holder.wait()
        async with client_for(fake) as client:  # and once it is gone, a sync runs
            summary = await client.calls.sync(since=SINCE, until=until).run(SQLiteStore(db_path))
        assert summary.items == len(expected(fake, until))


# ------------------------------------------------------------------------- schema


async def test_schema_upgrade_adds_a_newer_column(tmp_path: Path) -> None:
    db_path = tmp_path / "calls.db"
    older = [(n, t) for n, t in CALL_COLUMNS if n not in ("ai_category", "created_at")]
    db = sqlite3.connect(db_path)
    cols = ", ".join(f"{n} {t}{' PRIMARY KEY' if n == 'id' else ''}" for n, t in older)
    db.execute(f"CREATE TABLE calls ({cols})")
    db.execute(
        "INSERT INTO calls (id, status, started_at) VALUES "
        "('00000000-0000-4000-8000-000000000001', 'answered', '2025-12-31T23:59:59Z')"
    )
    db.commit()
    db.close()
    async with FakeCallScaler(calls=300, seed=5, rate_limit=1_000_000) as fake:
        until = until_of(fake)
        want = expected(fake, until)
        store = SQLiteStore(db_path)
        async with client_for(fake) as client:
            await client.calls.sync(since=SINCE, until=until).run(store)
        by_id = {c["id"]: c for c in fake.calls_data}
    assert store.added_columns == ["ai_category", "created_at"]
    db = sqlite3.connect(db_path)
    try:
        names = [r[1] for r in db.execute("PRAGMA table_info(calls)")]
        assert set(names) == {n for n, _ in CALL_COLUMNS}
        rows = dict(db.execute("SELECT id, created_at FROM calls").fetchall())
    finally:
        db.close()
    assert rows.pop("00000000-0000-4000-8000-000000000001") is None  # the old row is kept
    assert set(rows) == want
    assert all(rows[i] == by_id[i]["created_at"] for i in want)


@pytest.mark.parametrize(
    ("ddl", "why"),
    [
        ("CREATE TABLE calls (id INTEGER PRIMARY KEY, name TEXT)", "column id is INTEGER"),
        ("CREATE TABLE calls (id TEXT, status TEXT, started_at TEXT)", "primary key"),
        ("CREATE TABLE calls (id TEXT PRIMARY KEY, status TEXT)", "no started_at"),
        (
            "CREATE TABLE calls (id TEXT PRIMARY KEY, status TEXT, started_at TEXT, "
            "owner TEXT NOT NULL)",
            "owner is NOT NULL",
        ),
    ],
)
async def test_a_foreign_table_is_refused_before_any_request(
    tmp_path: Path, ddl: str, why: str
) -> None:
    db_path = tmp_path / "crm.db"
    db = sqlite3.connect(db_path)
    db.execute(ddl)
    db.commit()
    db.close()
    async with FakeCallScaler(calls=50, rate_limit=1_000_000) as fake:
        async with client_for(fake) as client:
            with pytest.raises(SQLiteStoreError, match="does not look like") as err:
                await client.calls.sync(since=SINCE, until=until_of(fake)).run(SQLiteStore(db_path))
        assert fake.stats.requests == 0
    assert why in str(err.value) and str(db_path) in str(err.value)
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("SELECT count(*) FROM calls").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM callscaler_sync_checkpoints").fetchone() == (0,)
    finally:
        db.close()


# ------------------------------------------------------------------------- bad input


async def _sync_into(fake: FakeCallScaler, store: SQLiteStore, **kw: Any) -> cs.sync.SyncSummary:
    async with client_for(fake, business=kw.pop("business", "bad-input")) as client:
        return await client.calls.sync(since=SINCE, until=until_of(fake), **kw).run(store)


async def test_a_directory_that_does_not_exist(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "calls.db"
    async with FakeCallScaler(calls=20, rate_limit=1_000_000) as fake:
        with pytest.raises(SQLiteStoreError, match="does not exist") as err:
            await _sync_into(fake, SQLiteStore(path))
        assert fake.stats.requests == 0
    assert str(path) in str(err.value) and err.value.path == str(path)
    assert not path.parent.exists()


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable, also for root (who ignores permission bits)."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: cannot make a file read-only")
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {made.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


async def test_a_read_only_file(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    db.close()
    async with FakeCallScaler(calls=20, rate_limit=1_000_000) as fake:
        with read_only(path), pytest.raises(SQLiteStoreError, match="read-only") as err:
            await _sync_into(fake, SQLiteStore(path))
        assert fake.stats.requests == 0
    assert str(path) in str(err.value)


@pytest.mark.parametrize("damage", ["garbage", "torn pages"])
async def test_a_corrupt_database(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "calls.db"
    if damage == "garbage":
        path.write_bytes(b"these are not the bytes of a database\n" * 200)
    else:
        async with FakeCallScaler(calls=400, rate_limit=1_000_000) as fake:
            await _sync_into(fake, SQLiteStore(path))
        data = bytearray(path.read_bytes())
        data[4096:] = random.Random(1).randbytes(len(data) - 4096)  # every page but the first
        path.write_bytes(bytes(data))
    async with FakeCallScaler(calls=400, rate_limit=1_000_000) as fake:
        with pytest.raises(SQLiteStoreError, match="not a SQLite database, or it is corrupt") as e:
            await _sync_into(fake, SQLiteStore(path), business="corrupt")
    assert str(path) in str(e.value) and e.value.code is not None


class TinyDisk(SQLiteStore):
    """A database SQLite may grow to ``pages`` pages only: past that SQLite answers
    SQLITE_FULL, its own error for a full disk, on the write that needs another page."""

    pages = 1_000_000

    def _connect(self) -> sqlite3.Connection:
        db = super()._connect()
        db.execute(f"PRAGMA max_page_count = {self.pages}")
        return db


async def _fail_then_resume(
    fake: FakeCallScaler, path: Path, failing: SQLiteStore, cause: str
) -> None:
    until = until_of(fake)
    want = expected(fake, until)
    # By pages: batches of 100, so some commit before the failing one (an export's window
    # may come as one batch bigger than the whole tiny disk).
    with pytest.raises(SQLiteStoreError, match=cause) as err:
        await _sync_into(fake, failing, business="full", strategy="pages")
    assert str(path) in str(err.value)
    checkpoint = assert_consistent(path, want)  # the failed batch went with its checkpoint
    assert checkpoint is not None and 0 < checkpoint["delivered"] < len(want)
    summary = await _sync_into(fake, SQLiteStore(path), business="full", strategy="pages")
    assert summary.resumed
    ids, final = snapshot(path)
    assert set(ids) == want and len(ids) == len(want)
    assert final is not None and final["delivered"] == len(want)


async def test_a_full_disk_rolls_back_the_batch_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    async with FakeCallScaler(calls=3000, seed=3, rate_limit=1_000_000) as fake:
        failing = TinyDisk(path)
        failing.pages = 60  # ~240 KiB: a few hundred calls fit, not 3000
        await _fail_then_resume(fake, path, failing, "full")


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real 320 KiB tmpfs (needs root and mount); remounted bigger by the test."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_real_full_filesystem_rolls_back_and_resumes(tiny_filesystem: Path) -> None:
    path = tiny_filesystem / "calls.db"
    async with FakeCallScaler(calls=3000, seed=3, rate_limit=1_000_000) as fake:
        until = until_of(fake)
        want = expected(fake, until)
        with pytest.raises(SQLiteStoreError) as err:
            await _sync_into(fake, SQLiteStore(path), business="tmpfs")
        assert str(path) in str(err.value)
        assert err.value.code is not None
        assert err.value.code.startswith(("SQLITE_FULL", "SQLITE_IOERR")), err.value
        checkpoint = assert_consistent(path, want)
        assert checkpoint is not None and checkpoint["delivered"] < len(want)
        subprocess.run(["mount", "-o", "remount,size=16m", str(tiny_filesystem)], check=True)
        summary = await _sync_into(fake, SQLiteStore(path), business="tmpfs")
        assert summary.resumed
    ids, final = snapshot(path)
    assert set(ids) == want and len(ids) == len(want)
    assert final is not None and final["delivered"] == len(want)


async def test_locked_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    async with FakeCallScaler(calls=300, rate_limit=1_000_000) as fake:
        await _sync_into(fake, SQLiteStore(path), business="lockedout")
        holder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", READER_WRITER, str(path),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert holder.stdout is not None and holder.stdin is not None
        assert await holder.stdout.readline() == b"locked\n"
        try:
            with pytest.raises(SQLiteStoreLocked, match="locked by another process") as err:
                await _sync_into(fake, SQLiteStore(path, timeout=0.2), business="lockedout2")
        finally:
            holder.stdin.write(b"\n")
            await holder.wait()
    assert str(path) in str(err.value) and err.value.code == "SQLITE_BUSY"


async def test_locked_mid_sync_rolls_back_the_batch_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        async with FakeCallScaler(calls=2000, seed=2, rate_limit=1_000_000) as fake:
            until = until_of(fake)
            want = expected(fake, until)
            batches = 0

            def grab_the_lock(p: SyncProgress) -> None:
                nonlocal batches
                batches += p.delivered > 0
                if batches == 3:  # another writer takes the lock between two batches
                    other.execute("BEGIN IMMEDIATE")

            async with client_for(fake, business="midlock") as client:
                with pytest.raises(SQLiteStoreLocked):
                    await client.calls.sync(since=SINCE, until=until).run(
                        SQLiteStore(path, timeout=0.2), on_progress=grab_the_lock
                    )
            other.execute("ROLLBACK")
            checkpoint = assert_consistent(path, want)
            assert checkpoint is not None and 0 < checkpoint["delivered"] < len(want)
            async with client_for(fake, business="midlock") as client:
                summary = await client.calls.sync(since=SINCE, until=until).run(SQLiteStore(path))
            assert summary.resumed
    finally:
        other.close()
    ids, final = snapshot(path)
    assert set(ids) == want and len(ids) == len(want)
    assert final is not None and final["delivered"] == len(want)


def test_the_schema_is_the_same_when_the_models_were_resolved_first() -> None:
    """The converter resolves ``Call``'s string annotations to classes on first use; the
    store's schema must not depend on whether that happened before it was imported."""
    script = textwrap.dedent(
        """
        import sys
        import attrs
        from callscaler_async.models import Call
        if sys.argv[1] == "resolved":
            attrs.resolve_types(Call)
        from callscaler_async.sync import _sqlite
        print([_sqlite._column(f) for f in attrs.fields(Call)], [i for i, _ in _sqlite._CONVERT])
        """
    )
    outputs = [
        subprocess.run(
            [sys.executable, "-c", script, order], capture_output=True, text=True, check=True
        ).stdout
        for order in ("strings", "resolved")
    ]
    assert outputs[0] == outputs[1]
    assert "'cost_cents', 'INTEGER'" in outputs[0]
