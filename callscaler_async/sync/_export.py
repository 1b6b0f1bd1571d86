"""Sync by export: one ``calls/export`` request per window, checked against the list's count.

The budget (60 requests a minute) bounds a sync by pages at one request per 100 calls. The
export streams every call of a window in one request, whatever their number, so a window
costs two requests: the count and the export.

What it assumes, and how it checks itself:

* The export applies the list's filters (``date_from``/``date_to``) and carries the list's
  fields as columns. Before the first row is used, the header row is checked to carry every
  field ``Call`` needs; if it does not, ``auto`` syncs the whole range by pages (logged once at
  INFO) and ``export`` raises ``SyncError``.
* Per window, the list's ``total`` for the same bounds (one ``per_page=1`` request) must equal
  the number of distinct calls of the window the export delivered. When it differs (calls
  deleted or back-dated under the sync, or an export that lost rows), or the export breaks
  mid-stream, the window is walked again by pages, skipping the ids already delivered: the
  pages walk has its own checks (``total`` stable across pages, halving a range that moves).
* Ids already delivered (before a resume, or earlier in the stream) are skipped, so a
  duplicate row or a re-exported window never reaches the sink twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Literal

from .._convert import csv_columns
from .._errors import (
    APIConnectionError,
    APIStatusError,
    InternalServerError,
    ResponseDecodeError,
)
from ..models import Call

if TYPE_CHECKING:
    from ._engine import CallSync

__all__ = ["ExportPlan", "Strategy", "walk_window_by_export"]

logger = logging.getLogger("callscaler_async.sync")

Strategy = Literal["auto", "pages", "export"]
STRATEGIES: tuple[str, ...] = ("auto", "pages", "export")

# Calls handed on per batch: each batch is one sink write and one checkpoint save.
_BATCH = 500
# An export refused with these says the endpoint (or these filters) is not available.
_UNSUPPORTED = frozenset({400, 404, 405, 406, 410, 501})


class _HeaderLacks(Exception):
    def __init__(self, missing: list[str]) -> None:
        super().__init__(", ".join(missing))
        self.missing = missing


class ExportPlan:
    """Whether this sync uses the export, decided once by the first window that tries it.

    Windows run concurrently; the first one to get here sends its export (the *probe*) and
    the others wait for its header to decide: export for all, or pages for the whole sync.
    """

    def __init__(self, strategy: str) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        self.requested = strategy
        self.mode: str | None = "pages" if strategy == "pages" else None
        self.reason: str | None = None  # why auto fell back to pages
        self.windows_exported = 0  # windows delivered by export and verified
        self.windows_redone = 0  # windows walked again by pages after an export
        self._probing = False
        self._changed = asyncio.Event()

    @property
    def strategy(self) -> str:
        """The strategy that ran: ``export`` once one window was exported, else ``pages``."""
        return "export" if self.mode == "export" or self.windows_exported else "pages"

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _turn(self) -> bool:
        """Wait until the mode is known or this window may probe; True: probe."""
        while self.mode is None:
            if not self._probing:
                self._probing = True
                return True
            await self._changed.wait()
        return False

    def _release(self) -> None:
        """The probe ended before its header decided anything: another window may try."""
        self._probing = False
        self._signal()

    def _decide(self, mode: str, reason: str | None = None) -> None:
        if self.mode is None:
            self.mode = mode
            self.reason = reason
            if reason is not None:
                logger.info("sync by export not possible (%s): syncing by pages", reason)
            self._signal()


def _sync_error(message: str) -> Exception:
    from ._engine import SyncError  # the engine imports this module

    return SyncError(message)


def _lacking(header: tuple[str, ...]) -> None:
    missing = [column for column in csv_columns(Call) if column not in header]
    if missing:
        raise _HeaderLacks(missing)


def _redo(
    sync: CallSync, start: dt.datetime, last: dt.datetime, seen: set[str], index: int
) -> AsyncGenerator[list[Call], None]:
    # top=False: the window's total was noted from the count request already.
    return sync._walk_range(start, last, seen, index=index, top=False)


async def walk_window_by_export(
    sync: CallSync,
    plan: ExportPlan,
    start: dt.datetime,
    last: dt.datetime,
    seen: set[str],
    *,
    index: int,
) -> AsyncGenerator[list[Call], None]:
    """Every call of ``[start, last]`` not in ``seen``: by export when it checks out."""
    probe = await plan._turn()
    if plan.mode == "pages":
        async with contextlib.aclosing(
            sync._walk_range(start, last, seen, index=index, top=True)
        ) as walk:
            async for paged in walk:
                yield paged
        return
    decided = not probe
    try:
        client = sync._client
        page = await client.calls.list(date_from=start, date_to=last, per_page=1)
        sync.counts += 1
        total = page.total
        sync._note_total(index, total)
        if total == 0 and not probe:  # nothing to export: the count was the whole walk
            return
        upper = last + dt.timedelta(seconds=1)
        exported: set[str] = set()  # distinct calls of the window in this export
        batch: list[Call] = []
        problem: str | None = None
        # Why this sync cannot go by export at all (the first export showed it), if so.
        unusable: str | None = None
        try:
            export = client.calls.export(date_from=start, date_to=last)
            async with contextlib.aclosing(export.call_batches(on_header=_lacking)) as stream:
                async for calls in stream:
                    if not decided:
                        plan._decide("export")
                        decided = True
                    for call in calls:
                        key = str(call.id)
                        if key in exported or not (start <= call.started_at < upper):
                            continue
                        exported.add(key)
                        if key not in seen:
                            seen.add(key)
                            batch.append(call)
                    if len(batch) >= _BATCH:
                        yield batch
                        batch = []
        except _HeaderLacks as exc:
            problem = f"the export's header lacks {exc}"
            if not decided:
                if plan.requested == "export":
                    raise _sync_error(f"cannot sync by export: {problem}") from None
                unusable = problem
        except APIStatusError as exc:
            if exc.status not in _UNSUPPORTED and not isinstance(exc, InternalServerError):
                raise
            problem = f"the export answered {exc.status}"
            if not decided and exc.status in _UNSUPPORTED:
                if plan.requested == "export":
                    raise _sync_error(f"cannot sync by export: {problem}") from exc
                unusable = problem
        except (APIConnectionError, ResponseDecodeError) as exc:
            problem = f"the export broke off ({exc})"
        if unusable is not None:
            plan._decide("pages", unusable)
            async with contextlib.aclosing(_redo(sync, start, last, seen, index)) as walk:
                async for redone in walk:
                    yield redone
            return
        if batch:  # whole, valid calls of the window: delivered before the window is redone
            yield batch
        if problem is None and len(exported) == total:
            plan.windows_exported += 1
            return
        if problem is None:
            problem = f"the export had {len(exported)} calls, the list's total is {total}"
        plan.windows_redone += 1
        sync.rewalks += 1
        logger.info(
            "sync window %d (%s..%s): %s; walking it by pages, skipping the %d delivered",
            index, start, last, problem, len(seen),
        )  # fmt: skip
        async with contextlib.aclosing(_redo(sync, start, last, seen, index)) as walk:
            async for redone in walk:
                yield redone
    finally:
        if not decided:
            plan._release()
