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
from ..ratelimit import RateLimit, RateLimitSnapshot
from ._checkpoint import CheckpointStore, MemoryStore, SyncCheckpoint, SyncCheckpointError
from ._export import ExportPlan, Strategy, walk_window_by_export
from ._sinks import Sink, as_sink
from ._sqlite import CheckpointedSink

if TYPE_CHECKING:
    from .._client import CallScaler

__all__ = ["CallSync", "SyncError", "SyncProgress", "SyncSummary", "sync_businesses"]

logger = logging.getLogger("callscaler_async.sync")

_PER_PAGE = 100
_MAX_REWALKS = 5
_BATCHES_AHEAD = 4  # batches a window's producer may hold before the consumer takes them


class SyncError(CallScalerError):
    """A sync could not finish consistently (e.g. a window kept changing under it)."""


@attrs.frozen
class SyncProgress:
    """Handed to ``on_progress`` when the sync starts, when the range's count arrives and
    after every delivered batch.

    ``total_estimate`` is what the server counts in the range: the calls delivered from
    windows finished before a resume, plus one count of the rest of the range taken when
    the sync starts, replaced by the windows' own counts once every window has been counted.
    None until the first count arrived. With data that does not change under the sync it is
    exact; :attr:`estimated_total` is the figure to show.
    """

    business: str
    delivered: int
    total_estimate: int | None
    windows_done: int
    windows: int
    pages: int
    requests: int
    elapsed: float
    windows_counted: int = 0  # windows whose own count is known (finished ones included)
    delivered_at_start: int = 0  # calls already delivered when this run started (a resume)
    rate_limit: RateLimit | None = None  # the server's X-RateLimit-Limit per configured period
    remaining: int | None = None  # the server's latest X-RateLimit-Remaining
    window: tuple[dt.datetime, dt.datetime] | None = None  # the window being delivered
    reset_in: float | None = None  # seconds to the server's X-RateLimit-Reset, when known
    strategy: str = "pages"  # "export" once the sync delivers by export

    @property
    def finished(self) -> bool:
        """Every window is delivered."""
        return self.windows_done >= self.windows

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
        if self.finished:
            return 0
        # Each window not finished needs a page at least, even with every counted call in.
        left = max(total - self.delivered, 0)
        return math.ceil(left / _PER_PAGE) + max(self.windows - self.windows_done - 1, 0)

    @property
    def estimated_total(self) -> int | None:
        """The total to show: never below ``delivered``, exactly ``delivered`` once finished.

        Calls added inside the range while it is walked (back-dated) or deleted from it are
        the only way it moves after the first count.
        """
        if self.finished:
            return self.delivered
        if self.total_estimate is None:
            return None
        return max(self.total_estimate, self.delivered)

    @property
    def eta(self) -> float | None:
        """Seconds left: the larger of what the rate limit allows and what this run achieves.

        The rate limit's share is the least time the pages left need at ``rate_limit``
        beyond the ``remaining`` budget in hand, and no less than ``reset_in`` when they do
        not fit in it (no more is admitted before the server's Reset). It is dropped once this
        run has sent more requests than that limit allows, which means the server's window is
        shorter than the configured period. None while the total is unknown.
        """
        return self.eta_after(0.0)

    def eta_after(self, waited: float) -> float | None:
        """The :attr:`eta` ``waited`` seconds after this event, no batch having come since.

        A display that redraws between batches (while the gate waits for the rate limit's
        window) counts the wait down from the limit's share and slows the observed rate.
        """
        total = self.estimated_total
        if total is None:
            return None
        if self.finished:
            return 0.0
        left = max(total - self.delivered, 0)
        elapsed = self.elapsed + waited
        pages_left = max(self.requests_left or 0, 1)
        estimates: list[float] = []
        limit = self.rate_limit
        if limit is not None and self.requests <= limit.requests * (1 + elapsed / limit.period):
            beyond = pages_left - (self.remaining if self.remaining is not None else 0)
            budget = 0.0
            if beyond > 0:
                budget = max(beyond * limit.period / limit.requests, self.reset_in or 0.0)
            estimates.append(max(budget - waited, 0.0))
        done = self.delivered - self.delivered_at_start
        if done > 0 and elapsed > 0:
            estimates.append(left * elapsed / done)
        return max(estimates) if estimates else None


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
    rate_limit: RateLimit | None = None  # what ``minimum`` assumed
    strategy: str = "pages"  # what ran: "export" (windows by export) or "pages"
    windows_exported: int = 0  # windows delivered by one export each, count verified
    # (an empty window takes its count request only and is in neither figure)
    windows_redone: int = 0  # windows walked by pages after their export did not check out

    @property
    def elapsed_over_minimum(self) -> float | None:
        return self.elapsed / self.minimum if self.minimum > 0 else None


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended, even if the caller is cancelled
    again meanwhile (that cancellation is raised afterwards): none is left pending."""
    for task in tasks:
        task.cancel()
    cancelled: asyncio.CancelledError | None = None
    while not all(task.done() for task in tasks):
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: never logged as "never retrieved"
    if cancelled is not None:
        raise cancelled


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
        # The total's bookkeeping (see ``SyncProgress.total_estimate``): calls of windows
        # finished before this run, one count of the rest of the range, each window's count.
        self._delivered_before = 0
        self._first_window = 0
        self._range_count: int | None = None
        self._window_count = 0
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
    ) -> AsyncGenerator[list[Call], None]:
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
            paginator.head_pinned = True  # `until` is pinned in the past: no call lands ahead
            pages = paginator.pages()
            async with contextlib.aclosing(pages):
                async for page in pages:
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
                    half_walk = self._walk_range(lo, hi, seen, index=index, top=False)
                    async with contextlib.aclosing(half_walk):
                        async for batch in half_walk:
                            yield batch
                return
            if attempt == _MAX_REWALKS:
                raise SyncError(
                    f"calls between {start} and {last} kept changing over {_MAX_REWALKS + 1} "
                    "walks; retry the sync later (nothing delivered twice, progress is saved)"
                )

    def _note_total(self, index: int, total: int) -> None:
        self._window_totals[index] = total
        self._update_total_estimate()

    def _update_total_estimate(self) -> None:
        counted = sum(self._window_totals.values())
        if len(self._window_totals) >= self._window_count - self._first_window:
            self.total_estimate = self._delivered_before + counted
        elif self._range_count is not None:
            self.total_estimate = self._delivered_before + max(self._range_count, counted)
        else:
            self.total_estimate = None

    async def _count_rest(self, checkpoint: SyncCheckpoint, counted: Callable[[], Any]) -> None:
        """One request for the size of the range not delivered yet (``per_page=1``)."""
        start, _ = self._bounds(checkpoint, checkpoint.windows_done)
        try:
            page = await self._client.calls.list(
                date_from=start, date_to=checkpoint.until, per_page=1
            )
        except CallScalerError as exc:  # the walk meets the same error and reports it
            logger.debug("sync: counting the range failed (%s); total known per window", exc)
            return
        self._range_count = page.total
        self._update_total_estimate()
        counted()

    async def batches(
        self, checkpoint: SyncCheckpoint | None = None
    ) -> AsyncGenerator[tuple[int, list[Call], bool], None]:
        """``(window, batch, window_finished)`` in window order, from ``checkpoint`` on."""
        checkpoint = checkpoint or self.new_checkpoint()
        count = checkpoint.window_count
        first = checkpoint.windows_done
        skip_first = set(checkpoint.window_ids)
        queues: dict[int, asyncio.Queue[Any]] = {}
        producers: dict[int, asyncio.Task[None]] = {}
        done = object()

        async def produce(index: int, queue: asyncio.Queue[Any], room: asyncio.Semaphore) -> None:
            # The queue itself is unbounded and ``room`` bounds the batches in it: the end
            # marker or an error always goes in at once. (A producer that awaited space for
            # its error after the consumer stopped reading would never finish.)
            try:
                skip = skip_first if index == first else set()
                walk = self._walk_window(checkpoint, index, skip)
                async with contextlib.aclosing(walk):
                    async for batch in walk:
                        await room.acquire()
                        queue.put_nowait(batch)
                queue.put_nowait(done)
            except Exception as exc:  # handed to the consumer, raised in window order
                queue.put_nowait(exc)

        def start(index: int) -> None:
            if index < count and index not in producers:
                queue: asyncio.Queue[Any] = asyncio.Queue()
                room = asyncio.Semaphore(_BATCHES_AHEAD)
                queues[index] = queue
                producers[index] = asyncio.ensure_future(produce(index, queue, room))
                rooms[index] = room

        rooms: dict[int, asyncio.Semaphore] = {}
        try:
            for index in range(first, min(count, first + self.windows_ahead)):
                start(index)
            for index in range(first, count):
                start(index)
                queue, room = queues[index], rooms[index]
                while True:
                    item = await queue.get()
                    if item is done:
                        break
                    if isinstance(item, BaseException):
                        raise item
                    room.release()
                    yield index, item, False
                producers.pop(index)
                queues.pop(index)
                rooms.pop(index)
                start(index + self.windows_ahead)
                yield index, [], True
        finally:
            await _stop(list(producers.values()))

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
        stream = self.batches()
        async with contextlib.aclosing(stream):
            async for _, batch, _ in stream:
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

        A sink that keeps its own checkpoints (``SQLiteStore``) is its own store: each batch
        is committed together with its checkpoint.
        """
        target = as_sink(sink)
        own = target if isinstance(target, CheckpointedSink) else None
        if own is not None:
            if store is not None and store is not own:
                raise TypeError(
                    f"{own!r} keeps its own checkpoints, committed with each batch: "
                    "do not pass another store="
                )
            store = own
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
        delivered_at_start = checkpoint.delivered
        self._delivered_before = checkpoint.delivered - len(checkpoint.window_ids)
        self._first_window = checkpoint.windows_done
        self._window_count = checkpoint.window_count
        self._range_count = None
        self._window_totals = {}
        self._update_total_estimate()

        def report() -> None:
            if on_progress is None:
                return
            snapshot = self._client.rate_limit
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
                    windows_counted=self._first_window + len(self._window_totals),
                    delivered_at_start=delivered_at_start,
                    rate_limit=self._server_rate_limit(snapshot),
                    remaining=snapshot.remaining if snapshot else None,
                    window=(
                        None
                        if checkpoint.windows_done >= checkpoint.window_count
                        else self._bounds(checkpoint, checkpoint.windows_done)
                    ),
                    reset_in=self._reset_in(snapshot),
                    strategy=self._plan.strategy,
                )
            )

        counting: asyncio.Future[None] | None = None
        stream = self.batches(checkpoint)
        try:
            # The count is only for progress: a run nobody watches spends no request on it.
            if on_progress is not None and checkpoint.windows_done < checkpoint.window_count:
                counting = asyncio.ensure_future(self._count_rest(checkpoint, report))
            report()
            # Inside the try: a sync cancelled (or failing) while the sink opens still closes
            # it, e.g. a file a sink's thread opened after the cancellation arrived.
            await target.open(checkpoint.sink_state if resumed else None)
            async for index, batch, finished in stream:
                if batch:
                    if own is None:
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
                if own is not None and batch:
                    await own.write_with_checkpoint(batch, key, checkpoint)  # one transaction
                else:
                    await store.save(key, checkpoint)
                self.delivered = checkpoint.delivered
                if batch or finished:
                    report()
            checkpoint.finished = True
            await store.save(key, checkpoint)
        finally:
            if counting is not None:
                counting.cancel()
            try:
                # Now, not when the garbage collector finds it: its producers end here.
                await stream.aclose()
            finally:
                await target.close()
                if counting is not None:
                    await _settle(counting)
        requests = transport.requests_sent - requests_before
        snapshot = self._client.rate_limit
        limit = self._server_rate_limit(snapshot)
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
            rate_limit=limit,
            strategy=self._plan.strategy,
            windows_exported=self._plan.windows_exported,
            windows_redone=self._plan.windows_redone,
        )

    def _reset_in(self, snapshot: RateLimitSnapshot | None) -> float | None:
        """Seconds to the server's Reset by our clock, within one period (clocks differ)."""
        if snapshot is None or snapshot.reset_at is None:
            return None
        ahead = (snapshot.reset_at - dt.datetime.now(dt.UTC)).total_seconds()
        return min(max(ahead, 0.0), self._client._rate_limit_config.period)

    def _server_rate_limit(self, snapshot: RateLimitSnapshot | None) -> RateLimit:
        """The server's ``X-RateLimit-Limit`` over the configured period (the server does not
        say its period); the configured limit until the server has answered."""
        config = self._client._rate_limit_config
        if snapshot is None or snapshot.limit is None:
            return config
        return RateLimit(requests=snapshot.limit, period=config.period)


async def _settle(helper: asyncio.Future[None]) -> None:
    """Wait for a cancelled helper to end: its outcome is dropped, our own cancellation is not."""
    try:
        await helper
    except BaseException:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


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
    runs = [
        client.calls.sync(since=since, until=pinned, window=window, strategy=strategy).run(
            sink, store=store
        )
        for client, sink in jobs
    ]
    return list(await asyncio.gather(*runs))
