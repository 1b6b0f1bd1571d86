"""Memory: bytes per decoded ``Call`` (slotted attrs) vs a plain dict of the same payload.

10,000 calls of the fake API (100 pages of 100, the fake's own JSON bytes) are decoded two
ways while ``tracemalloc`` counts what stays allocated (the bytes themselves excluded):

  sdk    ``decode_list(orjson.loads(page)["data"]["calls"], Call)``, the dicts then dropped:
         the ``Call`` objects and everything they own (UUIDs, datetimes, Money, strings)
  dict   ``orjson.loads(page)["data"]["calls"]``: the plain dicts (keys are interned by
         orjson, values are str/int/bool/None)

Also shown: the ``Call`` object alone (``sys.getsizeof``) and a dict's shell.

    python benchmarks/bench_memory.py [--calls 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tracemalloc
from typing import Any

import aiohttp
import orjson

from callscaler_async import Call
from callscaler_async._convert import decode_list

PER_PAGE = 100


async def fetch_pages(count: int) -> list[bytes]:
    from callscaler_async.testing import FakeCallScaler

    pages: list[bytes] = []
    async with (
        FakeCallScaler(calls=count, rate_limit=1_000_000) as fake,
        aiohttp.ClientSession() as session,
    ):
        for page in range(1, count // PER_PAGE + 1):
            async with session.get(
                f"{fake.base_url}calls",
                params={"per_page": str(PER_PAGE), "page": str(page)},
                headers={"Authorization": f"Bearer {fake.api_key}"},
            ) as resp:
                resp.raise_for_status()
                pages.append(await resp.read())
    return pages


def retained(build: Any) -> tuple[int, Any]:
    """Bytes still allocated after ``build()`` returned (and what it returned)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    result = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    args = parser.parse_args()
    pages = asyncio.run(fetch_pages(args.calls))
    # Warm up: hooks built, enum members and caches in place before counting.
    decode_list(orjson.loads(pages[0])["data"]["calls"], Call)

    def sdk() -> list[Call]:
        out: list[Call] = []
        for page in pages:
            out.extend(decode_list(orjson.loads(page)["data"]["calls"], Call))
        return out

    def plain() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in pages:
            out.extend(orjson.loads(page)["data"]["calls"])
        return out

    sdk_bytes, calls = retained(sdk)
    dict_bytes, dicts = retained(plain)
    n = len(calls)
    assert n == len(dicts) == args.calls
    list_bytes = sys.getsizeof(calls)  # the outer list, counted in both: left out
    per_call = (sdk_bytes - list_bytes) / n
    per_dict = (dict_bytes - sys.getsizeof(dicts)) / n

    print(f"memory: {n:,} calls retained (tracemalloc), Python {sys.version.split()[0]}")
    header = f"{'representation':<36} | {'bytes/call':>10} | {'vs dict':>7}"
    print(header)
    print("-" * len(header))
    print(f"{'plain dict (orjson.loads)':<36} | {per_dict:>10,.0f} | {1:>6.2f}x")
    ratio = per_call / per_dict
    print(f"{'Call (slotted attrs, decoded)':<36} | {per_call:>10,.0f} | {ratio:>6.2f}x")
    print(f"  shell only: Call object {sys.getsizeof(calls[0])} bytes, "
          f"dict of {len(dicts[0])} keys {sys.getsizeof(dicts[0])} bytes")  # fmt: skip


if __name__ == "__main__":
    main()
