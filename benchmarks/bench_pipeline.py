"""Pipeline overhead: ``await client.calls.get(id)`` vs raw aiohttp + orjson, side by side.

The fake API runs in a separate process (``python -m callscaler_async.cli sandbox`` with a
huge limit, so the gate never waits); this process is the client. For each concurrency
(1, 16, 256 tasks) two clients fetch the same call ids over the same keep-alive connections
(connection limit 100 for both: the SDK's default and aiohttp's):

  raw  aiohttp ``session.get(url, headers=bearer)`` + ``await resp.read()`` + ``orjson.loads``
  sdk  ``callscaler_async.CallScaler.calls.get(id)``: gate, retries policy, error
       classification, hooks/logging checks, envelope unwrap and decoding into ``Call``

Rounds alternate raw/sdk (``--rounds``, default 5) and the best round of each counts, so a
noisy neighbour hurts both alike; the median of the ratios of each raw/sdk pair of rounds is
printed too (the spread of what a shared machine does). Reported per concurrency:
requests/s of each, the ratio sdk/raw (target >= 0.8), and the client process's CPU per
request (``time.process_time``) with the difference: the microseconds the SDK takes from
the event loop per request.

On a 2-core machine the server process and the client each get roughly one core, so the
requests/s are bounded by whichever is slower; the CPU column is the SDK's own cost.

``--breakdown`` times the steps between the two, side by side in the same rounds: aiohttp
called as the SDK's transport calls it (response awaited, prebuilt headers, the path
appended to the parsed base URL), the same plus decoding into ``Call``, the SDK with a
rate gate that admits everything (``rate_limiter=`` a no-op gate), and the SDK. The
differences are what each part costs in place, between aiohttp's work and the system
calls, which is more than the same code costs in a loop (cold caches).

``--instructions`` counts instead of timing: the client runs under ``valgrind
--tool=callgrind`` (the server natively), twice per side (1,000 and 3,000 requests), and
the difference is the client's CPU instructions per request: the same on every run and
whatever else the machine does, so it shows what a change saves. At 16+ tasks the client
is CPU-bound, so raw/sdk instructions approximates the throughput ratio (the SDK's code
runs at a lower rate per instruction: the timed ratio has been ~0.1 lower). With
``--breakdown``, every step is counted.

``--interleave`` measures inside one process: every step's client open at once (raw and
SDK; every step with ``--breakdown``), rounds of short windows (``--window``, 0.25 s) in
random order, and per step the median of its paired windows' ratios with a bootstrap 95%
interval. The machine's slow drifts hit both sides of a pair alike, so the interval is
tight; the figure still differs from process to process (raw aiohttp's own cost moves),
so it runs in ``--processes`` fresh interpreters.

    python benchmarks/bench_pipeline.py [--seconds 2.0] [--rounds 5] [--concurrency 1 16 256]
    python benchmarks/bench_pipeline.py --instructions [--concurrency 16 256]
    python benchmarks/bench_pipeline.py --breakdown [--concurrency 16 256]
    python benchmarks/bench_pipeline.py --instructions --breakdown [--concurrency 16 256]
    python benchmarks/bench_pipeline.py --interleave [--breakdown] [--processes 3] [--windows 40]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

import callscaler_async as cs
from callscaler_async._convert import decode
from callscaler_async.ratelimit import Ticket

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


def print_head(title: str, header: str) -> None:
    """The title line (with the Python version), the column header and its rule."""
    print(f"{title}, Python {sys.version.split()[0]}")
    print(header)
    print("-" * len(header))


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
                seconds: float, *, warm_up: bool = True) -> tuple[float, float]:  # fmt: skip
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

    if warm_up:  # connections opened, caches filled; not measured
        await asyncio.gather(
            *(fetch(ids[i % len(ids)]) for i in range(min(tasks, CONNECTION_LIMIT)))
        )
        gc.collect()
    cpu0, t0 = time.process_time(), time.perf_counter()
    workers = [asyncio.create_task(worker(k)) for k in range(tasks)]
    await asyncio.sleep(seconds)
    stop = True
    await asyncio.gather(*workers)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return done / elapsed, cpu / done


# The steps from raw aiohttp to the SDK: each opens its client in ``stack`` and returns the
# fetch of one call. The timed rounds and the instruction counts use the same ones.
STEPS: dict[str, str] = {
    "raw": "raw aiohttp + orjson",
    "like": "aiohttp as the SDK calls it",
    "like+decode": "  + decode into Call",
    "null-gate": "SDK, no-op rate gate",
    "sdk": "SDK",
}


async def open_fetch(step: str, stack: contextlib.AsyncExitStack, base_url: str, api_key: str,
                     business: str) -> Callable[[str], Awaitable[Any]]:  # fmt: skip
    if step == "raw":
        headers = {"Authorization": f"Bearer {api_key}"}
        session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTION_LIMIT))
        )

        async def fetch_raw(call_id: str) -> Any:
            async with session.get(f"{base_url}calls/{call_id}", headers=headers) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"raw: {resp.status} {body[:200]!r}")
                return orjson.loads(body)

        return fetch_raw
    if step in ("like", "like+decode"):
        # aiohttp called the way the SDK's transport calls it: the response awaited (no
        # ``async with``), prebuilt headers, the path appended to the parsed base URL.
        decoded = step == "like+decode"
        like_headers = CIMultiDictProxy(CIMultiDict({
            "User-Agent": "callscaler-async", "Accept": "application/json",
            "Authorization": f"Bearer {api_key}",
        }))  # fmt: skip
        base = URL(base_url)
        timeout = aiohttp.ClientTimeout(total=30.0)
        like_session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTION_LIMIT))
        )

        async def fetch_like(call_id: str) -> Any:
            url = base.joinpath(f"calls/{call_id}", encoded=True)
            resp = await like_session.request(
                "GET", url, headers=like_headers, allow_redirects=False, timeout=timeout
            )
            body = orjson.loads(await resp.read())
            if resp.status != 200:
                raise RuntimeError(f"like-sdk: {resp.status} {body!r:.200}")
            return decode(body["data"]["call"], cs.Call) if decoded else body

        return fetch_like
    if step == "null-gate":
        client = cs.CallScaler(api_key, base_url=base_url, rate_limiter=NullGate())
    elif step == "sdk":
        client = cs.CallScaler(
            api_key, base_url=base_url, rate_limit=cs.RateLimit(requests=100_000_000, period=60.0),
            business=business,
        )  # fmt: skip
    else:
        raise ValueError(f"unknown step {step!r}")
    await stack.enter_async_context(client)

    async def fetch_sdk(call_id: str) -> cs.Call:
        return await client.calls.get(call_id)

    return fetch_sdk


async def run_step(step: str, base_url: str, api_key: str, ids: list[str], tasks: int,
                   seconds: float, round_: int = 0) -> tuple[float, float]:  # fmt: skip
    """One timed round of ``step`` (a fresh client; a fresh gate for the SDK)."""
    async with contextlib.AsyncExitStack() as stack:
        fetch = await open_fetch(step, stack, base_url, api_key, f"bench-pipeline-{tasks}-{round_}")
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
    medians = []
    for tasks in args.concurrency:
        raw_best = (0.0, 0.0)
        sdk_best = (0.0, 0.0)
        pairs = []
        for r in range(args.rounds):
            raw = await run_step("raw", base_url, api_key, ids, tasks, args.seconds)
            sdk = await run_step("sdk", base_url, api_key, ids, tasks, args.seconds, r)
            raw_best = max(raw_best, raw)
            sdk_best = max(sdk_best, sdk)
            pairs.append(sdk[0] / raw[0])
        rows.append((tasks, raw_best, sdk_best))
        medians.append(statistics.median(pairs))

    print_head(
        f"pipeline: GET calls/{{id}}, fake API in a separate process, "
        f"best of {args.rounds} x {args.seconds:g}s rounds",
        f"{'tasks':>6} | {'raw req/s':>10} | {'sdk req/s':>10} | {'sdk/raw':>7} | "
        f"{'raw CPU/req':>11} | {'sdk CPU/req':>11} | {'SDK adds':>9}",
    )
    for row, median in zip(rows, medians, strict=True):
        tasks, (raw_rps, raw_cpu), (sdk_rps, sdk_cpu) = row
        print(
            f"{tasks:>6} | {raw_rps:>10,.0f} | {sdk_rps:>10,.0f} | {sdk_rps / raw_rps:>6.2f}x | "
            f"{raw_cpu * 1e6:>9.0f}µs | {sdk_cpu * 1e6:>9.0f}µs | "
            f"{(sdk_cpu - raw_cpu) * 1e6:>7.0f}µs   (median of paired rounds {median:.2f}x)"
        )
    worst = min(sdk_rps / raw_rps for _, (raw_rps, _), (sdk_rps, _) in rows)
    print(f"target sdk/raw >= 0.80 at every concurrency: {'met' if worst >= 0.8 else 'MISSED'} "
          f"(worst {worst:.2f}x)")  # fmt: skip


# -- breakdown ----------------------------------------------------------------------------


class NullGate:
    """A rate gate that admits every request at once and records nothing (``--breakdown``:
    the SDK without its gate's bookkeeping)."""

    name = "bench-null-gate"
    rate_limit = cs.RateLimit(requests=100_000_000, period=60.0)

    def try_acquire(self) -> Ticket:
        return Ticket(0, 0.0)

    async def acquire(self, *, priority: str = "normal", max_wait: float | None = None) -> Ticket:
        return Ticket(0, 0.0)

    def complete(self, ticket: Ticket, *, status: int | None, headers: Any,
                 retry_after: float | None = None) -> None:  # fmt: skip
        pass

    def abandon(self, ticket: Ticket) -> None:
        pass

    def snapshot(self) -> Any:
        raise NotImplementedError


async def main_breakdown(args: argparse.Namespace, base_url: str, api_key: str) -> None:
    ids = await call_ids(base_url, api_key, 500)
    print_head(
        f"pipeline breakdown: GET calls/{{id}}, best of {args.rounds} x {args.seconds:g}s "
        "rounds (all steps in each round)",
        f"{'tasks':>6} | {'step':<28} | {'req/s':>8} | {'vs raw':>6} | "
        f"{'CPU/req':>7} | {'step adds':>9}",
    )
    for tasks in args.concurrency:
        best = [(0.0, 0.0)] * len(STEPS)
        for r in range(args.rounds):
            for i, step in enumerate(STEPS):
                run = await run_step(step, base_url, api_key, ids, tasks, args.seconds, r)
                best[i] = max(best[i], run)
        raw_rps, _ = best[0]
        for i, label in enumerate(STEPS.values()):
            rps, cpu = best[i]
            adds = "" if i == 0 else f"{(cpu - best[i - 1][1]) * 1e6:>7.1f}µs"
            print(f"{tasks:>6} | {label:<28} | {rps:>8,.0f} | {rps / raw_rps:>5.2f}x | "
                  f"{cpu * 1e6:>5.0f}µs | {adds:>9}")  # fmt: skip


# -- interleaved windows -----------------------------------------------------------------


Runs = dict[str, list[list[float]]]  # per step: [requests/s, CPU seconds per request]


async def interleave_client(steps: list[str], tasks: int, windows: int, window: float,
                            base_url: str, api_key: str) -> Runs:  # fmt: skip
    """One process of ``--interleave``: every step's client open at once, ``windows`` rounds
    of one ``window``-second run per step in random order; per step its (req/s, CPU/req)."""
    ids = await call_ids(base_url, api_key, 500)
    rng = random.Random()
    results: Runs = {step: [] for step in steps}
    async with contextlib.AsyncExitStack() as stack:
        fetches = {
            step: await open_fetch(step, stack, base_url, api_key, f"bench-interleave-{tasks}")
            for step in steps
        }
        for step in steps:  # warm-up, not measured
            await drive(fetches[step], ids, tasks, min(window, 0.5))
        for _ in range(windows):
            order = list(steps)
            rng.shuffle(order)
            for step in order:
                rps, cpu = await drive(fetches[step], ids, tasks, window, warm_up=False)
                results[step].append([rps, cpu])
    return results


def median_interval(values: list[float], rng: random.Random) -> tuple[float, float, float]:
    """The median and a bootstrap 95% interval of it (1,000 resamples)."""
    boots = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(1000))
    return statistics.median(values), boots[25], boots[974]


def main_interleave(args: argparse.Namespace, base_url: str, api_key: str) -> None:
    steps = list(STEPS) if args.breakdown else ["raw", "sdk"]
    print_head(
        f"pipeline: GET calls/{{id}}, {args.processes} client process(es) x {args.windows} "
        f"rounds of {args.window:g}s windows, all steps' clients open at once, random order",
        f"{'tasks':>6} | {'proc':>4} | {'step':<28} | {'vs raw (95% interval)':<22} | "
        f"{'CPU/req':>7} | {'adds (95% interval)':<24}",
    )
    rng = random.Random(7)
    worst = math.inf
    for tasks in args.concurrency:
        sdk_ratios: list[float] = []  # each process's median, for the verdict
        for proc in range(1, args.processes + 1):
            # A fresh interpreter each: the ratio differs from process to process (its hash
            # seed and memory layout), while it is tight inside one.
            out = subprocess.run(
                [sys.executable, __file__, "--interleave-client", ",".join(steps), str(tasks),
                 str(args.windows), str(args.window), base_url, api_key],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            results = orjson.loads(out.stdout)
            raw = results["raw"]
            for step in steps:
                runs = results[step]
                cpu = statistics.median(run[1] for run in runs) * 1e6
                if step == "raw":
                    print(
                        f"{tasks:>6} | {proc:>4} | {STEPS[step]:<28} | {'':<22} | {cpu:>5.0f}µs |"
                    )
                    continue
                ratio, lo, hi = median_interval(
                    [run[0] / base[0] for run, base in zip(runs, raw, strict=True)], rng
                )
                adds, a_lo, a_hi = median_interval(
                    [(run[1] - base[1]) * 1e6 for run, base in zip(runs, raw, strict=True)], rng
                )
                if step == "sdk":
                    sdk_ratios.append(ratio)
                print(f"{tasks:>6} | {proc:>4} | {STEPS[step]:<28} | "
                      f"{ratio:.3f}x [{lo:.3f}, {hi:.3f}] | {cpu:>5.0f}µs | "
                      f"{adds:+6.1f}µs [{a_lo:+.1f}, {a_hi:+.1f}]")  # fmt: skip
        sdk_median = statistics.median(sdk_ratios)
        worst = min(worst, sdk_median)
        print(f"{tasks:>6} | all  | SDK: median of the processes' medians {sdk_median:.3f}x")
    verdict = "met" if worst >= 0.8 else "MISSED"
    print(f"target sdk/raw >= 0.80 at every concurrency: {verdict} (worst {worst:.2f}x)")


# -- instruction counts -------------------------------------------------------------------


async def client_only(side: str, tasks: int, requests: int, base_url: str, api_key: str) -> None:
    """The measured client of ``--instructions``: warm up, then ``requests`` fetches."""
    ids = await call_ids(base_url, api_key, 500)
    async with contextlib.AsyncExitStack() as stack:
        fetch = await open_fetch(side, stack, base_url, api_key, "bench-pipeline-instructions")
        await asyncio.gather(*(fetch(ids[i % len(ids)]) for i in range(tasks)))
        left = requests

        async def worker(offset: int) -> None:
            nonlocal left
            i = offset
            while left > 0:
                left -= 1
                await fetch(ids[i % len(ids)])
                i += tasks

        await asyncio.gather(*(worker(k) for k in range(tasks)))


def count_instructions(side: str, tasks: int, requests: int, base_url: str, api_key: str) -> int:
    """Instructions of one client process under callgrind (its startup included)."""
    out = subprocess.run(
        [
            "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
            sys.executable, __file__, "--client", side, str(tasks), str(requests),
            base_url, api_key,
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    match = re.search(r"Collected : (\d+)", out.stderr)
    if match is None:
        raise RuntimeError(f"no callgrind total in: {out.stderr[-500:]}")
    return int(match.group(1))


def main_instructions(args: argparse.Namespace, base_url: str, api_key: str) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    title = ("pipeline: GET calls/{id}, client CPU instructions per request under callgrind "
             "(3,000 minus 1,000 requests), fake API in another process")  # fmt: skip
    if args.breakdown:
        main_instructions_breakdown(args, base_url, api_key, title)
        return
    print_head(
        title,
        f"{'tasks':>6} | {'raw instr/req':>13} | {'sdk instr/req':>13} | {'raw/sdk':>7} | SDK adds",
    )
    worst = math.inf
    for tasks in args.concurrency:
        raw, sdk = (instructions_per_request(side, tasks, base_url, api_key)
                    for side in ("raw", "sdk"))  # fmt: skip
        worst = min(worst, raw / sdk)
        print(f"{tasks:>6} | {raw:>13,.0f} | {sdk:>13,.0f} | {raw / sdk:>6.2f}x | "
              f"{sdk - raw:>8,.0f} ({(sdk - raw) / raw:.0%})")  # fmt: skip
    verdict = "yes" if worst >= 0.8 else "no"
    print(f"raw/sdk >= 0.80 by instructions: {verdict} (worst {worst:.2f}x)")


def instructions_per_request(side: str, tasks: int, base_url: str, api_key: str) -> float:
    low = count_instructions(side, tasks, 1000, base_url, api_key)
    high = count_instructions(side, tasks, 3000, base_url, api_key)
    return (high - low) / 2000


def main_instructions_breakdown(args: argparse.Namespace, base_url: str, api_key: str,
                                title: str) -> None:  # fmt: skip
    """``--instructions --breakdown``: each step's instructions per request, and what the
    step adds to the one before (noise-free, unlike the timed breakdown)."""
    print_head(
        title,
        f"{'tasks':>6} | {'step':<28} | {'instr/req':>9} | {'raw/step':>8} | {'step adds':>9}",
    )
    for tasks in args.concurrency:
        counts = [instructions_per_request(step, tasks, base_url, api_key) for step in STEPS]
        for i, label in enumerate(STEPS.values()):
            adds = "" if i == 0 else f"{counts[i] - counts[i - 1]:>9,.0f}"
            ratio = counts[0] / counts[i]
            print(f"{tasks:>6} | {label:<28} | {counts[i]:>9,.0f} | {ratio:>7.2f}x | {adds:>9}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":  # the process measured by callgrind
        side, tasks, requests, base_url, api_key = sys.argv[2:7]
        asyncio.run(client_only(side, int(tasks), int(requests), base_url, api_key))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--interleave-client":  # one --interleave process
        steps, tasks, windows, window, base_url, api_key = sys.argv[2:8]
        results = asyncio.run(interleave_client(
            steps.split(","), int(tasks), int(windows), float(window), base_url, api_key
        ))  # fmt: skip
        sys.stdout.write(orjson.dumps(results).decode())
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=None)
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under valgrind"
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="time the steps from raw aiohttp to the SDK"
    )
    parser.add_argument(
        "--interleave", action="store_true",
        help="short windows of every step alternating in one process (paired medians with "
        "95%% intervals), repeated in --processes fresh processes",
    )  # fmt: skip
    parser.add_argument("--processes", type=int, default=3, help="--interleave: processes")
    parser.add_argument("--windows", type=int, default=40, help="--interleave: rounds")
    parser.add_argument("--window", type=float, default=0.25, help="--interleave: seconds")
    args = parser.parse_args()
    if args.instructions and args.interleave:
        parser.error("--instructions counts, --interleave times: choose one")
    if args.concurrency is None:
        args.concurrency = (
            [16, 256] if (args.instructions or args.breakdown) and not args.interleave
            else [1, 16, 256]
        )  # fmt: skip
    with sandbox(calls=500) as (base_url, api_key):
        if args.instructions:
            main_instructions(args, base_url, api_key)
        elif args.interleave:
            main_interleave(args, base_url, api_key)
        elif args.breakdown:
            asyncio.run(main_breakdown(args, base_url, api_key))
        else:
            asyncio.run(main_async(args, base_url, api_key))


if __name__ == "__main__":
    main()
