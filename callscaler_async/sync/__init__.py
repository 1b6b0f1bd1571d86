"""Bulk sync of call history: snapshot-consistent, concurrent, checkpointed, resumable."""

from ._checkpoint import (
    CheckpointStore,
    JSONFileStore,
    MemoryStore,
    SQLiteStore,
    SyncCheckpoint,
    SyncCheckpointError,
)
from ._engine import (
    CallSync,
    SyncError,
    SyncProgress,
    SyncSummary,
    minimum_seconds,
    sync_businesses,
)
from ._sinks import CallableSink, CSVSink, JSONLinesSink, Sink, as_sink

__all__ = [
    "CSVSink",
    "CallSync",
    "CallableSink",
    "CheckpointStore",
    "JSONFileStore",
    "JSONLinesSink",
    "MemoryStore",
    "SQLiteStore",
    "Sink",
    "SyncCheckpoint",
    "SyncCheckpointError",
    "SyncError",
    "SyncProgress",
    "SyncSummary",
    "as_sink",
    "minimum_seconds",
    "sync_businesses",
]

# Tracebacks name an exception by its ``__module__``: the public path, not the private module.
for _error_class in (SyncCheckpointError, SyncError):
    _error_class.__module__ = __name__
del _error_class
