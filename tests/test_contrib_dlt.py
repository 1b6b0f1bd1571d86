"""The dlt source loading into a real DuckDB through dlt: full load, new calls, incremental run.

The fake API runs on its own loop in a thread (dlt runs the resources on its own event loop,
in its own thread); every request crosses a real socket.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import callscaler_async as cs
from callscaler_async.testing import FakeCallScaler

if os.environ.get("CI"):  # installed by the test extra: in CI a missing dlt is a failure
    import dlt
    import duckdb
else:
    dlt = pytest.importorskip("dlt")
    duckdb = pytest.importorskip("duckdb")

from callscaler_async.contrib.dlt import CALL_HINTS, callscaler_source

pytestmark = [pytest.mark.dlt, pytest.mark.timeout(180)]

SINCE = dt.date(2026, 1, 1)
LIMIT = cs.RateLimit(requests=40, period=1.0)


class ThreadedFake:
    def __init__(self, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.fake = FakeCallScaler(**kwargs)
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

    def call(self, func: Any) -> Any:
        async def run() -> Any:
            return func()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)


@pytest.fixture
def served() -> Iterator[ThreadedFake]:
    # The fake's limit is the client's: 40 per second, sliding. A load needs more requests
    # than that, so a request that bypassed the gate would earn a 429.
    server = ThreadedFake(calls=1500, seed=12, rate_limit=40, period=1.0, algorithm="sliding")
    with server:
        yield server


def _add_calls(fake: FakeCallScaler, n: int, after: str) -> list[str]:
    """New calls that started at or after ``after`` (the first run's pinned `until`): calls
    the first run could not see, and that the second run's range holds."""
    biz = fake.business("acme")
    first = int(dt.datetime.fromisoformat(after.replace("Z", "+00:00")).timestamp())
    now = max(first, int(time.time()))
    ids = []
    for i in range(n):
        rec = biz.make_call(first + (now - first) * i // n)
        biz.calls.insert(0, rec)
        biz.calls_by_id[rec.data["id"]] = rec
        ids.append(rec.data["id"])
    biz.sort_calls()
    return ids


def _pipeline(tmp_path: Path) -> Any:
    return dlt.pipeline(
        pipeline_name="callscaler_test",
        destination=dlt.destinations.duckdb(str(tmp_path / "warehouse.duckdb")),
        dataset_name="callscaler",
        pipelines_dir=str(tmp_path / "pipelines"),
    )


def _source(fake: FakeCallScaler, **options: Any) -> Any:
    return callscaler_source(
        api_key=fake.api_key, base_url=fake.base_url, since=SINCE,
        client_options={"rate_limit": LIMIT, "business": "dlt-test", **options},
    )  # fmt: skip


def _in_range(fake: FakeCallScaler) -> set[str]:
    lo = dt.datetime.combine(SINCE, dt.time(), dt.UTC)
    return {
        c["id"] for c in fake.calls_data
        if dt.datetime.fromisoformat(c["started_at"].replace("Z", "+00:00")) >= lo
    }  # fmt: skip


def _calls_state(pipeline: Any) -> dict[str, Any]:
    state: dict[str, Any] = pipeline.state["sources"]["callscaler"]["resources"]["calls"]
    return state


def test_dlt_full_then_incremental_into_duckdb(served: ThreadedFake, tmp_path: Path) -> None:
    fake = served.fake
    database = tmp_path / "warehouse.duckdb"
    pipeline = _pipeline(tmp_path)

    def source() -> Any:
        return _source(fake)

    first = _in_range(fake)
    info = pipeline.run(source())
    assert not info.has_failed_jobs
    first_requests = fake.stats.requests
    first_limited = fake.stats.rate_limited
    until_1 = _calls_state(pipeline)["until"]

    new_ids = served.call(lambda: _add_calls(fake, 25, until_1))
    fake.reset_stats()
    info = pipeline.run(source())
    assert not info.has_failed_jobs
    second_requests = fake.stats.requests
    second_limited = fake.stats.rate_limited
    state = _calls_state(pipeline)
    assert state["since"] == until_1  # the second run continued from the first's `until`
    assert state["until"] >= until_1

    with duckdb.connect(str(database), read_only=True) as db:
        ids = [r[0] for r in db.execute("SELECT id FROM callscaler.calls").fetchall()]
        assert len(ids) == len(set(ids)), "a call loaded twice"
        assert set(ids) == first | set(new_ids)
        assert set(new_ids) <= set(ids)
        types = dict(
            db.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'callscaler' AND table_name = 'calls'"
            ).fetchall()
        )
        assert types["started_at"] == types["created_at"] == "TIMESTAMP WITH TIME ZONE"
        assert types["cost_cents"] == types["value_cents"] == "BIGINT"
        assert types["id"] == types["status"] == types["number_id"] == "VARCHAR"
        assert types["qualified"] == types["has_transcription"] == "BOOLEAN"
        assert types["ai_score"] == "DOUBLE"
        assert set(CALL_HINTS) <= set(types)
        number_types = dict(
            db.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'callscaler' AND table_name = 'numbers'"
            ).fetchall()
        )
        assert number_types["created_at"] == "TIMESTAMP WITH TIME ZONE"
        assert number_types["monthly_cost_cents"] == "BIGINT"
        by_id = {c["id"]: c for c in fake.calls_data}
        rows = db.execute(
            "SELECT id, started_at, cost_cents, qualified FROM callscaler.calls"
        ).fetchall()
        for cid, started, cents, qualified in rows:
            source_row = by_id[cid]
            assert started == dt.datetime.fromisoformat(
                source_row["started_at"].replace("Z", "+00:00")
            )
            assert cents == source_row["cost_cents"] and qualified == source_row["qualified"]
        numbers = db.execute("SELECT count(*), count(DISTINCT id) FROM callscaler.numbers")
        assert numbers.fetchone() == (len(fake.business("acme").numbers),) * 2
        flows = db.execute("SELECT count(*) FROM callscaler.call_flows").fetchone()
        assert flows == (len(fake.business("acme").call_flows),)
        steps = db.execute("SELECT count(*) FROM callscaler.call_flows__steps").fetchone()
        assert steps is not None and steps[0] > 0
    # Every request went through the gate: more requests than one second's budget, no 429.
    assert first_requests > LIMIT.requests
    assert first_limited == second_limited == 0
    # dlt keeps its state, traces and load packages on disk: the key is in none of them.
    for file in (tmp_path / "pipelines").rglob("*"):
        if file.is_file():
            assert fake.api_key.encode() not in file.read_bytes(), file
    # The second run walked only the new range (a window or two), not the whole history.
    assert second_requests < first_requests / 4


def test_a_failed_run_keeps_the_state_and_the_next_one_catches_up(
    served: ThreadedFake, tmp_path: Path
) -> None:
    fake = served.fake
    pipeline = _pipeline(tmp_path)
    before = _in_range(fake)
    pipeline.run(_source(fake))
    until_1 = _calls_state(pipeline)["until"]
    new_ids = served.call(lambda: _add_calls(fake, 10, until_1))
    # The next run's first calls request is refused (a 400 is never retried): the run fails.
    fake.faults.fail_next(1, status=400, path="calls")
    from dlt.pipeline.exceptions import PipelineStepFailed

    with pytest.raises(PipelineStepFailed, match=r"BadRequestError|400"):
        pipeline.run(_source(fake, max_retries=0))
    assert _calls_state(pipeline)["until"] == until_1  # the failed run moved nothing
    pipeline.run(_source(fake))
    assert _calls_state(pipeline)["since"] == until_1
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as db:
        ids = [r[0] for r in db.execute("SELECT id FROM callscaler.calls").fetchall()]
    assert len(ids) == len(set(ids))
    assert set(ids) == before | set(new_ids)
