"""Pipeline overhead: ``await client.calls.get(id)`` vs raw aiohttp + orjson, side by side.

The fake API runs in a separate process (``python -m callscaler_async.cli sandbox`` with a
huge limit, so the gate never waits); this process is the client. For each concurrency
(1, 16, 256 tasks) two clients fetch the same call ids over the same keep-alive connections
(connection limit 100 for both: the SDK's default and aiohttp's):

  raw  aiohttp ``session.get(url, headers=bearer)`` + ``await resp.read()`` + ``orjson.loads``
  sdk  ``callscaler_async.CallScaler.calls.get(id)``: gate, retries policy, error
       classification, hooks/logging checks, envelope unwrap and decoding into ``Call``

Rounds alternate raw/sdk (``--rounds``, default 3) and the best round of each counts, so a
noisy neighbour hurts both alike. Reported per concurrency: requests/s of each, the ratio
sdk/raw (target >= 0.8), and the client process's CPU per request (``time.process_time``)
with the difference: the microseconds the SDK takes from the event loop per request.

On a 2-core machine the server process and the client each get roughly one core, so the
requests/s are bounded by whichever is slower; the CPU column is the SDK's own cost.

    python benchmarks/bench_pipeline.py [--seconds 2.0] [--rounds 3] [--concurrency 1 16 256]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from typing import Any

import aiohttp
import orjson

import callscaler_async as cs

CONNECTION_LIMIT = 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def sandbox(calls: int) -> Any:
    """Run ``callscaler sandbox`` in a child process; yield (base_url, api_key)."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "callscaler_async.cli", "sandbox",
            "--port", str(port), "--limit", "100000000", "--period", "60",
            "--calls", str(calls),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        base_url = api_key = None
        for line in proc.stdout:
            if m := re.search(r"CALLSCALER_BASE_URL=(\S+)", line):
                base_url = m.group(1)
            if m := re.search(r"CALLSCALER_API_KEY=(\S+)", line):
                api_key = m.group(1)
            if line.startswith("Ctrl-C"):
                break
        if not base_url or not api_key:
            raise RuntimeError("the sandbox did not start")
        yield base_url, api_key
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def call_ids(base_url: str, api_key: str, count: int) -> list[str]:
    ids: list[str] = []
    headers = {"Authorization": f"Bearer {api_key}"}
    async with aiohttp.ClientSession() as session:
        page = 1
        while len(ids) < count:
            async with session.get(
                f"{base_url}calls", params={"per_page": "100", "page": str(page)}, headers=headers
            ) as resp:
                body = orjson.loads(await resp.read())
            batch = [c["id"] for c in body["data"]["calls"]]
            if not batch:
                break
            ids.extend(batch)
            page += 1
    return ids[:count]


async def drive(fetch: Callable[[str], Awaitable[Any]], ids: list[str], tasks: int,
                seconds: float) -> tuple[float, float]:  # fmt: skip
    """Run ``tasks`` workers for ``seconds``; return (requests/s, CPU seconds per request)."""
    done = 0
    stop = False

    async def worker(offset: int) -> None:
        nonlocal done
        i = offset
        n = len(ids)
        while not stop:
            await fetch(ids[i % n])
            i += tasks
            done += 1

    # Warm up: connections opened, caches filled; not measured.
    await asyncio.gather(*(fetch(ids[i % len(ids)]) for i in range(min(tasks, CONNECTION_LIMIT))))
    gc.collect()
    cpu0, t0 = time.process_time(), time.perf_counter()
    workers = [asyncio.create_task(worker(k)) for k in range(tasks)]
    await asyncio.sleep(seconds)
    stop = True
    await asyncio.gather(*workers)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return done / elapsed, cpu / done


async def run_raw(base_url: str, api_key: str, ids: list[str], tasks: int,
                  seconds: float) -> tuple[float, float]:  # fmt: skip
    headers = {"Authorization": f"Bearer {api_key}"}
    connector = aiohttp.TCPConnector(limit=CONNECTION_LIMIT)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def fetch(call_id: str) -> Any:
            async with session.get(f"{base_url}calls/{call_id}", headers=headers) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"raw: {resp.status} {body[:200]!r}")
                return orjson.loads(body)

        return await drive(fetch, ids, tasks, seconds)


async def run_sdk(base_url: str, api_key: str, ids: list[str], tasks: int,
                  seconds: float, round_: int) -> tuple[float, float]:  # fmt: skip
    async with cs.CallScaler(
        api_key,
        base_url=base_url,
        rate_limit=cs.RateLimit(requests=100_000_000, period=60.0),
        business=f"bench-pipeline-{tasks}-{round_}",
    ) as client:

        async def fetch(call_id: str) -> cs.Call:
            return await client.calls.get(call_id)

        return await drive(fetch, ids, tasks, seconds)


async def main_async(args: argparse.Namespace, base_url: str, api_key: str) -> None:
    ids = await call_ids(base_url, api_key, 500)
    # Sanity: the SDK decodes what raw fetches.
    async with cs.CallScaler(
        api_key, base_url=base_url, rate_limit=cs.RateLimit(100_000_000, 60.0),
        business="bench-pipeline-check",
    ) as client:  # fmt: skip
        assert str((await client.calls.get(ids[0])).id) == ids[0]

    rows = []
    for tasks in args.concurrency:
        raw_best = (0.0, 0.0)
        sdk_best = (0.0, 0.0)
        for r in range(args.rounds):
            raw = await run_raw(base_url, api_key, ids, tasks, args.seconds)
            sdk = await run_sdk(base_url, api_key, ids, tasks, args.seconds, r)
            raw_best = max(raw_best, raw)
            sdk_best = max(sdk_best, sdk)
        rows.append((tasks, raw_best, sdk_best))

    python = sys.version.split()[0]
    print(f"pipeline: GET calls/{{id}}, fake API in a separate process, "
          f"best of {args.rounds} x {args.seconds:g}s rounds, Python {python}")  # fmt: skip
    header = (f"{'tasks':>6} | {'raw req/s':>10} | {'sdk req/s':>10} | {'sdk/raw':>7} | "
              f"{'raw CPU/req':>11} | {'sdk CPU/req':>11} | {'SDK adds':>9}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for tasks, (raw_rps, raw_cpu), (sdk_rps, sdk_cpu) in rows:
        print(
            f"{tasks:>6} | {raw_rps:>10,.0f} | {sdk_rps:>10,.0f} | {sdk_rps / raw_rps:>6.2f}x | "
            f"{raw_cpu * 1e6:>9.0f}µs | {sdk_cpu * 1e6:>9.0f}µs | "
            f"{(sdk_cpu - raw_cpu) * 1e6:>7.0f}µs"
        )
    worst = min(sdk_rps / raw_rps for _, (raw_rps, _), (sdk_rps, _) in rows)
    print(f"target sdk/raw >= 0.80 at every concurrency: {'met' if worst >= 0.8 else 'MISSED'} "
          f"(worst {worst:.2f}x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 256])
    args = parser.parse_args()
    with sandbox(calls=500) as (base_url, api_key):
        asyncio.run(main_async(args, base_url, api_key))


if __name__ == "__main__":
    main()
