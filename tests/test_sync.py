"""The bulk sync end to end against the fake: exactly once under drift, crashes and resumes."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import pytest

import callscaler_async as cs
from callscaler_async.models import Call
from callscaler_async.sync import (
    CallableSink,
    CSVSink,
    JSONFileStore,
    JSONLinesSink,
    MemoryStore,
    SQLiteStore,
    SyncCheckpoint,
    sync_businesses,
)
from callscaler_async.testing import FakeCallScaler

_names = itertools.count()
BIG = cs.RateLimit(requests=100_000, period=60.0)
SINCE = dt.date(2026, 7, 1)


def _ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def pinned_until(fake: FakeCallScaler) -> dt.datetime:
    """The newest call: calls the fake inserts later are newer, like real new calls."""
    return max(_ts(c["started_at"]) for c in fake.calls_data)


def expected_ids(data: list[dict[str, Any]], until: dt.datetime) -> set[str]:
    lo = dt.datetime.combine(SINCE, dt.time(), dt.UTC)
    return {c["id"] for c in data if lo <= _ts(c["started_at"]) <= until}


def client_for(fake: FakeCallScaler, key: str | None = None, **kw: Any) -> cs.CallScaler:
    return cs.CallScaler(
        key or fake.api_key, base_url=fake.base_url, rate_limit=kw.pop("rate_limit", BIG),
        business=kw.pop("business", None) or f"sync-test-{next(_names)}", **kw,
    )  # fmt: skip


def jsonl_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_bytes().splitlines()]


@pytest.mark.looptime
async def test_full_sync_every_call_once_and_inclusive_until(tmp_path: Path) -> None:
    async with FakeCallScaler(calls=600, seed=3, rate_limit=100_000) as fake:
        until = pinned_until(fake)  # a call sits exactly at `until`: it must be included
        async with client_for(fake) as client:
            summary = await client.calls.sync(since=SINCE, until=until).run(
                JSONLinesSink(tmp_path / "c.jsonl")
            )
        ids = jsonl_ids(tmp_path / "c.jsonl")
        want = expected_ids(fake.calls_data, until)
        assert len(ids) == len(set(ids)) == summary.items
        assert set(ids) == want
        assert summary.rate_limited == 0


@pytest.mark.looptime
@pytest.mark.parametrize(("inserts", "deletes"), [(3, 0), (0, 1), (2, 1)])
async def test_exactly_once_with_drift(inserts: int, deletes: int) -> None:
    async with FakeCallScaler(calls=3000, seed=5, rate_limit=100_000) as fake:
        until = pinned_until(fake)
        before = expected_ids(fake.calls_data, until)
        fake.faults.insert_calls_per_list_request = inserts
        fake.faults.delete_calls_per_list_request = deletes
        async with client_for(fake) as client:
            # 40-day windows: several pages each, so deletions shift offsets mid-window.
            job = client.calls.sync(since=SINCE, until=until, window=dt.timedelta(days=40))
            got = [str(call.id) async for call in job]
        after = expected_ids(fake.calls_data, until)
        assert len(got) == len(set(got))
        assert after <= set(got) <= before  # every survivor once, nothing invented
        if deletes:
            assert job.rewalks > 0


class Crash(Exception):
    pass


class CrashingSink(JSONLinesSink):
    """Raises after ``after`` batches; with ``torn`` it writes part of the batch first."""

    def __init__(self, path: Path, after: int, torn: bool) -> None:
        super().__init__(path)
        self.after = after
        self.torn = torn
        self.batches = 0

    async def write(self, batch: Sequence[Call]) -> None:
        self.batches += 1
        if self.batches > self.after:
            if self.torn:
                data = self._encode(batch)
                self._create()  # a new sync creates its file with the first batch
                assert self._file is not None
                self._file.write(data[: len(data) // 2 + 7])
                self._file.flush()
            raise Crash(f"crash in batch {self.batches}")
        await super().write(batch)


@pytest.mark.looptime
@pytest.mark.parametrize("seed", range(4))
async def test_crash_and_resume_random_points(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    out = tmp_path / "calls.jsonl"
    store = JSONFileStore(tmp_path / "cp.json")
    async with FakeCallScaler(calls=1500, seed=seed, rate_limit=100_000, latency=0.01) as fake:
        until = pinned_until(fake)
        want = expected_ids(fake.calls_data, until)
        crashes = 0
        name = f"crash-test-{next(_names)}"
        for _ in range(40):
            async with client_for(fake, business=name) as client:
                job = client.calls.sync(since=SINCE, until=until, window=dt.timedelta(days=10))
                mode = rng.choice(["sink", "torn", "cancel"])
                if mode == "cancel":
                    task = asyncio.ensure_future(job.run(JSONLinesSink(out), store=store))
                    await asyncio.sleep(rng.uniform(0.0, 0.08))
                    if task.done():
                        summary = task.result()
                        break
                    task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await task
                    crashes += 1
                    continue
                sink = CrashingSink(out, after=rng.randrange(0, 4), torn=mode == "torn")
                try:
                    summary = await job.run(sink, store=store)
                    break
                except Crash:
                    crashes += 1
        else:
            pytest.fail("the sync never finished")
        ids = jsonl_ids(out)
        assert crashes > 0
        assert len(ids) == len(set(ids)), "a call was delivered twice"
        assert set(ids) == want
        assert summary.items == len(want)


class GatedOpenSink(JSONLinesSink):
    """Its file is opened in the worker thread only once the test lets it (``release``)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.opened: IO[bytes] | None = None

    def _open(self, state: dict[str, Any] | None) -> None:
        self.entered.set()
        assert self.release.wait(10), "the test never released the open"
        super()._open(state)
        self.opened = self._file


@pytest.mark.looptime
@pytest.mark.parametrize("cancels", [1, 2])
async def test_sync_cancelled_while_the_sink_opens_closes_the_file(
    tmp_path: Path, cancels: int
) -> None:
    # The thread opens the file only after the sync was cancelled (twice: the second cancel
    # lands while the sync waits for the thread): the file must still be closed.
    # A resumed sync opens its existing file in the thread (a new one creates it later).
    out = tmp_path / "calls.jsonl"
    out.write_bytes(b"")
    sink = GatedOpenSink(out)
    fake = FakeCallScaler(calls=50, seed=1, rate_limit=100_000)
    async with fake, client_for(fake) as client:
        job = client.calls.sync(since=SINCE, until=pinned_until(fake))
        store = MemoryStore()
        unfinished = job.new_checkpoint()
        unfinished.sink_state = JSONLinesSink(out).state()
        await store.save(f"calls:{client.business}", unfinished)
        task = asyncio.ensure_future(job.run(sink, store=store))
        try:
            assert await asyncio.to_thread(sink.entered.wait, 10)
            for _ in range(cancels):
                task.cancel()
                for _ in range(3):
                    await asyncio.sleep(0)  # the cancellation reaches the waiting sync
            assert not task.done()  # still waiting for the thread: it cannot be stopped
        finally:
            sink.release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert sink.opened is not None and sink.opened.closed
    assert sink._file is None


class StuckOpenSink(CallableSink):
    def __init__(self) -> None:
        super().__init__(self._nothing)
        self.opening = asyncio.Event()
        self.closed = False

    @staticmethod
    async def _nothing(batch: list[Call]) -> None:
        pass

    async def open(self, state: dict[str, Any] | None) -> None:
        self.opening.set()
        await asyncio.Event().wait()

    async def close(self) -> None:
        self.closed = True


@pytest.mark.looptime
async def test_sync_closes_a_sink_cancelled_while_opening() -> None:
    sink = StuckOpenSink()
    fake = FakeCallScaler(calls=10, seed=1, rate_limit=100_000)
    async with fake, client_for(fake) as client:
        job = client.calls.sync(since=SINCE, until=pinned_until(fake))
        task = asyncio.ensure_future(job.run(sink))
        await sink.opening.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert sink.closed


class FailingHeaderSink(CSVSink):
    def _append(self, data: bytes) -> None:
        raise OSError("disk full")


@pytest.mark.looptime
async def test_sink_open_that_fails_leaves_no_open_file(tmp_path: Path) -> None:
    sink = FailingHeaderSink(tmp_path / "calls.csv")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await sink.open(None)  # a new sync: nothing is created before there is data
        assert not sink.path.exists()
        with pytest.raises(OSError, match="disk full"):
            sink.state()  # the first window is done: the file and its header row
        assert sink._file is None
        del sink
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


@pytest.mark.looptime
async def test_sqlite_store_and_csv_sink(tmp_path: Path) -> None:
    import csv

    store = SQLiteStore(tmp_path / "cp.sqlite")
    out = tmp_path / "calls.csv"
    async with FakeCallScaler(calls=800, seed=2, rate_limit=100_000) as fake:
        until = pinned_until(fake)
        want = expected_ids(fake.calls_data, until)
        async with client_for(fake) as client:
            job = client.calls.sync(since=SINCE, until=until)

            async def flaky(batch: list[Call]) -> None:
                raise Crash

            with pytest.raises(Crash):
                await job.run(flaky, store=store, key="k")
            sink = CSVSink(out)
            crashing = _CrashAfter(sink, 2)
            with pytest.raises(Crash):
                await client.calls.sync(since=SINCE, until=until).run(
                    crashing, store=store, key="k"
                )
            checkpoint = await store.load("k")
            assert isinstance(checkpoint, SyncCheckpoint) and not checkpoint.finished
            summary = await client.calls.sync(since=SINCE, until=until).run(
                CSVSink(out), store=store, key="k"
            )
        assert summary.resumed
        with out.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)) and set(ids) == want
        assert rows[0]["qualified"] in ("true", "false")


class _CrashAfter:
    def __init__(self, inner: CSVSink, after: int) -> None:
        self.inner = inner
        self.after = after

    async def open(self, state: dict[str, Any] | None) -> None:
        await self.inner.open(state)

    async def write(self, batch: Sequence[Call]) -> None:
        self.after -= 1
        if self.after < 0:
            raise Crash
        await self.inner.write(batch)

    def state(self) -> dict[str, Any]:
        return self.inner.state()

    async def close(self) -> None:
        await self.inner.close()


@pytest.mark.looptime
async def test_concurrent_paging_takes_a_few_round_trips() -> None:
    async with FakeCallScaler(calls=2000, seed=1, rate_limit=100_000, latency=0.1) as fake:
        until = pinned_until(fake)
        async with client_for(fake) as client:
            loop = asyncio.get_running_loop()
            start = loop.time()
            # One window: 20 pages of 100 (the range holds every one of the 2000 calls).
            job = client.calls.sync(
                since=SINCE, until=until, window=dt.timedelta(days=200), concurrency=8,
                strategy="pages",
            )  # fmt: skip
            got = [call async for call in job]
            elapsed = loop.time() - start
        assert len(got) == 2000 and job.pages == 20
        # sequential: 20 x 0.1 s; concurrent: the first page, then ceil(19 / 8) rounds.
        assert elapsed < 0.6, elapsed


@pytest.mark.looptime
async def test_sync_businesses_each_through_its_own_gate() -> None:
    limit = cs.RateLimit(requests=10, period=3.0)
    async with FakeCallScaler(calls=2000, seed=4, rate_limit=10, period=3.0) as fake:
        until = pinned_until(fake)
        got: dict[str, list[str]] = {"acme": [], "globex": []}

        def collect(name: str) -> Any:
            async def sink(batch: list[Call]) -> None:
                got[name].extend(str(c.id) for c in batch)

            return sink

        acme = client_for(fake, rate_limit=limit)
        globex = client_for(fake, fake.other_business_key, rate_limit=limit)
        async with acme, globex:
            loop = asyncio.get_running_loop()
            start = loop.time()
            summaries = await sync_businesses(
                [(acme, collect("acme")), (globex, collect("globex"))],
                since=SINCE, until=until, window=dt.timedelta(days=30), store=MemoryStore(),
            )  # fmt: skip
            elapsed = loop.time() - start
        globex_data = [c.data for c in fake.business("globex").calls]
        assert set(got["acme"]) == expected_ids(fake.calls_data, until)
        assert set(got["globex"]) == expected_ids(globex_data, until)
        assert all(len(v) == len(set(v)) for v in got.values())
        assert fake.stats.rate_limited == 0
        # Both ran side by side: the total is about the slower one, not the sum.
        slowest = max(s.elapsed for s in summaries)
        assert elapsed < slowest + 0.5
        assert sum(s.requests for s in summaries) > 10  # more than one window of either budget


_WORKER = r"""
import asyncio, datetime as dt, sys
import callscaler_async as cs
from callscaler_async.sync import JSONLinesSink, JSONFileStore
async def main(base, key, out, until):
    async with cs.CallScaler(key, base_url=base, rate_limit=cs.RateLimit(30, 1.0)) as c:
        s = await c.calls.sync(since=dt.date(2026, 7, 1), until=dt.datetime.fromisoformat(until),
                               window=dt.timedelta(days=5)).run(
            JSONLinesSink(out), store=JSONFileStore(out + ".cp.json"))
        print(s.items, s.requests, s.rate_limited)
asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.slow
def test_real_worker_processes_one_business_each(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "callscaler_async.cli", "sandbox", "--port", "0",
         "--calls", "1500", "--limit", "30", "--period", "1", "--window", "sliding"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert sandbox.stdout is not None
        lines = [sandbox.stdout.readline() for _ in range(9)]
        base = lines[0].split()[-1]
        acme_key = lines[3].strip()
        globex_key = lines[7].strip()
        assert base.startswith("http://127.0.0.1:") and acme_key.startswith("cs_key_")
        until = "2026-11-01T00:00:00+00:00"
        started = time.monotonic()
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, base, key, str(tmp_path / f"{name}.jsonl"), until],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for name, key in (("acme", acme_key), ("globex", globex_key))
        ]
        results = [w.communicate(timeout=15) for w in workers]
        elapsed = time.monotonic() - started
    finally:
        sandbox.terminate()
        sandbox.communicate(timeout=5)
    for worker, (out, err) in zip(workers, results, strict=True):
        assert worker.returncode == 0, err
        _items, requests, limited = map(int, out.split())
        assert limited == 0 and requests > 0
    acme = jsonl_ids(tmp_path / "acme.jsonl")
    globex = jsonl_ids(tmp_path / "globex.jsonl")
    assert len(acme) == len(set(acme)) == int(results[0][0].split()[0]) == 1500
    assert len(globex) == len(set(globex)) == 300
    assert not set(acme) & set(globex)
    assert elapsed < 15
