"""``CallScaler``: configuration, session lifecycle and the resource attributes."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import aiohttp
import attrs
from yarl import URL

from ._retry import DEFAULT_RETRY, RetryPolicy
from ._transport import (
    APIResponse,
    Hook,
    Hooks,
    RawResponse,
    RequestOptions,
    Transport,
    _is_loopback,
    capture_raw,
    key_prefix,
)
from .ratelimit import (
    Priority,
    RateGate,
    RateLimit,
    RateLimitSnapshot,
    business_key,
    gate_for,
)
from .ratelimit._config import priority_rank
from .resources import Account, Analytics, CallFlows, Calls, Numbers
from .resources._base import Resource

if TYPE_CHECKING:
    from .ratelimit.redis import RedisRateLimiter

__all__ = ["DEFAULT_BASE_URL", "CallScaler", "RawResponseView"]

T = TypeVar("T")

DEFAULT_BASE_URL: Final = "https://callscaler.com/api/v1/"
DEFAULT_MAX_RESPONSE_BYTES: Final = 32 * 1024 * 1024
DEFAULT_RATE_LIMIT: Final = RateLimit(requests=60, period=60.0)
_UNSET: Any = object()


class CallScaler:
    """The asyncio client of the CallScaler REST API v1.

    One client per business and event loop, opened once and closed at the end:

    >>> import asyncio, callscaler_async as cs
    >>> async def main() -> None:
    ...     async with cs.CallScaler() as client:        # key from CALLSCALER_API_KEY
    ...         page = await client.calls.list(per_page=10)
    ...         async for call in client.calls.list(status="answered"):
    ...             print(call.id, call.started_at, call.cost)

    Observability: ``logging.getLogger("callscaler_async")`` (the key is never logged, only
    its ``cs_key_xxxxxxxx`` prefix), the ``on_*`` hooks (sync or async, each receiving one
    event object, see ``Hooks``), ``with_raw_response`` for status and headers, and one
    OpenTelemetry span per request when ``opentelemetry-api`` is installed
    (``tracer_provider=`` picks a provider other than the global one).

    Every request passes the business's rate gate (``rate_limit``, 60 per minute by default,
    shared by all clients of the same ``business`` in the process, or across processes with
    ``rate_limiter="redis://..."`` or ``rate_limiter=cs.RedisRateLimiter(...)``). Without
    ``business=``, clients share a gate when they use the same key against the same API
    origin.

    Ownership, as with ``session``: a limiter the client built from a Redis URL is closed by
    ``aclose()`` (its slots in Redis are released at once); a limiter object passed in is left
    open for its owner. Given a limiter object, ``rate_limit`` may be omitted (the limiter's
    is used) or must equal the limiter's: a different one is an error, never ignored.

    Failed requests are retried as ``retry=`` says (a ``RetryPolicy``; the default retries
    idempotent requests after connection errors and 5xx, 3 times with backoff and jitter);
    ``max_retries=`` is a shorthand that changes only the policy's count.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        rate_limit: RateLimit | None = None,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        session: aiohttp.ClientSession | None = None,
        business: str | None = None,
        rate_limiter: RateGate | str | None = None,
        priority: Priority = "normal",
        max_wait: float | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        allow_insecure_http: bool = False,
        on_request: Hook | None = None,
        on_response: Hook | None = None,
        on_retry: Hook | None = None,
        on_rate_limit_wait: Hook | None = None,
        tracer_provider: Any = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("CALLSCALER_API_KEY")
        if not key:
            raise ValueError(
                "no API key: pass api_key= or set CALLSCALER_API_KEY "
                "(create one in Settings > API Keys)"
            )
        if not isinstance(key, str) or key != key.strip() or any(c in key for c in "\r\n "):
            raise ValueError("the API key must be a string without whitespace")
        url = base_url or os.environ.get("CALLSCALER_BASE_URL") or DEFAULT_BASE_URL
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"base_url must be an http(s) URL, got {url!r}")
        if parsed.raw_query_string or parsed.raw_fragment or url.endswith(("?", "#")):
            # Every request path is appended to the base URL's path: a query or fragment
            # there would be dropped (or, as text, swallow the path).
            raise ValueError(f"base_url must not have a query or a fragment, got {url!r}")
        if parsed.scheme == "http" and not _is_loopback(parsed.host) and not allow_insecure_http:
            raise ValueError(
                f"refusing to send the API key over plain http to {parsed.host}; use https, "
                "or pass allow_insecure_http=True if you really mean it"
            )
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise TypeError(f"rate_limit must be a RateLimit, got {rate_limit!r}")
        retry_policy = _retry_policy(DEFAULT_RETRY if retry is None else retry, max_retries)
        _check_timeout(timeout)
        priority_rank(priority)
        if (
            isinstance(max_response_bytes, bool)
            or not isinstance(max_response_bytes, int)
            or (max_response_bytes < 1)
        ):
            raise ValueError(f"max_response_bytes must be an int >= 1, got {max_response_bytes!r}")
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise TypeError(f"session must be an aiohttp.ClientSession, got {session!r}")

        self._key_prefix = key_prefix(key)
        # A limiter built here from a URL is ours to close; one passed in is its owner's.
        self._own_limiter: RedisRateLimiter | None = None
        # By default clients share a gate when they share the key and the API's origin.
        origin = str(parsed.origin()).lower()
        if isinstance(rate_limiter, str):
            self.business = business or business_key(key, origin)
            rate_limiter = self._own_limiter = _redis_limiter(
                rate_limiter, self.business, rate_limit or DEFAULT_RATE_LIMIT
            )
        elif rate_limiter is not None:
            if rate_limit is not None and rate_limit != rate_limiter.rate_limit:
                raise ValueError(
                    f"rate_limit={rate_limit} differs from the rate_limiter's "
                    f"{rate_limiter.rate_limit}: the limiter decides the budget; pass "
                    "rate_limit only with the same value, or build the limiter with it"
                )
            self.business = business or rate_limiter.name
        else:
            self.business = business or business_key(key, origin)
        limit = rate_limiter.rate_limit if rate_limiter else rate_limit or DEFAULT_RATE_LIMIT
        self._rate_limit_config = limit
        business_name = self.business
        given = rate_limiter

        def make_gate() -> RateGate:
            if given is not None:
                return given
            return gate_for(business_name, limit)

        hooks = Hooks()
        for target, hook in (
            (hooks.on_request, on_request),
            (hooks.on_response, on_response),
            (hooks.on_retry, on_retry),
            (hooks.on_rate_limit_wait, on_rate_limit_wait),
        ):
            if hook is not None:
                target.append(hook)
        self._transport = Transport(
            api_key=key,
            base_url=url,
            gate_factory=make_gate,
            session=session,
            max_response_bytes=max_response_bytes,
            hooks=hooks,
            tracer_provider=tracer_provider,
        )
        self._options = RequestOptions(
            retry=retry_policy, timeout=timeout, priority=priority, max_wait=max_wait
        )
        self._root = True
        self._last_response: RawResponse | None = None
        self._init_resources()

    def _init_resources(self) -> None:
        self.calls = Calls(self)
        self.numbers = Numbers(self)
        self.call_flows = CallFlows(self)
        self.analytics = Analytics(self)
        self.account = Account(self)

    # ----------------------------------------------------------------- options

    def with_options(
        self,
        *,
        priority: Priority | None = None,
        max_wait: float | None = _UNSET,
        timeout: float | None = None,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> CallScaler:
        """A view of this client with other per-call settings, sharing its session and gate.

        >>> # bulk work yields the budget to interactive calls of the same business:
        >>> # async for call in client.with_options(priority="low").calls.list(): ...

        ``retry=`` replaces the retry policy (a ``RetryPolicy``); ``max_retries=`` changes only
        its count (``with_options(max_retries=0)``: no retries for these calls).
        """
        changes: dict[str, Any] = {}
        if priority is not None:
            priority_rank(priority)
            changes["priority"] = priority
        if max_wait is not _UNSET:
            if max_wait is not None and not max_wait >= 0:
                raise ValueError(f"max_wait must be >= 0, got {max_wait!r}")
            changes["max_wait"] = max_wait
        if timeout is not None:
            _check_timeout(timeout)
            changes["timeout"] = timeout
        if retry is not None or max_retries is not None:
            changes["retry"] = _retry_policy(
                self._options.retry if retry is None else retry, max_retries
            )
        view = object.__new__(CallScaler)
        view.__dict__.update(self.__dict__)
        view._options = attrs.evolve(self._options, **changes)
        view._root = False
        view._init_resources()
        return view

    # --------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> CallScaler:
        self._transport._bind_loop()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session and the Redis limiter this client created (an injected
        ``session=`` or ``rate_limiter=`` object stays open for its owner)."""
        if self._root:
            try:
                await self._transport.aclose()
            finally:
                limiter, self._own_limiter = self._own_limiter, None
                if limiter is not None:
                    await limiter.aclose()

    @property
    def closed(self) -> bool:
        return self._transport.closed

    # ----------------------------------------------------------------- reading

    @property
    def rate_limit(self) -> RateLimitSnapshot | None:
        """The business gate's view: last ``X-RateLimit-*`` headers and pacing state.

        None until the first response arrived.
        """
        gate = self._transport.gate_if_bound
        if gate is None:
            return None
        snapshot = gate.snapshot()
        if (
            snapshot.limit is None
            and snapshot.remaining is None
            and snapshot.in_flight == 0
            and (snapshot.paused_until is None)
        ):
            return None
        return snapshot

    @property
    def last_response(self) -> RawResponse | None:
        """The raw answer (status, headers, body) of the latest successful request.

        Shared by every task using this client: with concurrent calls it may belong to
        another task's request. Use ``with_raw_response`` to get the answer of one call.
        """
        return self._last_response

    @property
    def with_raw_response(self) -> RawResponseView:
        """Calls that return an ``APIResponse`` (status, headers, body, ``parse()``).

        >>> async def remaining(client, call_id) -> str:
        ...     raw = await client.with_raw_response.calls.get(call_id)
        ...     call = raw.parse()                     # the Call, decoded once
        ...     return raw.headers["X-RateLimit-Remaining"]
        >>> async def typed(client, call_id) -> None:
        ...     raw = await client.with_raw_response(client.calls.get(call_id))  # APIResponse[Call]

        The first form keeps the call's arguments but types the result as
        ``APIResponse[Any]``; the second is fully typed. Both work with a paginator's
        first page (``client.calls.list(...)``) and are safe with concurrent tasks.
        """
        return RawResponseView(self)

    @property
    def base_url(self) -> str:
        return str(self._transport.base_url)

    @property
    def options(self) -> RequestOptions:
        return self._options

    def __repr__(self) -> str:
        return (
            f"CallScaler(base_url={self.base_url!r}, key={self._key_prefix!r}, "
            f"business={self.business!r})"
        )


class RawResponseView:
    """``client.with_raw_response``: the client's resources, answering ``APIResponse``."""

    __slots__ = ("_client",)

    def __init__(self, client: CallScaler) -> None:
        self._client = client

    def __call__(self, call: Awaitable[T]) -> Awaitable[APIResponse[T]]:
        """``await client.with_raw_response(client.calls.get(id))``: typed as the call."""
        return capture_raw(call)

    @property
    def calls(self) -> _RawResource:
        return _RawResource(self._client.calls)

    @property
    def numbers(self) -> _RawResource:
        return _RawResource(self._client.numbers)

    @property
    def call_flows(self) -> _RawResource:
        return _RawResource(self._client.call_flows)

    @property
    def analytics(self) -> _RawResource:
        return _RawResource(self._client.analytics)

    @property
    def account(self) -> _RawResource:
        return _RawResource(self._client.account)


class _RawResource:
    """One resource whose request methods return ``APIResponse`` instead of the model."""

    __slots__ = ("_resource",)

    def __init__(self, resource: Resource) -> None:
        self._resource = resource

    def __getattr__(self, name: str) -> Callable[..., Awaitable[APIResponse[Any]]]:
        method = getattr(self._resource, name)
        if name.startswith("_") or not callable(method):
            raise AttributeError(name)

        async def raw_call(*args: Any, **kwargs: Any) -> APIResponse[Any]:
            result = method(*args, **kwargs)
            if not isinstance(result, Awaitable):
                raise TypeError(
                    f"with_raw_response supports calls answered by one request; "
                    f"{type(self._resource).__name__.lower()}.{name}() returns "
                    f"{type(result).__name__} (streams and walks have no single answer)"
                )
            return await capture_raw(result)

        raw_call.__name__ = name
        raw_call.__doc__ = getattr(method, "__doc__", None)
        return raw_call


def _retry_policy(retry: RetryPolicy, max_retries: int | None) -> RetryPolicy:
    """``retry``, with its count replaced by ``max_retries`` when that is given."""
    if not isinstance(retry, RetryPolicy):
        # retry=False (urllib3's spelling of "no retries") must not mean the default policy.
        raise TypeError(
            f"retry must be a RetryPolicy, got {retry!r}; for no retries pass max_retries=0"
        )
    if max_retries is None:
        return retry
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
    if max_retries == retry.max_retries:
        return retry
    return attrs.evolve(retry, max_retries=max_retries)


def _redis_limiter(url: str, business: str, rate_limit: RateLimit) -> RedisRateLimiter:
    """The shared limiter a client builds (and owns) from ``rate_limiter="redis://..."``."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            "rate_limiter must be a RateGate or a redis:// (rediss://, unix://) URL, got "
            f"a string starting {url.split(':', 1)[0]!r}"
        )
    from .ratelimit.redis import RedisRateLimiter

    return RedisRateLimiter(url, business=business, rate_limit=rate_limit)


def _check_timeout(timeout: float) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
