"""An app that builds its Redis limiter at import: under ``gunicorn --preload`` that is in the
master, before the workers fork (each worker must still get a ledger identity of its own)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI

import callscaler_async as cs
from callscaler_async.contrib.fastapi import (
    CallScalerClients,
    add_error_handlers,
    parse_rate_limit,
)
from callscaler_async.ratelimit.redis import RedisRateLimiter

limiter = RedisRateLimiter(
    os.environ["CALLSCALER_REDIS_URL"],
    business="preload",
    rate_limit=parse_rate_limit(os.environ.get("CALLSCALER_RATE_LIMIT", "20/2s")),
)
clients = CallScalerClients()
clients.add("main", rate_limiter=limiter, max_wait=30.0)
Client = Annotated[cs.CallScaler, Depends(clients.client)]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    try:
        async with clients.open():
            yield
    finally:
        await limiter.aclose()  # ours: the clients were given it and leave it open


app = FastAPI(lifespan=lifespan)
add_error_handlers(app)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/calls")
async def calls(client: Client) -> dict[str, int]:
    page = await client.calls.list(per_page=1)
    return {"total": page.total}
