"""A dlt source: CallScaler calls, numbers and call flows into any dlt destination.

``pip install "callscaler-async[dlt]"``, then::

    import dlt
    from callscaler_async.contrib.dlt import callscaler_source

    pipeline = dlt.pipeline("callscaler", destination="duckdb", dataset_name="callscaler")
    pipeline.run(callscaler_source(since=datetime.date(2026, 1, 1)))   # key: dlt secrets

Resources:

- ``calls``: incremental, ``primary_key="id"``, ``write_disposition="merge"``. Each run is one
  ``client.calls.sync()``: its ``until`` is pinned when the run starts, and its exactly-once
  windows (split on drift, ids already delivered skipped) are what this resource yields.
  The pinned ``until`` is kept in dlt's own resource state, which dlt commits with the load
  package that holds the rows, so the next run continues from it (``since`` = the previous
  ``until``; that second is walked twice and merged by ``id``). A run that fails before its
  package is loaded leaves the state as it was: the next run walks the same range again.
- ``numbers`` and ``call_flows``: the current lists, ``write_disposition="replace"``
  (``call_flows__steps`` holds each flow's steps).

Every request goes through the SDK's client, so through the business's rate gate: the three
resources run on dlt's event loop and share one gate (one business, one budget).

Column types (``CALL_HINTS``): ``started_at``/``created_at`` are timestamps (UTC), money is
integer cents (``cost_cents``, ``value_cents``: ``bigint``), ids and enums are text,
``qualified``/``has_transcription`` booleans, ``duration_seconds`` a ``bigint``, ``ai_score``
a ``double``. ``numbers.monthly_cost_cents`` is integer cents too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Mapping
from operator import attrgetter
from typing import Any, Final

import attrs
import dlt
from dlt.common.schema.typing import TColumnSchema
from dlt.sources import DltResource

from .._client import CallScaler
from .._convert import encode, format_timestamp, parse_timestamp
from ..models import Call
from ..sync._sqlite import CALL_COLUMNS

__all__ = ["CALL_HINTS", "call_record", "callscaler_source"]

_DLT_TYPES: Final = {
    "UUID": "text", "CallStatus": "text", "CallDirection": "text", "datetime": "timestamp",
    "str": "text", "int": "bigint", "bool": "bool", "float": "double", "Money": "bigint",
}  # fmt: skip
_FIELDS: Final[tuple[attrs.Attribute[Any], ...]] = tuple(attrs.fields(Call))
_NAMES: Final = tuple(name for name, _ in CALL_COLUMNS)  # the API's names: cost -> cost_cents
_REQUIRED: Final = frozenset({"id", "status", "started_at"})

#: dlt column hints for the ``calls`` table (every column declared, so that a column that is
#: null in a whole load still gets its type).
CALL_HINTS: Final[dict[str, TColumnSchema]] = {
    name: {
        "data_type": _DLT_TYPES[str(field.type).removesuffix(" | None")],  # type: ignore[typeddict-item]
        "nullable": name not in _REQUIRED,
    }
    for name, field in zip(_NAMES, _FIELDS, strict=True)
}


_TO_DLT: Final[dict[str, Callable[[Any], Any]]] = {
    "UUID": str, "CallStatus": attrgetter("value"), "CallDirection": attrgetter("value"),
    "Money": attrgetter("cents"),
}  # fmt: skip
_SPEC: Final = tuple(
    (name, field.name, _TO_DLT.get(str(field.type).removesuffix(" | None")))
    for name, field in zip(_NAMES, _FIELDS, strict=True)
)


def call_record(call: Call) -> dict[str, Any]:
    """One row of ``calls``: the ``CALL_COLUMNS`` names, times as aware UTC datetimes."""
    row: dict[str, Any] = {}
    for name, attr, convert in _SPEC:
        value = getattr(call, attr)
        row[name] = convert(value) if convert is not None and value is not None else value
    return row


def _encoded(model: Any) -> dict[str, Any]:
    row: dict[str, Any] = encode(model)  # the API's own JSON shape (money as *_cents)
    return row


@dlt.source(name="callscaler")
def callscaler_source(
    api_key: str = dlt.secrets.value,
    since: dt.datetime | dt.date = dlt.config.value,
    base_url: str | None = None,
    window_days: int = 7,
    concurrency: int = 8,
    client_options: Mapping[str, Any] | None = None,
) -> tuple[DltResource, ...]:
    """Calls (incremental), numbers and call flows of the business of ``api_key``.

    ``since`` is where the first run starts; later runs continue from the ``until`` the
    previous run pinned (kept in dlt's state). ``client_options`` go to ``CallScaler``
    (``rate_limit=``, ``business=``, ``rate_limiter=`` for a gate shared through Redis...).
    """
    options = dict(client_options or {})

    def client() -> CallScaler:
        return CallScaler(api_key, base_url=base_url, **options)

    @dlt.resource(name="calls", primary_key="id", write_disposition="merge", columns=CALL_HINTS)
    async def calls() -> AsyncIterator[list[dict[str, Any]]]:
        state = dlt.current.resource_state()
        previous = state.get("until")
        start = parse_timestamp(previous) if previous else since
        async with client() as cs:
            job = cs.calls.sync(
                since=start, window=dt.timedelta(days=window_days), concurrency=concurrency
            )
            async for _, batch, _ in job.batches():
                if batch:
                    yield [call_record(call) for call in batch]
        # Only once every window was walked: a run that fails keeps the previous `until`.
        state["until"] = format_timestamp(job.until)
        state["since"] = format_timestamp(job.since)

    @dlt.resource(
        name="numbers", primary_key="id", write_disposition="replace",
        columns={"created_at": {"data_type": "timestamp"},
                 "monthly_cost_cents": {"data_type": "bigint"}},
    )  # fmt: skip
    async def numbers() -> AsyncIterator[list[dict[str, Any]]]:
        async with client() as cs:
            async for page in cs.numbers.list().pages():
                yield [_encoded(n) for n in page.items]

    @dlt.resource(
        name="call_flows", primary_key="id", write_disposition="replace",
        columns={"created_at": {"data_type": "timestamp"},
                 "updated_at": {"data_type": "timestamp"}},
    )  # fmt: skip
    async def call_flows() -> AsyncIterator[list[dict[str, Any]]]:
        async with client() as cs:
            async for page in cs.call_flows.list().pages():
                yield [_encoded(f) for f in page.items]

    return calls, numbers, call_flows
