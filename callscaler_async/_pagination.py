"""Pages and the dual paginator: ``await`` it for the first page, ``async for`` for every item.

A walk asks for the first page, learns ``total`` and the page size the server really honours
(it silently caps ``per_page``), then fetches the following pages ``concurrency`` at a time,
through the same rate gate, and yields items in page order. It stops at ``total`` (counted
from items *received*, never from what was asked), at an empty page (raising
``ResponseDecodeError`` if that page's own ``total`` says items are missing), or at
``max_items``; an id already yielded in this walk is not yielded again (offsets shift when
items are inserted while paging).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Hashable
from typing import Any, Generic, TypeVar

import attrs

from ._errors import ResponseDecodeError

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

    def __await__(self) -> Generator[Any, None, Page[T]]:
        return self._first().__await__()

    async def _first(self) -> Page[T]:
        self.pages_fetched += 1
        return await self._fetch(self._page, self._per_page)

    def __aiter__(self) -> AsyncIterator[T]:
        return self._items()

    async def _items(self) -> AsyncIterator[T]:
        seen: set[Hashable] = set()
        remaining = self._max_items
        if remaining == 0:
            return
        pages = self.pages()
        async with contextlib.aclosing(pages):
            async for page in pages:
                for item in page.items:
                    key = _item_key(item)
                    if key is not None:
                        if key in seen:
                            continue
                        seen.add(key)
                    yield item
                    if remaining is not None:
                        remaining -= 1
                        if remaining <= 0:
                            return

    async def pages(self) -> AsyncGenerator[Page[T], None]:
        """Every page in order; later pages are fetched ``concurrency`` at a time."""
        first = await self._first()
        if not first.items:
            self._check_empty(first, self._per_page, 0)
            yield first
            return
        yield first
        # A server that honours a smaller page size than asked (it caps per_page silently)
        # shows it on the first page: fewer items than asked while total says more exist.
        size = self._per_page
        if len(first.items) < self._per_page and first.total > len(first.items):
            size = len(first.items)
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
                    yield page
                    return  # an empty page at the end: the data shrank; never loop
                yield page
                received += len(page.items)
                total = page.total  # the latest word: items come and go while paging
        finally:
            for task in pending.values():
                task.cancel()
            if pending:
                await asyncio.gather(*pending.values(), return_exceptions=True)

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
