"""10,000 concurrent tasks through one client against the fake with a scaled limit.

Virtual time (looptime): 10,000 requests at 1,000 per 3 s take about 27 s of loop time and a
few seconds of real time. Checked: every task completes, the server never answers 429, the
whole budget is used, nothing is left behind (tasks, sessions, transports, warnings).
"""

from __future__ import annotations

import asyncio
import gc
import time
import warnings

import pytest

import callscaler_async as cs
from callscaler_async.testing import FakeCallScaler

TASKS = 10_000
LIMIT, PERIOD = 1000, 3.0


@pytest.mark.slow
@pytest.mark.looptime
async def test_ten_thousand_tasks_one_client_zero_429() -> None:
    baseline = asyncio.all_tasks()
    loop = asyncio.get_running_loop()
    started_real = time.perf_counter()
    async with FakeCallScaler(calls=50, rate_limit=LIMIT, period=PERIOD, algorithm="fixed") as fake:
        client = cs.CallScaler(
            fake.api_key,
            base_url=fake.base_url,
            rate_limit=cs.RateLimit(LIMIT, PERIOD),
            business="load-10k",
        )
        async with client:
            start = loop.time()
            call_id = fake.calls_data[0]["id"]

            async def one(i: int) -> object:
                if i % 2:
                    return await client.calls.get(call_id)
                return await client.account.balance()

            results = await asyncio.gather(*(one(i) for i in range(TASKS)))
            elapsed = loop.time() - start
            gate = client._transport.gate
            snapshot = gate.snapshot()
        assert client.closed
        assert client._transport._session is None
        session_count = client._transport.sessions_created
    real = time.perf_counter() - started_real

    assert len(results) == TASKS and all(r is not None for r in results)
    assert fake.stats.rate_limited == 0
    assert fake.stats.requests == TASKS
    assert fake.stats.by_status == {200: TASKS}
    assert session_count == 1
    assert snapshot.waiting == 0 and snapshot.in_flight == 0
    minimum = (TASKS // LIMIT - 1) * PERIOD
    assert minimum - PERIOD <= elapsed <= minimum * 1.10 + 1.0, (elapsed, minimum)

    for _ in range(5):
        await asyncio.sleep(0)
    assert asyncio.all_tasks() == baseline
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del results
        gc.collect()
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, [str(w.message) for w in leaks]
    print(f"\n{TASKS} tasks: {elapsed:.1f}s loop time, {real:.1f}s real time")
    assert real < 30.0
