"""pytest plugin: ``callscaler_fake`` and ``callscaler_fake_factory`` fixtures.

Registered through the ``pytest11`` entry point ``callscaler_async``::

    async def test_calls(callscaler_fake):
        url = callscaler_fake.base_url + "calls"

    async def test_two(callscaler_fake_factory):
        fake = await callscaler_fake_factory(rate_limit=5, period=3.0, algorithm="sliding")

``algorithm`` is one of "fixed", "sliding", "bucket" or "counter" (a sliding-window counter).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio

from ._server import FakeCallScaler

__all__ = ["callscaler_fake", "callscaler_fake_factory"]

FakeFactory = Callable[..., Awaitable[FakeCallScaler]]


@pytest_asyncio.fixture
async def callscaler_fake() -> AsyncIterator[FakeCallScaler]:
    """A started :class:`FakeCallScaler` with default settings, closed after the test."""
    async with FakeCallScaler() as fake:
        yield fake


@pytest_asyncio.fixture
async def callscaler_fake_factory() -> AsyncIterator[FakeFactory]:
    """``await factory(**kwargs)`` starts one more fake; all are closed after the test."""
    fakes: list[FakeCallScaler] = []

    async def factory(**kwargs: Any) -> FakeCallScaler:
        fake = await FakeCallScaler(**kwargs).start()
        fakes.append(fake)
        return fake

    yield factory
    for fake in reversed(fakes):
        await fake.close()
