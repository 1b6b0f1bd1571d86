"""One request pipeline: gate -> send -> classify -> retry -> decode.

Every request of every resource goes through ``Transport.request`` (JSON) or
``Transport.stream`` (recording and export downloads). Policy lives here once:

* the business rate gate is waited on *before* the HTTP timeout starts;
* the bearer header is set per request and only for the API's own origin: redirects are
  followed by hand, and a hop to another origin (a storage host for recordings) goes without
  it; the key is never sent over plain ``http://`` to a non-loopback host unless allowed;
* GET/PUT/DELETE are retried after connection errors, timeouts and 500/502/503/504 with
  exponential backoff and full jitter; POST and PATCH only when the connection was never
  made (a number purchase must not happen twice); a 429 is retried for any method once the
  gate's pause is over; a 401 or 403 is never retried;
* bodies above ``max_response_bytes`` are refused without being read whole.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import aiohttp
import attrs
import orjson
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    CallScalerError,
    PermissionDeniedError,
    RateLimitError,
    ResponseDecodeError,
    ResponseTooLargeError,
    error_from_response,
    parse_retry_after,
)
from ._version import __version__
from .ratelimit import Priority, RateGate, Ticket

__all__ = ["Hooks", "RawResponse", "RequestOptions", "Transport", "key_prefix", "unwrap_envelope"]

logger = logging.getLogger("callscaler_async")

USER_AGENT: Final = f"callscaler-async/{__version__}"
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_RETRY_STATUSES: Final = frozenset({500, 502, 503, 504})
_MAX_REDIRECTS: Final = 5
_BACKOFF_BASE: Final = 0.5
_BACKOFF_CAP: Final = 8.0


def key_prefix(api_key: str) -> str:
    """The public part of a key (``cs_key_`` + 8 characters), safe to log."""
    if api_key.startswith("cs_key_"):
        return api_key[:15] + "…"
    return api_key[:4] + "…"


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _origin(url: URL) -> tuple[str, str | None, int | None]:
    return (url.scheme, url.host, url.port)


@attrs.frozen
class RequestOptions:
    """Per-call settings; a client holds defaults, ``with_options`` derives new ones."""

    max_retries: int = 3
    timeout: float = 30.0
    priority: Priority = "normal"
    max_wait: float | None = None


Hook = Callable[..., Any]


@attrs.define
class Hooks:
    """Callbacks (sync or async) called around requests; exceptions in hooks are logged."""

    on_request: list[Hook] = attrs.Factory(list)
    on_response: list[Hook] = attrs.Factory(list)
    on_retry: list[Hook] = attrs.Factory(list)
    on_rate_limit_wait: list[Hook] = attrs.Factory(list)

    def __bool__(self) -> bool:
        return bool(self.on_request or self.on_response or self.on_retry or self.on_rate_limit_wait)


@attrs.frozen
class RawResponse:
    """An answer as it arrived: status, headers, body, and the JSON inside its envelope."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    method: str
    url: str
    attempts: int
    elapsed: float
    data: Any  # the parsed JSON body (None for an empty body)


def unwrap_envelope(body: Any) -> tuple[Any, str]:
    """The payload inside ``{"data": ...}`` or the legacy unwrapped body, with its JSON path."""
    if isinstance(body, dict) and "data" in body and isinstance(body["data"], dict | list):
        return body["data"], "$.data"
    return body, "$"


class Transport:
    """Owns the aiohttp session and runs every request through gate, retries and errors."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        gate_factory: Callable[[], RateGate],
        session: aiohttp.ClientSession | None,
        max_response_bytes: int,
        hooks: Hooks,
        connection_limit: int = 100,
    ) -> None:
        self._api_key = api_key
        self.base_url = URL(base_url if base_url.endswith("/") else base_url + "/")
        self._base_origin = _origin(self.base_url)
        self._gate_factory = gate_factory
        self._gate: RateGate | None = None
        self._session = session
        self._owns_session = session is None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.max_response_bytes = max_response_bytes
        self.hooks = hooks
        self._connection_limit = connection_limit
        self.requests_sent = 0
        self.sessions_created = 0

    # ---------------------------------------------------------------- lifecycle

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError(
                "this CallScaler client was created for another event loop; create one client "
                "per event loop (e.g. in your FastAPI lifespan or inside asyncio.run's main)"
            )
        return loop

    @property
    def gate(self) -> RateGate:
        if self._gate is None:
            self._gate = self._gate_factory()
        return self._gate

    @property
    def gate_if_bound(self) -> RateGate | None:
        return self._gate

    def session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise CallScalerError("this client is closed; create a new CallScaler")
        self._bind_loop()
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connection_limit),
                headers={"User-Agent": USER_AGENT},
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
            )
            self.sessions_created += 1
        return self._session

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session and not session.closed:
            await session.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # ----------------------------------------------------------------- requests

    def url_for(self, path: str) -> URL:
        return self.base_url.join(URL(path.lstrip("/")))

    def _headers(self, url: URL, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if _origin(url) == self._base_origin:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if extra:
            headers.update(extra)
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        options: RequestOptions,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        route: str | None = None,
    ) -> RawResponse:
        """Send one API request with the full policy; return the successful answer."""
        loop = self._bind_loop()
        session = self.session()
        url = self.url_for(path)
        route = route or path
        attempt = 0
        started = loop.time()
        while True:
            attempt += 1
            ticket = await self._acquire(options, method, route)
            self.requests_sent += 1
            sent_at = loop.time()
            await self._call_hooks(
                self.hooks.on_request, method=method, route=route, attempt=attempt
            )
            try:
                status, headers, body = await self._send_json(
                    session, method, url, params, json, options.timeout
                )
            except BaseException as exc:
                self.gate.complete(ticket, status=None, headers=None)
                error = self._connection_error(exc, method, url)
                if error is None:
                    raise
                reached = not isinstance(exc, aiohttp.ClientConnectorError)
                if attempt <= options.max_retries and (method in _IDEMPOTENT or not reached):
                    await self._backoff(attempt, error, method, route, None)
                    continue
                raise error from exc
            retry_after = None
            if status == 429:
                rate_error = error_from_response(status, body, headers, method=method, url=route)
                assert isinstance(rate_error, RateLimitError)
                retry_after = rate_error.retry_after
            self.gate.complete(ticket, status=status, headers=headers, retry_after=retry_after)
            elapsed = loop.time() - sent_at
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "%s %s -> %d (attempt %d, %.1f ms)",
                    method,
                    route,
                    status,
                    attempt,
                    elapsed * 1000,
                )
            await self._call_hooks(
                self.hooks.on_response,
                method=method,
                route=route,
                status=status,
                attempt=attempt,
                elapsed=elapsed,
            )
            if status < 400:
                try:
                    data = orjson.loads(body) if body.strip() else None
                except orjson.JSONDecodeError:
                    data = _INVALID
                if data is not _INVALID:
                    return RawResponse(
                        status=status,
                        headers=headers,
                        body=body,
                        method=method,
                        url=route,
                        attempts=attempt,
                        elapsed=loop.time() - started,
                        data=data,
                    )
                # A 2xx whose JSON is cut short: a broken proxy or connection, worth a retry.
                decode_error = ResponseDecodeError(
                    f"{method} {route} answered {status} with a body that is not valid JSON "
                    f"({len(body)} bytes)",
                    path="$",
                )
                if attempt <= options.max_retries and method in _IDEMPOTENT:
                    await self._backoff(attempt, decode_error, method, route, None)
                    continue
                raise decode_error
            status_error = error_from_response(status, body, headers, method=method, url=route)
            if isinstance(status_error, AuthenticationError | PermissionDeniedError):
                raise status_error
            if status == 429 and attempt <= options.max_retries:
                # The gate now holds the whole business until retry_after; the next acquire
                # waits for it. No extra sleep here: one pause for everyone.
                await self._call_hooks(
                    self.hooks.on_retry,
                    method=method,
                    route=route,
                    attempt=attempt,
                    error=status_error,
                )
                logger.info("%s %s -> 429; retrying after the business pause", method, route)
                continue
            if (
                status in _RETRY_STATUSES
                and attempt <= options.max_retries
                and method in _IDEMPOTENT
            ):
                await self._backoff(
                    attempt, status_error, method, route, headers.get("Retry-After")
                )
                continue
            raise status_error

    async def _acquire(self, options: RequestOptions, method: str, route: str) -> Ticket:
        gate = self.gate
        if not self.hooks.on_rate_limit_wait:
            return await gate.acquire(priority=options.priority, max_wait=options.max_wait)
        loop = asyncio.get_running_loop()
        before = loop.time()
        ticket = await gate.acquire(priority=options.priority, max_wait=options.max_wait)
        waited = loop.time() - before
        if waited > 0:
            await self._call_hooks(
                self.hooks.on_rate_limit_wait, method=method, route=route, waited=waited
            )
        return ticket

    async def _send_json(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: URL,
        params: Mapping[str, str] | None,
        json: Any,
        timeout: float,
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        data = orjson.dumps(json) if json is not None else None
        extra = {"Content-Type": "application/json"} if data is not None else None
        # The timeout starts here, after the gate: waiting for budget is not a slow server.
        async with asyncio.timeout(timeout):
            for _ in range(_MAX_REDIRECTS + 1):
                async with session.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    headers=self._headers(url, extra),
                    allow_redirects=False,
                ) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                        url = resp.url.join(URL(resp.headers["Location"]))
                        params = None
                        if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                            method, data, extra = "GET", None, None
                        continue
                    body = await self._read_limited(resp, method, url)
                    return resp.status, resp.headers, body
        raise APIConnectionError(
            f"too many redirects ({_MAX_REDIRECTS})", method=method, url=str(url)
        )

    async def _read_limited(self, resp: aiohttp.ClientResponse, method: str, url: URL) -> bytes:
        limit = self.max_response_bytes
        length = resp.content_length
        if length is not None and length > limit:
            resp.close()
            raise ResponseTooLargeError(
                f"{method} {url.path} answered with {length} bytes, above max_response_bytes="
                f"{limit}",
                limit=limit,
                method=method,
                url=url.path,
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(65536):
            size += len(chunk)
            if size > limit:
                resp.close()
                raise ResponseTooLargeError(
                    f"{method} {url.path} answered with more than max_response_bytes={limit} bytes",
                    limit=limit,
                    method=method,
                    url=url.path,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _connection_error(
        self, exc: BaseException, method: str, url: URL
    ) -> APIConnectionError | None:
        where = url.path
        if isinstance(exc, TimeoutError):
            return APITimeoutError(
                f"{method} {where}: no complete answer within the timeout", method=method, url=where
            )
        if isinstance(exc, aiohttp.ClientConnectorError):
            return APIConnectionError(
                f"{method} {where}: cannot connect to {url.host}:{url.port} ({exc.os_error})",
                method=method,
                url=where,
            )
        if isinstance(exc, aiohttp.ClientError):
            return APIConnectionError(
                f"{method} {where}: the connection failed ({type(exc).__name__}: {exc})",
                method=method,
                url=where,
            )
        return None

    async def _backoff(
        self,
        attempt: int,
        error: CallScalerError,
        method: str,
        route: str,
        retry_after_header: str | None,
    ) -> None:
        delay = random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (attempt - 1)))
        if retry_after_header is not None:
            try:
                delay = max(delay, min(float(retry_after_header), 60.0))
            except ValueError:
                pass
        status = error.status if isinstance(error, APIStatusError) else None
        logger.info(
            "%s %s failed (%s); retry %d in %.2fs",
            method,
            route,
            status or type(error).__name__,
            attempt,
            delay,
        )
        await self._call_hooks(
            self.hooks.on_retry,
            method=method,
            route=route,
            attempt=attempt,
            error=error,
            delay=delay,
        )
        await asyncio.sleep(delay)

    async def _call_hooks(self, hooks: list[Hook], **event: Any) -> None:
        for hook in hooks:
            try:
                result = hook(**event)
                if isinstance(result, Awaitable):
                    await result
            except Exception:
                logger.exception("callscaler_async hook %r failed", hook)

    # ---------------------------------------------------------------- streaming

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        options: RequestOptions,
        params: Mapping[str, str] | None = None,
        route: str | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A streamed GET: yields the final response (after redirects) once headers arrived.

        Retries (as for GET) happen only before the body starts; the body is not size-limited
        and the timeout applies per read, not to the whole download.
        """
        session = self.session()
        url = self.url_for(path)
        route = route or path
        attempt = 0
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=options.timeout, sock_read=options.timeout
        )
        while True:
            attempt += 1
            ticket: Ticket | None = await self._acquire(options, method, route)
            self.requests_sent += 1
            resp: aiohttp.ClientResponse | None = None
            api_status: int | None = None
            target = url
            try:
                async with asyncio.timeout(options.timeout):
                    for _ in range(_MAX_REDIRECTS + 1):
                        resp = await session.request(
                            method,
                            target,
                            params=params if target is url else None,
                            headers=self._headers(target, {"Accept": "*/*"}),
                            allow_redirects=False,
                            timeout=timeout,
                        )
                        if _origin(target) == self._base_origin and ticket is not None:
                            # The API answered (possibly with a redirect): that is the counted
                            # request; storage hops do not pass the gate.
                            self.gate.complete(
                                ticket,
                                status=resp.status,
                                headers=resp.headers,
                                retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                            )
                            api_status = resp.status
                            ticket = None
                        if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                            target = resp.url.join(URL(resp.headers["Location"]))
                            resp.release()
                            resp = None
                            continue
                        break
            except BaseException as exc:
                if ticket is not None:
                    self.gate.complete(ticket, status=None, headers=None)
                if resp is not None:
                    resp.release()
                error = self._connection_error(exc, method, url)
                if error is None:
                    raise
                if attempt <= options.max_retries:
                    await self._backoff(attempt, error, method, route, None)
                    continue
                raise error from exc
            assert resp is not None
            if ticket is not None:
                self.gate.abandon(ticket)
            if resp.status >= 400:
                body = await resp.content.read(64 * 1024)
                headers = resp.headers
                resp.release()
                status_error = error_from_response(
                    resp.status, body, headers, method=method, url=route
                )
                retryable = resp.status in _RETRY_STATUSES or resp.status == 429
                if retryable and attempt <= options.max_retries and api_status is not None:
                    if resp.status != 429:
                        await self._backoff(
                            attempt, status_error, method, route, headers.get("Retry-After")
                        )
                    continue
                raise status_error
            try:
                yield resp
            finally:
                resp.release()
            return


_INVALID: Final = object()


def merge_headers(*parts: Mapping[str, str] | None) -> CIMultiDict[str]:
    merged: CIMultiDict[str] = CIMultiDict()
    for part in parts:
        if part:
            merged.update(part)
    return merged
