"""``RetryPolicy``: which failed requests are tried again, how often, and after how long.

The transport asks the policy at each failure and nothing else decides; the policy does no
I/O and keeps no state (the attempt number is the caller's), so one instance serves every
request of every client it is given to.

>>> import callscaler_async as cs
>>> patient = cs.RetryPolicy(max_retries=6, backoff_cap=30.0)
>>> client = cs.CallScaler("cs_key_0123456789abcdef", retry=patient)
>>> one_shot = client.with_options(max_retries=0)      # same policy, no retries
>>> one_shot.options.retry.max_retries
0
"""

from __future__ import annotations

import random
from typing import Final

import attrs

__all__ = ["DEFAULT_RETRY", "IDEMPOTENT_METHODS", "RetryPolicy"]

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_NEVER_RETRIED: Final = frozenset({401, 403, 429})


def _check_count(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be an int >= 0, got {value!r}")


def _check_seconds(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{attribute.name} must be a number of seconds >= 0, got {value!r}")


def _check_statuses(_: object, attribute: attrs.Attribute[frozenset[int]], value: object) -> None:
    if not isinstance(value, frozenset) or not all(
        isinstance(s, int) and not isinstance(s, bool) and 400 <= s <= 599 for s in value
    ):
        raise ValueError(f"statuses must be a frozenset of HTTP statuses 400-599, got {value!r}")
    refused = sorted(value & _NEVER_RETRIED)
    if refused:
        raise ValueError(
            f"statuses must not include {refused}: a 401 or 403 cannot succeed on a retry, "
            "and a 429 waits for the business's pause (see rate_limited=)"
        )


def _check_methods(_: object, attribute: attrs.Attribute[frozenset[str]], value: object) -> None:
    if not isinstance(value, frozenset) or not all(
        isinstance(m, str) and m.isupper() for m in value
    ):
        raise ValueError(f"methods must be a frozenset of upper-case HTTP methods, got {value!r}")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """When a failed request is sent again, and how long it waits first.

    The defaults (``DEFAULT_RETRY``) are the SDK's behaviour:

    * ``max_retries=3``: at most 3 retries after the first attempt;
    * ``methods``: GET, HEAD, PUT, DELETE, OPTIONS (idempotent) are retried after a
      connection error, a timeout, a status in ``statuses`` or a 2xx whose JSON is cut short.
      Other methods (POST, PATCH: a number purchase) only when the connection was never made,
      so the request cannot have reached the server;
    * ``statuses``: 500, 502, 503, 504. A 401 or 403 is never retried (it cannot succeed);
    * ``rate_limited=True``: a 429 is retried for any method: the server refused it without
      acting on it, and the next attempt waits at the rate gate for the business's pause
      instead of sleeping a backoff;
    * backoff before retry ``n`` (from 1): "full jitter", a uniform random delay in
      ``[0, min(backoff_cap, backoff_base * 2 ** (n - 1))]`` (0.5 s, 1 s, 2 s, ... capped at
      8 s); ``jitter=False`` sleeps the upper bound itself;
    * a ``Retry-After`` header on a retried 5xx raises the delay to what it asks, at most
      ``retry_after_cap`` (60 s).

    Pass one as ``CallScaler(retry=...)`` or ``client.with_options(retry=...)``;
    ``max_retries=`` there is a shorthand that changes only the count.
    """

    max_retries: int = attrs.field(default=3, validator=_check_count)
    statuses: frozenset[int] = attrs.field(
        default=frozenset({500, 502, 503, 504}), validator=_check_statuses
    )
    methods: frozenset[str] = attrs.field(default=IDEMPOTENT_METHODS, validator=_check_methods)
    rate_limited: bool = True
    backoff_base: float = attrs.field(default=0.5, validator=_check_seconds)
    backoff_cap: float = attrs.field(default=8.0, validator=_check_seconds)
    jitter: bool = True
    retry_after_cap: float = attrs.field(default=60.0, validator=_check_seconds)

    def retries_connection_error(self, method: str, attempt: int, *, reached: bool) -> bool:
        """Whether attempt ``attempt`` (from 1), failed without an answer, is tried again.

        ``reached`` is False only when the connection was never made (nothing was sent).
        """
        return attempt <= self.max_retries and (method in self.methods or not reached)

    def retries_status(self, method: str, status: int, attempt: int) -> bool:
        """Whether attempt ``attempt``, answered with an error ``status``, is tried again."""
        if attempt > self.max_retries:
            return False
        if status == 429:
            return self.rate_limited
        return status in self.statuses and method in self.methods

    def retries_invalid_body(self, method: str, attempt: int) -> bool:
        """Whether a 2xx whose body is not valid JSON (cut short by a proxy) is tried again."""
        return attempt <= self.max_retries and method in self.methods

    def backoff(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to sleep before retry ``attempt`` (from 1); ``retry_after`` is the header."""
        # (The exponent is bounded: 2 ** 1100 does not fit a float, and the cap is reached long
        # before.)
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** min(attempt - 1, 64))
        delay = random.uniform(0, ceiling) if self.jitter else ceiling
        if retry_after is not None:
            try:
                delay = max(delay, min(float(retry_after), self.retry_after_cap))
            except ValueError:
                pass
        return delay


DEFAULT_RETRY: Final = RetryPolicy()
"""The policy of a client created without ``retry=``."""
