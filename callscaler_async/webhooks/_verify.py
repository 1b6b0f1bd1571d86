"""Shared-secret verification: CallScaler signs nothing, but sends the custom headers you add.

Put a long random secret in a custom header of the webhook (``X-CallScaler-Secret`` by
default) and give the same secret to the receiver. The comparison is constant-time, and a
missing, empty, non-ASCII or wrong value is the same ``WebhookAuthError`` (a 401), never a
crash.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence

__all__ = ["DEFAULT_SECRET_HEADER", "WebhookAuthError", "header_value", "verify_secret"]

DEFAULT_SECRET_HEADER = "X-CallScaler-Secret"


class WebhookAuthError(Exception):
    """The shared secret is missing or wrong (answer 401; the body is not read)."""


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """``headers[name]`` matched case-insensitively, for any mapping of headers."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def normalize_secrets(secret: str | Sequence[str]) -> tuple[bytes, ...]:
    """The accepted secrets as bytes; several allow rotating without a window of 401s."""
    secrets = (secret,) if isinstance(secret, str) else tuple(secret)
    if not secrets:
        raise ValueError("a webhook receiver needs at least one secret")
    for item in secrets:
        if not isinstance(item, str) or len(item) < 16:
            raise ValueError("webhook secrets must be strings of at least 16 characters")
    return tuple(item.encode() for item in secrets)


def verify_secret(
    headers: Mapping[str, str],
    secret: str | Sequence[str],
    *,
    header: str = DEFAULT_SECRET_HEADER,
) -> None:
    """Raise ``WebhookAuthError`` unless ``headers[header]`` equals one of the secrets.

    >>> verify_secret({"x-callscaler-secret": "s3cret-s3cret-s3cret"}, "s3cret-s3cret-s3cret")
    """
    _check(headers, normalize_secrets(secret), header)


def _check(headers: Mapping[str, str], secrets: tuple[bytes, ...], header: str) -> None:
    given = header_value(headers, header)
    if not given:
        raise WebhookAuthError(f"missing the {header} header")
    # Bytes, not str: compare_digest raises TypeError on non-ASCII text (a 500, not a 401).
    presented = given.encode("utf-8", "surrogateescape")
    matched = False
    for expected in secrets:  # no early exit: the time does not tell which secret matched
        matched |= hmac.compare_digest(presented, expected)
    if not matched:
        raise WebhookAuthError(f"wrong {header} header")
