"""One sync split across worker processes that share a business's budget through Redis.

The documented pattern for a job too big for one process: give each worker its own part of
the range (or its own businesses), and let the workers of one business share its budget with
``RedisRateLimiter``. Real processes, a real redis-server, the fake API served by this test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from callscaler_async.testing import FakeCallScaler

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent

WORKER = textwrap.dedent(
    """
    import asyncio, datetime as dt, sys
    import callscaler_async as cs
    from callscaler_async.ratelimit.redis import RedisRateLimiter
    from callscaler_async.sync import JSONFileStore, JSONLinesSink

    redis_url, api_key, base_url, since, until, out, limit, period = sys.argv[1:9]

    async def main():
        gate = RedisRateLimiter(
            redis_url, business="split-job", rate_limit=cs.RateLimit(int(limit), float(period))
        )
        async with cs.CallScaler(api_key, base_url=base_url, rate_limiter=gate) as client:
            run = client.calls.sync(
                since=dt.datetime.fromisoformat(since), until=dt.datetime.fromisoformat(until),
                strategy="pages",  # enough requests to show the budget shared
            )
            await run.run(JSONLinesSink(out), store=JSONFileStore(out + ".checkpoint.json"))
        await gate.aclose()

    asyncio.run(main())
    """
)


def _ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.timeout(90)
async def test_two_processes_split_one_range_through_a_shared_gate(
    redis_server: object, tmp_path: Path
) -> None:
    url = redis_server.url  # type: ignore[attr-defined]
    limit, period = 10, 1.0
    async with FakeCallScaler(
        calls=1200, rate_limit=limit, period=period, algorithm="sliding"
    ) as fake:
        stamps = sorted(_ts(c["started_at"]) for c in fake.calls_data)
        since = stamps[0].replace(microsecond=0)
        until = stamps[-1].replace(microsecond=0)
        middle = since + (until - since) / 2
        middle = middle.replace(microsecond=0)
        parts = [(since, middle), (middle + dt.timedelta(seconds=1), until)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        outs = [tmp_path / f"part{i}.jsonl" for i in range(len(parts))]
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", WORKER, url, fake.api_key, fake.base_url,
                start.isoformat(), end.isoformat(), str(out), str(limit), str(period),
                env=env, stderr=subprocess.PIPE,
            )
            for (start, end), out in zip(parts, outs, strict=True)
        ]  # fmt: skip
        for proc in procs:
            _, err = await asyncio.wait_for(proc.communicate(), timeout=80)
            assert proc.returncode == 0, err.decode()[-3000:]
        expected = {c["id"] for c in fake.calls_data}
        stats = fake.stats
    ids = [json.loads(line)["id"] for out in outs for line in out.read_text().splitlines()]
    assert len(ids) == len(set(ids)), "a call was delivered twice"
    assert set(ids) == expected
    assert stats.rate_limited == 0, stats.by_status
    # More requests than one window allows: the two processes really shared a paced budget.
    assert stats.requests > limit
