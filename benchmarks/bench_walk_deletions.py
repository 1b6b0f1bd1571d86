"""Walks over a list that loses (and gains) calls while it is walked: what they deliver.

For each configuration, seeded runs against the fake: 250 calls, ``--per-page`` (12 by
default: three deletions per request are a quarter of a page), calls deleted at random
positions on every list request, optionally one new call inserted at the head per request.
Prints per configuration: the surviving calls missed (summed over the seeds), duplicates,
walks that raised ``InconsistentPagesError``, requests per walk, and how many of them were
re-reads (a page of the walk's size asked again, or a page of another size: the windows that
join pages up), i.e. what the re-reads cost, also as a share of the walk's other requests.

    .venv/bin/python benchmarks/bench_walk_deletions.py [--seeds 20] [--per-page 12]
"""

from __future__ import annotations

import argparse
import asyncio
import math
from collections import Counter
from urllib.parse import parse_qs

import callscaler_async as cs
from callscaler_async.testing import FakeCallScaler

CALLS = 250


async def walk(
    seed: int, deletes: int, inserts: int, per_page: int, concurrency: int, use_pages: bool
) -> tuple[int, int, str, int, int]:
    async with (
        FakeCallScaler(calls=CALLS, seed=seed, rate_limit=1_000_000) as fake,
        cs.CallScaler(
            fake.api_key,
            base_url=fake.base_url,
            rate_limit=cs.RateLimit(1_000_000, 60.0),
            business=f"walk-{seed}-{deletes}-{inserts}-{concurrency}-{use_pages}",
        ) as client,
    ):
        original = {c["id"] for c in fake.calls_data}
        fake.faults.delete_calls_per_list_request = deletes
        fake.faults.insert_calls_per_list_request = inserts
        got: list[str] = []
        outcome = "complete"
        pager = client.calls.list(per_page=per_page, concurrency=concurrency)
        try:
            if use_pages:
                async for page in pager.pages():
                    got.extend(str(c.id) for c in page.items)
            else:
                async for call in pager:
                    got.append(str(call.id))
        except cs.CallScalerError as exc:
            outcome = type(exc).__name__
        surviving = original & {c["id"] for c in fake.calls_data}
        missed = len(surviving - set(got))
        dupes = sum(n - 1 for n in Counter(got).values() if n > 1)
        # Re-reads: requests at another page size, or for a page of the walk's size again.
        asked: set[tuple[str, str]] = set()
        rereads = 0
        for record in fake.stats.log:
            query = parse_qs(record.query)
            key = (query.get("page", ["1"])[0], query.get("per_page", ["25"])[0])
            if key[1] != str(per_page) or key in asked:
                rereads += 1
            asked.add(key)
        return missed, dupes, outcome, fake.stats.requests, rereads


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--per-page", type=int, default=12)
    args = parser.parse_args()
    base = math.ceil(CALLS / args.per_page)
    print(
        f"{CALLS} calls, per_page {args.per_page}, {args.seeds} seeds per row; "
        f"a walk of the unchanged list takes {base} requests"
    )
    print(
        f"{'deletes/req':>11} {'inserts/req':>11} {'conc':>4} {'api':>6} "
        f"{'missed':>6} {'dupes':>5} {'errors':>6} {'requests/walk':>13} "
        f"{'re-reads/walk':>13} {'extra':>6}"
    )
    for deletes in (1, 3):
        for inserts in (0, 1):
            for concurrency in (1, 8):
                for use_pages in (False, True):
                    missed = dupes = errors = requests = rereads = 0
                    for seed in range(args.seeds):
                        m, d, outcome, r, rr = await walk(
                            seed, deletes, inserts, args.per_page, concurrency, use_pages
                        )
                        missed += m
                        dupes += d
                        errors += outcome != "complete"
                        requests += r
                        rereads += rr
                    mean = requests / args.seeds
                    extra = rereads / args.seeds
                    print(
                        f"{deletes:>11} {inserts:>11} {concurrency:>4} "
                        f"{'pages' if use_pages else 'items':>6} {missed:>6} {dupes:>5} "
                        f"{errors:>6} {mean:>13.1f} {extra:>13.1f} "
                        f"{extra / (mean - extra):>+6.0%}"
                    )


if __name__ == "__main__":
    asyncio.run(main())
