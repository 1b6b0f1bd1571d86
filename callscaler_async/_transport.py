"""One request pipeline: gate -> send -> classify -> retry -> decode.

Every request of every resource goes through ``Transport.request`` (JSON) or
``Transport.stream`` (recording and export downloads). Policy lives here once:

* the business rate gate is waited on *before* the HTTP timeout starts;
* the bearer header is set per request and only for the API's own origin: redirects are
  followed by hand, and a hop to another origin (a storage host for recordings) goes without
  it; the key is never sent over plain ``http://`` to a non-loopback host unless allowed;
* failures are retried as the request's ``RetryPolicy`` says (``_retry.py``; by default
  GET/PUT/DELETE after connection errors, timeouts and 500/502/503/504 with exponential
  backoff and full jitter; POST and PATCH only when the connection was never made, so a
  number purchase cannot happen twice; a 429 for any method once the gate's pause is over;
  never a 401 or 403). The transport asks the policy at each failure; nothing else decides;
* bodies above ``max_response_bytes`` are refused without being read whole.

Observability lives here too, so that every request is seen the same way:

* logging on ``logging.getLogger("callscaler_async")``: the request line (with its query),
  status, attempt and gate waits at DEBUG; retries and pauses after a 429 at INFO (route
  templates only, never query strings); 401/403 at WARNING naming the key by its public
  prefix. The API key itself is never logged at any level;
* hooks (``Hooks``): sync or async callables receiving one frozen event object
  (``RequestEvent``, ``ResponseEvent``, ``RetryEvent``, ``RateLimitWaitEvent``);
* OpenTelemetry: one CLIENT span per logical request (retries included) when
  ``opentelemetry-api`` is importable; imported lazily, on the first request;
* raw answers: ``capture_raw`` runs an awaitable and hands back the ``RawResponse`` it
  produced (a context variable, so concurrent tasks never see each other's answers).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import ipaddress
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, Generic, TypeVar

import aiohttp
import attrs
import orjson
from aiohttp import hdrs
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from . import _loops
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
from ._retry import DEFAULT_RETRY, RetryPolicy
from ._version import __version__
from .ratelimit import Priority, RateGate, Ticket

__all__ = [
    "APIResponse",
    "Hooks",
    "RateLimitWaitEvent",
    "RawResponse",
    "RequestEvent",
    "RequestOptions",
    "ResponseEvent",
    "RetryEvent",
    "Transport",
    "capture_raw",
    "key_prefix",
    "unwrap_envelope",
]

T = TypeVar("T")

logger = logging.getLogger("callscaler_async")

USER_AGENT: Final = f"callscaler-async/{__version__}"
_MAX_REDIRECTS: Final = 5
_JSON_CONTENT: Final = {"Content-Type": "application/json"}
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_CONTAINERS: Final = (dict, list)


_debug: Final = functools.partial(logger.isEnabledFor, logging.DEBUG)


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


def _being_cancelled() -> bool:
    """Whether the running task itself was asked to cancel (not a future inside aiohttp)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop: a coroutine closed after its loop ended
        return True
    return task is not None and task.cancelling() > 0


@attrs.frozen
class RequestOptions:
    """Per-call settings; a client holds defaults, ``with_options`` derives new ones."""

    retry: RetryPolicy = DEFAULT_RETRY
    timeout: float = 30.0
    priority: Priority = "normal"
    max_wait: float | None = None

    @property
    def max_retries(self) -> int:
        """The retry policy's count (``retry.max_retries``)."""
        return self.retry.max_retries


Hook = Callable[[Any], Any]
"""A hook: ``def hook(event) -> None`` or ``async def hook(event) -> None``."""


@attrs.frozen(kw_only=True)
class RequestEvent:
    """``on_request``: an attempt is about to be sent (the rate gate has admitted it).

    ``route`` is the template (``calls/{id}``), ``path`` the real path without the query
    string, ``attempt`` counts from 1, ``business`` names the rate gate.
    """

    method: str
    route: str
    path: str
    attempt: int
    business: str


@attrs.frozen(kw_only=True)
class ResponseEvent:
    """``on_response``: an attempt got an answer (any status, before errors are raised).

    ``elapsed`` is the seconds from sending to the full body (the gate wait not included).
    """

    method: str
    route: str
    path: str
    attempt: int
    business: str
    status: int
    elapsed: float
    headers: CIMultiDictProxy[str]


@attrs.frozen(kw_only=True)
class RetryEvent:
    """``on_retry``: attempt ``attempt`` failed with ``error`` and will be tried again.

    ``delay`` is the backoff sleep in seconds; None after a 429, where the next attempt waits
    at the rate gate for the business's pause instead (see ``RateLimitWaitEvent``).
    """

    method: str
    route: str
    attempt: int
    business: str
    error: CallScalerError
    delay: float | None


@attrs.frozen(kw_only=True)
class RateLimitWaitEvent:
    """``on_rate_limit_wait``: a request waited ``waited`` seconds at the business gate.

    ``reason`` is ``"paused_after_429"`` when the business was paused by a 429 when the wait
    began, else ``"pacing"`` (the budget of the window was spent or others were queued).
    """

    method: str
    route: str
    business: str
    waited: float
    reason: str
    priority: Priority


@attrs.define
class Hooks:
    """Callbacks (sync or async) called around requests; exceptions in hooks are logged.

    Each hook receives one event object: ``on_request`` a ``RequestEvent``, ``on_response``
    a ``ResponseEvent``, ``on_retry`` a ``RetryEvent``, ``on_rate_limit_wait`` a
    ``RateLimitWaitEvent``. A hook runs inline in the request's task: keep it short.
    """

    on_request: list[Hook] = attrs.Factory(list)
    on_response: list[Hook] = attrs.Factory(list)
    on_retry: list[Hook] = attrs.Factory(list)
    on_rate_limit_wait: list[Hook] = attrs.Factory(list)

    def __bool__(self) -> bool:
        return bool(self.on_request or self.on_response or self.on_retry or self.on_rate_limit_wait)


@attrs.define
class RawResponse:
    """An answer as it arrived: status, headers, body, and the JSON inside its envelope.

    Read-only by convention (not ``frozen``: a frozen attrs class costs ~2 µs more to build,
    on every request).
    """

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
    if isinstance(body, dict):
        data = body.get("data")
        if isinstance(data, _CONTAINERS):  # a tuple: ``dict | list`` builds a union per call
            return data, "$.data"
    return body, "$"


# -- raw answers -------------------------------------------------------------------------------

# The answers of the requests run under ``capture_raw`` in this context (None: not capturing).
# A context variable, not an attribute: concurrent tasks each see only their own answers.
_raw_capture: contextvars.ContextVar[list[RawResponse] | None] = contextvars.ContextVar(
    "callscaler_async_raw_capture", default=None
)
_NOT_PARSED: Final[Any] = object()


class APIResponse(Generic[T]):
    """The raw answer of one call plus its parsed model: no second request needed.

    >>> async def show(client, call_id) -> None:
    ...     raw = await client.with_raw_response.calls.get(call_id)
    ...     print(raw.status, raw.headers["X-RateLimit-Remaining"])
    ...     call = raw.parse()

    A 2xx body that does not decode into the model does not raise here: ``parse()`` raises
    the ``ResponseDecodeError`` and ``body``/``json()`` show what arrived.
    """

    __slots__ = ("_error", "_parsed", "http_response")

    def __init__(
        self, http_response: RawResponse, parsed: Any, error: BaseException | None = None
    ) -> None:
        self.http_response = http_response
        self._parsed = parsed
        self._error = error

    @property
    def status(self) -> int:
        return self.http_response.status

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self.http_response.headers

    @property
    def body(self) -> bytes:
        return self.http_response.body

    @property
    def method(self) -> str:
        return self.http_response.method

    @property
    def route(self) -> str:
        """The route template, e.g. ``calls/{id}``."""
        return self.http_response.url

    @property
    def attempts(self) -> int:
        return self.http_response.attempts

    @property
    def elapsed(self) -> float:
        return self.http_response.elapsed

    def json(self) -> Any:
        """The JSON body as parsed (envelope included)."""
        return self.http_response.data

    def parse(self) -> T:
        """The model the call returns (decoded once, when the call ran)."""
        if self._error is not None:
            raise self._error
        return self._parsed  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<APIResponse {self.method} {self.route} -> {self.status}>"


async def capture_raw(awaitable: Awaitable[T]) -> APIResponse[T]:
    """Await ``awaitable`` (one SDK call) and return its last raw answer with the result.

    The awaitable must run its requests in the awaiting task (every resource method does;
    the first page of a paginator too).
    """
    sink: list[RawResponse] = []
    token = _raw_capture.set(sink)
    error: BaseException | None = None
    parsed: Any = _NOT_PARSED
    try:
        parsed = await awaitable
    except ResponseDecodeError as exc:
        if not sink:
            raise
        error = exc
    finally:
        _raw_capture.reset(token)
    if not sink:
        raise CallScalerError(
            "with_raw_response: the call made no request in this task; pass an SDK call "
            "such as client.calls.get(id)"
        )
    return APIResponse(sink[-1], parsed, error)


# -- tracing ----------------------------------------------------------------------------------

_otel_trace: Any = None  # the opentelemetry.trace module once imported; False: not installed


def _opentelemetry() -> Any:
    """``opentelemetry.trace`` or None, imported on first use (the ``otel`` extra)."""
    global _otel_trace
    if _otel_trace is None:
        try:
            _otel_trace = importlib.import_module("opentelemetry.trace")
        except ImportError:
            _otel_trace = False
    return _otel_trace or None


@attrs.define
class _RequestTrace:
    """What one logical request went through, for its span and its log lines."""

    attempts: int = 0
    waited: float = 0.0
    status: int | None = None
    span: Any = None


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
        tracer_provider: Any = None,
    ) -> None:
        self._api_key = api_key
        self._key_prefix = key_prefix(api_key)
        self._tracer_provider = tracer_provider
        self._tracer: Any = None
        self._tracer_for: Any = None
        self._tracer_recheck_at = -math.inf
        self.base_url = URL(base_url if base_url.endswith("/") else base_url + "/")
        self._base_origin = _origin(self.base_url)
        # The headers of a request to the API's own origin, built once, as the read-only
        # multidict aiohttp copies from without converting (it never changes ours).
        self._api_headers: Final = CIMultiDictProxy(
            CIMultiDict(
                {
                    "User-Agent": USER_AGENT,
                    "Accept": "application/json",
                    "Authorization": f"Bearer {api_key}",
                }
            )
        )
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._gate_factory = gate_factory
        self._gate: RateGate | None = None
        self._try_acquire: Callable[[], Ticket | None] | None = None
        self._session = session
        self._owns_session = session is None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_binding = -1  # set with _loop (see _loops.bind)
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
            self._loop_binding = _loops.bind(loop)
        elif self._loop is not loop:
            raise RuntimeError(
                "this CallScaler client was created for another event loop; create one client "
                "per event loop (e.g. in your FastAPI lifespan or inside asyncio.run's main)"
            )
        return loop

    @property
    def gate(self) -> RateGate:
        if self._gate is None:
            self._gate = gate = self._gate_factory()
            # A gate that can admit synchronously when budget is free (the local one) spares
            # the request a coroutine and a future; others (Redis) always go through acquire.
            self._try_acquire = getattr(gate, "try_acquire", None)
        return self._gate

    @property
    def gate_if_bound(self) -> RateGate | None:
        return self._gate

    def session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise CallScalerError("this client is closed; create a new CallScaler")
        self._bind_loop()
        session = self._session
        if session is None:
            self._session = session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connection_limit),
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
            )
            self.sessions_created += 1
        return session

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
        # The paths are the SDK's own (literals, and ids that passed format_id): already
        # encoded. Appended to the parsed base URL as they are, nothing is parsed or quoted
        # again: ~10k CPU instructions per request less than parsing base + path
        # (aiohttp's own parse of a URL string included; callgrind).
        return self.base_url.joinpath(path.lstrip("/"), encoded=True)

    def _headers(self, url: URL, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        if _origin(url) == self._base_origin:
            headers = dict(self._api_headers)
        else:
            headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if extra:
            headers.update(extra)
        return headers

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        """aiohttp's own total timeout (one timer per request, shared with its read timeouts)."""
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            if len(self._timeouts) > 64:  # per-call deadlines vary: do not grow without bound
                self._timeouts.clear()
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        return timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        options: RequestOptions,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        route: str | None = None,
    ) -> Coroutine[Any, Any, RawResponse]:
        """Send one API request with the full policy; await it for the successful answer.

        (A plain function returning the pipeline's coroutine: one coroutine level less on
        every request.)
        """
        route = route or path
        tracer = self._get_tracer()
        if tracer is None:
            return self._request(method, path, route, options, params, json, None)
        trace = _RequestTrace()
        return self._traced(tracer, method, path, route, options, params, json, trace)

    def _get_tracer(self) -> Any:
        """The tracer, or None when no OpenTelemetry SDK provider is configured.

        Without a real provider (only ``opentelemetry-api``, or nothing set up) requests skip
        tracing entirely: no span objects, no context switches. A global provider installed
        later is picked up within a second (looked up at most once a second until then).
        """
        if self._tracer is not None and self._tracer_provider is None:
            # OpenTelemetry sets the global provider once per process and refuses to replace
            # it: once a real one was seen, it stays the one.
            return self._tracer
        now = time.monotonic()
        if self._tracer is None and now < self._tracer_recheck_at:
            return None  # untraced, and not due for another look: every request's case
        otel = _opentelemetry()
        if otel is None:
            self._tracer_recheck_at = math.inf  # not installed: not looked up again
            return None
        provider = self._tracer_provider
        if provider is None:
            provider = otel.get_tracer_provider()
            if isinstance(provider, otel.ProxyTracerProvider | otel.NoOpTracerProvider):
                self._tracer_recheck_at = now + 1.0
                return None
        elif isinstance(provider, otel.ProxyTracerProvider | otel.NoOpTracerProvider):
            self._tracer_recheck_at = math.inf  # the caller's no-op provider: never traced
            return None
        if self._tracer is None or self._tracer_for is not provider:
            self._tracer = provider.get_tracer("callscaler_async", __version__)
            self._tracer_for = provider
        return self._tracer

    async def _traced(
        self,
        tracer: Any,
        method: str,
        path: str,
        route: str,
        options: RequestOptions,
        params: Mapping[str, str] | None,
        json: Any,
        trace: _RequestTrace,
    ) -> RawResponse:
        otel = _opentelemetry()
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.template": route,
            "server.address": self.base_url.host or "",
            "callscaler.business": self.gate.name,
        }
        if self.base_url.port is not None:
            attributes["server.port"] = self.base_url.port
        with tracer.start_as_current_span(
            f"{method} {route}", kind=otel.SpanKind.CLIENT, attributes=attributes
        ) as span:
            trace.span = span
            try:
                return await self._request(method, path, route, options, params, json, trace)
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__name__)
                if isinstance(exc, APIStatusError):
                    trace.status = exc.status
                raise
            finally:
                if trace.status is not None:
                    span.set_attribute("http.response.status_code", trace.status)
                span.set_attribute("callscaler.attempts", trace.attempts)
                if trace.attempts > 1:
                    span.set_attribute("http.request.resend_count", trace.attempts - 1)
                span.set_attribute("callscaler.rate_limit.wait_seconds", trace.waited)

    async def _request(
        self,
        method: str,
        path: str,
        route: str,
        options: RequestOptions,
        params: Mapping[str, str] | None,
        json: Any,
        trace: _RequestTrace | None,
    ) -> RawResponse:
        """The pipeline: gate, send, classify, retry. ``trace`` only when tracing."""
        session = self._session
        loop = self._loop
        if session is None or loop is None or not _loops.is_running(loop, self._loop_binding):
            # Creates the session; raises once the client is closed (aclose() drops it) or
            # when the running loop is not this client's.
            session = self.session()
            loop = self._loop
            assert loop is not None
        gate = self.gate
        url = self.url_for(path)
        attempt = 0
        started = loop.time()
        while True:
            attempt += 1
            ticket = self._try_acquire() if self._try_acquire is not None else None
            if ticket is None:
                ticket = await self._acquire(options, method, route, trace)
            if trace is not None:
                trace.attempts = attempt
            self.requests_sent += 1
            sent_at = loop.time()
            debug = _debug()
            if debug:
                logger.debug(
                    "%s %s (attempt %d, business %s)",
                    method,
                    _with_query(url.path, params),
                    attempt,
                    gate.name,
                )
            if self.hooks.on_request:
                await self._call_hooks(
                    self.hooks.on_request,
                    RequestEvent(
                        method=method,
                        route=route,
                        path=url.path,
                        attempt=attempt,
                        business=gate.name,
                    ),
                )
            try:
                status, headers, body = await self._send_json(
                    session, method, url, params, json, options.timeout
                )
            except BaseException as exc:
                gate.complete(ticket, status=None, headers=None)
                if (
                    self._closed
                    and isinstance(exc, asyncio.CancelledError | RuntimeError | aiohttp.ClientError)
                    and not _being_cancelled()
                ):
                    # aclose() ended the session under this request: aiohttp then cancels
                    # the requests waiting for a connection (a CancelledError in a task
                    # nobody cancelled) and refuses new ones (RuntimeError). Say what it is.
                    raise APIConnectionError(
                        f"{method} {url.path}: the client was closed while this request was "
                        "in flight",
                        method=method,
                        url=url.path,
                    ) from exc
                error = self._connection_error(exc, method, url)
                if error is None:
                    raise
                reached = not isinstance(exc, aiohttp.ClientConnectorError)
                if options.retry.retries_connection_error(method, attempt, reached=reached):
                    await self._backoff(options.retry, attempt, error, method, route, None, trace)
                    continue
                logger.debug("%s %s failed after %d attempt(s): %s", method, route, attempt, error)
                raise error from exc
            if trace is not None:
                trace.status = status
            retry_after = None
            if status == 429:
                rate_error = error_from_response(status, body, headers, method=method, url=route)
                assert isinstance(rate_error, RateLimitError)
                retry_after = rate_error.retry_after
            gate.complete(ticket, status=status, headers=headers, retry_after=retry_after)
            received_at = loop.time()
            elapsed = received_at - sent_at
            if debug:
                logger.debug(
                    "%s %s -> %d (attempt %d, %.1f ms)",
                    method,
                    route,
                    status,
                    attempt,
                    elapsed * 1000,
                )
            if self.hooks.on_response:
                await self._call_hooks(
                    self.hooks.on_response,
                    ResponseEvent(
                        method=method,
                        route=route,
                        path=url.path,
                        attempt=attempt,
                        business=gate.name,
                        status=status,
                        elapsed=elapsed,
                        headers=headers,
                    ),
                )
            if status < 400:
                try:
                    data = orjson.loads(body)
                except orjson.JSONDecodeError:
                    data = None if not body.strip() else _INVALID  # empty: no content
                if data is not _INVALID:
                    raw = RawResponse(
                        status, headers, body, method, route, attempt, received_at - started, data
                    )
                    sink = _raw_capture.get()
                    if sink is not None:
                        sink.append(raw)
                    return raw
                # A 2xx whose JSON is cut short: a broken proxy or connection, worth a retry.
                decode_error = ResponseDecodeError(
                    f"{method} {route} answered {status} with a body that is not valid JSON "
                    f"({len(body)} bytes)",
                    path="$",
                )
                if options.retry.retries_invalid_body(method, attempt):
                    await self._backoff(
                        options.retry, attempt, decode_error, method, route, None, trace
                    )
                    continue
                raise decode_error
            status_error = error_from_response(status, body, headers, method=method, url=route)
            if isinstance(status_error, AuthenticationError | PermissionDeniedError):
                logger.warning(
                    "%s %s -> %d with key %s: %s",
                    method,
                    route,
                    status,
                    self._key_prefix,
                    status_error.message,
                )
                raise status_error
            retry = options.retry
            if status == 429 and retry.retries_status(method, status, attempt):
                # The gate now holds the whole business until retry_after; the next acquire
                # waits for it. No extra sleep here: one pause for everyone.
                logger.info(
                    "%s %s -> 429 (retry after %ss); business %s paused, retry %d follows",
                    method,
                    route,
                    retry_after if retry_after is not None else "?",
                    gate.name,
                    attempt,
                )
                await self._on_retry(trace, method, route, attempt, status_error, None)
                continue
            if status != 429 and retry.retries_status(method, status, attempt):
                await self._backoff(
                    retry, attempt, status_error, method, route, headers.get("Retry-After"), trace
                )
                continue
            logger.debug("%s %s -> %d after %d attempt(s), raising", method, route, status, attempt)
            raise status_error

    async def _acquire(
        self,
        options: RequestOptions,
        method: str,
        route: str,
        trace: _RequestTrace | None = None,
    ) -> Ticket:
        gate = self.gate
        loop = self._loop  # checked by the caller (_request; stream() through session())
        assert loop is not None
        paused = False
        if self.hooks.on_rate_limit_wait or logger.isEnabledFor(logging.INFO):
            # Read before waiting: once admitted, the pause that held us is over.
            paused = gate.snapshot().paused_until is not None
        before = loop.time()
        ticket = await gate.acquire(priority=options.priority, max_wait=options.max_wait)
        waited = loop.time() - before
        if trace is not None:
            trace.waited += waited
        if waited > 0.001:
            reason = "paused_after_429" if paused else "pacing"
            if paused:
                logger.info(
                    "%s %s waited %.2fs: business %s was paused after a 429",
                    method,
                    route,
                    waited,
                    gate.name,
                )
            else:
                logger.debug(
                    "%s %s waited %.3fs at the rate gate of %s (%s, priority %s)",
                    method,
                    route,
                    waited,
                    gate.name,
                    reason,
                    options.priority,
                )
            if trace is not None and trace.span is not None:
                trace.span.add_event(
                    "rate_limit_wait", {"callscaler.wait_seconds": waited, "reason": reason}
                )
            if self.hooks.on_rate_limit_wait:
                await self._call_hooks(
                    self.hooks.on_rate_limit_wait,
                    RateLimitWaitEvent(
                        method=method,
                        route=route,
                        business=gate.name,
                        waited=waited,
                        reason=reason,
                        priority=options.priority,
                    ),
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
        # The first hop always goes to the API's origin: its prebuilt headers as they are.
        headers = self._api_headers if data is None else self._headers(url, _JSON_CONTENT)
        # The timeout starts here, after the gate: waiting for budget is not a slow server.
        # It bounds the whole exchange, redirects included: each hop gets what is left.
        loop = self._loop
        assert loop is not None  # bound by session()
        deadline = loop.time() + timeout  # (after the on_request hooks: not theirs to spend)
        hop_timeout = self._timeout(timeout)
        for _ in range(_MAX_REDIRECTS + 1):
            # Awaited, not entered with ``async with``: read() hands the connection back
            # at the end of the body by itself, and every other way out calls release(),
            # as the context manager's exit would (a connection left mid-body is closed).
            # That spares the two coroutine levels of aiohttp's context managers: ~17k
            # instructions per request (callgrind), a sixth of what the SDK adds.
            resp = await session.request(
                method,
                url,
                params=params,
                data=data,
                headers=headers,
                allow_redirects=False,
                timeout=hop_timeout,
            )
            try:
                status = resp.status
                # hdrs' names are case-insensitive keys: no case folding per lookup.
                if status in _REDIRECTS and hdrs.LOCATION in resp.headers:
                    url = resp.url.join(URL(resp.headers[hdrs.LOCATION]))
                    params = None
                    if status == 303 or (status in (301, 302) and method == "POST"):
                        method, data = "GET", None
                    headers = self._headers(url, _JSON_CONTENT if data is not None else None)
                    left = deadline - loop.time()
                    if left <= 0:
                        raise TimeoutError
                    hop_timeout = aiohttp.ClientTimeout(total=left)
                    resp.release()
                    continue
                length = resp.content_length
                if (
                    length is not None
                    and length <= self.max_response_bytes
                    and hdrs.CONTENT_ENCODING not in resp.headers
                ):
                    # The size is known and allowed, and the body arrives as sent
                    # (nothing to decompress that could grow it): read it in one go.
                    body = await resp.read()
                else:
                    body = await self._read_limited(resp, method, url)
            except BaseException:
                resp.release()
                raise
            return status, resp.headers, body
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
        retry: RetryPolicy,
        attempt: int,
        error: CallScalerError,
        method: str,
        route: str,
        retry_after_header: str | None,
        trace: _RequestTrace | None = None,
    ) -> None:
        delay = retry.backoff(attempt, retry_after_header)
        status = error.status if isinstance(error, APIStatusError) else None
        logger.info(
            "%s %s failed (%s); retry %d in %.2fs",
            method,
            route,
            status or type(error).__name__,
            attempt,
            delay,
        )
        await self._on_retry(trace, method, route, attempt, error, delay)
        await asyncio.sleep(delay)

    async def _on_retry(
        self,
        trace: _RequestTrace | None,
        method: str,
        route: str,
        attempt: int,
        error: CallScalerError,
        delay: float | None,
    ) -> None:
        if trace is not None and trace.span is not None:
            event: dict[str, Any] = {
                "callscaler.attempt": attempt,
                "error.type": type(error).__name__,
            }
            if isinstance(error, APIStatusError):
                event["http.response.status_code"] = error.status
            if delay is not None:
                event["callscaler.retry_delay_seconds"] = delay
            trace.span.add_event("retry", event)
        if self.hooks.on_retry:
            await self._call_hooks(
                self.hooks.on_retry,
                RetryEvent(
                    method=method,
                    route=route,
                    attempt=attempt,
                    business=self.gate.name,
                    error=error,
                    delay=delay,
                ),
            )

    async def _call_hooks(self, hooks: list[Hook], event: Any) -> None:
        for hook in hooks:
            try:
                result = hook(event)
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
                reached = not isinstance(exc, aiohttp.ClientConnectorError)
                if options.retry.retries_connection_error(method, attempt, reached=reached):
                    await self._backoff(options.retry, attempt, error, method, route, None)
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
                retry = options.retry
                if api_status is not None and retry.retries_status(method, resp.status, attempt):
                    if resp.status != 429:
                        await self._backoff(
                            retry, attempt, status_error, method, route, headers.get("Retry-After")
                        )
                    continue
                raise status_error
            try:
                yield resp
            finally:
                resp.release()
            return


_INVALID: Final = object()


def _with_query(path: str, params: Mapping[str, str] | None) -> str:
    """``path?query`` for DEBUG lines (INFO and above name the route template only)."""
    if not params:
        return path
    return f"{path}?{URL.build(query=dict(params)).query_string}"


def merge_headers(*parts: Mapping[str, str] | None) -> CIMultiDict[str]:
    merged: CIMultiDict[str] = CIMultiDict()
    for part in parts:
        if part:
            merged.update(part)
    return merged
