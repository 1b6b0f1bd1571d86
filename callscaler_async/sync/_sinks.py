"""Where synced calls go: JSON Lines, CSV, or any ``async def sink(batch)``.

A sink is told the state saved in the last checkpoint when it opens, writes batches, and
reports its state after each batch; the sync saves that state in the checkpoint only after
``write`` returned. The file sinks flush and fsync each batch, record the file length, and on
resume cut the file back to the length of the last acknowledged batch, so a crash in the
middle of a write leaves no half-written or duplicated line behind.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from .._convert import encode
from ..models import Call
from ._checkpoint import in_thread_to_end

__all__ = ["CSVSink", "CallableSink", "JSONLinesSink", "Sink", "as_sink"]

logger = logging.getLogger("callscaler_async.sync")


class Sink(Protocol):
    async def open(self, state: dict[str, Any] | None) -> None:
        """Start, or resume from the state of the last checkpoint (None: a new sync)."""
        ...

    async def write(self, batch: Sequence[Call]) -> None:
        """Persist a batch; return only when it is durable."""
        ...

    def state(self) -> dict[str, Any]:
        """What the checkpoint must remember to resume after the last written batch."""
        ...

    async def close(self) -> None:
        """Release the sink. Called once the sync ends, however it ends: also when ``open``
        raised or was cancelled, so it must cope with a sink that is not (fully) open."""
        ...


class _FileSink:
    """Shared by the file sinks: append, fsync, remember the length, truncate on resume."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: IO[bytes] | None = None
        self._offset = 0
        self.written = 0

    async def open(self, state: dict[str, Any] | None) -> None:
        if self._file is not None:
            raise RuntimeError(f"sink {self.path} is already open")
        try:
            await in_thread_to_end(self._open, state)
        except BaseException:
            # Cancelled while the thread was opening the file: in_thread_to_end waited for the
            # thread, so the handle is in self._file by now; close it before passing the
            # cancellation on. (If _open itself failed, it closed the handle: a no-op here.)
            # A failure of this cleanup is logged, never raised over the original error.
            try:
                await self.close()
            except Exception:
                logger.exception("closing %s after an interrupted open failed", self.path)
            raise

    def _open(self, state: dict[str, Any] | None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        saved = state.get("offset") if state else None
        resume = isinstance(saved, int) and saved >= 0 and self.path.exists()
        handle: IO[bytes] = self.path.open("r+b" if resume else "wb")
        try:
            offset = 0
            if resume and isinstance(saved, int):
                size = handle.seek(0, io.SEEK_END)
                if size < saved:
                    raise OSError(
                        f"{self.path} is shorter ({size} bytes) than the checkpoint says "
                        f"({saved}); it was changed outside the sync: start a new sync"
                    )
                handle.truncate(saved)
                handle.seek(saved)
                offset = saved
            self._file, self._offset = handle, offset
            if offset == 0:
                header = self._header()
                if header:
                    self._append(header)
        except BaseException:
            # Nothing half-open is left behind: the handle is closed and the sink is closed.
            self._file, self._offset = None, 0
            handle.close()
            raise

    def _header(self) -> bytes:
        return b""

    def _encode(self, batch: Sequence[Call]) -> bytes:
        raise NotImplementedError

    def _append(self, data: bytes) -> None:
        assert self._file is not None, "sink is not open"
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._offset += len(data)

    async def write(self, batch: Sequence[Call]) -> None:
        if not batch:
            return
        data = self._encode(batch)
        await in_thread_to_end(self._append, data)
        self.written += len(batch)

    def state(self) -> dict[str, Any]:
        return {"offset": self._offset, "path": str(self.path)}

    async def close(self) -> None:
        if self._file is not None:
            handle, self._file = self._file, None
            # Runs to the end even if the caller is cancelled: the handle is always closed.
            await in_thread_to_end(handle.close)


class JSONLinesSink(_FileSink):
    """One JSON object per line, in the API's own field names (``cost_cents``...)."""

    def _encode(self, batch: Sequence[Call]) -> bytes:
        return b"".join(orjson.dumps(encode(call)) + b"\n" for call in batch)


CSV_FIELDS: tuple[str, ...] = (
    "id", "started_at", "created_at", "status", "direction", "duration_seconds",
    "tracking_number", "caller_number", "caller_name", "caller_city", "caller_state",
    "destination_number", "number_id", "call_flow_id", "call_flow_name", "source",
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "gclid",
    "landing_page_url", "qualified", "ai_score", "ai_category", "cost_cents", "value_cents",
    "has_transcription", "recording_url",
)  # fmt: skip


class CSVSink(_FileSink):
    """A CSV file with a header row; ``None`` is an empty cell, booleans are true/false."""

    def _header(self) -> bytes:
        return self._rows([dict(zip(CSV_FIELDS, CSV_FIELDS, strict=True))])

    @staticmethod
    def _rows(rows: list[dict[str, Any]]) -> bytes:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writerows(rows)
        return buffer.getvalue().encode()

    def _encode(self, batch: Sequence[Call]) -> bytes:
        rows = []
        for call in batch:
            row = encode(call)
            for key, value in row.items():
                if isinstance(value, bool):
                    row[key] = "true" if value else "false"
                elif value is None:
                    row[key] = ""
            rows.append(row)
        return self._rows(rows)


class CallableSink:
    """Wraps ``async def sink(batch: list[Call]) -> None`` (a CRM upsert, a queue...).

    Delivery to a callable is at-least-once across a crash that falls between the callable
    returning and the checkpoint being saved: make it idempotent (upsert by ``call.id``).
    """

    def __init__(self, func: Callable[[list[Call]], Awaitable[None]]) -> None:
        self.func = func
        self.written = 0

    async def open(self, state: dict[str, Any] | None) -> None:
        return None

    async def write(self, batch: Sequence[Call]) -> None:
        if batch:
            await self.func(list(batch))
            self.written += len(batch)

    def state(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        return None


def as_sink(target: Sink | Callable[[list[Call]], Awaitable[None]]) -> Sink:
    """A sink as given, or an async callable wrapped in ``CallableSink``."""
    if hasattr(target, "write") and hasattr(target, "open"):
        return target  # type: ignore[return-value]
    if callable(target):
        return CallableSink(target)
    raise TypeError(f"a sink must be a Sink or an async callable, got {target!r}")
