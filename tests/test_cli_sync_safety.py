"""``callscaler sync calls`` under the mistakes and interruptions of real use.

Signals go to a real subprocess; file mistakes are real files removed, cut or edited. The
fake runs in a thread of this process (``ThreadedFake``), reachable over 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_cli import ThreadedFake

import callscaler_async as cs
from callscaler_async.cli import main
from callscaler_async.sync import JSONFileStore, JSONLinesSink, check_output
from callscaler_async.testing import FakeCallScaler

RANGE = ["--since", "2026-07-01", "--until", "2026-11-01"]
INTERRUPTED = re.compile(
    r"interrupted: ([\d,]+) calls saved in (\S+); run the same command again to resume"
)


@pytest.fixture
def fake() -> Iterator[FakeCallScaler]:
    with ThreadedFake(calls=1200, seed=4, rate_limit=100_000, period=60.0) as server:
        yield server


def env_for(fake: FakeCallScaler, base_url: str | None = None) -> dict[str, str]:
    return {"CALLSCALER_API_KEY": fake.api_key, "CALLSCALER_BASE_URL": base_url or fake.base_url}


def invoke(fake: FakeCallScaler, *args: str, base_url: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env_for(fake, base_url))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


def ids_in(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_bytes().splitlines()]


def in_range(fake: FakeCallScaler, until: str = "2026-11-01") -> set[str]:
    return {c["id"] for c in fake.calls_data if "2026-07-01" <= c["started_at"][:10] <= until}


def checkpoint_of(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(out.with_name(out.name + ".checkpoint.json").read_text())
    return data


def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ signals, real processes


def start_sync(fake: FakeCallScaler, out: Path) -> subprocess.Popen[str]:
    env = {**os.environ, **env_for(fake), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "callscaler_async.cli", "sync", "calls", *RANGE, "--out",
         str(out), "--concurrency", "1", "--window-days", "3", "-q"],
        env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def wait_for_progress(proc: subprocess.Popen[str], out: Path) -> None:
    """Until the checkpoint counts some calls (the sync is well under way)."""
    cp = out.with_name(out.name + ".checkpoint.json")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            if json.loads(cp.read_text())["delivered"] > 0:
                return
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.02)
    pytest.fail("the sync never saved a checkpoint")


def assert_consistent(out: Path, said: int) -> None:
    """The checkpoint's count is what the file holds up to the acknowledged length."""
    saved = checkpoint_of(out)
    assert not saved["finished"]
    assert saved["delivered"] == said
    length = check_output(out, saved["sink_state"])
    assert out.read_bytes()[:length].count(b"\n") == said


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_sync_saves_and_the_same_command_resumes(
    fake: FakeCallScaler, tmp_path: Path, signum: int, code: int
) -> None:
    fake.latency = 0.1  # about 30 s uncancelled: the signal lands mid-way
    out = tmp_path / "calls.jsonl"
    proc = start_sync(fake, out)
    wait_for_progress(proc, out)
    sent = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    print(f"signal {signum}: stopped {time.monotonic() - sent:.2f} s after it was sent")
    assert proc.returncode == code, err
    found = INTERRUPTED.search(err)
    assert found, err
    assert Path(found.group(2)) == out
    said = int(found.group(1).replace(",", ""))
    assert 0 < said < len(in_range(fake))
    assert_consistent(out, said)
    assert "Aborted" not in err and "Traceback" not in err
    fake.latency = 0.0
    rc, err = invoke(fake, "sync", "calls", *RANGE, "--out", str(out), "-q")
    assert rc == 0, err
    assert f"resuming: {said:,} calls already in {out}" in err
    ids = ids_in(out)
    assert len(ids) == len(set(ids))
    assert set(ids) == in_range(fake)


@pytest.mark.timeout(120)
def test_a_second_ctrl_c_exits_at_once_and_loses_nothing(
    fake: FakeCallScaler, tmp_path: Path
) -> None:
    fake.latency = 0.1
    out = tmp_path / "calls.jsonl"
    proc = start_sync(fake, out)
    wait_for_progress(proc, out)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    fake.latency = 0.0
    rc, err = invoke(fake, "sync", "calls", *RANGE, "--out", str(out), "-q")
    assert rc == 0, err
    ids = ids_in(out)
    assert len(ids) == len(set(ids))
    assert set(ids) == in_range(fake)


STUBBORN = """
import asyncio, sys
from callscaler_async.cli._app import _interruptible

async def stubborn_cleanup():
    print("ready", flush=True)
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        print("cleaning up", flush=True)
        await asyncio.sleep(3600)  # a cleanup that never ends

sys.exit(asyncio.run(_interruptible(stubborn_cleanup)))
"""


@pytest.mark.timeout(60)
def test_the_second_ctrl_c_does_not_wait_for_the_cleanup() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline().strip() == "cleaning up"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted again: exiting now" in err


# ------------------------------------------------------------------ the output's file


class StopAfter(Exception):
    pass


def interrupted_sync(fake: FakeCallScaler, out: Path, batches: int = 3) -> int:
    """An unfinished sync of RANGE into ``out`` (as a crash leaves it); returns its count."""

    class Stopping(JSONLinesSink):
        async def write(self, batch: Any) -> None:
            if self.written >= batches * 100:
                raise StopAfter
            await super().write(batch)

    async def go() -> int:
        async with cs.CallScaler(fake.api_key, base_url=fake.base_url) as client:
            job = client.calls.sync(since=dt.date(2026, 7, 1), until=dt.date(2026, 11, 1))
            store = JSONFileStore(out.with_name(out.name + ".checkpoint.json"))
            with pytest.raises(StopAfter):
                await job.run(Stopping(out), store=store, key=f"calls:{client.business}")
            saved = await store.load(f"calls:{client.business}")
            assert saved is not None
            return saved.delivered

    return asyncio.run(go())


def assert_refused(rc: int, err: str, out: Path, what: str) -> None:
    assert rc == 2, err
    assert what in err
    assert str(out) in err and f"{out}.checkpoint.json" in err
    assert "--no-resume" in err


def test_a_missing_output_next_to_a_checkpoint_is_refused(
    fake: FakeCallScaler, tmp_path: Path
) -> None:
    out = tmp_path / "calls.jsonl"
    assert interrupted_sync(fake, out) > 0
    out.unlink()
    rc, err = invoke(fake, "sync", "calls", *RANGE, "--out", str(out))
    assert_refused(rc, err, out, "missing")
    assert not out.exists()
    # The way out it names works:
    rc, err = invoke(fake, "sync", "calls", *RANGE, "--out", str(out), "--no-resume", "-q")
    assert rc == 0, err
    assert sorted(ids_in(out)) == sorted(in_range(fake))


@pytest.mark.parametrize("mistake", ["shorter", "edited", "replaced"])
def test_a_shorter_or_different_output_is_refused(
    fake: FakeCallScaler, tmp_path: Path, mistake: str
) -> None:
    out = tmp_path / "calls.jsonl"
    assert interrupted_sync(fake, out) > 0
    data = out.read_bytes()
    if mistake == "shorter":
        out.write_bytes(data[: len(data) // 2])
    elif mistake == "edited":
        middle = len(data) // 2  # one character of one call, same length
        out.write_bytes(data[:middle] + (b"0" if data[middle:middle + 1] != b"0" else b"1")
                        + data[middle + 1:])  # fmt: skip
    else:  # another file of the same length
        out.write_bytes(b"x" * (len(data) - 1) + b"\n")
    before = out.read_bytes()
    rc, err = invoke(fake, "sync", "calls", *RANGE, "--out", str(out))
    assert_refused(rc, err, out, "shorter" if mistake == "shorter" else "differs")
    assert out.read_bytes() == before  # refused before touching it


def test_a_new_out_with_an_old_checkpoint_is_refused(fake: FakeCallScaler, tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    assert interrupted_sync(fake, out) > 0
    other = tmp_path / "other.jsonl"
    cp = f"{out}.checkpoint.json"
    rc, err = invoke(fake, "sync", "calls", *RANGE, "--out", str(other), "--checkpoint", cp)
    assert rc == 2, err
    assert str(out) in err and str(other) in err and "--no-resume" in err
    assert not other.exists()


def test_a_finished_output_survives_a_failed_rerun(fake: FakeCallScaler, tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    rc, err = invoke(fake, "sync", "calls", *RANGE, "--out", str(out), "-q")
    assert rc == 0, err
    complete = out.read_bytes()
    down = f"http://127.0.0.1:{unused_port()}/api/v1/"
    later = ["--since", "2026-07-01", "--until", "2026-12-01"]
    for extra in ([], ["--no-resume"]):
        rc, err = invoke(fake, "sync", "calls", *later, "--out", str(out), *extra, base_url=down)
        assert rc == 1, err
        assert "cannot reach" in err
        assert out.read_bytes() == complete
        assert not out.with_name(out.name + ".partial").exists()


def test_a_failed_first_connection_leaves_no_file(fake: FakeCallScaler, tmp_path: Path) -> None:
    out = tmp_path / "calls.csv"
    down = f"http://127.0.0.1:{unused_port()}/api/v1/"
    rc, err = invoke(fake, "sync", "calls", *RANGE, "--out", str(out), base_url=down)
    assert rc == 1, err
    assert not out.exists()


def test_no_resume_replaces_a_finished_output_only_when_complete(
    fake: FakeCallScaler, tmp_path: Path
) -> None:
    out = tmp_path / "calls.jsonl"
    out.write_text("an older file\n")
    rc, err = invoke(fake, "sync", "calls", *RANGE, "--out", str(out), "--no-resume", "-q")
    assert rc == 0, err
    ids = ids_in(out)
    assert len(ids) == len(set(ids)) and set(ids) == in_range(fake)
    assert not out.with_name(out.name + ".partial").exists()
    assert checkpoint_of(out)["sink_state"]["path"] == str(out)


def test_rerunning_a_finished_sync_continues_from_its_until(
    fake: FakeCallScaler, tmp_path: Path
) -> None:
    out = tmp_path / "calls.jsonl"
    rc, err = invoke(fake, "sync", "calls", *RANGE, "--out", str(out), "-q")
    assert rc == 0, err
    first = out.read_bytes()
    # Nothing new in the same range: up to date, without fetching it all again.
    fake.reset_stats()
    rc, err = invoke(fake, "sync", "calls", *RANGE, "--out", str(out), "-q")
    assert rc == 0, err
    assert "up to date" in err and "--since" in err and "--no-resume" in err
    assert fake.stats.requests == 0
    assert out.read_bytes() == first
    # New calls after the pinned until: appended, and only the new range is fetched.
    biz = fake.business("acme")
    new = []
    for day in (5, 6, 7):
        rec = biz.make_call(calendar.timegm((2026, 11, day, 12, 0, 0)))
        biz.calls.insert(0, rec)
        biz.calls_by_id[rec.data["id"]] = rec
        new.append(rec.data["id"])
    fake.reset_stats()
    later = ["--since", "2026-07-01", "--until", "2026-12-01"]
    rc, err = invoke(fake, "sync", "calls", *later, "--out", str(out), "-q")
    assert rc == 0, err
    assert "appended 3 new calls" in err
    assert fake.stats.requests < 10  # a month of windows, not four months again
    data = out.read_bytes()
    assert data.startswith(first)
    ids = ids_in(out)
    assert len(ids) == len(set(ids))
    assert set(ids) == in_range(fake) | set(new)
    # And again: up to date.
    rc, err = invoke(fake, "sync", "calls", *later, "--out", str(out), "-q")
    assert rc == 0 and "up to date" in err
    assert out.read_bytes() == data
