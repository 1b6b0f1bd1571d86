"""Decoding: a page of 100 calls (the fake API's own JSON bytes) into typed objects.

Side by side, records per second (best of ``--repeat`` timings of ``--number`` pages each):

  sdk            ``orjson.loads`` + envelope unwrap + ``decode_list(..., Call)``: the fast path
                 the SDK takes for every page (attrs ``Call``: UUIDs, aware datetimes, open
                 enums, ``Money`` from ``*_cents``, JSON types checked, never coerced)
  sdk detailed   the cattrs detailed converter alone: what runs only after the fast path
                 failed, to name the JSON path of the bad value (for reference)
  pydantic v2    ``Envelope.model_validate_json(body)`` of an equivalent model (UUID,
                 datetime, Enum, ``int`` cents): parses and validates in Rust
  msgspec        ``msgspec.json.decode(body, type=Envelope)`` with an equivalent Struct
  orjson only    ``orjson.loads`` to plain dicts, no types: the floor

pydantic and msgspec are benchmark-only (``pip install callscaler-async[bench]``); neither
is a dependency of the SDK. Target: sdk >= 0.5x pydantic v2.

    python benchmarks/bench_decode.py [--number 200] [--repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import sys
import timeit
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
import msgspec
import orjson
import pydantic

from callscaler_async import Call
from callscaler_async._convert import _detailed_converter, decode_list
from callscaler_async._transport import unwrap_envelope
from callscaler_async.testing import FakeCallScaler

PER_PAGE = 100


async def fetch_page() -> bytes:
    """One ``GET calls?per_page=100`` answer of the fake API, as it arrives on the wire."""
    async with (
        FakeCallScaler(calls=500) as fake,
        aiohttp.ClientSession() as session,
        session.get(
            f"{fake.base_url}calls",
            params={"per_page": str(PER_PAGE)},
            headers={"Authorization": f"Bearer {fake.api_key}"},
        ) as resp,
    ):
        resp.raise_for_status()
        return await resp.read()


# -- pydantic v2: the same shape ------------------------------------------------------------


class Status(enum.StrEnum):
    ANSWERED = "answered"
    MISSED = "missed"
    VOICEMAIL = "voicemail"
    COMPLETED = "completed"
    NO_ANSWER = "no-answer"
    BUSY = "busy"
    FAILED = "failed"


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class PCall(pydantic.BaseModel):
    id: uuid.UUID
    status: Status
    started_at: datetime
    number_id: uuid.UUID | None = None
    call_flow_id: uuid.UUID | None = None
    call_flow_name: str | None = None
    tracking_number: str | None = None
    caller_number: str | None = None
    caller_name: str | None = None
    caller_city: str | None = None
    caller_state: str | None = None
    destination_number: str | None = None
    direction: Direction | None = None
    duration_seconds: int | None = None
    recording_url: str | None = None
    has_transcription: bool | None = None
    source: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    gclid: str | None = None
    landing_page_url: str | None = None
    qualified: bool | None = None
    ai_score: float | None = None
    ai_category: str | None = None
    cost_cents: int | None = None
    value_cents: int | None = None
    created_at: datetime | None = None


class PPage(pydantic.BaseModel):
    calls: list[PCall]
    total: int


class PEnvelope(pydantic.BaseModel):
    data: PPage


# -- msgspec: the same shape ----------------------------------------------------------------


class MCall(msgspec.Struct):
    id: uuid.UUID
    status: Status
    started_at: datetime
    number_id: uuid.UUID | None = None
    call_flow_id: uuid.UUID | None = None
    call_flow_name: str | None = None
    tracking_number: str | None = None
    caller_number: str | None = None
    caller_name: str | None = None
    caller_city: str | None = None
    caller_state: str | None = None
    destination_number: str | None = None
    direction: Direction | None = None
    duration_seconds: int | None = None
    recording_url: str | None = None
    has_transcription: bool | None = None
    source: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    gclid: str | None = None
    landing_page_url: str | None = None
    qualified: bool | None = None
    ai_score: float | None = None
    ai_category: str | None = None
    cost_cents: int | None = None
    value_cents: int | None = None
    created_at: datetime | None = None


class MPage(msgspec.Struct):
    calls: list[MCall]
    total: int


class MEnvelope(msgspec.Struct):
    data: MPage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200, help="pages per timing")
    parser.add_argument("--repeat", type=int, default=7, help="timings (the best counts)")
    args = parser.parse_args()

    body = asyncio.run(fetch_page())

    def sdk() -> list[Call]:
        payload, path = unwrap_envelope(orjson.loads(body))
        return decode_list(payload["calls"], Call, path=f"{path}.calls")

    def sdk_detailed() -> list[Call]:
        payload, _ = unwrap_envelope(orjson.loads(body))
        return _detailed_converter().structure(payload["calls"], list[Call])

    def with_pydantic() -> list[PCall]:
        return PEnvelope.model_validate_json(body).data.calls

    decoder = msgspec.json.Decoder(MEnvelope)

    def with_msgspec() -> list[MCall]:
        return decoder.decode(body).data.calls

    def orjson_only() -> list[Any]:
        return orjson.loads(body)["data"]["calls"]  # type: ignore[no-any-return]

    # All decode the same page the same way.
    calls, pcalls, mcalls = sdk(), with_pydantic(), with_msgspec()
    assert len(calls) == len(pcalls) == len(mcalls) == PER_PAGE
    assert sdk_detailed() == calls
    for c, p, m in zip(calls, pcalls, mcalls, strict=True):
        assert c.id == p.id == m.id and c.started_at == p.started_at == m.started_at
        assert c.status.value == p.status.value == m.status.value
        assert (c.cost.cents if c.cost is not None else None) == p.cost_cents == m.cost_cents

    contenders: list[tuple[str, Callable[[], Any]]] = [
        ("sdk (orjson + fast decode_list)", sdk),
        ("sdk detailed (cattrs, error path)", sdk_detailed),
        ("pydantic v2 model_validate_json", with_pydantic),
        ("msgspec json.decode(type=...)", with_msgspec),
        ("orjson.loads only (plain dicts)", orjson_only),
    ]
    rates: dict[str, float] = {}
    for name, fn in contenders:
        best = min(timeit.repeat(fn, number=args.number, repeat=args.repeat)) / args.number
        rates[name] = PER_PAGE / best
    ref = rates["pydantic v2 model_validate_json"]
    sdk_rate = rates["sdk (orjson + fast decode_list)"]

    print(f"decode: a page of {PER_PAGE} calls ({len(body):,} bytes), best of {args.repeat} x "
          f"{args.number} pages, Python {sys.version.split()[0]}, pydantic {pydantic.VERSION}, "
          f"msgspec {msgspec.__version__}")  # fmt: skip
    header = f"{'decoder':<34} | {'records/s':>11} | {'µs/record':>9} | {'vs pydantic':>11}"
    print(header)
    print("-" * len(header))
    for name, rate in rates.items():
        print(f"{name:<34} | {rate:>11,.0f} | {1e6 / rate:>9.2f} | {rate / ref:>10.2f}x")
    verdict = "met" if sdk_rate >= 0.5 * ref else "MISSED"
    print(f"target sdk >= 0.50x pydantic v2: {verdict} ({sdk_rate / ref:.2f}x)")


if __name__ == "__main__":
    main()
