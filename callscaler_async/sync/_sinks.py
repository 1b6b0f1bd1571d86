"""Where synced calls go: JSON Lines, CSV, or any ``async def sink(batch)``.

A sink is told the state saved in the last checkpoint when it opens, writes batches, and
reports its state after each batch; the sync saves that state in the checkpoint only after
``write`` returned. The file sinks flush and fsync each batch, record the file length and a
SHA-256 of its content, and on resume refuse a file that is missing, shorter or different
(``SyncOutputError``), then cut it back to the length of the last acknowledged batch, so a
crash in the middle of a write leaves no half-written or duplicated line behind.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from .._convert import encode
from ..models import Call
from ._checkpoint import SyncOutputError, in_thread_to_end

__all__ = ["CSVSink", "CallableSink", "JSONLinesSink", "Sink", "as_sink", "check_output"]

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


def check_output(path: Path, state: dict[str, Any]) -> int:
    """That ``path`` still holds what a checkpoint's sink state says was written to it.

    Returns the acknowledged length; raises ``SyncOutputError`` when the file is missing,
    shorter than that length, or its first that-many bytes differ from what was written
    (their SHA-256 is in the state). A longer file is fine: the part after the acknowledged
    length is a batch written just before a crash, which a resume cuts off and redelivers.
    """
    saved = state.get("offset")
    if not isinstance(saved, int) or saved < 0:
        raise SyncOutputError(f"the checkpoint has no usable length for {path}")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise SyncOutputError(
            f"{path} is missing, but the checkpoint counts {saved} bytes of calls in it"
        ) from None
    if size < saved:
        raise SyncOutputError(
            f"{path} is shorter ({size} bytes) than the checkpoint says ({saved}); "
            "it was changed outside the sync"
        )
    digest = state.get("sha256")
    if isinstance(digest, str) and _digest_of(path, saved).hexdigest() != digest:
        raise SyncOutputError(
            f"{path} differs from what the sync wrote to it (its first {saved} bytes changed)"
        )
    return saved


def _digest_of(path: Path, length: int) -> Any:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        left = length
        while left > 0:
            block = handle.read(min(left, 1 << 20))
            if not block:
                break
            digest.update(block)
            left -= len(block)
    return digest


class _FileSink:
    """Shared by the file sinks: append, fsync, remember the length, truncate on resume.

    A new sync creates (or replaces) the file only when it has something to put in it: the
    first batch, or the first window found empty. A sync that fails before that, e.g. on its
    first connection, leaves no empty file behind and an existing file untouched.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: IO[bytes] | None = None
        self._offset = 0
        self._digest = hashlib.sha256()
        self._pending_create = False
        self.written = 0

    async def open(self, state: dict[str, Any] | None) -> None:
        if self._file is not None or self._pending_create:
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
        if not state:
            self._pending_create = True
            return
        saved = check_output(self.path, state)
        handle: IO[bytes] = self.path.open("r+b")
        try:
            self._digest = _digest_of(self.path, saved)
            handle.truncate(saved)
            handle.seek(saved)
            self._file, self._offset = handle, saved
        except BaseException:
            # Nothing half-open is left behind: the handle is closed and the sink is closed.
            self._file, self._offset = None, 0
            handle.close()
            raise

    def _create(self) -> None:
        """Create (or replace) the file now that there is something to put in it."""
        if not self._pending_create:
            return
        self._pending_create = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("wb")
        try:
            self._file, self._offset, self._digest = handle, 0, hashlib.sha256()
            header = self._header()
            if header:
                self._append(header)
        except BaseException:
            self._file = None
            handle.close()
            raise

    def _header(self) -> bytes:
        return b""

    def _encode(self, batch: Sequence[Call]) -> bytes:
        raise NotImplementedError

    def _append(self, data: bytes) -> None:
        self._create()
        assert self._file is not None, "sink is not open"
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._offset += len(data)
        self._digest.update(data)

    async def write(self, batch: Sequence[Call]) -> None:
        if not batch:
            return
        data = self._encode(batch)
        await in_thread_to_end(self._append, data)
        self.written += len(batch)

    def state(self) -> dict[str, Any]:
        # Asked after a batch or a finished window: an empty result still gets its file
        # (and a CSV its header row). A small synchronous open, once.
        self._create()
        return {"offset": self._offset, "path": str(self.path), "sha256": self._digest.hexdigest()}

    async def close(self) -> None:
        self._pending_create = False
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
