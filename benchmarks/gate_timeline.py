"""One benchmark run drawn as a timeline: the SDK's gate and a naive limiter, side by side.

The docs' rate gate page shows the picture this script writes. Both clients send the same
requests with the same concurrency, each to its own fresh fake API (real HTTP in this
process, real time) counting a sliding log of ``--limit`` requests per ``--period``:

  sdk    callscaler_async.CallScaler with its business gate
  naive  aiohttp + AsyncLimiter(limit, period), retrying each 429 after its Retry-After
         (the usual recipe; see bench_gate.py)

From the fake's own request log, for each client: the requests it sent in the server's
window (the last ``period`` seconds) at each instant, those the server counted (answered
200), the limit, and every 429. A sliding log is drawn because its count at an instant is
exactly "answered requests in the last period", which the log gives without modelling the
server further.

    python benchmarks/gate_timeline.py [--requests 300] [--limit 60] [--period 3]
                                       [--tasks 50] [--out docs/assets/gate-timeline.png]

Needs matplotlib (the ``docs`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import datetime as dt
import shlex
import subprocess
import sys
from pathlib import Path

from aiolimiter import AsyncLimiter
from bench_gate import run_raw, run_sdk

from callscaler_async.testing import FakeCallScaler

ROOT = Path(__file__).resolve().parent.parent


async def timeline(
    client: str, requests: int, limit: int, period: float, tasks: int
) -> tuple[list[float], list[int], float]:
    """(arrival times from the first request, statuses, elapsed) of one client's run."""
    async with FakeCallScaler(
        calls=10, rate_limit=limit, period=period, algorithm="sliding"
    ) as fake:
        loop = asyncio.get_running_loop()
        start = loop.time()
        if client == "sdk":
            await run_sdk(fake, requests, tasks, period, limit)
        else:
            await run_raw(fake, requests, tasks, AsyncLimiter(limit, period).acquire)
        elapsed = loop.time() - start
        log = [(r.time - start, r.status) for r in fake.stats.log]
    return [t for t, _ in log], [s for _, s in log], elapsed


def in_window(times: list[float], at: list[float], period: float) -> list[int]:
    """For each instant of ``at``: how many of the sorted ``times`` fall in (t - period, t]."""
    return [bisect.bisect_right(times, t) - bisect.bisect_right(times, t - period) for t in at]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--period", type=float, default=3.0)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "assets" / "gate-timeline.png")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {
        name: asyncio.run(timeline(name, args.requests, args.limit, args.period, args.tasks))
        for name in ("sdk", "naive")
    }
    end = max(max(times, default=0.0) for times, _, _ in runs.values()) + 0.5
    grid = [i * end / 2000 for i in range(2001)]
    fig, axes = plt.subplots(2, 1, figsize=(9, 6.2), sharex=True, sharey=True)
    titles = {
        "sdk": "callscaler_async (business rate gate)",
        "naive": f"naive: AsyncLimiter({args.limit}, {args.period:g}) + retry on 429",
    }
    print(
        f"{'client':<7} {'sent':>5} {'served':>6} {'429s':>5} {'elapsed s':>9} {'max in win':>10}"
    )
    for ax, (name, (times, statuses, elapsed)) in zip(axes, runs.items(), strict=True):
        sent = sorted(times)
        counted = sorted(t for t, s in zip(times, statuses, strict=True) if s == 200)
        rejected = [t for t, s in zip(times, statuses, strict=True) if s == 429]
        sent_line = in_window(sent, grid, args.period)
        counted_line = in_window(counted, grid, args.period)
        ax.plot(grid, sent_line, color="tab:orange", lw=1.2,
                label=f"requests sent in the last {args.period:g} s")  # fmt: skip
        ax.plot(grid, counted_line, color="tab:blue", lw=1.6,
                label="the server's count (answered 200)")  # fmt: skip
        ax.axhline(args.limit, color="black", ls="--", lw=1, label=f"limit ({args.limit})")
        if rejected:
            ax.plot(rejected, [0] * len(rejected), "|", color="tab:red", ms=12, mew=1,
                    label="429", clip_on=False)  # fmt: skip
        ax.set_title(
            f"{titles[name]}: {len(counted)} served, {len(rejected)} 429s, {elapsed:.1f} s",
            fontsize=10, loc="left",
        )  # fmt: skip
        ax.set_ylabel("requests in the window")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
        print(
            f"{name:<7} {len(times):>5} {len(counted):>6} {len(rejected):>5} {elapsed:>9.2f} "
            f"{max(sent_line):>10}"
        )
    axes[-1].set_xlabel("seconds since the first request")
    axes[0].set_ylim(0, max(args.limit * 2.2, 10))
    command = "python benchmarks/gate_timeline.py " + shlex.join(
        a for a in sys.argv[1:] if not a.startswith("--out") and not a.endswith(".png")
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    fig.text(
        0.01, 0.005,
        f"{command.strip()}  ({args.requests} requests, {args.tasks} tasks, sliding-log fake "
        f"at {args.limit}/{args.period:g} s; {dt.date.today()}, commit {commit or '?'})",
        fontsize=7, color="0.4",
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
