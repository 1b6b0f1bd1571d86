"""De-duplication of redelivered webhooks: a store of keys already seen.

CallScaler retries a delivery it thinks failed after 1, 5 and 15 minutes, so the same event
can arrive up to four times (more when your endpoint was slow to answer). The receiver
*claims* the event's key before handing the event to your code; a second claim within the
TTL fails and the delivery is acknowledged without processing it again.

``DeliveryStore`` is the protocol; ``InMemoryDeliveryStore`` serves one process. For several
workers or hosts, implement the two methods over a shared store, e.g. with Redis::

    class RedisDeliveryStore:
        def __init__(self, redis): self.redis = redis
        async def claim(self, key: str, ttl: float) -> bool:
            return bool(await self.redis.set(f"cs:webhook:{key}", 1, nx=True, px=int(ttl * 1000)))
        async def forget(self, key: str) -> None:
            await self.redis.delete(f"cs:webhook:{key}")
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["DeliveryStore", "InMemoryDeliveryStore"]


@runtime_checkable
class DeliveryStore(Protocol):
    """Where the receiver remembers the events it has accepted."""

    async def claim(self, key: str, ttl: float) -> bool:
        """Mark ``key`` seen for ``ttl`` seconds; False if it already was (atomically)."""
        ...

    async def forget(self, key: str) -> None:
        """Drop ``key`` (processing failed before the delivery was acknowledged)."""
        ...


class InMemoryDeliveryStore:
    """Keys seen in this process, each kept ``ttl`` seconds, at most ``max_entries`` of them.

    Time is the event loop's clock (``clock`` overrides it, e.g. in tests). When full, the
    oldest keys go first: memory stays bounded whatever arrives.
    """

    def __init__(
        self, *, max_entries: int = 100_000, clock: Callable[[], float] | None = None
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be an int >= 1, got {max_entries!r}")
        self._max_entries = max_entries
        self._clock = clock
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def _evict(self, now: float) -> None:
        # Insertion order is expiry order only for one TTL; a stale head still goes first.
        while self._expiry:
            key, expires = next(iter(self._expiry.items()))
            if expires > now and len(self._expiry) < self._max_entries:
                break
            del self._expiry[key]

    async def claim(self, key: str, ttl: float) -> bool:
        now = self._now()
        expires = self._expiry.get(key)
        if expires is not None and expires > now:
            return False
        self._expiry.pop(key, None)
        self._evict(now)
        self._expiry[key] = now + ttl
        return True

    async def forget(self, key: str) -> None:
        self._expiry.pop(key, None)

    def __len__(self) -> int:
        return len(self._expiry)
