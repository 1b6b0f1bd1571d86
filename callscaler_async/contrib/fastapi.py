"""FastAPI integration: one client per business for the app's lifetime, and webhooks.

Install with ``pip install 'callscaler-async[fastapi]'``.

The failures this prevents: a client created per request (a new connection pool, a leaked
session, "Unclosed client session"), a client bound to another event loop, a request
waiting at the rate gate with nothing to show for it. Clients are opened in the app's
lifespan (in the server's event loop), shared by every request, and closed at shutdown::

    from fastapi import Depends, FastAPI
    from callscaler_async import CallScaler
    from callscaler_async.contrib.fastapi import CallScalerClients

    clients = CallScalerClients()
    clients.add("main")                             # key from CALLSCALER_API_KEY
    app = FastAPI(lifespan=clients.lifespan)

    @app.get("/calls")
    async def calls(client: CallScaler = Depends(clients.client)) -> list[str]:
        return [str(c.id) for c in (await client.calls.list(per_page=10)).items]

Several businesses: ``clients.add("acme", api_key=...)``, ``clients.add("globex", ...)``,
then ``Depends(clients.from_path("business"))`` or ``Depends(clients.from_header(
"X-Business"))`` picks one per request. An app that owns its aiohttp session passes it to
``clients.open(session=...)`` inside its own lifespan.

Several worker processes (``uvicorn --workers 4``, gunicorn) share one budget by
configuration, read when the app starts (in each worker, after any fork):

* ``CALLSCALER_REDIS_URL=redis://host:6379/0``: every business without a ``rate_limiter``
  of its own paces through Redis (``RedisRateLimiter``, built in the lifespan with the
  business's ``rate_limit``, closed with the clients, so a restart releases its slots).
* ``CALLSCALER_WORKERS=4`` (without Redis): each worker takes a static share, the budget
  divided by 4 (rounded down); a worker cannot use the share of an idle one.
* ``CALLSCALER_RATE_LIMIT`` (``60``, or ``"60/60s"``, ``"20/2s"``, ``"1000/1h"``) and
  ``CALLSCALER_RATE_PERIOD`` (seconds): the budget of a business added without
  ``rate_limit=`` (default 60 per 60 s).

``add_error_handlers(app)`` turns the SDK's failures into answers for the app's own clients
(see ``error_response``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
from fastapi import APIRouter, BackgroundTasks, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._client import DEFAULT_RATE_LIMIT, CallScaler
from .._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    CallScalerError,
    RateLimitError,
    RateLimiterUnavailable,
)
from ..ratelimit import RateLimit
from ..ratelimit.redis import redact_url
from ..webhooks import (
    DEFAULT_DEDUPE_TTL,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_SECRET_HEADER,
    Delivery,
    DeliveryStore,
    WebhookEvent,
    WebhookReceiver,
    WebhookRejected,
)

__all__ = [
    "CallScalerClients",
    "add_error_handlers",
    "error_response",
    "parse_rate_limit",
    "webhook_router",
]

logger = logging.getLogger("callscaler_async")


class CallScalerClients:
    """The app's CallScaler clients: configured at import, opened by the lifespan.

    ``add(name, **kwargs)`` takes the arguments of ``CallScaler`` (``api_key``,
    ``base_url``, ``rate_limit``, hooks, ...); the client is built when the app starts, so
    it binds to the server's event loop, and closed when the app stops. The first business
    added is the default one (``client``). The deployment settings (``CALLSCALER_REDIS_URL``,
    ``CALLSCALER_WORKERS``, ``CALLSCALER_RATE_LIMIT``, ``CALLSCALER_RATE_PERIOD``, see the
    module's docstring) are read from ``environ`` (default: ``os.environ``) when the clients
    open, in the serving process.
    """

    def __init__(self, *, environ: Mapping[str, str] | None = None) -> None:
        self._configs: dict[str, dict[str, Any]] = {}
        self._clients: dict[str, CallScaler] | None = None
        # Read at open(), in the serving process: None is os.environ as it is then.
        self._environ = environ

    def add(self, name: str, **client_kwargs: Any) -> None:
        """Register business ``name``; ``client_kwargs`` go to ``CallScaler(...)``."""
        if not isinstance(name, str) or not name:
            raise ValueError("a business needs a non-empty name")
        if name in self._configs:
            raise ValueError(f"business {name!r} is already configured")
        if "session" in client_kwargs:
            raise TypeError("pass an app-owned session to open(session=...), not to add()")
        client_kwargs.setdefault("business", name)
        self._configs[name] = client_kwargs

    @property
    def names(self) -> list[str]:
        return list(self._configs)

    @asynccontextmanager
    async def open(self, *, session: aiohttp.ClientSession | None = None) -> AsyncIterator[None]:
        """Open every client for the duration of the block (the app's lifespan).

        With ``session``, every client sends through that app-owned session and leaves it
        open; without, each client opens one session of its own and closes it on exit.
        """
        if self._clients is not None:
            raise RuntimeError("these CallScaler clients are already open")
        if not self._configs:
            raise RuntimeError("no business configured: call clients.add(name, ...) first")
        env = os.environ if self._environ is None else self._environ
        deployment = _Deployment.from_environ(env)
        async with AsyncExitStack() as stack:
            clients: dict[str, CallScaler] = {}
            for name, kwargs in self._configs.items():
                # A limiter built here from the URL belongs to the client: closed with it.
                client = CallScaler(**deployment.client_kwargs(name, kwargs), session=session)
                clients[name] = await stack.enter_async_context(client)
            self._clients = clients
            try:
                yield
            finally:
                self._clients = None

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """``FastAPI(lifespan=clients.lifespan)``: clients open while the app runs."""
        async with self.open():
            yield

    def get(self, name: str | None = None) -> CallScaler:
        """The open client of business ``name`` (default: the first one added)."""
        if self._clients is None:
            raise RuntimeError(
                "the CallScaler clients are not open: pass lifespan=clients.lifespan to "
                "FastAPI, or enter clients.open() in your own lifespan"
            )
        if name is None:
            return next(iter(self._clients.values()))
        return self._clients[name]

    # ---------------------------------------------------------------- dependencies

    def client(self, request: Request) -> CallScaler:
        """Dependency: the default business's client (``Depends(clients.client)``)."""
        return self.get()

    def select(
        self, choose: Callable[[Request], str | None], *, missing_status: int = 400
    ) -> Callable[[Request], CallScaler]:
        """Dependency picking the client per request: ``choose(request)`` names a business.

        None from ``choose`` answers ``missing_status``; an unknown name answers 404.
        """

        def dependency(request: Request) -> CallScaler:
            name = choose(request)
            if not name:
                raise HTTPException(missing_status, "no business given for this request")
            if name not in self._configs:
                raise HTTPException(404, f"unknown business {name!r}")
            return self.get(name)

        return dependency

    def from_path(
        self, param: str = "business", *, aliases: Mapping[str, str] | None = None
    ) -> Callable[[Request], CallScaler]:
        """Dependency: the business named by path parameter ``param`` (``/{business}/...``).

        ``aliases`` maps public values (a tenant slug) to configured business names.
        """
        table = dict(aliases or {})
        return self.select(lambda request: _alias(request.path_params.get(param), table))

    def from_header(
        self, header: str, *, aliases: Mapping[str, str] | None = None
    ) -> Callable[[Request], CallScaler]:
        """Dependency: the business named by request header ``header``."""
        table = dict(aliases or {})
        return self.select(lambda request: _alias(request.headers.get(header), table))


_SPEC = re.compile(r"^\s*(\d+)\s*(?:/\s*(\d+(?:\.\d+)?)?\s*(s|sec|m|min|h)?)?\s*$")
_UNITS = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_rate_limit(spec: str, *, period: float | None = None) -> RateLimit:
    """``"60"``, ``"60/60s"``, ``"20/2s"``, ``"100/1m"``, ``"1000/h"`` as a ``RateLimit``.

    A bare count takes ``period`` (default 60 s).

    >>> parse_rate_limit("20/2s")
    RateLimit(requests=20, period=2.0)
    """
    match = _SPEC.match(spec)
    if match is None or spec.rstrip().endswith("/"):
        raise ValueError(
            f"rate limit {spec!r} is not 'N' or 'N/<period>' (like '60/60s', '20/2s', '100/1m')"
        )
    count, amount, unit = match.groups()
    if "/" in spec:
        seconds = float(amount or 1) * _UNITS[unit]
    else:
        seconds = period if period is not None else DEFAULT_RATE_LIMIT.period
    return RateLimit(int(count), seconds)


class _Deployment:
    """How this process's clients share their budgets, from the environment (one place)."""

    def __init__(
        self, rate_limit: RateLimit | None, redis_url: str | None, workers: int
    ) -> None:
        self.rate_limit = rate_limit
        self.redis_url = redis_url
        self.workers = workers

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> _Deployment:
        period: float | None = None
        raw_period = env.get("CALLSCALER_RATE_PERIOD", "").strip()
        if raw_period:
            try:
                period = float(raw_period)
            except ValueError:
                raise ValueError(
                    f"CALLSCALER_RATE_PERIOD must be seconds (like 60), got {raw_period!r}"
                ) from None
            if not (math.isfinite(period) and period > 0):
                raise ValueError(f"CALLSCALER_RATE_PERIOD must be > 0 seconds, got {raw_period!r}")
        spec = env.get("CALLSCALER_RATE_LIMIT", "").strip()
        rate_limit: RateLimit | None = None
        if spec:
            try:
                rate_limit = parse_rate_limit(spec, period=period)
            except ValueError as exc:
                raise ValueError(f"CALLSCALER_RATE_LIMIT: {exc}") from None
            if period is not None and "/" in spec and rate_limit.period != period:
                raise ValueError(
                    f"CALLSCALER_RATE_LIMIT={spec!r} and CALLSCALER_RATE_PERIOD={raw_period!r} "
                    "name different periods; set one of them"
                )
        elif period is not None:
            rate_limit = RateLimit(DEFAULT_RATE_LIMIT.requests, period)
        raw_workers = env.get("CALLSCALER_WORKERS", "").strip() or "1"
        if not raw_workers.isdigit() or int(raw_workers) < 1:
            raise ValueError(f"CALLSCALER_WORKERS must be an integer >= 1, got {raw_workers!r}")
        redis_url = env.get("CALLSCALER_REDIS_URL", "").strip() or None
        return cls(rate_limit, redis_url, int(raw_workers))

    def client_kwargs(self, name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(kwargs)
        explicit = out.get("rate_limit")
        budget: RateLimit = explicit or self.rate_limit or DEFAULT_RATE_LIMIT
        if out.get("rate_limiter") is not None:
            return out  # the app built its own limiter: the client checks the two agree
        if self.redis_url is not None:
            out["rate_limiter"] = self.redis_url
            out["rate_limit"] = budget
            logger.info(
                "business %s: %d requests per %gs shared through Redis at %s%s",
                name,
                budget.requests,
                budget.period,
                redact_url(self.redis_url),
                " (CALLSCALER_WORKERS ignored: Redis shares the whole budget)"
                if self.workers > 1
                else "",
            )
        elif self.workers > 1:
            share = budget.requests // self.workers
            if share < 1:
                raise ValueError(
                    f"business {name!r}: {budget.requests} requests per {budget.period:g}s "
                    f"cannot be shared by CALLSCALER_WORKERS={self.workers} processes"
                )
            out["rate_limit"] = RateLimit(share, budget.period, share=True)
            logger.info(
                "business %s: static share of %d of %d requests per %gs (CALLSCALER_WORKERS=%d)",
                name,
                share,
                budget.requests,
                budget.period,
                self.workers,
            )
        else:
            out["rate_limit"] = budget
        return out


# ------------------------------------------------------------------- failures as HTTP


def error_response(exc: CallScalerError) -> JSONResponse:
    """The answer the app's client gets when a CallScaler call fails (one policy, here).

    * the budget is spent (the API's 429 after the retries, or ``max_wait`` refused the
      wait locally, no request sent): **503** with ``Retry-After`` (whole seconds, rounded
      up, from the error);
    * the shared limiter (Redis) cannot be reached: **503** saying so;
    * the API timed out: **504**; it failed (5xx), could not be reached, or answered what
      the app did not expect (another 4xx, an undecodable body): **502**.

    The body is ``{"error": <kind>, "message": ..., ...}``; ``upstream_status`` only when
    the API did answer. The API key never appears (the SDK's messages carry at most its
    public prefix).
    """
    headers: dict[str, str] = {}
    body: dict[str, Any]
    if isinstance(exc, RateLimitError):
        retry = max(1, math.ceil(exc.retry_after)) if exc.retry_after is not None else 1
        headers["Retry-After"] = str(retry)
        local = exc.code == "max_wait_exceeded"
        body = {
            "error": "rate_limited",
            "message": exc.message,
            "retry_after": retry,
            "source": "local" if local else "api",
        }
        if not local:
            body["upstream_status"] = exc.status
        return JSONResponse(body, status_code=503, headers=headers)
    if isinstance(exc, RateLimiterUnavailable):
        body = {
            "error": "rate_limiter_unavailable",
            "message": "the shared rate limiter (Redis) cannot be reached; no request was "
            "sent to CallScaler. " + str(exc),
        }
        return JSONResponse(body, status_code=503)
    if isinstance(exc, APITimeoutError):
        return JSONResponse({"error": "upstream_timeout", "message": exc.message}, 504)
    if isinstance(exc, APIConnectionError):
        return JSONResponse({"error": "upstream_unreachable", "message": exc.message}, 502)
    if isinstance(exc, APIStatusError):
        body = {"error": "upstream_error", "message": exc.message, "upstream_status": exc.status}
        return JSONResponse(body, status_code=502)
    return JSONResponse({"error": "upstream_error", "message": str(exc)}, 502)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CallScalerError)
    response = error_response(exc)
    logger.warning(
        "%s %s answered %d: %s", request.method, request.url.path, response.status_code, exc
    )
    return response


class _ShutdownAnswers503:
    """A request cut off by the server's shutdown (its graceful timeout ran out while it
    waited, at the rate gate or elsewhere) answers 503 instead of a 500 and a traceback.

    The cancellation ends the request here: nothing of it runs on, and the connection is
    closed after the answer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if started:
                raise
            logger.info(
                "%s %s cancelled by shutdown before its answer: 503",
                scope.get("method"),
                scope.get("path"),
            )
            body = b'{"error":"shutting_down","message":"the server is shutting down; retry"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"retry-after", b"1"),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})


def add_error_handlers(app: FastAPI) -> None:
    """``add_error_handlers(app)``: the SDK's failures answer as ``error_response`` says,
    and a request cut off by shutdown answers 503, with no traceback in either case.

    Each answer is logged at WARNING on ``callscaler_async`` (method, path, status, reason).
    """
    app.add_exception_handler(CallScalerError, _handle)
    app.add_middleware(_ShutdownAnswers503)


def _alias(value: str | None, table: Mapping[str, str]) -> str | None:
    if value is None:
        return None
    return table.get(value, value) if table else value


# -------------------------------------------------------------------------- webhooks

WebhookHandler = Callable[[WebhookEvent], Awaitable[None] | None]


def webhook_router(
    handler: WebhookHandler,
    *,
    secret: str | Sequence[str] | None = None,
    path: str = "/webhooks/callscaler",
    header: str = DEFAULT_SECRET_HEADER,
    store: DeliveryStore | None = None,
    dedupe_ttl: float = DEFAULT_DEDUPE_TTL,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    delivery_id_header: str | None = None,
    receiver: WebhookReceiver | None = None,
) -> APIRouter:
    """A router receiving CallScaler webhooks at ``POST path``; ``handler`` gets each event once.

    The answer goes out before ``handler`` runs (a background task), so a slow handler
    never makes CallScaler time out and redeliver. Refusals: 401 (missing/wrong secret, the
    body unread), 413 (body over ``max_body_bytes``, read no further), 400 (not a valid
    event); none of them reaches ``handler`` or the de-duplication store. A redelivery
    answers 200 with ``"duplicate": true`` and is not handled again. Exceptions raised by
    ``handler`` are logged on ``callscaler_async``.

    >>> async def on_event(event: WebhookEvent) -> None:
    ...     print(event.event, event.call and event.call.caller_number)
    >>> # app.include_router(webhook_router(on_event, secret=os.environ["WEBHOOK_SECRET"]))
    """
    if receiver is None:
        if secret is None:
            raise TypeError("webhook_router needs secret= (or a configured receiver=)")
        receiver = WebhookReceiver(
            secret=secret,
            header=header,
            store=store,
            dedupe_ttl=dedupe_ttl,
            max_body_bytes=max_body_bytes,
            delivery_id_header=delivery_id_header,
        )
    active = receiver
    router = APIRouter()

    async def run(delivery: Delivery) -> None:
        try:
            result = handler(delivery.event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception(
                "webhook handler failed for %s (%s)", delivery.event.event, delivery.key
            )

    @router.post(path, include_in_schema=True, summary="CallScaler webhook receiver")
    async def receive_callscaler_webhook(
        request: Request, background: BackgroundTasks
    ) -> JSONResponse:
        try:
            delivery = await active.receive(request.headers, request.stream())
        except WebhookRejected as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        if not delivery.duplicate:
            background.add_task(run, delivery)
        return JSONResponse(
            {"ok": True, "event": str(delivery.event.event), "duplicate": delivery.duplicate}
        )

    return router
