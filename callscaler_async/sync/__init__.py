"""Bulk sync of call history: snapshot-consistent, concurrent, checkpointed, resumable."""

from ._checkpoint import (
    CheckpointStore,
    JSONFileStore,
    MemoryStore,
    SQLiteStore,
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
    "SyncOutputError",
    "SyncProgress",
    "SyncSummary",
    "as_sink",
    "check_output",
    "minimum_seconds",
    "sync_businesses",
]
