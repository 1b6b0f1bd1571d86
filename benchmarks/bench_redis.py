"""Four processes, one business, one budget through Redis: 429s and budget used.

Starts a throwaway ``redis-server`` and the fake API (``callscaler sandbox``, a sliding-log
server, the strictest of the three) in their own processes, then N worker processes, each a
``CallScaler`` with ``rate_limiter=RedisRateLimiter(...)`` and 8 tasks sending as fast as the
gate admits. The workers start together (a common start time on the shared monotonic clock,
after every interpreter has imported) and stop ``--seconds`` later.

Budget used: requests *sent* (the client's ``on_request`` hook, the moment an attempt leaves)
in the whole periods ``[start, start + k * period)``, ``k = floor(seconds / period)``, over
``k * limit``, the most a sliding log admits in k consecutive periods. So the first burst
counts, the ramp-up and any idle time count against the gate, and nothing is extrapolated.
It cannot see a loss smaller than about one period per run, so also: ``span/min``, the time
from the first to the last send over the least a sliding log needs for that many,
``(ceil(M / limit) - 1) * period`` (each slot comes back one period plus a round trip after
its send: the excess is the round trip's share). Also: 429s received, Redis calls per
request (reservations and answer reports), reserved slots left unused. ``--repeat`` runs it
that many times (the machine may be busy: read the spread).

    python benchmarks/bench_redis.py [--processes 4] [--limit 60] [--period 1.0] [--seconds 6]
                                     [--repeat 1] [--window sliding]

``--window`` picks the sandbox's algorithm (``fixed``, ``sliding``, ``bucket``, ``counter``);
budget used is always over ``k * limit``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    import callscaler_async as cs
    from callscaler_async.ratelimit.redis import RedisRateLimiter

    redis_url, api_key, base_url, limit, period, seconds = sys.argv[1:7]

    async def main():
        gate = RedisRateLimiter(
            redis_url, business="bench", rate_limit=cs.RateLimit(int(limit), float(period))
        )
        sends, limited = [], 0
        print("ready", flush=True)
        start = float(await asyncio.to_thread(sys.stdin.readline))
        end = start + float(seconds)
        async with cs.CallScaler(api_key, base_url=base_url, rate_limiter=gate,
                                 max_retries=0,
                                 on_request=lambda event: sends.append(time.monotonic())
                                 ) as client:
            async def worker():
                nonlocal limited
                while time.monotonic() < end:
                    try:
                        await client.account.balance()
                    except cs.RateLimitError:
                        limited += 1
            await asyncio.sleep(max(start - time.monotonic(), 0))
            await asyncio.gather(*(worker() for _ in range(8)))
        await gate.aclose()
        print(json.dumps({"sends": sends, "limited": limited, "calls": gate.redis_calls,
                          "lost": gate.slots_lost}))

    asyncio.run(main())
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def run_once(args: argparse.Namespace, redis_bin: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    redis_port, api_port = free_port(), free_port()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    redis_proc = subprocess.Popen(
        [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    api_proc = subprocess.Popen(
        [sys.executable, "-m", "callscaler_async.cli", "sandbox", "--port", str(api_port),
         "--calls", "50", "--window", args.window, "--limit", str(args.limit),
         "--period", str(args.period)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )  # fmt: skip
    workers: list[subprocess.Popen[str]] = []
    try:
        wait_port(redis_port)
        wait_port(api_port)
        assert api_proc.stdout is not None
        banner = ""
        key = ""
        while not key:
            line = api_proc.stdout.readline()
            banner += line
            for word in line.replace("=", " ").split():
                if word.startswith("cs_key_") and not key:
                    key = word.strip("'\"")
            if not line:
                raise SystemExit(f"sandbox printed no key:\n{banner}")
        base_url = f"http://127.0.0.1:{api_port}/api/v1/"
        worker_args = [f"redis://127.0.0.1:{redis_port}/0", key, base_url, str(args.limit),
                       str(args.period), str(args.seconds)]  # fmt: skip
        workers = [
            subprocess.Popen([sys.executable, "-c", WORKER, *worker_args], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, env=env, text=True)
            for _ in range(args.processes)
        ]  # fmt: skip
        for w in workers:  # every interpreter has started and imported
            assert w.stdout is not None
            if w.stdout.readline().strip() != "ready":
                raise SystemExit("a worker failed to start")
        start = time.monotonic() + 0.2
        for w in workers:
            assert w.stdin is not None
            w.stdin.write(f"{start}\n")
            w.stdin.flush()
        results = [json.loads(w.communicate(timeout=args.seconds + 60)[0]) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        api_proc.terminate()
        redis_proc.terminate()
        api_proc.wait(10)
        redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    sends = sorted(t for r in results for t in r["sends"])
    periods = math.floor(args.seconds / args.period)
    counted = sum(1 for t in sends if start <= t < start + periods * args.period)
    minimum = (math.ceil(len(sends) / args.limit) - 1) * args.period
    return {
        "span": (sends[-1] - sends[0]) / minimum if minimum > 0 else float("nan"),
        "requests": len(sends),
        "limited": sum(r["limited"] for r in results),
        "per": "/".join(str(len(r["sends"])) for r in results),
        "calls": sum(r["calls"] for r in results) / max(len(sends), 1),
        "lost": sum(r["lost"] for r in results),
        "used": counted / (periods * args.limit),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--window", default="sliding", choices=["fixed", "sliding", "bucket", "counter"],
        help="the sandbox's window algorithm",
    )  # fmt: skip
    args = parser.parse_args()
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    periods = math.floor(args.seconds / args.period)
    print(
        f"{args.processes} processes x 8 tasks, one business through Redis, "
        f"{args.window} server at {args.limit} per {args.period:g} s, {args.seconds:g} s; "
        f"budget used = sent in {periods} whole periods / ({periods} x {args.limit})\n"
    )
    header = (
        f"{'requests':>9} {'429s':>5} {'per process':>20} {'redis calls/req':>16} "
        f"{'slots lost':>11} {'budget used':>12} {'span/min':>9}"
    )
    print(header)
    print("-" * len(header))
    used: list[float] = []
    for _ in range(args.repeat):
        row = run_once(args, redis_bin)
        used.append(row["used"])
        print(
            f"{row['requests']:>9} {row['limited']:>5} {row['per']:>20} {row['calls']:>16.3f} "
            f"{row['lost']:>11} {row['used']:>12.3f} {row['span']:>9.3f}"
        )
    if args.repeat > 1:
        print(
            f"\nbudget used over {args.repeat} runs: min {min(used):.3f} / median "
            f"{statistics.median(used):.3f} / max {max(used):.3f}"
        )


if __name__ == "__main__":
    main()
