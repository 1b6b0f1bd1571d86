"""Sequential paging vs the concurrent sync, and memory while streaming many calls.

    python benchmarks/bench_sync.py [--calls 100000] [--sqlite-only]
    python benchmarks/bench_sync.py --strategies-only [--period 2] [--window-days 30] [--repeat 3]

Section (3) is the SQLite store beside the file sinks: the same sync into no sink, JSON
Lines and SQLite side by side; the store alone (decoded calls written in batches of 100, each
with its checkpoint, as the sync does: rows per second and CPU per call with the API out of
the way); and the peak memory of a whole sync into SQLite. ``--sqlite-only`` runs it alone.

Section (4) is the sync by pages vs by export, side by side (see ``strategies``);
``--strategies-only`` runs it alone.

Real time, the fake API in-process (it shares the CPU with the client: on a small machine the
fake's own JSON rendering is part of what is measured).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import resource
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import callscaler_async as cs
from callscaler_async.models import Call
from callscaler_async.sync import (
    JSONFileStore,
    JSONLinesSink,
    SQLiteStore,
    SyncSummary,
    minimum_seconds,
)
from callscaler_async.testing import FakeCallScaler

BIG = cs.RateLimit(requests=1_000_000, period=60.0)


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


async def paging(pages: int) -> tuple[float, float]:
    async with FakeCallScaler(calls=pages * 100, seed=1, rate_limit=1_000_000, latency=0.1) as f:
        async with cs.CallScaler(f.api_key, base_url=f.base_url, rate_limit=BIG,
                                 business="bench-seq") as client:  # fmt: skip
            start = time.perf_counter()
            n = 1
            while True:
                page = await client.calls.list(page=n, per_page=100)
                if not page.has_next_page:
                    break
                n += 1
            sequential = time.perf_counter() - start
        async with cs.CallScaler(f.api_key, base_url=f.base_url, rate_limit=BIG,
                                 business="bench-sync") as client:  # fmt: skip
            start = time.perf_counter()
            got = 0
            async for _ in client.calls.sync(
                since=dt.date(2026, 1, 1), until=dt.datetime(2026, 11, 2, tzinfo=dt.UTC),
                window=dt.timedelta(days=200), concurrency=8,
            ):  # fmt: skip
                got += 1
            concurrent = time.perf_counter() - start
            assert got == pages * 100, got
    return sequential, concurrent


def _sync(client: cs.CallScaler, out: Path) -> Awaitable[SyncSummary]:
    return client.calls.sync(
        since=dt.date(2026, 1, 1),
        until=dt.datetime(2026, 11, 2, tzinfo=dt.UTC),
        window=dt.timedelta(days=2),
        concurrency=8,
    ).run(JSONLinesSink(out))


async def memory(calls: int, out: Path) -> dict[str, float]:
    """Two passes over the same fake: one untraced (time, RSS), one under tracemalloc.

    tracemalloc slows allocation-heavy code several times over and its own bookkeeping lives
    in the process, so neither the elapsed time nor the RSS of the traced pass is reported.
    """
    start = time.perf_counter()
    fake = FakeCallScaler(calls=calls, seed=2, rate_limit=1_000_000)
    seeding = time.perf_counter() - start
    async with (
        fake as f,
        cs.CallScaler(
            f.api_key, base_url=f.base_url, rate_limit=BIG, business="bench-mem"
        ) as client,
    ):
        # Pass 1: wall time and RSS (sampled every 20 ms by a thread).
        gc.collect()
        rss_base = rss_mb()
        peak_rss = rss_base
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak_rss
            while not stop.wait(0.02):
                peak_rss = max(peak_rss, rss_mb())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        try:
            summary = await _sync(client, out)
        finally:
            elapsed = time.perf_counter() - start
            stop.set()
            sampler.join()
        peak_rss = max(peak_rss, rss_mb())
        file_mb = out.stat().st_size / 2**20
        with out.open("rb") as handle:
            lines = sum(1 for _ in handle)
        assert summary.items == lines == len(f.calls_data), (summary.items, lines)
        out.unlink()

        # Pass 2: the Python heap (client and in-process fake together) under tracemalloc.
        gc.collect()
        tracemalloc.start()
        try:
            base_traced, _ = tracemalloc.get_traced_memory()
            traced = await _sync(client, out)
            _, peak_traced = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert traced.items == summary.items, (traced.items, summary.items)
    return {
        "calls": summary.items,
        "seeding": seeding,
        "elapsed": elapsed,
        "requests": summary.requests,
        "pages": summary.pages,
        "traced_peak_mb": (peak_traced - base_traced) / 2**20,
        "rss_base_mb": rss_base,
        "rss_peak_mb": peak_rss,
        "file_mb": file_mb,
    }


# ----------------------------------------------------------------------------- SQLite


def _sqlite_job(client: cs.CallScaler) -> cs.sync.CallSync:
    return client.calls.sync(
        since=dt.date(2026, 1, 1), until=dt.datetime(2026, 11, 2, tzinfo=dt.UTC),
        window=dt.timedelta(days=2), concurrency=8,
    )  # fmt: skip


async def sqlite_store(calls: int, tmp: Path) -> dict[str, Any]:
    """The SQLite store next to the file sinks, with the fake's limit lifted."""
    fake = FakeCallScaler(calls=calls, seed=2, rate_limit=1_000_000)
    out: dict[str, Any] = {"sinks": []}
    async with (
        fake as f,
        cs.CallScaler(f.api_key, base_url=f.base_url, rate_limit=BIG, business="bench-db") as c,
    ):
        # (a) One whole sync each, side by side in one process (the fake included).
        decoded: list[Call] = []
        start, cpu = time.perf_counter(), time.process_time()
        async for call in _sqlite_job(c):
            decoded.append(call)
        out["sinks"].append(("async for (no sink)", len(decoded),
                             time.perf_counter() - start, time.process_time() - cpu))  # fmt: skip
        for name, make in (
            ("JSONLinesSink", lambda: JSONLinesSink(tmp / "e2e.jsonl")),
            ("SQLiteStore", lambda: SQLiteStore(tmp / "e2e.db")),
        ):
            gc.collect()
            start, cpu = time.perf_counter(), time.process_time()
            summary = await _sqlite_job(c).run(make())
            elapsed, used = time.perf_counter() - start, time.process_time() - cpu
            out["sinks"].append((f"sync().run({name})", summary.items, elapsed, used))
        # (b) The store alone: the decoded calls in batches of 100, each batch committed with
        # its checkpoint (what the sync does), no HTTP at all.
        store = SQLiteStore(tmp / "alone.db")
        checkpoint = _sqlite_job(c).new_checkpoint()
        await store.open(None)
        gc.collect()
        start, cpu = time.perf_counter(), time.process_time()
        try:
            for i in range(0, len(decoded), 100):
                batch = decoded[i : i + 100]
                checkpoint.delivered += len(batch)
                checkpoint.window_ids = [str(call.id) for call in batch]
                await store.write_with_checkpoint(batch, "bench", checkpoint)
        finally:
            elapsed, used = time.perf_counter() - start, time.process_time() - cpu
            await store.close()
        out["alone"] = (len(decoded), elapsed, used)
        del decoded, batch
        # (c) Peak memory of a whole sync into SQLite: RSS sampled (untraced), then the
        # Python heap under tracemalloc in a second pass into a fresh database.
        gc.collect()
        rss_base = peak = rss_mb()
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.wait(0.02):
                peak = max(peak, rss_mb())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            summary = await _sqlite_job(c).run(SQLiteStore(tmp / "rss.db"))
        finally:
            stop.set()
            sampler.join()
        gc.collect()
        tracemalloc.start()
        try:
            base_traced, _ = tracemalloc.get_traced_memory()
            traced = await _sqlite_job(c).run(SQLiteStore(tmp / "traced.db"))
            _, peak_traced = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert summary.items == traced.items == len(f.calls_data), (summary.items, traced.items)
    out.update(
        rss_base=rss_base, rss_peak=max(peak, rss_mb()),
        traced_peak=(peak_traced - base_traced) / 2**20,
        db_mb=(tmp / "rss.db").stat().st_size / 2**20,
    )  # fmt: skip
    return out


def print_sqlite(fig: dict[str, Any]) -> None:
    print()
    print("(3) the SQLite store beside the file sinks (fake's limit lifted, fake in-process)")
    print(f"    {'one whole sync each':<34}{'calls':>9}{'elapsed':>10}{'calls/s':>10}"
          f"{'CPU/call':>11}")  # fmt: skip
    for name, n, elapsed, used in fig["sinks"]:
        print(f"    {name:<34}{n:>9,}{elapsed:>9.2f}s{n / elapsed:>10,.0f}"
              f"{used / n * 1e6:>9.1f}µs")  # fmt: skip
    n, elapsed, used = fig["alone"]
    print(f"    {'SQLiteStore alone (no HTTP)':<34}{n:>9,}{elapsed:>9.2f}s{n / elapsed:>10,.0f}"
          f"{used / n * 1e6:>9.1f}µs")  # fmt: skip
    print("    (alone: decoded calls, batches of 100, each committed with its checkpoint in")
    print("     one transaction, WAL; CPU/call is the process's CPU, the writer thread's too)")
    print(f"    {'database file':<40}{fig['db_mb']:>8.1f}MB")
    print(f"    {'RSS peak above baseline (whole sync)':<40}"
          f"{fig['rss_peak'] - fig['rss_base']:>8.1f}MB")  # fmt: skip
    print(f"    {'tracemalloc peak (second pass)':<40}{fig['traced_peak']:>8.1f}MB")
    print("    (one process: the memory figures include the in-process fake's request handling)")


class _PeakRSS:
    """RSS sampled every 10 ms by a thread while the block runs."""

    def __enter__(self) -> _PeakRSS:
        gc.collect()
        self.base = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


_FAKE_PROCESS = """
import asyncio, sys
from callscaler_async.testing import FakeCallScaler

calls, period = int(sys.argv[1]), float(sys.argv[2])

async def main():
    async with FakeCallScaler(
        calls=calls, seed=3, rate_limit=60, period=period, algorithm="sliding",
        history_days=365,
    ) as fake:
        print(fake.base_url, fake.api_key, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


async def strategies(calls: int, period: float, window_days: int) -> list[dict[str, float]]:
    """(4) The same sync by pages and by export, at the real budget's shape scaled in time.

    The fake runs in a child process (the real API is elsewhere too), holds ``calls`` calls
    spread over 365 days and admits 60 requests per ``period`` seconds (sliding log, as
    strict as any window algorithm); the client's gate is set to the same 60 per ``period``.
    Each strategy syncs the whole year into a JSON Lines file with a JSON checkpoint file,
    one after the other, with a full period between them so that each starts from a full
    budget. "pages minimum" is the least time any client needs for the pages strategy's
    requests at that rate (``minimum_seconds``): what paging cannot beat. CPU and RSS are
    this (client) process's.
    """
    since = dt.datetime(2025, 11, 1, tzinfo=dt.UTC)
    until = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    limit = cs.RateLimit(requests=60, period=period)
    rows: list[dict[str, float]] = []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _FAKE_PROCESS, str(calls), str(period),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=300)
        base_url, api_key = line.decode().split()
        for strategy in ("pages", "export"):
            await asyncio.sleep(period)  # a full budget for each
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "calls.jsonl"
                async with cs.CallScaler(
                    api_key, base_url=base_url, rate_limit=limit, business=f"bench-{strategy}"
                ) as client:
                    job = client.calls.sync(
                        since=since, until=until, window=dt.timedelta(days=window_days),
                        strategy=strategy,  # type: ignore[arg-type]
                    )  # fmt: skip
                    with _PeakRSS() as rss:
                        start, cpu = time.perf_counter(), time.process_time()
                        summary = await job.run(
                            JSONLinesSink(out), store=JSONFileStore(Path(tmp) / "cp.json")
                        )
                        elapsed = time.perf_counter() - start
                        cpu = time.process_time() - cpu
                with out.open("rb") as handle:
                    lines = sum(1 for _ in handle)
            assert summary.items == lines == calls, (summary.items, lines)
            assert summary.strategy == strategy, summary.strategy
            rows.append({
                "requests": summary.requests,
                "elapsed": elapsed,
                "cpu": cpu,
                "limited": summary.rate_limited,
                "rss_base": rss.base,
                "rss_peak": rss.peak,
                "windows_redone": summary.windows_redone,
            })  # fmt: skip
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout=10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    pages_minimum = minimum_seconds(int(rows[0]["requests"]), 60, period)
    for row in rows:
        row["pages_minimum"] = pages_minimum
    return rows


def print_strategies(rows: list[dict[str, float]], calls: int, period: float, days: int) -> None:
    pages, export = rows
    print()
    print(f"(4) calls.sync() of {calls:,} calls over 365 days, {days}-day windows, fake API in")
    print("    a child process,")
    print(f"    sliding log at 60 requests per P = {period:g} s (the real 60/min scaled in time),")
    print("    JSON Lines sink + JSON checkpoint file; one run each, side by side")
    print(f"    pages minimum: the least time for the pages requests at 60 per {period:g} s "
          f"= {pages['pages_minimum']:.1f} s")  # fmt: skip
    head = f"    {'strategy':<10}{'requests':>9}{'429s':>6}{'elapsed s':>11}"
    print(head + f"{'/ pages min':>12}{'CPU s':>7}{'RSS peak above base':>21}{'redone':>8}")
    for name, row in (("pages", pages), ("export", export)):
        print(
            f"    {name:<10}{row['requests']:>9,.0f}{row['limited']:>6.0f}{row['elapsed']:>11.2f}"
            f"{row['elapsed'] / row['pages_minimum']:>12.3f}{row['cpu']:>7.1f}"
            f"{row['rss_peak'] - row['rss_base']:>18.1f} MB{row['windows_redone']:>8.0f}"
        )
    print(f"    export vs pages: {pages['requests'] / export['requests']:.1f}x fewer requests, "
          f"{pages['elapsed'] / export['elapsed']:.1f}x less elapsed "
          f"(RSS baseline {pages['rss_base']:.0f} MB)")  # fmt: skip
    print("    (CPU and RSS: the client's process; 429s: those the client received)")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--sqlite-only", action="store_true", help="only section (3)")
    parser.add_argument("--period", type=float, default=2.0, help="P of section (4)")
    parser.add_argument(
        "--window-days", type=int, default=30, help="windows of section (4), both strategies"
    )
    parser.add_argument("--strategies-only", action="store_true", help="section (4) alone")
    parser.add_argument("--repeat", type=int, default=1, help="runs of section (4) alone")
    args = parser.parse_args()
    if args.sqlite_only:
        with tempfile.TemporaryDirectory() as tmp:
            print_sqlite(await sqlite_store(args.calls, Path(tmp)))
        return
    if args.strategies_only:
        ratios = []
        for _ in range(args.repeat):
            rows = await strategies(args.calls, args.period, args.window_days)
            print_strategies(rows, args.calls, args.period, args.window_days)
            pages, export = rows
            ratios.append(
                (pages["requests"] / export["requests"], pages["elapsed"] / export["elapsed"])
            )
        if args.repeat > 1:
            print()
            print(f"    over {args.repeat} runs, min / median / max:")
            for label, values in (("fewer requests", [r for r, _ in ratios]),
                                  ("less elapsed  ", [e for _, e in ratios])):  # fmt: skip
                v = sorted(values)
                print(f"    {label} {v[0]:.1f} / {v[len(v) // 2]:.1f} / {v[-1]:.1f}x")
        return
    sequential, concurrent = await paging(args.pages)
    with tempfile.TemporaryDirectory() as tmp:
        mem = await memory(args.calls, Path(tmp) / "calls.jsonl")
    print()
    print(f"(1) {args.pages} pages of 100 calls, fake API with 100 ms latency, big budget")
    print(f"    {'method':<40}{'elapsed':>10}")
    print(f"    {'sequential: await calls.list(page=n)':<40}{sequential:>9.2f}s")
    print(f"    {'calls.sync(...) (concurrency=8)':<40}{concurrent:>9.2f}s")
    print(f"    {'speed-up':<40}{sequential / concurrent:>9.1f}x")
    print()
    print(f"(2) streaming {mem['calls']:,.0f} calls through sync(...).run(JSONLinesSink)")
    print("    window 2 days, concurrency 8, big budget, no latency")
    print(f"    {'seeding the fake (not timed below)':<40}{mem['seeding']:>9.1f}s")
    print(f"    {'elapsed (untraced pass)':<40}{mem['elapsed']:>9.1f}s")
    print(f"    {'throughput':<40}{mem['calls'] / mem['elapsed']:>8,.0f}/s")
    print(f"    {'requests (pages)':<40}{mem['requests']:>6,.0f} ({mem['pages']:,.0f})")
    print(f"    {'output file':<40}{mem['file_mb']:>8.1f}MB")
    print(f"    {'RSS baseline (fake data loaded)':<40}{mem['rss_base_mb']:>8.1f}MB")
    print(f"    {'RSS peak during the sync':<40}{mem['rss_peak_mb']:>8.1f}MB")
    print(f"    {'RSS peak above baseline':<40}{mem['rss_peak_mb'] - mem['rss_base_mb']:>8.1f}MB")
    print(f"    {'tracemalloc peak above baseline':<40}{mem['traced_peak_mb']:>8.1f}MB")
    print("    (one process: the RSS and tracemalloc figures include the in-process fake's")
    print("     request handling; tracemalloc is measured in a second, separate pass)")
    with tempfile.TemporaryDirectory() as tmp:
        print_sqlite(await sqlite_store(args.calls, Path(tmp)))
    rows = await strategies(args.calls, args.period, args.window_days)
    print_strategies(rows, args.calls, args.period, args.window_days)


if __name__ == "__main__":
    asyncio.run(main())
