"""Snapshot-consistent, concurrent, resumable sync of calls.

How a sync gets every call of ``[since, until]`` exactly once, fast:

1. ``until`` is pinned when the sync starts (and kept in the checkpoint): calls arriving
   during the walk are newer than ``until``, fall outside every request's ``date_to`` and so
   cannot shift any page. They are picked up by the next incremental sync
   (``since=previous.until``).
2. The range is split into date windows (a week by default). Windows are walked several at
   a time, and inside a window the pages after the first are fetched concurrently, all
   through the business rate gate; batches are delivered in window order.
3. A window whose ``total`` changes while it is walked (calls deleted, or back-dated calls
   added) is walked again; ids already delivered from that window are skipped, so the
   shifted offsets cost a few requests, not a lost or duplicated call. Items outside the
   window's bounds are dropped (their own window delivers them).
4. With ``strategy="export"`` (or ``"auto"``, the default, when the export carries every
   field), a window is one export request checked against the list's count; a window whose
   export does not check out is walked by pages (``_export``).
5. The checkpoint records finished windows and the ids delivered from the window in
   progress; it is saved only after the sink returned for a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import CallScalerError
from ..models import Call
from ._checkpoint import CheckpointStore, MemoryStore, SyncCheckpoint, SyncCheckpointError
from ._export import ExportPlan, Strategy, walk_window_by_export
from ._sinks import Sink, as_sink

if TYPE_CHECKING:
    from .._client import CallScaler

__all__ = ["CallSync", "SyncError", "SyncProgress", "SyncSummary", "sync_businesses"]

logger = logging.getLogger("callscaler_async.sync")

_PER_PAGE = 100
_MAX_REWALKS = 5


class SyncError(CallScalerError):
    """A sync could not finish consistently (e.g. a window kept changing under it)."""


@attrs.frozen
class SyncProgress:
    """Handed to ``on_progress`` after every delivered batch."""

    business: str
    delivered: int
    total_estimate: int | None
    windows_done: int
    windows: int
    pages: int
    requests: int
    elapsed: float
    windows_counted: int = 0  # windows whose total is known (total_estimate covers these)
    strategy: str = "pages"  # "export" once the sync delivers by export

    @property
    def requests_left(self) -> int | None:
        """Requests the rest of the sync still needs, by its strategy (None: not known yet).

        By pages one per 100 calls left, plus a first page per window not started; by export
        two per window not finished (its count and its export), whatever its size.
        """
        if self.strategy == "export":
            return 2 * max(self.windows - self.windows_done, 0)
        total = self.estimated_total
        if total is None:
            return None
        left = max(total - self.delivered, 0)
        if left == 0:
            return 0
        return math.ceil(left / _PER_PAGE) + max(self.windows - self.windows_done - 1, 0)

    @property
    def estimated_total(self) -> int | None:
        """``total_estimate`` extrapolated to the windows not counted yet."""
        if self.total_estimate is None or self.windows_counted <= 0:
            return None
        if self.windows_counted >= self.windows:
            return max(self.total_estimate, self.delivered)
        scaled = self.total_estimate * self.windows / self.windows_counted
        return max(round(scaled), self.delivered)


@attrs.frozen
class SyncSummary:
    """The outcome of ``CallSync.run``; ``elapsed_over_minimum`` compares with the budget."""

    business: str
    items: int
    pages: int
    requests: int
    rate_limited: int
    elapsed: float
    minimum: float
    since: dt.datetime
    until: dt.datetime
    resumed: bool
    strategy: str = "pages"  # what ran: "export" (windows by export) or "pages"
    windows_exported: int = 0  # windows delivered by one export each, count verified
    # (an empty window takes its count request only and is in neither figure)
    windows_redone: int = 0  # windows walked by pages after their export did not check out

    @property
    def elapsed_over_minimum(self) -> float | None:
        return self.elapsed / self.minimum if self.minimum > 0 else None


def minimum_seconds(requests: int, limit: int, period: float) -> float:
    """The least time any client needs for ``requests`` at ``limit`` per ``period``.

    The first ``limit`` go at once; each later block of ``limit`` needs one more period.
    """
    if requests <= limit:
        return 0.0
    return (math.ceil(requests / limit) - 1) * period


def default_window(strategy: str) -> dt.timedelta:
    """The date window a sync takes when none is given.

    By pages a window's size hardly changes the requests (one per 100 calls); by export each
    window costs two requests whatever its size, so its windows are larger. A larger window
    also costs more to redo (by pages) when its export does not check out, and a resume
    exports the window in progress again.
    """
    return dt.timedelta(days=7 if strategy == "pages" else 30)


def _aware(value: dt.datetime | dt.date, name: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name} is a naive datetime; pass an aware datetime or a date")
        return value.astimezone(dt.UTC).replace(microsecond=0)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(0), tzinfo=dt.UTC)
    raise TypeError(f"{name} must be a datetime or a date, got {type(value).__name__}")


class CallSync:
    """Every call of ``[since, until]`` exactly once: ``async for`` it, or ``run`` it into a sink.

    >>> async def to_file(client) -> None:
    ...     summary = await client.calls.sync(since=datetime.date(2026, 1, 1)).run(
    ...         JSONLinesSink("calls.jsonl"), store=JSONFileStore("sync.checkpoint.json"))
    """

    def __init__(
        self,
        client: CallScaler,
        *,
        since: dt.datetime | dt.date,
        until: dt.datetime | dt.date | None = None,
        window: dt.timedelta | None = None,
        concurrency: int = 8,
        windows_ahead: int = 4,
        strategy: Strategy = "auto",
    ) -> None:
        self._client = client
        if window is None:
            window = default_window(strategy)
        self.strategy = strategy
        self._plan = ExportPlan(strategy)  # checks ``strategy``
        self.since = _aware(since, "since")
        self.until = (
            _aware(until, "until")
            if until is not None
            else dt.datetime.now(dt.UTC).replace(microsecond=0)
        )
        if self.until <= self.since:
            raise ValueError(f"until ({self.until}) must be after since ({self.since})")
        if window.total_seconds() < 1 or window.total_seconds() != int(window.total_seconds()):
            raise ValueError("window must be a whole number of seconds, at least one")
        if concurrency < 1 or windows_ahead < 1:
            raise ValueError("concurrency and windows_ahead must be >= 1")
        self.window_seconds = int(window.total_seconds())
        self.concurrency = concurrency
        self.windows_ahead = windows_ahead
        self.pages = 0
        self.counts = 0  # per_page=1 requests checking an export
        self.rewalks = 0
        self.delivered = 0
        self.total_estimate: int | None = None
        self._window_totals: dict[int, int] = {}

    # --------------------------------------------------------------- windows

    def _bounds(self, checkpoint: SyncCheckpoint, index: int) -> tuple[dt.datetime, dt.datetime]:
        start = checkpoint.since + dt.timedelta(seconds=index * checkpoint.window_seconds)
        end = min(
            checkpoint.since + dt.timedelta(seconds=(index + 1) * checkpoint.window_seconds),
            checkpoint.until + dt.timedelta(seconds=1),
        )
        # date_to is inclusive at one-second resolution: the next window starts at `end`.
        return start, end - dt.timedelta(seconds=1)

    async def _walk_window(
        self, checkpoint: SyncCheckpoint, index: int, skip: set[str]
    ) -> AsyncIterator[list[Call]]:
        start, last = self._bounds(checkpoint, index)
        if self._plan.mode == "pages":
            walk = self._walk_range(start, last, set(skip), index=index, top=True)
        else:
            walk = walk_window_by_export(self, self._plan, start, last, set(skip), index=index)
        async with contextlib.aclosing(walk):
            async for batch in walk:
                yield batch

    async def _walk_range(
        self, start: dt.datetime, last: dt.datetime, seen: set[str], *, index: int, top: bool
    ) -> AsyncGenerator[list[Call], None]:
        """Every call of ``[start, last]`` not in ``seen``; a range that changes is split.

        A walk whose ``total`` moved (calls deleted, back-dated calls added) may have skipped
        items whose offsets shifted. Walking the same range again can fail the same way for
        as long as the data keeps moving, so the range is halved instead: the halves have
        fewer pages, and a range that fits one page is answered by a single request, which is
        always a consistent snapshot. Only a one-second range is retried as is.
        """
        upper = last + dt.timedelta(seconds=1)
        for attempt in range(_MAX_REWALKS + 1):
            totals: set[int] = set()
            paginator = self._client.calls.list(
                date_from=start, date_to=last, per_page=_PER_PAGE, concurrency=self.concurrency
            )
            async for page in paginator.pages():
                self.pages += 1
                totals.add(page.total)
                if top and attempt == 0 and page.page == 1:
                    self._note_total(index, page.total)
                fresh: list[Call] = []
                for call in page.items:
                    key = str(call.id)
                    if key in seen or not (start <= call.started_at < upper):
                        continue
                    seen.add(key)
                    fresh.append(call)
                if fresh:
                    yield fresh
            if len(totals) <= 1:
                return
            # Offsets shifted while we paged: walk again, delivering only what was missed.
            self.rewalks += 1
            logger.info(
                "sync window %d (%s..%s) changed while paging (totals %s); walking it again",
                index, start, last, sorted(totals),
            )  # fmt: skip
            if last > start:
                half = (last - start).total_seconds() // 2
                middle = start + dt.timedelta(seconds=half)
                for lo, hi in ((start, middle), (middle + dt.timedelta(seconds=1), last)):
                    async for batch in self._walk_range(lo, hi, seen, index=index, top=False):
                        yield batch
                return
            if attempt == _MAX_REWALKS:
                raise SyncError(
                    f"calls between {start} and {last} kept changing over {_MAX_REWALKS + 1} "
                    "walks; retry the sync later (nothing delivered twice, progress is saved)"
                )

    def _note_total(self, index: int, total: int) -> None:
        self._window_totals[index] = total
        self.total_estimate = sum(self._window_totals.values())

    async def batches(
        self, checkpoint: SyncCheckpoint | None = None
    ) -> AsyncIterator[tuple[int, list[Call], bool]]:
        """``(window, batch, window_finished)`` in window order, from ``checkpoint`` on."""
        checkpoint = checkpoint or self.new_checkpoint()
        count = checkpoint.window_count
        first = checkpoint.windows_done
        skip_first = set(checkpoint.window_ids)
        queues: dict[int, asyncio.Queue[Any]] = {}
        producers: dict[int, asyncio.Task[None]] = {}
        done = object()

        async def produce(index: int, queue: asyncio.Queue[Any]) -> None:
            try:
                skip = skip_first if index == first else set()
                async for batch in self._walk_window(checkpoint, index, skip):
                    await queue.put(batch)
                await queue.put(done)
            except BaseException as exc:  # handed to the consumer, raised in order
                await queue.put(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise

        def start(index: int) -> None:
            if index < count and index not in producers:
                queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=4)
                queues[index] = queue
                producers[index] = asyncio.ensure_future(produce(index, queue))

        try:
            for index in range(first, min(count, first + self.windows_ahead)):
                start(index)
            for index in range(first, count):
                start(index)
                queue = queues[index]
                while True:
                    item = await queue.get()
                    if item is done:
                        break
                    if isinstance(item, BaseException):
                        raise item
                    yield index, item, False
                producers.pop(index)
                queues.pop(index)
                start(index + self.windows_ahead)
                yield index, [], True
        finally:
            for task in producers.values():
                task.cancel()
            for task in producers.values():
                with contextlib.suppress(BaseException):
                    await task

    def new_checkpoint(self) -> SyncCheckpoint:
        return SyncCheckpoint(
            business=self._client.business,
            since=self.since,
            until=self.until,
            window_seconds=self.window_seconds,
        )

    # ------------------------------------------------------------- iterating

    def __aiter__(self) -> AsyncIterator[Call]:
        return self._calls()

    async def _calls(self) -> AsyncIterator[Call]:
        async for _, batch, _ in self.batches():
            for call in batch:
                self.delivered += 1
                yield call

    # --------------------------------------------------------------- running

    async def run(
        self,
        sink: Sink | Callable[[list[Call]], Awaitable[None]],
        *,
        store: CheckpointStore | None = None,
        key: str | None = None,
        resume: bool = True,
        on_progress: Callable[[SyncProgress], Any] | None = None,
    ) -> SyncSummary:
        """Deliver every call of the range to ``sink``, checkpointing after each batch.

        With ``resume=True`` and a checkpoint of an unfinished sync in ``store``, the sync
        continues it (its pinned range wins over this object's ``since``/``until``).
        """
        target = as_sink(sink)
        store = store if store is not None else MemoryStore()
        key = key or f"calls:{self._client.business}"
        loop = asyncio.get_running_loop()
        started = loop.time()
        transport = self._client._transport
        requests_before = transport.requests_sent
        before = self._client.rate_limit
        limited_before = before.rate_limited if before else 0
        checkpoint: SyncCheckpoint | None = await store.load(key) if resume else None
        resumed = checkpoint is not None and not checkpoint.finished
        if checkpoint is None or checkpoint.finished:
            checkpoint = self.new_checkpoint()
        elif checkpoint.business != self._client.business:
            raise SyncCheckpointError(
                f"checkpoint {key!r} belongs to business {checkpoint.business!r}, "
                f"not {self._client.business!r}"
            )
        else:
            logger.info(
                "resuming sync %s: %d calls delivered, window %d of %d",
                key, checkpoint.delivered, checkpoint.windows_done, checkpoint.window_count,
            )  # fmt: skip
        self.delivered = checkpoint.delivered
        try:
            # Inside the try: a sync cancelled (or failing) while the sink opens still closes
            # it, e.g. a file a sink's thread opened after the cancellation arrived.
            await target.open(checkpoint.sink_state if resumed else None)
            async for index, batch, finished in self.batches(checkpoint):
                if batch:
                    await target.write(batch)
                    checkpoint.window_ids.extend(str(call.id) for call in batch)
                    checkpoint.delivered += len(batch)
                    newest = max(call.started_at for call in batch)
                    if checkpoint.high_water_mark is None or newest > checkpoint.high_water_mark:
                        checkpoint.high_water_mark = newest
                if finished:
                    checkpoint.windows_done = index + 1
                    checkpoint.window_ids = []
                checkpoint.sink_state = target.state()
                await store.save(key, checkpoint)
                self.delivered = checkpoint.delivered
                if on_progress is not None and (batch or finished):
                    on_progress(
                        SyncProgress(
                            business=checkpoint.business,
                            delivered=checkpoint.delivered,
                            total_estimate=self.total_estimate,
                            windows_done=checkpoint.windows_done,
                            windows=checkpoint.window_count,
                            pages=self.pages,
                            requests=transport.requests_sent - requests_before,
                            elapsed=loop.time() - started,
                            windows_counted=len(self._window_totals),
                            strategy=self._plan.strategy,
                        )
                    )
            checkpoint.finished = True
            await store.save(key, checkpoint)
        finally:
            await target.close()
        requests = transport.requests_sent - requests_before
        limit = self._client._rate_limit_config
        snapshot = self._client.rate_limit
        return SyncSummary(
            business=checkpoint.business,
            items=checkpoint.delivered,
            pages=self.pages,
            requests=requests,
            rate_limited=(snapshot.rate_limited - limited_before) if snapshot else 0,
            elapsed=loop.time() - started,
            minimum=minimum_seconds(requests, limit.requests, limit.period),
            since=checkpoint.since,
            until=checkpoint.until,
            resumed=resumed,
            strategy=self._plan.strategy,
            windows_exported=self._plan.windows_exported,
            windows_redone=self._plan.windows_redone,
        )


async def sync_businesses(
    jobs: list[tuple[CallScaler, Sink | Callable[[list[Call]], Awaitable[None]]]],
    *,
    since: dt.datetime | dt.date,
    until: dt.datetime | dt.date | None = None,
    store: CheckpointStore | None = None,
    window: dt.timedelta | None = None,
    strategy: Strategy = "auto",
) -> list[SyncSummary]:
    """Sync several businesses at once, each through its own gate (one client per business).

    Throughput grows with the number of businesses: their budgets are independent.
    """
    pinned = (
        _aware(until, "until")
        if until is not None
        else dt.datetime.now(dt.UTC).replace(microsecond=0)
    )
    store = store if store is not None else MemoryStore()
    runs = [
        client.calls.sync(since=since, until=pinned, window=window, strategy=strategy).run(
            sink, store=store
        )
        for client, sink in jobs
    ]
    return list(await asyncio.gather(*runs))
