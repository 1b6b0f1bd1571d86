"""Pages and the dual paginator: ``await`` it for the first page, ``async for`` for every item.

A walk asks for the first page, learns ``total`` and the page size the server really honours
(it silently caps ``per_page``), then fetches the following pages ``concurrency`` at a time,
through the same rate gate, and yields items in page order. It stops at ``total`` (counted
from items *received*, never from what was asked), at an empty page (raising
``ResponseDecodeError`` if that page's own ``total`` says items are missing), or at
``max_items``. No id is yielded twice in one walk.

Offset pages over a list that changes while it is walked shift: a deletion before a page's
offset moves an item onto a page already read (a naive walk skips it), an insert moves one
onto the next page (a duplicate, dropped). So a walk that saw the list change (its totals
differ, or, with pages fetched concurrently, a second look at the first page differs) proves
it missed nothing before it ends. Every read is a contiguous run of the list as it was at that
moment, and the list's order is stable, so two reads that share an item cover everything
between their ends. The walk is complete once reads joined up that way lead from the first
page to a read that reached the end of the list; until then it re-reads where the chain
breaks, with windows that straddle the break (other page sizes put their edges elsewhere).
If the list changes so fast that the re-reads cannot join up within a bounded number of
requests, it raises ``InconsistentPagesError`` naming where, never ending silently short.
Items without an ``id`` are not checked; neither is a walk limited by ``max_items``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Hashable
from typing import Any, Generic, TypeVar

import attrs

from ._errors import InconsistentPagesError, ResponseDecodeError

__all__ = ["AsyncPaginator", "Page"]

T = TypeVar("T")

PageFetcher = Callable[[int, int], Awaitable["Page[T]"]]


@attrs.frozen
class Page(Generic[T]):
    """One page of a list endpoint.

    ``per_page`` is what was asked; ``has_next_page`` is computed from the items that
    actually arrived, so a server that caps ``per_page`` does not end a walk early.
    """

    items: list[T]
    total: int
    page: int
    per_page: int
    page_size: int | None = None  # the size the server honours, when known

    @property
    def has_next_page(self) -> bool:
        if not self.items:
            return False
        size = self.page_size or max(len(self.items), 1)
        return (self.page - 1) * size + len(self.items) < self.total

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Any:
        return iter(self.items)


def _item_key(item: Any) -> Hashable | None:
    key = getattr(item, "id", None)
    return key if isinstance(key, Hashable) else None


class AsyncPaginator(Generic[T]):
    """Returned by every paginated ``list``: awaitable and async-iterable.

    >>> async def newest(client) -> None:
    ...     first = await client.calls.list(per_page=10)           # one request
    ...     async for call in client.calls.list(status="answered"):  # every page
    ...         print(call.id)
    """

    def __init__(
        self,
        fetch: PageFetcher[T],
        *,
        per_page: int,
        page: int = 1,
        max_items: int | None = None,
        concurrency: int = 8,
        server_max: int = 100,
    ) -> None:
        if max_items is not None and (isinstance(max_items, bool) or max_items < 0):
            raise ValueError(f"max_items must be >= 0, got {max_items!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            raise ValueError(f"page must be an int >= 1, got {page!r}")
        self._fetch = fetch
        self._per_page = per_page
        self._page = page
        self._max_items = max_items
        self._concurrency = concurrency
        self._server_max = server_max
        self.pages_fetched = 0
        # True when nothing can be inserted ahead of the first page (a ``date_to`` already
        # past, newest first): a walk whose totals never changed then needs no second look
        # at its first page.
        self.head_pinned = False

    def __await__(self) -> Generator[Any, None, Page[T]]:
        return self._first().__await__()

    async def _first(self) -> Page[T]:
        self.pages_fetched += 1
        return await self._fetch(self._page, self._per_page)

    def __aiter__(self) -> AsyncIterator[T]:
        return self._items()

    async def _items(self) -> AsyncIterator[T]:
        remaining = self._max_items
        if remaining == 0:
            return
        pages = self.pages()
        async with contextlib.aclosing(pages):
            async for page in pages:
                for item in page.items:
                    yield item
                    if remaining is not None:
                        remaining -= 1
                        if remaining <= 0:
                            return

    async def pages(self) -> AsyncGenerator[Page[T], None]:
        """Every page in order; later pages are fetched ``concurrency`` at a time.

        Items already yielded in this walk are left out of later pages; re-reads that a
        changing list needs come after the last page, as pages of their own.
        """
        seen: set[Hashable] = set()
        reads = _Reads()
        checked = self._max_items is None

        def fresh(page: Page[T], start: int, size: int | None) -> Page[T]:
            # ``size``: the honoured page size, so that a shorter answer means the end of the
            # list; None for a re-read at another size, which is never taken for the end.
            nonlocal checked
            keys: list[Hashable] = []
            items: list[T] = []
            for item in page.items:
                key = _item_key(item)
                if key is None:
                    checked = False  # nothing to join reads up with
                    items.append(item)
                    continue
                keys.append(key)
                if key not in seen:
                    seen.add(key)
                    items.append(item)
            if checked and page.items:
                end = size is not None and (
                    len(page.items) < size or start + len(page.items) >= page.total
                )
                reads.add(start, keys, page.total, end=end)
            if len(items) == len(page.items):
                return page
            return attrs.evolve(page, items=items)

        first = await self._first()
        if not first.items:
            self._check_empty(first, self._per_page, 0)
            yield first
            return
        # A server that honours a smaller page size than asked (it caps per_page silently)
        # shows it on the first page: fewer items than asked while total says more exist.
        size = self._per_page
        if len(first.items) < self._per_page and first.total > len(first.items):
            size = len(first.items)
        yield fresh(first, (first.page - 1) * size, size)
        total = first.total
        received = (first.page - 1) * size + len(first.items)
        wanted = None if self._max_items is None else self._max_items
        next_page = first.page + 1
        pending: dict[int, asyncio.Task[Page[T]]] = {}

        def last_page() -> int:
            # Pages needed to reach total (or max_items) at the honoured size.
            target = total if wanted is None else min(total, (first.page - 1) * size + wanted)
            return max(first.page, -(-target // size))

        try:
            while received < total and next_page <= last_page():
                while len(pending) < self._concurrency and next_page + len(pending) <= last_page():
                    number = next_page + len(pending)
                    pending[number] = asyncio.ensure_future(self._fetch_page(number))
                page = await pending.pop(next_page)
                next_page += 1
                if not page.items:
                    self._check_empty(page, size, received)
                    reads.note_total(page.total)
                    yield page
                    break  # an empty page at the end: the data shrank; never loop
                if self._concurrency == 1 and checked:
                    # Fetched after the previous page arrived: a total that did not shrink
                    # in between means no item moved back past this page's start.
                    reads.follows_if_not_shrunk()
                yield fresh(page, (page.page - 1) * size, size)
                received += len(page.items)
                total = page.total  # the latest word: items come and go while paging
        finally:
            for task in pending.values():
                task.cancel()
            if pending:
                await asyncio.gather(*pending.values(), return_exceptions=True)
        if not checked or (len(reads.reads) == 1 and reads.reads[0].end):
            return  # one answer that reached the end: a snapshot of the whole list
        if reads.unchanged() and (self._concurrency == 1 or self.head_pinned):
            return  # nothing moved: no deletion (the total would drop), no insert ahead
        if not reads.unchanged() and reads.complete():
            return
        if reads.unchanged():
            # Same total everywhere, but concurrent pages are answered in any order, and an
            # insert at the head balanced by a deletion keeps the total: a second look at
            # the first page tells.
            again = fresh(await self._fetch_sized(first.page, self._per_page),
                          (first.page - 1) * size, size)  # fmt: skip
            if again.items:
                yield again  # calls inserted at the head meanwhile
            if reads.unchanged() and reads.same_as_first():
                return
        async for page in self._repair(reads, fresh, size, first.page):
            yield page

    async def _repair(
        self,
        reads: _Reads,
        fresh: Callable[[Page[T], int, int | None], Page[T]],
        size: int,
        first_page: int,
    ) -> AsyncGenerator[Page[T], None]:
        """Re-read where the chain of joined-up reads breaks until it reaches the end."""
        widest = self._server_max if size == self._per_page else size
        widest = max(size, widest)
        budget = 4 + 2 * len(reads.reads)
        nudge = 0  # where the last re-read landed relative to the break, learnt
        for _ in range(budget):
            if reads.complete():
                return
            latest = reads.latest_total
            reach = reads.reach()
            if reach >= latest - 1 or not reads.has_end():
                # Read the end of the list as it is now, at the honoured size (so a short
                # answer means the end), and join it up below if it does not yet.
                number = max(first_page, -(-latest // size))
                page = await self._fetch_sized(number, self._per_page)
                if not page.items:
                    reads.note_total(page.total)
                    if number == first_page:
                        # The list is empty now: every item it had was deleted.
                        reads.emptied()
                    continue
                yield_page = fresh(page, (number - 1) * size, size)
            else:
                number, per_page = _straddle(reach + nudge, widest)
                page = await self._fetch_sized(number, per_page)
                reads.note_total(page.total)
                if not page.items:
                    nudge -= widest // 2
                    continue
                yield_page = fresh(page, (number - 1) * per_page, None)
                if not reads.joined_last():
                    nudge -= widest // 3  # it landed past the break: aim earlier
                elif reads.reach() <= reach:
                    nudge += widest // 3  # inside what was joined already: aim later
                else:
                    nudge = 0
            if yield_page.items:
                yield yield_page
        if not reads.complete():
            raise InconsistentPagesError(
                f"the list changed while it was walked and {budget} re-reads could not join "
                f"the pages up: items after about position {reads.reach()} of "
                f"{reads.latest_total} may be missing (the last one confirmed: "
                f"{reads.last_confirmed()!r}); walk it again when it changes less"
            )

    @staticmethod
    def _check_empty(page: Page[Any], size: int, received: int) -> None:
        """An empty page is the end only if its own total agrees; otherwise items were hidden."""
        if page.total > (page.page - 1) * size:
            raise ResponseDecodeError(
                f"page {page.page} is empty although its total ({page.total}) says items "
                f"from {(page.page - 1) * size + 1} on exist; stopped after {received} items "
                "rather than skip them",
                path="$",
                model="Page",
            )

    async def _fetch_page(self, number: int) -> Page[T]:
        self.pages_fetched += 1
        return await self._fetch(number, self._per_page)

    async def _fetch_sized(self, number: int, per_page: int) -> Page[T]:
        self.pages_fetched += 1
        return await self._fetch(number, per_page)


def _straddle(position: int, widest: int) -> tuple[int, int]:
    """A ``(page, per_page)`` whose window holds ``position`` well inside it.

    Pages of one size all have their edges at its multiples; among the sizes from half the
    widest to the widest, one puts ``position`` far from both edges of its page.
    """
    position = max(position, 0)
    best = (1, widest, -1)
    for per_page in range(widest, max(1, widest // 2) - 1, -1):
        # Aim a third of the way in: the break moves with later deletions and inserts.
        number = max(1, round((position - per_page / 3) / per_page) + 1)
        start = (number - 1) * per_page
        margin = min(position - start, start + per_page - position)
        if margin > best[2]:
            best = (number, per_page, margin)
    return best[0], best[1]


@attrs.define
class _Read:
    start: int  # its offset, as asked
    keys: list[Hashable]
    total: int
    end: bool  # it reached the end of the list as it was then


class _Reads:
    """The reads of one walk and which of them are proven to join up (a union-find).

    Reads sharing an item join; so do consecutive pages proven adjacent by their totals.
    The walk is complete when the first read and a read that reached the end are joined.
    """

    def __init__(self) -> None:
        self.reads: list[_Read] = []
        self.latest_total = 0
        self._totals: set[int] = set()
        self._again_same = False
        self._follows: list[tuple[int, int]] = []  # consecutive reads proven adjacent
        self._pending_follow: int | None = None
        self._empty = False
        # The union-find over reads, built only when a walk needs its proof (most walks see
        # no change and never do): parents, and the read each item was first seen in.
        self._parent: list[int] = []
        self._owner: dict[Hashable, int] | None = None

    def note_total(self, total: int) -> None:
        self.latest_total = total
        self._totals.add(total)

    def add(self, start: int, keys: list[Hashable], total: int, *, end: bool) -> None:
        index = len(self.reads)
        self.reads.append(_Read(start, keys, total, end))
        self.note_total(total)
        if index and start == self.reads[0].start and keys == self.reads[0].keys:
            self._again_same = True
        follow, self._pending_follow = self._pending_follow, None
        if follow is not None and total >= self.reads[follow].total:
            self._follows.append((follow, index))
        if self._owner is not None:
            self._index(index)
            if follow is not None and self._follows and self._follows[-1] == (follow, index):
                self._union(follow, index)

    def _ensure(self) -> None:
        if self._owner is None:
            self._owner = {}
            for index in range(len(self.reads)):
                self._index(index)
            for a, b in self._follows:
                self._union(a, b)

    def _index(self, index: int) -> None:
        assert self._owner is not None
        self._parent.append(index)
        for key in self.reads[index].keys:
            owner = self._owner.setdefault(key, index)
            if owner != index:
                self._union(owner, index)

    def follows_if_not_shrunk(self) -> None:
        """The next read was fetched after the latest one arrived (sequential walk)."""
        if self.reads:
            self._pending_follow = len(self.reads) - 1

    def emptied(self) -> None:
        self._empty = True

    def _find(self, index: int) -> int:
        while self._parent[index] != index:
            self._parent[index] = self._parent[self._parent[index]]
            index = self._parent[index]
        return index

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self._parent[max(ra, rb)] = min(ra, rb)

    def complete(self) -> bool:
        if not self.reads or self._empty:
            return True
        self._ensure()
        head = self._find(0)
        return any(r.end and self._find(i) == head for i, r in enumerate(self.reads))

    def unchanged(self) -> bool:
        return len(self._totals) <= 1

    def same_as_first(self) -> bool:
        return self._again_same

    def has_end(self) -> bool:
        return any(r.end for r in self.reads)

    def _joined(self) -> list[int]:
        self._ensure()
        head = self._find(0)
        return [i for i in range(len(self.reads)) if self._find(i) == head]

    def joined_last(self) -> bool:
        self._ensure()
        return self._find(len(self.reads) - 1) == self._find(0)

    def reach(self) -> int:
        """Where the joined reads end now, estimated: their furthest end, moved by the
        change of the total since (spread evenly over the list)."""
        best = 0
        for i in self._joined():
            r = self.reads[i]
            end = r.start + len(r.keys)
            if r.total > 0:
                end += round((self.latest_total - r.total) * end / r.total)
            best = max(best, end)
        return best

    def last_confirmed(self) -> Hashable | None:
        joined = self._joined()
        far = max(joined, key=lambda i: self.reads[i].start + len(self.reads[i].keys))
        keys = self.reads[far].keys
        return keys[-1] if keys else None
