"""A SQLite database that is both the sync's sink and its checkpoint store.

``calls.sync(...).run(SQLiteStore("calls.db"))`` upserts every call into a ``calls`` table
(one typed column per ``Call`` field, primary key ``id``) and commits each batch *in the same
transaction* as the checkpoint that records it. A crash at any instant, ``SIGKILL`` included,
leaves either the batch and its checkpoint or neither, so exactly-once is a property of the
store: no fsync of a separate file, no truncation on resume.

Why ``asyncio.to_thread``-style threads (``in_thread_to_end``) rather than aiosqlite: a batch
is one transaction, so it is one hop to a thread (aiosqlite hops once per statement), and a
cancelled sync waits for that hop to finish, so it always knows whether the batch committed
before it returns (an aiosqlite call that is cancelled leaves its statement running on the
connection's thread). The standard library ``sqlite3`` is enough: no dependency to add.

Durability: WAL mode (readers never block the writer nor see half a batch) with
``synchronous=NORMAL`` for the batches: a power cut may forget the last commits, but always a
batch together with its checkpoint, so the next run fetches them again. The final commit of a
sync runs with ``synchronous=FULL``: once a sync reports success, its rows survive a power cut.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import sys
import threading
import typing
from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter
from pathlib import Path
from typing import IO, Any, Final, Protocol, runtime_checkable

import attrs

from .._convert import format_timestamp
from .._errors import CallScalerError
from ..models import Call
from ._checkpoint import CheckpointStore, SyncCheckpoint, SyncCheckpointError, in_thread_to_end
from ._sinks import Sink

__all__ = [
    "CALL_COLUMNS",
    "CheckpointedSink",
    "SQLiteStore",
    "SQLiteStoreError",
    "SQLiteStoreLocked",
    "call_row",
]

_CHECKPOINTS: Final = "callscaler_sync_checkpoints"
_PROBE_KEY: Final = "\x00write-probe"


class SQLiteStoreError(CallScalerError):
    """The database cannot be used: ``path`` names the file, ``reason`` says why.

    Nothing of a batch that failed is kept: it rolled back together with its checkpoint, and
    the next run resumes after the last batch that committed.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, *, code: str | None = None):
        self.path = str(path)
        self.reason = reason
        self.code = code  # SQLite's error name (SQLITE_FULL, ...) when SQLite reported it
        super().__init__(f"{self.path}: {reason}")


class SQLiteStoreLocked(SQLiteStoreError):
    """Another sync writes this database, or another process holds its write lock."""


@runtime_checkable
class CheckpointedSink(Sink, CheckpointStore, Protocol):
    """A sink that keeps the checkpoints itself and commits each batch with its checkpoint.

    The sync passes it as sink and store at once: ``write_with_checkpoint`` makes the batch
    and the checkpoint that counts it durable together, or neither.
    """

    async def write_with_checkpoint(
        self, batch: Sequence[Call], key: str, checkpoint: SyncCheckpoint
    ) -> None: ...


# ----------------------------------------------------------------------------- columns

_SQL_TYPES: Final = {
    "UUID": "TEXT", "CallStatus": "TEXT", "CallDirection": "TEXT", "datetime": "TEXT",
    "str": "TEXT", "int": "INTEGER", "bool": "INTEGER", "float": "REAL", "Money": "INTEGER",
}  # fmt: skip


def _base_type(field: attrs.Attribute[Any]) -> str:
    # ``Call``'s annotations are strings (``from __future__ import annotations``) until the
    # converter resolves them to classes, which may happen before this module is imported.
    kind: Any = field.type
    if isinstance(kind, str):
        return kind.removesuffix(" | None")
    kinds = [k for k in typing.get_args(kind) if k is not type(None)] or [kind]
    return str(getattr(kinds[0], "__name__", kinds[0]))


def _column(field: attrs.Attribute[Any]) -> tuple[str, str]:
    base = _base_type(field)
    name = f"{field.name}_cents" if base == "Money" else field.name
    return name, _SQL_TYPES[base]


def _converter(base: str) -> Callable[[Any], Any] | None:
    converters: dict[str, Callable[[Any], Any]] = {
        "UUID": str, "datetime": format_timestamp, "Money": attrgetter("cents"),
        "CallStatus": attrgetter("value"), "CallDirection": attrgetter("value"), "bool": int,
    }  # fmt: skip
    return converters.get(base)


#: The ``calls`` table: (column, SQLite type) per ``Call`` field, in the API's field names
#: (``cost_cents``: integer cents). Times are ISO 8601 UTC text (``2026-01-31T12:00:00Z``,
#: sortable, what SQLite's date functions read), UUIDs and enums are text, booleans 0/1,
#: ``ai_score`` a REAL.
CALL_COLUMNS: Final[tuple[tuple[str, str], ...]] = tuple(_column(f) for f in attrs.fields(Call))
_REQUIRED: Final = frozenset({"id", "status", "started_at"})


_CALL_FIELDS: Final[tuple[attrs.Attribute[Any], ...]] = tuple(attrs.fields(Call))
_FIELDS: Final = tuple(f.name for f in _CALL_FIELDS)
_GET_ALL: Final = attrgetter(*_FIELDS)
_CONVERT: Final = tuple(
    (i, conv)
    for i, f in enumerate(_CALL_FIELDS)
    if (conv := _converter(_base_type(f))) is not None
)


def call_row(call: Call) -> list[Any]:
    """``call`` as the values of ``CALL_COLUMNS``, in order (None stays NULL)."""
    values = list(_GET_ALL(call))
    for index, convert in _CONVERT:
        value = values[index]
        if value is not None:
            values[index] = convert(value)
    return values


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ----------------------------------------------------------------------------- errors


def _reason(exc: BaseException, timeout: float) -> tuple[type[SQLiteStoreError], str, str | None]:
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorname", None)
        name = code or ""
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return (
                SQLiteStoreLocked,
                f"the database is locked by another process (waited {timeout:g} s for its "
                f"write lock): {exc}",
                code,
            )
        if name.startswith("SQLITE_NOTADB") or name.startswith("SQLITE_CORRUPT"):
            return SQLiteStoreError, f"not a SQLite database, or it is corrupt: {exc}", code
        if name.startswith("SQLITE_READONLY"):
            return SQLiteStoreError, f"the database is read-only: {exc}", code
        if name.startswith("SQLITE_FULL"):
            return SQLiteStoreError, f"the disk (or the database's size limit) is full: {exc}", code
        if name.startswith("SQLITE_IOERR"):
            return SQLiteStoreError, f"I/O error ({name}): {exc}", code
        if name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")):
            return SQLiteStoreError, f"cannot open the database: {exc}", code
        return SQLiteStoreError, f"SQLite error ({name or type(exc).__name__}): {exc}", code
    if isinstance(exc, OSError):
        return SQLiteStoreError, exc.strerror or str(exc), None
    return SQLiteStoreError, str(exc), None


# ----------------------------------------------------------------------------- locking


class _SyncLock:
    """An exclusive OS lock on ``<database>-sync.lock``, held while a sync writes.

    A lock file beside the database rather than a lock on the database file: closing any
    descriptor of the database file drops every POSIX lock the process holds on it,
    SQLite's own included. The OS releases the lock when the process dies (even by
    ``SIGKILL``), so a crashed sync never blocks the next one. The file is left in place:
    removing a lock file races with a process that just opened it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + "-sync.lock")
        self._handle: IO[bytes] | None = None

    def acquire(self) -> bool:
        handle = self.path.open("a+b")
        try:
            if sys.platform == "win32":  # pragma: no cover
                import msvcrt

                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
                except OSError:  # held by another process
                    handle.close()
                    return False
            else:
                import fcntl

                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # held by another open file: another sync
                    handle.close()
                    return False
        except BaseException:
            handle.close()
            raise
        self._handle = handle
        return True

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()  # closing the descriptor releases the lock


# ----------------------------------------------------------------------------- the store


class SQLiteStore:
    """A SQLite database: the sync's sink *and* its checkpoint store, in one object.

    >>> async def to_sqlite(client) -> None:
    ...     summary = await client.calls.sync(since=datetime.date(2026, 1, 1)).run(
    ...         SQLiteStore("calls.db"))

    Each batch is upserted into ``table`` (``calls``; primary key ``id``, one typed column
    per ``Call`` field, see ``CALL_COLUMNS``) in the same transaction as its checkpoint
    (table ``callscaler_sync_checkpoints``). WAL mode: other processes can query the
    database while the sync writes. A second sync on the same database at the same time is
    refused (``SQLiteStoreLocked``). A table made by an older version of the SDK gets the
    columns it lacks (``ALTER TABLE``); a table that does not look like ours is refused.

    Passed only as ``store=`` (with another sink), it keeps just the checkpoints, as it did
    before it could be a sink: such files keep working.

    Errors (a directory that does not exist, a read-only file, a full disk, a database
    locked by another process, a corrupt file) raise ``SQLiteStoreError`` naming the file
    and the cause; the batch that failed rolled back together with its checkpoint.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, table: str = "calls", timeout: float = 5.0
    ) -> None:
        if not table or not table.replace("_", "").isalnum():
            raise ValueError(f"table must be a plain SQL name (letters, digits, _), got {table!r}")
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0 seconds, got {timeout!r}")
        self.path = Path(path)
        self.table = table
        self.timeout = timeout
        self.written = 0
        self._db: sqlite3.Connection | None = None
        self._lock = _SyncLock(self.path)
        self._guard = threading.Lock()  # one statement group at a time on the connection
        self._loaded: dict[str, str | None] = {}
        self._upsert: str | None = None
        self._added: list[str] = []

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, table={self.table!r})"

    @property
    def added_columns(self) -> list[str]:
        """Columns this store added to an existing table when it opened (schema upgrade)."""
        return list(self._added)

    # ------------------------------------------------------------- connection

    def _fail(self, exc: BaseException) -> SQLiteStoreError:
        cls, reason, code = _reason(exc, self.timeout)
        return cls(self.path, reason, code=code)

    @contextlib.contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        """The connection (opened on first use), with SQLite errors named for this file."""
        with self._guard:
            try:
                if self._db is None:
                    self._db = self._connect()
                yield self._db
            except SQLiteStoreError:
                raise
            except (sqlite3.Error, OSError) as exc:
                raise self._fail(exc) from exc

    def _connect(self) -> sqlite3.Connection:
        parent = self.path.parent
        if not parent.is_dir():
            raise SQLiteStoreError(
                self.path, f"the directory {parent} does not exist (create it first)"
            )
        if self.path.is_dir():
            raise SQLiteStoreError(self.path, "is a directory, not a database file")
        db = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise SQLiteStoreError(
                    self.path, f"cannot switch the database to WAL mode (it stays {mode!r})"
                )
            db.execute("PRAGMA synchronous=NORMAL")
            # Fewer WAL checkpoints (each one fsyncs): the WAL grows to ~16 MiB, not 4.
            db.execute("PRAGMA wal_autocheckpoint=4000")
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {_CHECKPOINTS} "
                "(key TEXT PRIMARY KEY, body TEXT NOT NULL, saved_at TEXT NOT NULL)"
            )
        except BaseException:
            db.close()
            raise
        return db

    def _close(self) -> None:
        with self._guard:
            db, self._db = self._db, None
            try:
                if db is not None:
                    if db.in_transaction:
                        db.rollback()
                    db.close()
            finally:
                self._lock.release()

    # ------------------------------------------------------------- checkpoints

    def _load(self, key: str) -> str | None:
        if self._db is None and not self.path.exists():
            # Nothing to resume, and no empty database left behind by a sync that then
            # fails to reach the API: the file is created when the sink opens.
            self._loaded[key] = None
            return None
        with self._using() as db:
            row = db.execute(f"SELECT body FROM {_CHECKPOINTS} WHERE key = ?", (key,)).fetchone()
        body = None if row is None else str(row[0])
        self._loaded[key] = body
        return body

    async def load(self, key: str) -> SyncCheckpoint | None:
        body = await in_thread_to_end(self._load, key)
        if body is None:
            return None
        try:
            return SyncCheckpoint.from_json(json.loads(body))
        except json.JSONDecodeError as exc:
            raise SyncCheckpointError(
                f"checkpoint {key!r} in {self.path} is corrupt: {exc}"
            ) from None

    @staticmethod
    def _put_checkpoint(db: sqlite3.Connection, key: str, body: str) -> None:
        db.execute(
            f"INSERT INTO {_CHECKPOINTS} (key, body, saved_at) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET body = excluded.body, saved_at = excluded.saved_at",
            (key, body, format_timestamp(dt.datetime.now(dt.UTC))),
        )

    def _commit(self, rows: Sequence[Call], key: str, body: str, durable: bool) -> None:
        """One transaction: the rows, then the checkpoint that counts them."""
        with self._using() as db:
            values = [call_row(call) for call in rows]
            if durable:
                db.execute("PRAGMA synchronous=FULL")
            try:
                db.execute("BEGIN IMMEDIATE")
                if values:
                    if self._upsert is None:
                        raise RuntimeError(f"{self!r} is not open as a sink")
                    db.executemany(self._upsert, values)
                self._put_checkpoint(db, key, body)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.rollback()
                raise
            finally:
                if durable:
                    db.execute("PRAGMA synchronous=NORMAL")
        self._loaded[key] = body

    async def save(self, key: str, checkpoint: SyncCheckpoint) -> None:
        body = json.dumps(checkpoint.to_json())
        await in_thread_to_end(self._commit, (), key, body, checkpoint.finished)

    def _clear(self, key: str) -> None:
        with self._using() as db:
            db.execute(f"DELETE FROM {_CHECKPOINTS} WHERE key = ?", (key,))
        self._loaded.pop(key, None)

    async def clear(self, key: str) -> None:
        await in_thread_to_end(self._clear, key)

    # ------------------------------------------------------------- the sink

    async def open(self, state: dict[str, Any] | None) -> None:
        # The database is its own state: nothing of ``state`` is needed to resume.
        try:
            await in_thread_to_end(self._open)
        except BaseException:
            await self.close()
            raise

    def _open(self) -> None:
        with self._using() as db:
            if not self._lock.acquire():
                raise SQLiteStoreLocked(
                    self.path,
                    f"another sync is writing this database (it holds {self._lock.path.name}); "
                    "wait for it to finish, or stop it",
                )
            for key, seen in self._loaded.items():
                row = db.execute(
                    f"SELECT body FROM {_CHECKPOINTS} WHERE key = ?", (key,)
                ).fetchone()
                if (None if row is None else str(row[0])) != seen:
                    raise SQLiteStoreLocked(
                        self.path,
                        f"another sync wrote checkpoint {key!r} while this one was starting; "
                        "run it again",
                    )
            db.execute("BEGIN IMMEDIATE")
            try:
                # A write that is rolled back: a read-only file fails here, before any call
                # is fetched, not at the first batch.
                self._put_checkpoint(db, _PROBE_KEY, "")
                self._added = self._ensure_table(db)
                db.execute(f"DELETE FROM {_CHECKPOINTS} WHERE key = ?", (_PROBE_KEY,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.rollback()
                raise
        names = [name for name, _ in CALL_COLUMNS]
        updates = ", ".join(f"{_quote(n)} = excluded.{_quote(n)}" for n in names if n != "id")
        self._upsert = (
            f"INSERT INTO {_quote(self.table)} ({', '.join(map(_quote, names))}) "
            f"VALUES ({', '.join('?' for _ in names)}) "
            f"ON CONFLICT(id) DO UPDATE SET {updates}"
        )

    def _ensure_table(self, db: sqlite3.Connection) -> list[str]:
        """Create the table, or check an existing one and add the columns it lacks."""
        table = _quote(self.table)
        existing = db.execute(f"PRAGMA table_info({table})").fetchall()
        if not existing:
            columns = ", ".join(
                f"{_quote(name)} {sql}"
                + (" PRIMARY KEY" if name == "id" else " NOT NULL" if name in _REQUIRED else "")
                for name, sql in CALL_COLUMNS
            )
            # No index beyond the primary key: each one costs a random page write per row
            # (halving the rows written per second); add yours once the sync is done.
            db.execute(f"CREATE TABLE {table} ({columns})")
            return []
        # PRAGMA table_info: (cid, name, type, notnull, default, pk)
        found = {str(r[1]): (str(r[2]).upper(), bool(r[3]), r[4], int(r[5])) for r in existing}
        problems: list[str] = []
        pks = [name for name, info in found.items() if info[3]]
        if pks != ["id"]:
            problems.append(f"its primary key is {pks or 'missing'}, not ['id']")
        for name, sql in CALL_COLUMNS:
            if name in found and found[name][0] != sql:
                problems.append(f"column {name} is {found[name][0] or 'untyped'}, not {sql}")
            elif name not in found and name in _REQUIRED:
                problems.append(f"it has no {name} column")
        ours = {name for name, _ in CALL_COLUMNS}
        for name, (_, notnull, default, pk) in found.items():
            if name not in ours and notnull and default is None and not pk:
                problems.append(f"column {name} is NOT NULL without a default")
        if problems:
            raise SQLiteStoreError(
                self.path,
                f"table {self.table} does not look like a table of calls written by "
                f"callscaler-async ({'; '.join(problems)}); pass table= to use another one",
            )
        added = []
        for name, sql in CALL_COLUMNS:
            if name not in found:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {_quote(name)} {sql}")
                added.append(name)
        return added

    async def write_with_checkpoint(
        self, batch: Sequence[Call], key: str, checkpoint: SyncCheckpoint
    ) -> None:
        body = json.dumps(checkpoint.to_json())
        await in_thread_to_end(self._commit, list(batch), key, body, checkpoint.finished)
        self.written += len(batch)

    async def write(self, batch: Sequence[Call]) -> None:
        """Upsert a batch on its own (no checkpoint): the sync uses ``write_with_checkpoint``."""
        if batch:
            await in_thread_to_end(self._write_rows, list(batch))
            self.written += len(batch)

    def _write_rows(self, rows: list[Call]) -> None:
        with self._using() as db:
            if self._upsert is None:
                raise RuntimeError(f"{self!r} is not open as a sink")
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(self._upsert, [call_row(call) for call in rows])
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.rollback()
                raise

    def state(self) -> dict[str, Any]:
        return {"path": str(self.path), "table": self.table}

    async def close(self) -> None:
        # Runs to the end even if the caller is cancelled: the connection and the lock are
        # always released.
        await in_thread_to_end(self._close)
