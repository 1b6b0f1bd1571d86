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
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
from fastapi import APIRouter, BackgroundTasks, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from .._client import CallScaler
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

__all__ = ["CallScalerClients", "webhook_router"]

logger = logging.getLogger("callscaler_async")


class CallScalerClients:
    """The app's CallScaler clients: configured at import, opened by the lifespan.

    ``add(name, **kwargs)`` takes the arguments of ``CallScaler`` (``api_key``,
    ``base_url``, ``rate_limit``, hooks, ...); the client is built when the app starts, so
    it binds to the server's event loop, and closed when the app stops. The first business
    added is the default one (``client``).
    """

    def __init__(self) -> None:
        self._configs: dict[str, dict[str, Any]] = {}
        self._clients: dict[str, CallScaler] | None = None

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
        async with AsyncExitStack() as stack:
            clients: dict[str, CallScaler] = {}
            for name, kwargs in self._configs.items():
                client = CallScaler(**kwargs, session=session)
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
