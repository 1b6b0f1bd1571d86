"""A small CallScaler backend: recent calls, a number's stats, and the webhook receiver.

Run against the sandbox (``callscaler sandbox`` prints a key and a base URL)::

    export CALLSCALER_API_KEY=cs_key_...
    export CALLSCALER_BASE_URL=http://127.0.0.1:8765/api/v1/
    export CALLSCALER_WEBHOOK_SECRET=a-long-random-shared-secret
    uvicorn examples.fastapi_app:app

Environment (read when each worker starts):

* ``CALLSCALER_RATE_LIMIT``: the business's budget, ``60`` (per ``CALLSCALER_RATE_PERIOD``
  seconds, default 60) or a spec like ``"60/60s"``; the API's is 60 per minute.
* ``CALLSCALER_REDIS_URL``: with several workers, the one setting that makes them share one
  budget (``uvicorn examples.fastapi_app:app --workers 4 --timeout-graceful-shutdown 35``).
  Without Redis, ``CALLSCALER_WORKERS=4`` gives each worker a quarter of the budget instead.
* ``CALLSCALER_MAX_WAIT``: seconds a request may wait for the budget before it answers 503
  with ``Retry-After`` (default 30; keep the server's graceful-shutdown timeout above it).
* ``CALLSCALER_WEBHOOK_SECRET``: the value CallScaler sends in the ``X-CallScaler-Secret``
  custom header; without it the webhook route is not mounted.

One client serves every request (opened in the lifespan, closed at shutdown): every request
shares its connection pool and the business's rate gate. A request that must wait for the
rate limit waits without blocking the others. Failures answer as
``callscaler_async.contrib.fastapi.error_response`` says: 503 + ``Retry-After`` when the
budget is spent, 503 when Redis is down, 502 when the API fails, 504 when it times out.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from collections import deque
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query

import callscaler_async as cs
from callscaler_async.contrib.fastapi import (
    CallScalerClients,
    add_error_handlers,
    webhook_router,
)
from callscaler_async.webhooks import WebhookEvent

# As a library the SDK adds no handler to its "callscaler_async" logger, and uvicorn configures
# only its own loggers: without this, the SDK's warnings (another process spending the
# budget, failures answered as 503/502/504) would reach no one.
logging.basicConfig(level=logging.WARNING, format="%(levelname)s:     %(name)s: %(message)s")
logger = logging.getLogger("callscaler_example")

clients = CallScalerClients()  # budget, Redis, static share: from the environment
clients.add(
    "main",
    # A web request should not queue for minutes behind a busy budget: fail fast instead.
    max_wait=float(os.environ.get("CALLSCALER_MAX_WAIT", "30")),
)
Client = Annotated[cs.CallScaler, Depends(clients.client)]

app = FastAPI(title="CallScaler example", lifespan=clients.lifespan)
add_error_handlers(app)

# The last webhook events received (a real service would write them to its database).
recent_events: deque[dict[str, Any]] = deque(maxlen=100)


def call_summary(call: cs.Call) -> dict[str, Any]:
    return {
        "id": str(call.id),
        "status": call.status.value,
        "started_at": call.started_at.isoformat(),
        "caller_number": call.caller_number,
        "tracking_number": call.tracking_number,
        "duration_seconds": call.duration_seconds,
        "source": call.source,
        "cost": str(call.cost) if call.cost is not None else None,
    }


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/calls")
async def recent_calls(
    client: Client,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    status: str | None = None,
) -> dict[str, Any]:
    """The newest calls (one API request)."""
    page = await client.calls.list(per_page=limit, status=status)
    return {"total": page.total, "calls": [call_summary(c) for c in page.items]}


@app.get("/numbers/{number_id}/stats")
async def number_stats(
    number_id: uuid.UUID,
    client: Client,
    days: Annotated[int, Query(ge=1, le=365)] = 30,
) -> dict[str, Any]:
    """A tracking number and its calls of the last ``days`` days, by status."""
    try:
        number = await client.numbers.get(number_id)
    except cs.NotFoundError:
        raise HTTPException(404, f"number {number_id} not found") from None
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    report = await client.analytics.calls(
        number_id=number_id,
        date_from=since,
        group_by=["status"],
        metrics=["count", "avg_duration", "qualified_pct"],
    )
    return {
        "number": {
            "id": str(number.id),
            "phone_number": number.phone_number,
            "name": number.friendly_name,
            "total_calls": number.total_calls,
        },
        "since": since.isoformat(),
        "by_status": [
            {"status": row.groups.get("status"), **{k: _plain(v) for k, v in row.metrics.items()}}
            for row in report.rows
        ],
        "totals": {k: _plain(v) for k, v in report.totals.items()},
    }


def _plain(value: Any) -> Any:
    return value if isinstance(value, int | float | str | None) else str(value)


@app.get("/webhooks/recent")
async def webhooks_recent() -> list[dict[str, Any]]:
    return list(recent_events)


async def on_webhook(event: WebhookEvent) -> None:
    """Runs after CallScaler got its 200 (a background task): slow work is fine here."""
    recent_events.append(
        {
            "event": event.event.value,
            "id": event.id,
            "call": call_summary(event.call) if event.call is not None else None,
            "received_at": dt.datetime.now(dt.UTC).isoformat(),
        }
    )
    logger.info("webhook %s for call %s", event.event, event.call.id if event.call else None)


_secret = os.environ.get("CALLSCALER_WEBHOOK_SECRET")
if _secret:
    app.include_router(webhook_router(on_webhook, secret=_secret))
