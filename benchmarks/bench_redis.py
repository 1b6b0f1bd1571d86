"""Four processes, one business, one budget through Redis: 429s and budget used.

Starts a throwaway ``redis-server`` and the fake API (``callscaler sandbox``, a sliding-log
server, the strictest of the three) in their own processes, then N worker processes, each a
``CallScaler`` with ``rate_limiter=RedisRateLimiter(...)`` and 8 tasks sending as fast as the
gate admits for a fixed time. Prints requests, 429s, and the budget used in steady state:
admissions per second after the first window, over ``limit / period``.

    python benchmarks/bench_redis.py [--processes 4] [--limit 60] [--period 1.0] [--seconds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

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
        end = time.monotonic() + float(seconds)
        async with cs.CallScaler(api_key, base_url=base_url, rate_limiter=gate,
                                 max_retries=0) as client:
            async def worker():
                nonlocal limited
                while time.monotonic() < end:
                    try:
                        await client.account.balance()
                        sends.append(time.monotonic())
                    except cs.RateLimitError:
                        limited += 1
            await asyncio.gather(*(worker() for _ in range(8)))
        await gate.aclose()
        print(json.dumps({"sends": sends, "limited": limited}))

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
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
         "--calls", "50", "--window", "sliding", "--limit", str(args.limit),
         "--period", str(args.period)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )  # fmt: skip
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
            subprocess.Popen([sys.executable, "-c", WORKER, *worker_args],
                             stdout=subprocess.PIPE, env=env, text=True)
            for _ in range(args.processes)
        ]  # fmt: skip
        results = [json.loads(w.communicate(timeout=args.seconds + 60)[0]) for w in workers]
    finally:
        api_proc.terminate()
        redis_proc.terminate()
        api_proc.wait(10)
        redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    sends = sorted(t for r in results for t in r["sends"])
    limited = sum(r["limited"] for r in results)
    first, last = sends[0], sends[-1]
    steady = [t for t in sends if t >= first + args.period]
    rate = len(steady) / (last - first - args.period) if last - first > args.period else 0.0
    budget = args.limit / args.period
    print(
        f"{args.processes} processes x 8 tasks, one business through Redis, "
        f"sliding-log server at {args.limit} per {args.period:g} s, {args.seconds:g} s\n"
    )
    print(
        f"{'requests':>9} {'429s':>5} {'per process':>24} {'steady req/s':>13} {'budget used':>12}"
    )
    per = "/".join(str(len(r["sends"])) for r in results)
    print(f"{len(sends):>9} {limited:>5} {per:>24} {rate:>13.1f} {rate / budget:>12.3f}")


if __name__ == "__main__":
    main()
