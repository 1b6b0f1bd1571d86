"""The FastAPI example deployed as in production: 429s, extra API requests, latency.

Every part is its own process: the fake API (``callscaler sandbox``, ``--limit`` requests per
``--period`` seconds), a throwaway ``redis-server``, the app (``examples/fastapi_app.py``)
under ``uvicorn --workers N`` or ``gunicorn --preload``, and a driver sending ``--requests``
requests to ``GET /calls?limit=1`` (one API request each) from ``--clients`` concurrent
clients, each request on a new connection (no keep-alive: they spread over the workers as
a load balancer's would). The fake counts what reached the API.

Columns: ``429s`` the fake answered; ``extra`` API requests beyond one per app answer 200
(the SDK's retries after those 429s); ``app answers`` what the driver got; ``p50``/``p95`` of
the driver's latency (a request refused while the app restarts is retried every 20 ms and
keeps its first start time, so the restart is in its latency; one cut off without an answer
by a crash counts as ``0``).

Restart rows: after a third of the answers the app is stopped, then started again at once:
``graceful`` is SIGTERM (every worker closes its clients: the Redis limiter says goodbye),
``crash`` is SIGKILL to the server and all its workers (no goodbye: their leases run out,
``liveness_timeout``, 1 s at these periods). ``after ready`` is the time from the new
workers' readiness to the first answer 200 (``down``: from the stop to that readiness);
``budget needed`` is what the ledger itself
required at that instant (the answers of the last period: a fresh process would wait as
long). Targets: with Redis or a static share, 0 429s and p95 within 10% of one worker's;
after a graceful restart, ``after ready`` within 1 s of ``budget needed``.

    python benchmarks/bench_fastapi.py [--limit 20] [--period 4] [--requests 200]
                                       [--clients 20] [--window fixed] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from tests.deploy import AppServer, Drive, Sandbox, drive  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


class Row:
    def __init__(self, name: str) -> None:
        self.name = name
        self.cells: dict[str, str] = {}


def fmt_statuses(result: Drive) -> str:
    return " ".join(f"{n}x{status}" for status, n in sorted(result.statuses.items()))


def ledger_wait(client: redis.Redis, business: str, limit: int) -> float:
    """Seconds until the ledger admits one request, counting answered requests only."""
    seconds, micros = client.time()
    now = seconds * 1_000_000 + micros
    releases = sorted(
        score for _, score in client.zrange(f"callscaler:rl:{{{business}}}:rel", 0, -1,
                                            withscores=True)
        if score > now
    )  # fmt: skip
    if len(releases) < limit:
        return 0.0
    return max(0.0, (releases[len(releases) - limit] - now) / 1_000_000)


def scenario(
    args: argparse.Namespace,
    name: str,
    *,
    workers: int = 4,
    redis_url: str | None = None,
    share: bool = False,
    server: str = "uvicorn",
    app: str = "examples.fastapi_app:app",
    preload: bool = False,
    restart: str | None = None,
) -> Row:
    fake = Sandbox(limit=args.limit, period=args.period, window=args.window,
                   calls=200).start()  # fmt: skip
    env = {
        "CALLSCALER_API_KEY": fake.api_key,
        "CALLSCALER_BASE_URL": fake.base_url,
        "CALLSCALER_RATE_LIMIT": f"{args.limit}/{args.period:g}s",
        "CALLSCALER_MAX_WAIT": "120",
        "CALLSCALER_REDIS_URL": redis_url or "",
        "CALLSCALER_WORKERS": str(workers) if share else "",
    }
    server_ = AppServer(env=env, workers=workers, server=server, app=app,  # type: ignore[arg-type]
                        preload=preload, graceful=150)  # fmt: skip
    inspector = redis.Redis.from_url(redis_url) if redis_url else None
    progress = Drive()
    extra: dict[str, str] = {}

    async def run() -> None:
        load = asyncio.create_task(
            drive(server_.url, args.requests, concurrency=args.clients, out=progress)
        )
        if restart is not None:
            while len(progress.results) < args.requests // 3:
                await asyncio.sleep(0.02)
            stopping = time.monotonic()
            if restart == "graceful":
                await asyncio.to_thread(server_.stop, signal.SIGTERM)
            else:
                await asyncio.to_thread(server_.kill_all)
            await asyncio.to_thread(server_.start)
            ready = time.monotonic()
            extra["down"] = f"{ready - stopping:.1f}s"
            if inspector is not None:
                extra["budget needed"] = f"{ledger_wait(inspector, 'main', args.limit):.2f}s"
            await load
            after = [end for status, _, end in progress.results if status == 200 and end > ready]
            extra["after ready"] = f"{min(after) - ready:.2f}s" if after else "none"
        else:
            await load

    try:
        server_.start()
        t0 = time.monotonic()
        asyncio.run(run())
        elapsed = time.monotonic() - t0
        log = server_.log()
    finally:
        server_.close()
        if inspector is not None:
            inspector.close()
        requests, rate_limited = fake.stop()
    row = Row(name)
    row.cells = {
        "429s": str(rate_limited),
        "extra": str(requests - progress.statuses[200]),
        "app answers": fmt_statuses(progress),
        "p50": f"{progress.latency(0.5):.2f}s",
        "p95": f"{progress.latency(0.95):.2f}s",
        "total": f"{elapsed:.1f}s",
        "WARNING": str(sum("not sent by this process" in line for line in log.splitlines())),
        **extra,
    }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--period", type=float, default=4.0)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--window", choices=["fixed", "sliding", "bucket"], default="fixed")
    parser.add_argument("--only", nargs="*", help="run only the rows whose name contains one")
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed")
    with RedisServer(binary) as rs:
        url = rs.url
        plans: list[tuple[str, Callable[[], Row]]] = [
            ("--workers 1", lambda: scenario(args, "--workers 1", workers=1)),
            ("--workers 4, default gate", lambda: scenario(args, "--workers 4, default gate")),
            ("--workers 4, CALLSCALER_REDIS_URL",
             lambda: scenario(args, "--workers 4, CALLSCALER_REDIS_URL", redis_url=url)),
            ("--workers 4, CALLSCALER_WORKERS=4",
             lambda: scenario(args, "--workers 4, CALLSCALER_WORKERS=4", share=True)),
            ("gunicorn --preload, limiter at import",
             lambda: scenario(args, "gunicorn --preload, limiter at import", redis_url=url,
                              server="gunicorn", app="tests.preload_app:app", preload=True)),
            ("--workers 4, Redis, graceful restart",
             lambda: scenario(args, "--workers 4, Redis, graceful restart", redis_url=url,
                              restart="graceful")),
            ("--workers 4, Redis, crash (SIGKILL) restart",
             lambda: scenario(args, "--workers 4, Redis, crash (SIGKILL) restart",
                              redis_url=url, restart="crash")),
        ]  # fmt: skip
        if args.only:
            plans = [p for p in plans if any(word in p[0] for word in args.only)]
        rows: list[Row] = []
        for name, plan in plans:
            print(f"running: {name}", file=sys.stderr, flush=True)
            rows.append(plan())
    print(
        f"\n{args.requests} requests from {args.clients} clients, no keep-alive; fake API "
        f"{args.limit} per {args.period:g}s, {args.window} window\n"
    )
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row.cells if c not in columns]
    print("| deployment | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for row in rows:
        cells: list[Any] = [row.cells.get(c, "") for c in columns]
        print(f"| {row.name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
