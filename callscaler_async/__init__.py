"""callscaler-async: the asyncio SDK for the CallScaler REST API v1.

>>> import callscaler_async as cs
>>> async def main() -> None:
...     async with cs.CallScaler() as client:   # CALLSCALER_API_KEY from the environment
...         async for call in client.calls.list(date_from=datetime.date(2026, 1, 1)):
...             print(call.id, call.status, call.cost)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ._client import DEFAULT_BASE_URL, CallScaler
from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CallScalerError,
    InconsistentPagesError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RateLimiterUnavailable,
    ResponseDecodeError,
    ResponseTooLargeError,
)
from ._money import Money
from ._pagination import AsyncPaginator, Page
from ._retry import RetryPolicy
from ._transport import (
    APIResponse,
    RateLimitWaitEvent,
    RequestEvent,
    ResponseEvent,
    RetryEvent,
)
from ._version import __version__
from .models import *  # noqa: F403
from .models import __all__ as _models_all
from .ratelimit import BusinessRateGate, RateLimit, RateLimitSnapshot
from .resources import NOT_GIVEN, CallExport, Download

if TYPE_CHECKING:
    from .ratelimit.redis import RedisRateLimiter

# A library does not decide where its log lines go: without a handler of its own, Python's
# last-resort handler would print WARNING records (a 401, a failed hook) on the stderr of a
# program that configured no logging. With one, they reach stderr only once the application
# configures logging (``logging.basicConfig()``), the stdlib convention for libraries.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_BASE_URL",
    "NOT_GIVEN",
    "APIConnectionError",
    "APIResponse",
    "APIStatusError",
    "APITimeoutError",
    "AsyncPaginator",
    "AuthenticationError",
    "BadRequestError",
    "BusinessRateGate",
    "CallScaler",
    "CallScalerError",
    "CallExport",
    "Download",
    "InconsistentPagesError",
    "InternalServerError",
    "Money",
    "NotFoundError",
    "Page",
    "PermissionDeniedError",
    "RateLimit",
    "RateLimitError",
    "RateLimitSnapshot",
    "RateLimitWaitEvent",
    "RateLimiterUnavailable",
    "RedisRateLimiter",
    "RequestEvent",
    "ResponseEvent",
    "ResponseDecodeError",
    "ResponseTooLargeError",
    "RetryEvent",
    "RetryPolicy",
    "__version__",
    *_models_all,
]


def __getattr__(name: str) -> Any:
    # redis-py is optional and costs import time: load it only when asked for.
    if name == "RedisRateLimiter":
        from .ratelimit.redis import RedisRateLimiter

        return RedisRateLimiter
    raise AttributeError(f"module 'callscaler_async' has no attribute {name!r}")
