"""Peak memory and CPU per request: N concurrent tasks through one client against the fake.

Run: ``python benchmarks/bench_load.py`` (each case in a fresh subprocess, so the RSS figures
do not carry over). The fake runs in the same process and event loop, so CPU time includes
the server's share; the limit is set high enough that the gate never makes anyone wait, so
the figures measure the SDK's cost, not the pacing.

Columns: ``cpu/req`` process CPU time per request (untraced run), ``wall`` wall time of that
run, ``rss peak`` the process's maximum resident set, ``rss +`` its growth over the baseline
taken just before the tasks start, ``py peak`` the tracemalloc peak of Python allocations
during a second (traced) run of the same case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import callscaler_async as cs
from callscaler_async.testing import FakeCallScaler

CASES = (1_000, 10_000)


def rss_mib() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / (1 << 20)


async def run(tasks: int, tag: str) -> dict[str, float]:
    async with FakeCallScaler(calls=50, rate_limit=10_000_000, period=60.0) as fake:
        async with cs.CallScaler(
            fake.api_key,
            base_url=fake.base_url,
            rate_limit=cs.RateLimit(10_000_000, 60.0),
            business=f"bench-{tag}-{tasks}",
        ) as client:
            await client.account.balance()  # session and connections warm
            call_id = fake.calls_data[0]["id"]

            async def one(i: int) -> Any:
                if i % 2:
                    return await client.calls.get(call_id)
                return await client.account.balance()

            rss_before = current_rss_mib()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            results = await asyncio.gather(*(one(i) for i in range(tasks)))
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        assert len(results) == tasks
        assert fake.stats.rate_limited == 0
    return {"cpu": cpu, "wall": wall, "rss_before": rss_before}


def one_case(tasks: int) -> dict[str, float]:
    plain = asyncio.run(run(tasks, "plain"))
    peak_rss = rss_mib()
    tracemalloc.start()
    asyncio.run(run(tasks, "traced"))
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "tasks": tasks,
        "cpu_per_req_ms": plain["cpu"] / tasks * 1000,
        "wall_s": plain["wall"],
        "req_per_s": tasks / plain["wall"],
        "rss_peak_mib": peak_rss,
        "rss_growth_mib": peak_rss - plain["rss_before"],
        "py_peak_mib": py_peak / (1 << 20),
        "py_peak_per_task_kib": py_peak / tasks / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", type=int, help="run one case here and print JSON")
    parser.add_argument("--tasks", type=int, nargs="*", default=list(CASES))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_case(args.one)))
        return
    rows = []
    for tasks in args.tasks:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(tasks)],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"python {sys.version.split()[0]}, callscaler-async {cs.__version__}, fake in-process")
    header = (
        f"{'tasks':>7} {'cpu/req':>9} {'wall':>7} {'req/s':>7} {'rss peak':>9} "
        f"{'rss +':>8} {'py peak':>8} {'py/task':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['tasks']:>7} {r['cpu_per_req_ms']:>7.3f}ms {r['wall_s']:>6.2f}s "
            f"{r['req_per_s']:>7.0f} {r['rss_peak_mib']:>6.1f}MiB {r['rss_growth_mib']:>5.1f}MiB "
            f"{r['py_peak_mib']:>5.1f}MiB {r['py_peak_per_task_kib']:>5.1f}KiB"
        )


if __name__ == "__main__":
    main()
