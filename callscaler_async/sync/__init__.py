"""Bulk sync of call history: snapshot-consistent, concurrent, checkpointed, resumable."""

from ._checkpoint import (
    CheckpointStore,
    JSONFileStore,
    MemoryStore,
    SyncCheckpoint,
    SyncCheckpointError,
    SyncOutputError,
)
from ._engine import (
    CallSync,
    SyncError,
    SyncProgress,
    SyncSummary,
    minimum_seconds,
    sync_businesses,
)
from ._sinks import CallableSink, CSVSink, JSONLinesSink, Sink, as_sink, check_output
from ._sqlite import (
    CALL_COLUMNS,
    CheckpointedSink,
    SQLiteStore,
    SQLiteStoreError,
    SQLiteStoreLocked,
)

__all__ = [
    "CALL_COLUMNS",
    "CSVSink",
    "CallSync",
    "CallableSink",
    "CheckpointStore",
    "CheckpointedSink",
    "JSONFileStore",
    "JSONLinesSink",
    "MemoryStore",
    "SQLiteStore",
    "SQLiteStoreError",
    "SQLiteStoreLocked",
    "Sink",
    "SyncCheckpoint",
    "SyncCheckpointError",
    "SyncError",
    "SyncOutputError",
    "SyncProgress",
    "SyncSummary",
    "as_sink",
    "check_output",
    "minimum_seconds",
    "sync_businesses",
]

# Tracebacks name an exception by its ``__module__``: the public path, not the private module.
for _error_class in (SyncCheckpointError, SyncError):
    _error_class.__module__ = __name__
del _error_class
