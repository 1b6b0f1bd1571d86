"""Import time: ``import callscaler_async`` vs ``import aiohttp`` alone, side by side.

Each measurement is a fresh subprocess running ``python -X importtime -c "import X"``; the
cumulative microseconds of the top-level module are read from its report (the median of
``--runs`` runs counts; runs alternate between the two so that a busy moment hurts both).
``callscaler_async`` includes aiohttp, so "SDK adds" is the difference. Target: <= 30%.

Also reported: the SDK's own modules that cost most (self time, median), and a check that
the optional parts are not imported by ``import callscaler_async``: the CLI (click), the
FastAPI integration, Redis, OpenTelemetry, the test fake, webhooks and the sync engine
load only when used.

    python benchmarks/bench_import.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections import defaultdict

# Modules that `import callscaler_async` must not load (prefix match).
LAZY = (
    "click",
    "fastapi",
    "starlette",
    "redis",
    "opentelemetry",
    "callscaler_async.cli",
    "callscaler_async.contrib",
    "callscaler_async.testing",
    "callscaler_async.ratelimit.redis",
    "callscaler_async.webhooks",
    "callscaler_async.sync",
)


def importtime(module: str) -> dict[str, tuple[int, int]]:
    """module -> (self µs, cumulative µs) from one fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
    )
    out: dict[str, tuple[int, int]] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative, name = line[len("import time:") :].split("|")
        out[name.strip()] = (int(self_us), int(cumulative))
    return out


def loaded_modules() -> list[str]:
    code = "import sys, json, callscaler_async; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names: list[str] = json.loads(proc.stdout)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    importtime("callscaler_async")  # warm the file system cache and any .pyc writes
    sdk_runs: list[int] = []
    aiohttp_runs: list[int] = []
    own: dict[str, list[int]] = defaultdict(list)
    for _ in range(args.runs):
        report = importtime("callscaler_async")
        sdk_runs.append(report["callscaler_async"][1])
        for name, (self_us, _) in report.items():
            if name.startswith("callscaler_async"):
                own[name].append(self_us)
        aiohttp_runs.append(importtime("aiohttp")["aiohttp"][1])
    sdk = statistics.median(sdk_runs)
    base = statistics.median(aiohttp_runs)

    print(f"import time: median of {args.runs} fresh interpreters, Python {sys.version.split()[0]}")
    header = f"{'import':<24} | {'cumulative':>11} | {'vs aiohttp':>10}"
    print(header)
    print("-" * len(header))
    print(f"{'aiohttp':<24} | {base / 1000:>8.1f} ms | {1:>9.2f}x")
    print(f"{'callscaler_async':<24} | {sdk / 1000:>8.1f} ms | {sdk / base:>9.2f}x")
    added = (sdk - base) / base
    verdict = "met" if added <= 0.30 else "MISSED"
    print(f"SDK adds {(sdk - base) / 1000:.1f} ms = {added:.0%} of aiohttp "
          f"(target <= 30%): {verdict}")  # fmt: skip

    print("\nthe SDK's own modules by self time (median), top 8:")
    for name, times in sorted(own.items(), key=lambda kv: -statistics.median(kv[1]))[:8]:
        print(f"  {statistics.median(times) / 1000:>6.1f} ms  {name}")

    modules = loaded_modules()
    eager = [m for m in modules if any(m == p or m.startswith(p + ".") for p in LAZY)]
    print("\nnot imported by `import callscaler_async`: " + ", ".join(LAZY))
    print("  check: " + ("ok" if not eager else "LOADED: " + ", ".join(eager)))


if __name__ == "__main__":
    main()
