"""``client.calls``: list, get, transcription, recording download and CSV export."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import aiohttp

from .._convert import CSVRowDecoder, csv_columns
from .._csv import CSVRecords
from .._errors import APIConnectionError, APITimeoutError, ResponseDecodeError
from .._pagination import AsyncPaginator, Page
from .._params import (
    check_per_page,
    format_bool,
    format_choice,
    format_id,
    format_time,
    query,
)
from ..models import Call, CallStatus, Transcription
from ._base import Resource

if TYPE_CHECKING:
    from .._client import CallScaler
    from ..sync import CallSync

__all__ = ["CallExport", "Calls", "Download"]

CallStatusFilter = Literal["answered", "missed", "voicemail"] | CallStatus | str

_CHUNK = 64 * 1024


def call_filters(
    *,
    date_from: dt.datetime | dt.date | None,
    date_to: dt.datetime | dt.date | None,
    status: CallStatusFilter | None,
    number_id: uuid.UUID | str | None,
    call_flow_id: uuid.UUID | str | None,
    qualified: bool | None,
) -> dict[str, str]:
    """The calls list/export/analytics filters, checked and formatted."""
    return query(
        date_from=None if date_from is None else format_time(date_from, name="date_from"),
        date_to=None if date_to is None else format_time(date_to, name="date_to", end_of_day=True),
        status=None if status is None else format_choice(status, name="status"),
        number_id=None if number_id is None else format_id(number_id, name="number_id"),
        call_flow_id=None if call_flow_id is None else format_id(call_flow_id, name="call_flow_id"),
        qualified=None if qualified is None else format_bool(qualified, name="qualified"),
    )


class Calls(Resource):
    """Calls of the business, newest first."""

    def list(
        self,
        *,
        date_from: dt.datetime | dt.date | None = None,
        date_to: dt.datetime | dt.date | None = None,
        status: CallStatusFilter | None = None,
        number_id: uuid.UUID | str | None = None,
        call_flow_id: uuid.UUID | str | None = None,
        qualified: bool | None = None,
        per_page: int = 100,
        page: int = 1,
        max_items: int | None = None,
        concurrency: int = 8,
    ) -> AsyncPaginator[Call]:
        """Calls matching the filters: ``await`` for one page, ``async for`` for all.

        >>> async def answered(client) -> int:
        ...     return sum([1 async for _ in client.calls.list(status="answered")])
        """
        filters = call_filters(
            date_from=date_from,
            date_to=date_to,
            status=status,
            number_id=number_id,
            call_flow_id=call_flow_id,
            qualified=qualified,
        )
        check_per_page(per_page)

        async def fetch(number: int, size: int) -> Page[Call]:
            params = {**filters, "page": str(number), "per_page": str(size)}
            raw = await self._send("GET", "calls", route="calls", params=params)
            payload, path = self._received(raw)
            return self._page(payload, path, "calls", Call, page=number, per_page=size)

        return AsyncPaginator(
            fetch, per_page=per_page, page=page, max_items=max_items, concurrency=concurrency
        )

    async def get(self, call_id: uuid.UUID | str) -> Call:
        """One call by id."""
        cid = format_id(call_id, name="call_id")
        raw = await self._send("GET", f"calls/{cid}", route="calls/{id}")
        payload, path = self._received(raw)
        return self._one(payload, path, "call", Call)

    async def transcription(self, call_id: uuid.UUID | str) -> Transcription:
        """The AI transcription of a call (``NotFoundError`` when it has none)."""
        cid = format_id(call_id, name="call_id")
        raw = await self._send(
            "GET", f"calls/{cid}/transcription", route="calls/{id}/transcription"
        )
        payload, path = self._received(raw)
        return self._one(payload, path, "transcription", Transcription)

    def sync(
        self,
        *,
        since: dt.datetime | dt.date,
        until: dt.datetime | dt.date | None = None,
        window: dt.timedelta | None = None,
        concurrency: int = 8,
        strategy: Literal["auto", "pages", "export"] = "auto",
    ) -> CallSync:
        """Every call of ``[since, until]`` exactly once, fast; ``until`` is pinned now.

        ``async for call in client.calls.sync(since=...)`` or
        ``await client.calls.sync(since=...).run(sink, store=...)`` (checkpointed, resumable).

        ``strategy``: ``"export"`` takes each window in one export request, checked against
        the list's count (a window that does not check out is walked by pages); ``"pages"``
        pages through the list; ``"auto"`` uses the export when its header carries every
        field of ``Call``, else pages (logged at INFO). ``window``: 7 days by pages, 30 days
        with ``export`` or ``auto`` (two requests a window, whatever its size).
        """
        from ..sync import CallSync

        return CallSync(
            self._client, since=since, until=until, window=window, concurrency=concurrency,
            strategy=strategy,
        )  # fmt: skip

    def recording(self, call_id: uuid.UUID | str) -> Download:
        """The call's audio, streamed: ``async for chunk in ...`` or ``await ....save(path)``.

        A redirect to a storage host is followed without the API key.
        """
        cid = format_id(call_id, name="call_id")
        return Download(self._client, f"calls/{cid}/recording", route="calls/{id}/recording")

    def export(
        self,
        *,
        date_from: dt.datetime | dt.date | None = None,
        date_to: dt.datetime | dt.date | None = None,
        status: CallStatusFilter | None = None,
        number_id: uuid.UUID | str | None = None,
        call_flow_id: uuid.UUID | str | None = None,
        qualified: bool | None = None,
    ) -> CallExport:
        """The CSV export of the calls ``list`` would give for the same filters, streamed.

        ``async for row in ...`` gives each row as a ``dict[str, str]`` (the text as sent);
        ``async for call in ....calls()`` gives ``Call`` models. One request per iteration,
        whatever the size; constant memory.

        >>> async def rows(client) -> None:
        ...     async for row in client.calls.export(status="missed"):
        ...         print(row["id"], row["caller_number"])
        ...     async for call in client.calls.export(status="missed").calls():
        ...         print(call.id, call.started_at)
        """
        params = call_filters(
            date_from=date_from,
            date_to=date_to,
            status=status,
            number_id=number_id,
            call_flow_id=call_flow_id,
            qualified=qualified,
        )
        return CallExport(self._client, params)


class CallExport:
    """``GET calls/export`` for some filters; nothing is sent until it is iterated.

    ``async for row in export``: ``dict[str, str]`` rows, the CSV text as sent.
    ``async for call in export.calls()``: ``Call`` models through the same converter as
    ``calls.list``, with the CSV dialect (empty cell = null, ``true``/``false``, integer
    cents, ISO timestamps, UUIDs, unknown enum values kept; unknown columns ignored). A bad
    cell is a ``ResponseDecodeError`` whose ``row`` (1 = the first row after the header) and
    ``column`` say where; a stream that breaks is an ``APIConnectionError``.

    ``header`` is the header row once it arrived; ``missing_columns`` the ``Call`` fields it
    lacks (such fields read as None).
    """

    def __init__(self, client: CallScaler, params: dict[str, str]) -> None:
        self._client = client
        self.params = params
        self.header: tuple[str, ...] | None = None

    @property
    def missing_columns(self) -> tuple[str, ...]:
        if self.header is None:
            return ()
        return tuple(column for column in csv_columns(Call) if column not in self.header)

    def __aiter__(self) -> AsyncIterator[dict[str, str]]:
        return self._dicts()

    async def _dicts(self) -> AsyncIterator[dict[str, str]]:
        async with contextlib.aclosing(self._records()) as records:
            async for batch in records:
                header = self.header or ()
                for _, cells in batch:
                    yield dict(zip(header, cells, strict=False))

    async def calls(self) -> AsyncIterator[Call]:
        """The rows as ``Call`` models, in the order the server sent them."""
        async with contextlib.aclosing(self.call_batches()) as batches:
            async for batch in batches:
                for call in batch:
                    yield call

    async def call_batches(
        self, on_header: Callable[[tuple[str, ...]], None] | None = None
    ) -> AsyncGenerator[list[Call], None]:
        """The models as they arrive, one list per chunk read (possibly empty).

        ``on_header`` sees the header row before any row is decoded; what it raises ends the
        export there (the rest of the body is never read).
        """
        decoder: CSVRowDecoder | None = None
        async with contextlib.aclosing(self._records(on_header)) as records:
            async for batch in records:
                if decoder is None:
                    decoder = CSVRowDecoder(self.header or (), Call)
                yield [decoder(cells, number) for number, cells in batch]

    async def _records(
        self, on_header: Callable[[tuple[str, ...]], None] | None = None
    ) -> AsyncGenerator[list[tuple[int, list[str]]], None]:
        """``(row number, cells)`` of the rows after the header, a list per chunk read."""
        self.header = None
        download = Download(self._client, "calls/export", route="calls/export", params=self.params)
        stream = CSVRecords()
        number = 0

        def numbered(records: list[list[str]]) -> list[tuple[int, list[str]]]:
            nonlocal number
            if self.header is None and records:
                self.header = tuple(records[0])
                records = records[1:]
                if on_header is not None:
                    on_header(self.header)
            out = []
            for cells in records:
                number += 1
                out.append((number, cells))
            return out

        async with contextlib.aclosing(download._chunks()) as chunks:
            async for chunk in chunks:
                rows = numbered(stream.feed(chunk))
                if self.header is not None:  # nothing before the whole header line arrived
                    yield rows
        last = numbered(stream.finish())
        if stream.unterminated:
            raise ResponseDecodeError(
                "the export ended inside a quoted cell",
                path=f"row {number}",
                model="Call",
                row=number,
            )
        if self.header is None:
            numbered([[]])  # an empty body: no header, no rows
        yield last


class Download:
    """A streamed binary download; nothing is read until iterated or saved."""

    def __init__(
        self,
        client: CallScaler,
        path: str,
        *,
        route: str,
        params: dict[str, str] | None = None,
    ) -> None:
        self._client = client
        self._path = path
        self._route = route
        self._params = params
        self.content_type: str | None = None
        self.content_length: int | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncGenerator[bytes, None]:
        transport = self._client._transport
        async with transport.stream(
            "GET", self._path, options=self._client._options, params=self._params, route=self._route
        ) as resp:
            self.content_type = resp.content_type
            self.content_length = resp.content_length
            # A body that breaks after the headers is a connection error like any other (the
            # transport retries only before the body starts).
            try:
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    yield chunk
            except TimeoutError as exc:
                raise APITimeoutError(
                    f"no data for {self._client._options.timeout} s in the body of GET "
                    f"{self._route}", method="GET", url=self._route,
                ) from exc  # fmt: skip
            except aiohttp.ClientError as exc:
                raise APIConnectionError(
                    f"the body of GET {self._route} broke off: {type(exc).__name__}",
                    method="GET", url=self._route,
                ) from exc  # fmt: skip

    async def save(self, destination: str | os.PathLike[str]) -> int:
        """Write the body to ``destination``; returns the bytes written.

        Written to a temporary file beside it and renamed at the end, so a failed download
        never leaves a partial file behind.
        """
        target = Path(destination)
        fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
        written = 0
        try:
            with os.fdopen(fd, "wb") as handle:
                async for chunk in self:
                    handle.write(chunk)
                    written += len(chunk)
            if self.content_length is not None and written != self.content_length:
                raise OSError(
                    f"download of {self._route} ended after {written} of "
                    f"{self.content_length} bytes"
                )
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        return written
