"""``client.calls``: list, get, transcription, recording download and CSV export."""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import os
import tempfile
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

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

__all__ = ["Calls", "Download"]

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
        window: dt.timedelta = dt.timedelta(days=7),
        concurrency: int = 8,
    ) -> CallSync:
        """Every call of ``[since, until]`` exactly once, fast; ``until`` is pinned now.

        ``async for call in client.calls.sync(since=...)`` or
        ``await client.calls.sync(since=...).run(sink, store=...)`` (checkpointed, resumable).
        """
        from ..sync import CallSync

        return CallSync(
            self._client, since=since, until=until, window=window, concurrency=concurrency
        )

    def recording(self, call_id: uuid.UUID | str) -> Download:
        """The call's audio, streamed: ``async for chunk in ...`` or ``await ....save(path)``.

        A redirect to a storage host is followed without the API key.
        """
        cid = format_id(call_id, name="call_id")
        return Download(self._client, f"calls/{cid}/recording", route="calls/{id}/recording")

    async def export(
        self,
        *,
        date_from: dt.datetime | dt.date | None = None,
        date_to: dt.datetime | dt.date | None = None,
        status: CallStatusFilter | None = None,
        number_id: uuid.UUID | str | None = None,
        call_flow_id: uuid.UUID | str | None = None,
        qualified: bool | None = None,
    ) -> AsyncIterator[dict[str, str]]:
        """The CSV export, parsed row by row as it streams (any size, constant memory).

        >>> async def rows(client) -> None:
        ...     async for row in client.calls.export(status="missed"):
        ...         print(row["id"], row["caller_number"])
        """
        params = call_filters(
            date_from=date_from,
            date_to=date_to,
            status=status,
            number_id=number_id,
            call_flow_id=call_flow_id,
            qualified=qualified,
        )
        download = Download(self._client, "calls/export", route="calls/export", params=params)
        async for row in _csv_rows(download):
            yield row


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

    async def _chunks(self) -> AsyncIterator[bytes]:
        transport = self._client._transport
        async with transport.stream(
            "GET", self._path, options=self._client._options, params=self._params, route=self._route
        ) as resp:
            self.content_type = resp.content_type
            self.content_length = resp.content_length
            async for chunk in resp.content.iter_chunked(_CHUNK):
                yield chunk

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


class _LineFeed(Iterator[str]):
    """Lines handed to ``csv.reader`` only when they form complete records."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque()

    def __next__(self) -> str:
        if not self.lines:
            raise StopIteration
        return self.lines.popleft()


async def _csv_rows(download: Download) -> AsyncIterator[dict[str, str]]:
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    feed = _LineFeed()
    reader = csv.reader(feed)
    header: list[str] | None = None
    pending = ""  # text of an unfinished line
    record: list[str] = []  # lines of a record whose quotes are still open
    quotes = 0

    def rows_from(lines: list[str]) -> Iterator[list[str]]:
        nonlocal quotes
        for line in lines:
            record.append(line)
            quotes += line.count('"')
            if quotes % 2 == 0:
                feed.lines.extend(record)
                record.clear()
                quotes = 0
                yield from reader

    async for chunk in download:
        text = pending + decoder.decode(chunk)
        lines = text.splitlines(keepends=True)
        pending = lines.pop() if lines and not lines[-1].endswith(("\n", "\r")) else ""
        for row in rows_from(lines):
            if header is None:
                header = row
            elif row:
                yield dict(zip(header, row, strict=False))
    tail = pending + decoder.decode(b"", final=True)
    for row in rows_from([tail] if tail else []):
        if header is None:
            header = row
        elif row:
            yield dict(zip(header, row, strict=False))
    if record:
        feed.lines.extend(record)
        for row in reader:
            if header is not None and row:
                yield dict(zip(header, row, strict=False))
