"""Sync checkpoints: a small serialisable record of progress, and where to keep it.

A checkpoint pins the range (``since``, ``until``: ``until`` is fixed when the sync starts so
calls arriving during the walk cannot shift pages), the date windows it was split into, how
many windows are finished, the ids already delivered from the window in progress, and the
sink's own state (e.g. the byte length of a JSON Lines file at the last acknowledged batch).
It is written only after the sink returned for a batch, atomically (temporary file and
rename for the JSON store, a transaction for SQLite), so a crash at any point loses nothing
and a resume delivers nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import functools
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

import attrs

__all__ = [
    "CheckpointStore",
    "JSONFileStore",
    "MemoryStore",
    "SyncCheckpoint",
    "SyncCheckpointError",
    "SyncOutputError",
]

_VERSION = 1

_P = ParamSpec("_P")
_T = TypeVar("_T")


async def in_thread_to_end(func: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``asyncio.to_thread``, but a cancelled caller still waits for the thread to finish.

    A thread cannot be stopped: without this, a sync cancelled during a checkpoint save or a
    sink write returns while the write goes on, and a resumed sync (or the sink's ``close``)
    could race with it, e.g. an old checkpoint landing after a newer one, or a file the
    thread opens after its caller is gone, which nobody then closes.

    The caller keeps waiting however many times it is cancelled, and the cancellation is
    raised once the thread has finished (its result or error is then dropped). The price: a
    thread that hangs (a stuck network filesystem) makes its caller uncancellable until it
    returns; the threads here only do local file and SQLite work.
    """
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
    # A plain executor future, not a task (``asyncio.to_thread`` wraps one in a task):
    # ``asyncio.run`` and test runners cancel every pending *task* at shutdown, and a
    # cancelled wrapper would let the thread finish unobserved.
    future = loop.run_in_executor(None, call)
    cancelled: asyncio.CancelledError | None = None
    while not future.done():
        try:
            # ``wait`` leaves the future alone when the caller is cancelled (``await future``
            # would cancel it, and the thread would go on unobserved).
            await asyncio.wait((future,))
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
    if cancelled is not None:
        if not future.cancelled():
            future.exception()  # retrieved: no "exception was never retrieved" log
        raise cancelled
    return future.result()


class SyncCheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, of another version, or another range."""


class SyncOutputError(SyncCheckpointError):
    """The output a checkpoint describes is missing, shorter or different from what the
    sync wrote: resuming would report calls as delivered that the file does not hold."""


def _ts(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_ts(value: Any, field: str) -> dt.datetime:
    if not isinstance(value, str):
        raise SyncCheckpointError(f"checkpoint field {field!r} must be a timestamp string")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise SyncCheckpointError(
            f"checkpoint field {field!r} is not ISO 8601: {value!r}"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@attrs.define
class SyncCheckpoint:
    """Progress of one sync of one business."""

    business: str
    since: dt.datetime
    until: dt.datetime
    window_seconds: int
    windows_done: int = 0  # windows [0, windows_done) are fully delivered
    window_ids: list[str] = attrs.Factory(list)  # ids delivered from window windows_done
    delivered: int = 0
    high_water_mark: dt.datetime | None = None  # latest started_at delivered
    sink_state: dict[str, Any] = attrs.Factory(dict)
    finished: bool = False
    # Where the output's first sync began, when this one continues it from a finished sync's
    # ``until`` (an incremental run appending to the same output); None: ``since``.
    first_since: dt.datetime | None = None

    @property
    def window_count(self) -> int:
        # The range is inclusive of ``until``: windows cover [since, until + 1 s).
        span = int((self.until - self.since).total_seconds()) + 1
        return max(1, -(-span // self.window_seconds))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _VERSION,
            "business": self.business,
            "since": _ts(self.since),
            "until": _ts(self.until),
            "window_seconds": self.window_seconds,
            "windows_done": self.windows_done,
            "window_ids": list(self.window_ids),
            "delivered": self.delivered,
            "high_water_mark": _ts(self.high_water_mark) if self.high_water_mark else None,
            "sink_state": self.sink_state,
            "finished": self.finished,
            "first_since": _ts(self.first_since) if self.first_since else None,
        }

    @classmethod
    def from_json(cls, data: Any) -> SyncCheckpoint:
        if not isinstance(data, dict):
            raise SyncCheckpointError("a checkpoint must be a JSON object")
        if data.get("version") != _VERSION:
            raise SyncCheckpointError(
                f"checkpoint version {data.get('version')!r} is not {_VERSION}; start a new sync"
            )
        try:
            hwm = data.get("high_water_mark")
            checkpoint = cls(
                business=str(data["business"]),
                since=_parse_ts(data["since"], "since"),
                until=_parse_ts(data["until"], "until"),
                window_seconds=int(data["window_seconds"]),
                windows_done=int(data["windows_done"]),
                window_ids=[str(i) for i in data.get("window_ids", [])],
                delivered=int(data.get("delivered", 0)),
                high_water_mark=_parse_ts(hwm, "high_water_mark") if hwm else None,
                sink_state=dict(data.get("sink_state") or {}),
                finished=bool(data.get("finished", False)),
                first_since=(
                    _parse_ts(data["first_since"], "first_since")
                    if data.get("first_since")
                    else None
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, SyncCheckpointError):
                raise
            raise SyncCheckpointError(f"checkpoint is missing or has a bad field: {exc}") from None
        if checkpoint.window_seconds < 1 or checkpoint.windows_done < 0:
            raise SyncCheckpointError("checkpoint has a bad window_seconds or windows_done")
        return checkpoint


class CheckpointStore(Protocol):
    """Where checkpoints live; ``key`` names one sync (e.g. the business)."""

    async def load(self, key: str) -> SyncCheckpoint | None: ...

    async def save(self, key: str, checkpoint: SyncCheckpoint) -> None: ...

    async def clear(self, key: str) -> None: ...


class MemoryStore:
    """Checkpoints in a dict (tests, or a sync that need not survive the process)."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}
        self.saves = 0

    async def load(self, key: str) -> SyncCheckpoint | None:
        raw = self.data.get(key)
        return SyncCheckpoint.from_json(raw) if raw is not None else None

    async def save(self, key: str, checkpoint: SyncCheckpoint) -> None:
        self.data[key] = json.loads(json.dumps(checkpoint.to_json()))
        self.saves += 1

    async def clear(self, key: str) -> None:
        self.data.pop(key, None)


class JSONFileStore:
    """One JSON file per sync key in ``directory`` (or one ``path`` for a single key).

    Each save writes a temporary file, fsyncs it and renames it over the old one: a crash
    leaves either the old or the new checkpoint, never half of one.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _file(self, key: str) -> Path:
        if self.path.suffix == ".json":
            return self.path
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
        return self.path / f"{safe}.checkpoint.json"

    async def load(self, key: str) -> SyncCheckpoint | None:
        file = self._file(key)
        try:
            text = await asyncio.to_thread(file.read_text, "utf-8")
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SyncCheckpointError(f"checkpoint {file} is not valid JSON: {exc}") from None
        return SyncCheckpoint.from_json(data)

    async def save(self, key: str, checkpoint: SyncCheckpoint) -> None:
        await in_thread_to_end(self._write, self._file(key), checkpoint.to_json())

    @staticmethod
    def _write(file: Path, data: dict[str, Any]) -> None:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{file.name}.", dir=file.parent)
        try:
            handle = os.fdopen(fd, "w", encoding="utf-8")
        except BaseException:
            with contextlib.suppress(OSError):  # fdopen may have taken it over already
                os.close(fd)
            Path(temp).unlink(missing_ok=True)
            raise
        try:
            with handle:
                json.dump(data, handle, separators=(",", ":"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, file)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    async def clear(self, key: str) -> None:
        await in_thread_to_end(self._file(key).unlink, True)
