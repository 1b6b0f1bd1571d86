"""A sync's progress: the total, the ETA and the minimum, and how the CLI shows them.

The total's invariants are checked over a seeded sweep of ranges, windows, concurrency and
interruption points against the fake over real sockets: whenever a total is shown it is the
range's real size (so it never decreases and never overshoots), a resume shows what is left,
and the last event of a finished sync is 100%.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import itertools
import json
import os
import pty
import random
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from test_cli import ThreadedFake

import callscaler_async as cs
from callscaler_async.cli._progress import PlainProgress, progress_display, summary_lines
from callscaler_async.models import Call
from callscaler_async.sync import (
    JSONFileStore,
    JSONLinesSink,
    SyncProgress,
    SyncSummary,
    minimum_seconds,
)
from callscaler_async.testing import FakeCallScaler

SINCE = dt.date(2026, 7, 1)
_names = itertools.count()


def _ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


class Interrupted(Exception):
    pass


class InterruptingSink(JSONLinesSink):
    """Fails on batch ``after + 1`` (``after`` None: never), like a crash mid-sync."""

    def __init__(self, path: Path, after: int | None) -> None:
        super().__init__(path)
        self.after = after
        self.batches = 0

    async def write(self, batch: Sequence[Call]) -> None:
        self.batches += 1
        if self.after is not None and self.batches > self.after:
            raise Interrupted
        await super().write(batch)


def _progress(**kw: Any) -> SyncProgress:
    base: dict[str, Any] = {
        "business": "b", "delivered": 0, "total_estimate": 12_000, "windows_done": 0,
        "windows": 1, "pages": 0, "requests": 0, "elapsed": 0.0,
    }  # fmt: skip
    base.update(kw)
    return SyncProgress(**base)


@pytest.mark.looptime
@pytest.mark.parametrize("seed", range(8))
async def test_total_is_exact_when_shown_and_a_resume_shows_what_is_left(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    n_calls = rng.randrange(300, 2500)
    window = dt.timedelta(days=rng.choice([2, 7, 30, 400]))
    async with FakeCallScaler(
        calls=n_calls, seed=seed, rate_limit=100_000, latency=rng.choice([0.0, 0.01, 0.05])
    ) as fake:
        until = max(_ts(c["started_at"]) for c in fake.calls_data)
        lo = dt.datetime.combine(SINCE, dt.time(), dt.UTC)
        want = sum(1 for c in fake.calls_data if lo <= _ts(c["started_at"]) <= until)
        store = JSONFileStore(tmp_path / "cp.json")
        business = f"progress-{seed}-{next(_names)}"
        runs: list[list[SyncProgress]] = []
        summary: SyncSummary | None = None
        for attempt in range(12):
            events: list[SyncProgress] = []
            runs.append(events)
            saved = await store.load(f"calls:{business}")
            already = saved.delivered if saved is not None and not saved.finished else 0
            # The first run is always interrupted after a batch or more (the ranges have at
            # least two pages), later ones at random, the last ones not at all.
            after = rng.randrange(1, 3) if attempt == 0 else rng.randrange(0, 6)
            after = after if attempt < 3 else None
            async with cs.CallScaler(
                fake.api_key, base_url=fake.base_url, business=business,
                rate_limit=cs.RateLimit(100_000, 60.0),
            ) as client:  # fmt: skip
                job = client.calls.sync(
                    since=SINCE, until=until, window=window, concurrency=rng.choice([1, 3, 8])
                )
                try:
                    summary = await job.run(
                        InterruptingSink(tmp_path / "calls.jsonl", after),
                        store=store, on_progress=events.append,
                    )  # fmt: skip
                except Interrupted:
                    pass
            if events:
                assert events[0].delivered_at_start == already
            shown = [p.estimated_total for p in events]
            # Once known, the total stays known; whenever shown it is the range's real size.
            known = [t for t in shown if t is not None]
            assert shown[len(shown) - len(known) :] == known
            assert all(t == want for t in known), (shown, want)
            for p in events:
                assert p.delivered <= want
                if p.total_estimate is not None and p.windows_counted >= p.windows:
                    assert p.total_estimate == want  # no overshoot once every window is counted
            if summary is not None:
                break
        assert summary is not None and summary.items == want
        resumed = [e for e in runs[1:] if e and e[0].delivered_at_start > 0]
        assert resumed, "no run resumed a partly delivered sync"
        assert any(p.estimated_total is not None for e in resumed for p in e)
        last = runs[-1][-1]
        assert last.finished and last.estimated_total == last.delivered == want
        assert last.eta == 0.0


@pytest.mark.looptime
async def test_minimum_and_progress_use_the_limit_the_server_reports() -> None:
    # The client is configured for 60 / min (the default); the server announces 600.
    async with FakeCallScaler(calls=3000, seed=4, rate_limit=600, period=60.0) as fake:
        events: list[SyncProgress] = []
        async with cs.CallScaler(
            fake.api_key, base_url=fake.base_url, business=f"server-limit-{next(_names)}"
        ) as client:
            until = max(_ts(c["started_at"]) for c in fake.calls_data)
            summary = await client.calls.sync(since=SINCE, until=until).run(
                lambda batch: _nothing(), on_progress=events.append
            )
    assert summary.rate_limit == cs.RateLimit(600, 60.0)
    assert summary.minimum == minimum_seconds(summary.requests, 600, 60.0)
    # The event at the start, before any answer, knows only the configured limit.
    assert events[0].requests == 0 and events[0].rate_limit == cs.RateLimit(60, 60.0)
    assert len(events) > 2
    assert all(p.rate_limit == cs.RateLimit(600, 60.0) for p in events[1:])


async def _nothing() -> None:
    return None


def test_eta_from_the_rate_limit_exact_arithmetic() -> None:
    # 12,000 calls left in one window: 120 pages. At 60 / 60 s with nothing in hand, 120 s.
    assert _progress(rate_limit=cs.RateLimit(60, 60.0), remaining=0).eta == 120.0
    # The server's 600 / 60 s: 12 s; 20 requests in hand: 100 pages wait, 10 s.
    assert _progress(rate_limit=cs.RateLimit(600, 60.0), remaining=0).eta == 12.0
    assert _progress(rate_limit=cs.RateLimit(600, 60.0), remaining=20).eta == 10.0
    # Observed: 6,000 of 12,000 delivered in 30 s, 6,000 left: 30 s (the larger of the two).
    p = _progress(delivered=6000, elapsed=30.0, requests=60, rate_limit=cs.RateLimit(600, 60.0))
    assert p.eta == 30.0
    # 200 requests in 10 s contradict 60 / 60 s (at most 60 * (1 + 10/60) = 70): the
    # configured period is longer than the server's window, so only what was observed counts.
    p = _progress(delivered=6000, elapsed=10.0, requests=200, rate_limit=cs.RateLimit(60, 60.0))
    assert p.eta == 10.0
    # A resume: only this run's deliveries measure the rate.
    p = _progress(delivered=9000, delivered_at_start=6000, elapsed=10.0, requests=30)
    assert p.eta == 10.0
    assert _progress(total_estimate=None).eta is None
    # Redrawn 30 s after the event with no batch since: the limit's 120 s count down to 90 s;
    # the observed rate slows (6,000 in 30 + 60 s: 90 s left), and the larger wins.
    p = _progress(rate_limit=cs.RateLimit(60, 60.0), remaining=0)
    assert p.eta_after(30.0) == 90.0
    # 2,400 calls left (24 pages), nothing in hand at 120 / 60 s: 12 s of budget, but no
    # request goes before the server's Reset, 40 s away; 10 s later, 30 s.
    p = _progress(
        total_estimate=2400, rate_limit=cs.RateLimit(120, 60.0), remaining=0, reset_in=40.0
    )
    assert p.eta == 40.0 and p.eta_after(10.0) == 30.0
    # With the 24 pages in hand, the Reset does not matter.
    assert attrs.evolve(p, remaining=30).eta == 0.0
    p = _progress(delivered=6000, elapsed=30.0, requests=60, rate_limit=cs.RateLimit(600, 60.0))
    assert p.eta_after(60.0) == 90.0


def test_estimated_total_is_delivered_once_finished() -> None:
    # Calls deleted from the range while it was walked: the count was 12,000, 11,990 came.
    p = _progress(delivered=11_990, windows_done=1, windows=1)
    assert p.finished and p.estimated_total == 11_990
    # Back-dated calls added: more delivered than counted, never a share above 100%.
    assert _progress(delivered=12_003, windows=2, windows_done=1).estimated_total == 12_003


def test_plain_progress_prints_periodic_lines_and_the_last_state() -> None:
    stream = io.StringIO()  # not a terminal
    display = progress_display(stream, label="sync")
    assert isinstance(display, PlainProgress)
    window = (dt.datetime(2026, 7, 1, tzinfo=dt.UTC), dt.datetime(2026, 7, 7, 23, tzinfo=dt.UTC))
    for delivered in (100, 200, 300):
        display(_progress(delivered=delivered, total_estimate=300, elapsed=1.0, window=window))
    display(_progress(delivered=300, total_estimate=300, elapsed=2.0, windows_done=1))
    display.finish()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # the first event, then the final state (not every batch)
    assert "100/300 calls" in lines[0] and "window 1/1 2026-07-01..07-07" in lines[0]
    assert "300/300 calls 100%" in lines[1] and "ETA 0.0 s" in lines[1]


def test_summary_says_when_the_run_beat_the_sliding_minimum() -> None:
    summary = SyncSummary(
        business="b", items=12_000, pages=120, requests=121, rate_limited=0, elapsed=7.0,
        minimum=minimum_seconds(121, 60, 60.0), since=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        until=dt.datetime(2026, 2, 1, tzinfo=dt.UTC), resumed=False,
        rate_limit=cs.RateLimit(60, 60.0),
    )  # fmt: skip
    text = "\n".join(summary_lines(summary))
    assert "theoretical minimum" not in text
    assert "faster than the 2 min 00 s 60 requests / 60 s needs over a sliding window" in text


# ---------------------------------------------------------------- on a real terminal


def _run_on_pty(
    argv: list[str],
    env: dict[str, str],
    *,
    columns: int = 120,
    interrupt_on: str | None = None,
    expect: int = 0,
) -> str:
    """Run ``argv`` with a pseudo-terminal as stdin/stdout/stderr; everything it printed.

    With ``interrupt_on`` (a regular expression), SIGINT (Ctrl-C) is sent once it matches.
    """
    import fcntl
    import signal
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    seen = b""
    interrupted = False
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        seen += data
        if interrupt_on and not interrupted and re.search(interrupt_on.encode(), seen):
            proc.send_signal(signal.SIGINT)
            interrupted = True
    os.close(master)
    text = seen.decode(errors="replace")
    assert proc.wait(30) == expect, text
    assert interrupted or interrupt_on is None, text
    return text


def _cli_env(fake: FakeCallScaler, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLSCALER_", "COLUMNS"))}
    env.update(
        CALLSCALER_API_KEY=fake.api_key, CALLSCALER_BASE_URL=fake.base_url,
        TERM="xterm-256color", **extra,
    )  # fmt: skip
    return env


def test_sync_on_a_terminal_draws_a_rich_bar_to_100_percent(tmp_path: Path) -> None:
    pytest.importorskip("rich")
    with ThreadedFake(calls=2000, seed=11, rate_limit=10_000, period=60.0) as fake:
        out = _run_on_pty(
            [sys.executable, "-m", "callscaler_async.cli", "sync", "calls", "--since",
             "2026-01-01", "--out", str(tmp_path / "calls.jsonl")],
            _cli_env(fake),
        )  # fmt: skip
    assert "━" in out  # rich's bar
    assert "2,000/2,000 calls" in out and "100%" in out
    assert "synced 2,000 calls" in out
    assert "Traceback" not in out


def test_sync_on_a_terminal_without_rich_prints_plain_lines(tmp_path: Path) -> None:
    # A `rich` that cannot be imported, as when the package is not installed.
    (tmp_path / "no_rich" / "rich").mkdir(parents=True)
    (tmp_path / "no_rich" / "rich" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'rich'\", name='rich')\n"
    )
    with ThreadedFake(calls=2000, seed=11, rate_limit=10_000, period=60.0) as fake:
        out = _run_on_pty(
            [sys.executable, "-m", "callscaler_async.cli", "sync", "calls", "--since",
             "2026-01-01", "--out", str(tmp_path / "calls.jsonl")],
            _cli_env(fake, PYTHONPATH=str(tmp_path / "no_rich")),
        )  # fmt: skip
    assert "━" not in out
    assert "2,000/2,000 calls 100%" in out
    assert "synced 2,000 calls" in out
    assert "Traceback" not in out


def test_sync_interrupted_on_a_terminal_says_what_is_saved_and_resumes(tmp_path: Path) -> None:
    pytest.importorskip("rich")
    out = tmp_path / "calls.jsonl"
    # By pages and with slow answers: the sync lasts long enough for Ctrl-C to land mid-way
    # (by export a window is one request).
    argv = [sys.executable, "-m", "callscaler_async.cli", "sync", "calls", "--since",
            "2026-01-01", "--out", str(out), "--strategy", "pages"]  # fmt: skip
    with ThreadedFake(calls=6000, seed=12, rate_limit=10_000, period=60.0, latency=0.05) as fake:
        some = r" [1-9][\d,]*/6,000 calls"  # a batch or more delivered
        first = _run_on_pty(argv, _cli_env(fake), interrupt_on=some, expect=130)
        checkpoint = json.loads((tmp_path / "calls.jsonl.checkpoint.json").read_text())
        saved = checkpoint["delivered"]
        assert 0 < saved < 6000 and not checkpoint["finished"]
        assert f"interrupted: {saved:,} calls saved in {out}; run the same command again" in first
        assert "Traceback" not in first
        second = _run_on_pty(argv, _cli_env(fake))
    ids = [line.split(b'"id":', 1)[1][:40] for line in out.read_bytes().splitlines()]
    assert len(ids) == len(set(ids)) == 6000
    assert f"resuming: {saved:,} calls already in" in second
    assert "6,000/6,000 calls" in second and "100%" in second
    assert "(resumed from a checkpoint)" in second


@pytest.mark.looptime
@pytest.mark.parametrize("seed", range(6))
async def test_cancelling_a_watched_sync_leaves_no_count_pending(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    async with FakeCallScaler(calls=800, seed=seed, rate_limit=100_000, latency=0.02) as fake:
        until = max(_ts(c["started_at"]) for c in fake.calls_data)
        async with cs.CallScaler(
            fake.api_key, base_url=fake.base_url, business=f"cancel-{next(_names)}",
            rate_limit=cs.RateLimit(100_000, 60.0),
        ) as client:  # fmt: skip
            events: list[SyncProgress] = []
            task = asyncio.ensure_future(
                client.calls.sync(since=SINCE, until=until).run(
                    JSONLinesSink(tmp_path / "c.jsonl"), on_progress=events.append
                )
            )
            # Before the count is sent, while it is in flight, or mid-walk.
            await asyncio.sleep(rng.choice([0.0, 0.001, 0.015, 0.03, 0.06]))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            left = [
                t for t in asyncio.all_tasks()
                if "_count_rest" in repr(t.get_coro()) and not t.done()
            ]  # fmt: skip
            assert left == []
