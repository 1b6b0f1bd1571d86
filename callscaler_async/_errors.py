"""Every exception the SDK raises, built from a response in one place.

The hierarchy::

    CallScalerError
    ├── APIConnectionError              the request may not have reached the server
    │   └── APITimeoutError             no complete answer within the timeout
    ├── APIStatusError                  the server answered with a status >= 400
    │   ├── BadRequestError             400: missing or invalid parameters
    │   ├── AuthenticationError         401: invalid, missing or revoked API key
    │   ├── PermissionDeniedError       403: the key's role is too low
    │   ├── NotFoundError               404
    │   ├── RateLimitError              429 (also raised locally when max_wait is exceeded)
    │   └── InternalServerError         >= 500 (including proxy 502/503/504 pages)
    ├── ResponseDecodeError             a 2xx body that does not fit the model (names the JSON path)
    ├── ResponseTooLargeError           a body above max_response_bytes (refused unread)
    ├── InconsistentPagesError          a list changed faster than a walk could re-read it
    └── RateLimiterUnavailable          the shared (Redis) rate-limit backend cannot be reached

``APIStatusError`` carries ``.status``, ``.code``, ``.message``, ``.body`` and ``.headers``
whatever shape the error body had: the nested ``{"error": {"code", "message"}}`` object, the
flat ``{"error": "unauthorized"}`` string, the 429 body with ``retry_after``, or a body that is
not JSON at all (an HTML page from a proxy, an empty body).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "CallScalerError",
    "InconsistentPagesError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RateLimiterUnavailable",
    "ResponseDecodeError",
    "ResponseTooLargeError",
    "error_from_response",
    "parse_retry_after",
]

# Error bodies are quoted in messages; an HTML page of 200 kB is not.
_MAX_QUOTED_BODY = 200


class CallScalerError(Exception):
    """Base class of every exception raised by callscaler-async."""

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle and copy rebuild an exception as ``cls(*self.args)``, which misses the
        # keyword-only fields of subclasses (``status=``, ``limit=``): rebuild it without
        # ``__init__`` and restore its attributes, so errors cross process boundaries
        # (multiprocessing, concurrent.futures) whole.
        return (_restore_error, (type(self), self.args), self.__dict__)


def _restore_error(cls: type[CallScalerError], args: tuple[Any, ...]) -> CallScalerError:
    error = cls.__new__(cls, *args)
    error.args = args
    return error


class APIConnectionError(CallScalerError):
    """The request failed before a complete response arrived (refused, reset, DNS, TLS)."""

    def __init__(self, message: str, *, method: str | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = url


class APITimeoutError(APIConnectionError):
    """No complete response arrived within the configured timeout."""


class APIStatusError(CallScalerError):
    """The server answered with an HTTP status >= 400."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.body = body
        self.headers: Mapping[str, str] = dict(headers or {})
        self.method = method
        self.url = url

    def __str__(self) -> str:
        where = f" ({self.method} {self.url})" if self.method and self.url else ""
        code = f" [{self.code}]" if self.code and self.code != str(self.status) else ""
        return f"{self.status}{code}: {self.message}{where}"

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(status={self.status!r}, code={self.code!r}, message={self.message!r})"


class BadRequestError(APIStatusError):
    """400: the request had missing or invalid parameters."""


class AuthenticationError(APIStatusError):
    """401: the API key is invalid, missing or revoked. Retrying cannot help."""


class PermissionDeniedError(APIStatusError):
    """403: the key is valid but its role may not do this (e.g. a read-only key writing)."""


class NotFoundError(APIStatusError):
    """404: no such resource in this business."""


class RateLimitError(APIStatusError):
    """429 from the server, or a local refusal to wait longer than ``max_wait``.

    ``retry_after`` is the wait in seconds the server asked for (the larger of the body's
    ``retry_after`` and the ``Retry-After`` header), ``retry_at`` the event-loop time
    (``loop.time()``) at which a request may go again when known.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 429,
        code: str | None = "rate_limit_exceeded",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        method: str | None = None,
        url: str | None = None,
        retry_after: float | None = None,
        retry_at: float | None = None,
    ) -> None:
        super().__init__(
            message, status=status, code=code, body=body, headers=headers, method=method, url=url
        )
        self.retry_after = retry_after
        self.retry_at = retry_at


class InternalServerError(APIStatusError):
    """>= 500: the server or a proxy in front of it failed."""


class ResponseDecodeError(CallScalerError):
    """A successful response whose body does not fit the expected model.

    ``path`` is the JSON path of the offending value (``$.data.calls[3].started_at``),
    ``model`` the name of the class being built. In a CSV export ``path`` reads
    ``row 12, column 'started_at'``, and ``row`` (1 = the first row after the header) and
    ``column`` say the same as values.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str = "$",
        model: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.model = model
        self.row = row
        self.column = column

    def __str__(self) -> str:
        model = f" decoding {self.model}" if self.model else ""
        return f"{self.message} at {self.path}{model}"


class ResponseTooLargeError(CallScalerError):
    """A response body larger than the client's ``max_response_bytes``, refused unread.

    Recording and export downloads stream and are not limited.
    """

    def __init__(
        self, message: str, *, limit: int, method: str | None = None, url: str | None = None
    ):
        super().__init__(message)
        self.message = message
        self.limit = limit
        self.method = method
        self.url = url


class InconsistentPagesError(CallScalerError):
    """A paginated walk could not prove it delivered every item: the list kept changing
    (items deleted or added) faster than its re-reads could join the pages up. Nothing was
    delivered twice; some items may not have been delivered at all, so the walk stops."""


class RateLimiterUnavailable(CallScalerError):
    """The shared rate-limit backend (Redis) cannot be reached and no fallback was allowed."""


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}

_DEFAULT_MESSAGES: dict[int, str] = {
    400: "Bad request (missing or invalid parameters)",
    401: "Invalid, missing or revoked API key; create a new key in Settings > API Keys",
    403: "This API key's role may not perform this action; ask an admin for a key with more rights",
    404: "Resource not found",
    429: "Rate limit exceeded",
    500: "Internal server error",
    502: "Bad gateway (a proxy in front of the API failed)",
    503: "Service unavailable",
    504: "Gateway timeout",
}


def parse_retry_after(header: str | None) -> float | None:
    """The ``Retry-After`` header in seconds (delta-seconds form), or None if absent/invalid."""
    if header is None:
        return None
    try:
        value = float(header.strip())
    except ValueError:
        return None
    if value != value or value < 0 or value == float("inf"):  # NaN, negative, infinite
        return None
    return value


def _as_seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return None
    return seconds


def _quote(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    if len(text) > _MAX_QUOTED_BODY:
        text = text[:_MAX_QUOTED_BODY] + "..."
    return text


def error_from_response(
    status: int,
    raw_body: bytes,
    headers: Mapping[str, str],
    *,
    method: str | None = None,
    url: str | None = None,
) -> APIStatusError:
    """Build the right ``APIStatusError`` subclass from any of the contract's error shapes."""
    body: Any
    code: str | None = None
    message: str | None = None
    retry_after_body: float | None = None
    try:
        body = orjson.loads(raw_body) if raw_body else None
    except orjson.JSONDecodeError:
        body = _quote(raw_body) or None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):  # {"error": {"code": "401", "message": "Invalid API key"}}
            raw_code = err.get("code")
            code = str(raw_code) if raw_code is not None else None
            if isinstance(err.get("message"), str):
                message = err["message"]
        elif isinstance(err, str):  # {"error": "unauthorized"} or the 429 body
            code = err
        if message is None and isinstance(body.get("message"), str):
            message = body["message"]
        retry_after_body = _as_seconds(body.get("retry_after"))
    elif isinstance(body, str) and body:
        # Not JSON: keep a short quote of the page so the user can see what answered.
        message = f"{_DEFAULT_MESSAGES.get(status, f'HTTP {status}')} (non-JSON body: {body!r})"
    if message is None and status in (401, 403):
        message = _DEFAULT_MESSAGES[status]
    if message is None:
        message = (
            code.replace("_", " ") if code and not code.isdigit() else None
        ) or _DEFAULT_MESSAGES.get(status, f"HTTP {status}")
    cls = _STATUS_CLASSES.get(status)
    if cls is None:
        cls = InternalServerError if status >= 500 else APIStatusError
    if cls is RateLimitError:
        retry_header = parse_retry_after(headers.get("Retry-After"))
        candidates = [v for v in (retry_after_body, retry_header) if v is not None]
        return RateLimitError(
            message,
            status=status,
            code=code or "rate_limit_exceeded",
            body=body,
            headers=headers,
            method=method,
            url=url,
            retry_after=max(candidates) if candidates else None,
        )
    return cls(
        message, status=status, code=code, body=body, headers=headers, method=method, url=url
    )


# Tracebacks and reprs name a class by its ``__module__``: show the public path users import
# and catch (``callscaler_async.BadRequestError``), not this private module.
for _error_class in (
    CallScalerError,
    APIConnectionError,
    APITimeoutError,
    APIStatusError,
    BadRequestError,
    AuthenticationError,
    PermissionDeniedError,
    NotFoundError,
    RateLimitError,
    InternalServerError,
    ResponseDecodeError,
    ResponseTooLargeError,
    RateLimiterUnavailable,
):
    _error_class.__module__ = "callscaler_async"
del _error_class
