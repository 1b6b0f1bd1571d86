"""The ``callscaler`` command through click's runner (fake in a background thread) and once
through a real subprocess (``callscaler demo``)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from callscaler_async.cli import main
from callscaler_async.testing import FakeCallScaler


class ThreadedFake:
    """A FakeCallScaler on its own event loop in a thread (the CLI runs asyncio.run itself)."""

    def __init__(self, **kwargs: object) -> None:
        self.loop = asyncio.new_event_loop()
        self.fake = FakeCallScaler(**kwargs)  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FakeCallScaler:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(10)
        return self.fake

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def fake() -> Iterator[FakeCallScaler]:
    with ThreadedFake(calls=400, seed=9, rate_limit=10_000, period=60.0) as server:
        yield server


def invoke(fake: FakeCallScaler, *args: str, key: str | None = None) -> tuple[int, str, str]:
    runner = CliRunner()
    env = {"CALLSCALER_API_KEY": key or fake.api_key, "CALLSCALER_BASE_URL": fake.base_url}
    result = runner.invoke(main, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    secret = key or fake.api_key
    assert secret not in result.stdout and secret not in result.stderr
    return result.exit_code, result.stdout, result.stderr


def test_numbers_list_table_and_json(fake: FakeCallScaler) -> None:
    code, out, _ = invoke(fake, "numbers", "list")
    assert code == 0
    assert out.splitlines()[0].startswith("ID")
    assert len(out.splitlines()) == 1 + len(fake.business("acme").numbers)
    code, out, _ = invoke(fake, "numbers", "list", "--json")
    assert code == 0 and len(json.loads(out)) == len(fake.business("acme").numbers)


def test_calls_get_and_recording(fake: FakeCallScaler, tmp_path: Path) -> None:
    call = fake.calls_data[0]
    code, out, _ = invoke(fake, "calls", "get", call["id"], "--json")
    assert code == 0 and json.loads(out)["id"] == call["id"]
    code, out, _ = invoke(fake, "calls", "get", call["id"])
    assert code == 0 and call["caller_number"] in out
    target = tmp_path / "r.mp3"
    code, _, err = invoke(fake, "calls", "recording", call["id"], "-o", str(target))
    assert code == 0 and target.stat().st_size == fake.recording_size and "saved" in err


def test_calls_export_to_stdout(fake: FakeCallScaler) -> None:
    code, out, err = invoke(fake, "calls", "export", "--status", "missed")
    assert code == 0
    lines = out.splitlines()
    missed = [c for c in fake.calls_data if c["status"] == "missed"]
    assert lines[0].startswith("id,") and len(lines) == 1 + len(missed)
    assert f"exported {len(missed)}" in err


def test_sync_calls_jsonl_then_resume_and_csv(fake: FakeCallScaler, tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    args = ["sync", "calls", "--since", "2026-07-01", "--until", "2026-11-01", "--out", str(out)]
    code, _, err = invoke(fake, *args)
    assert code == 0, err
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == len(fake.calls_data)
    assert "429s" in err and "requests" in err and "elapsed" in err
    assert (tmp_path / "calls.jsonl.checkpoint.json").exists()
    csv_out = tmp_path / "calls.csv"
    code, _, err = invoke(fake, *args[:-1], str(csv_out), "--no-resume", "-q")
    assert code == 0 and len(csv_out.read_text().splitlines()) == 1 + len(fake.calls_data)


def test_api_errors_exit_1_without_the_key(fake: FakeCallScaler) -> None:
    code, _, err = invoke(fake, "numbers", "list", key=fake.revoked_key)
    assert code == 1
    assert "401" in err and "CALLSCALER_API_KEY" in err and fake.revoked_key[:15] in err
    code, _, err = invoke(fake, "calls", "get", "00000000-0000-4000-8000-000000000000")
    assert code == 1 and "404" in err


def test_usage_errors_exit_2(fake: FakeCallScaler, tmp_path: Path) -> None:
    code, _, _ = invoke(fake, "sync", "calls", "--out", str(tmp_path / "x.jsonl"))
    assert code == 2  # --since missing
    code, _, err = invoke(fake, "calls", "get", "not-a-uuid")
    assert code == 2 and "UUID" in err
    result = CliRunner().invoke(main, ["numbers", "list"], env={"CALLSCALER_API_KEY": ""})
    assert result.exit_code == 2 and "CALLSCALER_API_KEY" in result.stderr


def test_api_key_file(fake: FakeCallScaler, tmp_path: Path) -> None:
    keyfile = tmp_path / "key"
    keyfile.write_text(fake.api_key + "\n")
    result = CliRunner().invoke(
        main,
        ["--api-key-file", str(keyfile), "--base-url", fake.base_url, "numbers", "list"],
        env={"CALLSCALER_API_KEY": ""},
    )
    assert result.exit_code == 0, result.stderr
    assert fake.api_key not in result.output


def test_demo_in_a_real_subprocess() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("CALLSCALER_API_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "callscaler_async.cli", "demo", "--calls", "1500"],
        capture_output=True, text=True, timeout=45, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "demo OK" in proc.stdout
    assert "sync failed as expected" in proc.stdout
    assert "0 duplicates, 0 missing" in proc.stdout
    # Only the safe key prefix is shown.
    assert "cs_key_" in proc.stdout
    assert not re.search(r"cs_key_[A-Za-z0-9]{9,}", proc.stdout + proc.stderr)


def test_sync_calls_into_sqlite_by_name_and_url(
    fake: FakeCallScaler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    args = ["sync", "calls", "--since", "2026-07-01", "--until", "2026-11-01", "-q", "--out"]
    out = tmp_path / "calls.db"
    code, _, err = invoke(fake, *args, str(out))
    assert code == 0, err
    assert "(sqlite)" in err and "select status, count(*) from calls group by 1" in err
    assert not (tmp_path / "calls.db.checkpoint.json").exists()  # the checkpoint is inside
    db = sqlite3.connect(out)
    try:
        total = sum(n for _, n in db.execute("select status, count(*) from calls group by 1"))
        assert total == len(fake.calls_data)
    finally:
        db.close()
    # sqlite:///relative (from the working directory) and sqlite:////absolute.
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke(fake, *args, "sqlite:///rel.sqlite3")
    assert code == 0, err
    assert (tmp_path / "rel.sqlite3").exists()
    code, _, err = invoke(fake, *args, f"sqlite:///{tmp_path / 'abs.data'}")
    assert code == 0, err
    assert (tmp_path / "abs.data").exists()
    code, _, err = invoke(fake, *args, str(out), "--checkpoint", str(tmp_path / "x.json"))
    assert code == 2 and "keeps its own checkpoint" in err
    code, _, err = invoke(fake, *args, "sqlite://calls.db")
    assert code == 2 and "sqlite:///calls.db" in err


def test_sync_calls_into_sqlite_bad_path_exits_1(fake: FakeCallScaler, tmp_path: Path) -> None:
    target = tmp_path / "missing" / "calls.db"
    code, _, err = invoke(fake, "sync", "calls", "--since", "2026-07-01", "-q", "-o", str(target))
    assert code == 1
    assert str(target) in err and "does not exist" in err
