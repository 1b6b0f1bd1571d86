"""The framework-independent receiver: verify, read (bounded), parse, de-duplicate.

Any web framework plugs in with a few lines: hand ``receive`` the request headers and the
body as bytes or as an async iterator of chunks, turn a ``WebhookRejected`` into its
``status`` and ``message``, and process ``delivery.event`` unless ``delivery.duplicate``.
``callscaler_async.contrib.fastapi.webhook_router`` does exactly this for FastAPI.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Mapping, Sequence
from typing import Any

import attrs

from ._dedupe import DeliveryStore, InMemoryDeliveryStore
from ._events import WebhookEvent, WebhookPayloadError, parse_event
from ._verify import (
    DEFAULT_SECRET_HEADER,
    WebhookAuthError,
    _check,
    header_value,
    normalize_secrets,
)

__all__ = ["Delivery", "WebhookReceiver", "WebhookRejected"]

DEFAULT_MAX_BODY_BYTES = 256 * 1024
DEFAULT_DEDUPE_TTL = 24 * 3600.0  # redeliveries end ~21 minutes later; a day is generous


class WebhookRejected(Exception):
    """A delivery refused before any processing: answer ``status`` with ``message``.

    401: missing or wrong secret; 413: body over the limit; 400: not a valid event.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle would call ``cls(message)``, without the status.
        return (type(self), (self.status, self.message), self.__dict__)


@attrs.frozen
class Delivery:
    """An accepted delivery: the event, its de-duplication key, and whether it was seen."""

    event: WebhookEvent
    key: str
    duplicate: bool


class WebhookReceiver:
    """Checks and decodes webhook deliveries; knows nothing of any web framework.

    >>> receiver = WebhookReceiver(secret="a-long-random-shared-secret")
    >>> async def on_post(headers, body) -> tuple[int, str]:
    ...     try:
    ...         delivery = await receiver.receive(headers, body)
    ...     except WebhookRejected as exc:
    ...         return exc.status, exc.message
    ...     if not delivery.duplicate:
    ...         ...  # hand delivery.event to a background task
    ...     return 200, "ok"
    """

    def __init__(
        self,
        *,
        secret: str | Sequence[str],
        header: str = DEFAULT_SECRET_HEADER,
        store: DeliveryStore | None = None,
        dedupe_ttl: float = DEFAULT_DEDUPE_TTL,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        delivery_id_header: str | None = None,
    ) -> None:
        self._secrets = normalize_secrets(secret)
        if not isinstance(header, str) or not header:
            raise ValueError("header must name the header carrying the secret")
        if (
            isinstance(max_body_bytes, bool)
            or not isinstance(max_body_bytes, int)
            or (max_body_bytes < 1)
        ):
            raise ValueError(f"max_body_bytes must be an int >= 1, got {max_body_bytes!r}")
        if not dedupe_ttl > 0:
            raise ValueError(f"dedupe_ttl must be > 0 seconds, got {dedupe_ttl!r}")
        self.header = header
        self.store: DeliveryStore = store if store is not None else InMemoryDeliveryStore()
        self.dedupe_ttl = dedupe_ttl
        self.max_body_bytes = max_body_bytes
        self.delivery_id_header = delivery_id_header

    def verify(self, headers: Mapping[str, str]) -> None:
        """Raise ``WebhookRejected(401)`` unless the shared secret is right."""
        try:
            _check(headers, self._secrets, self.header)
        except WebhookAuthError as exc:
            raise WebhookRejected(401, str(exc)) from None

    async def read_body(
        self, headers: Mapping[str, str], body: bytes | AsyncIterable[bytes]
    ) -> bytes:
        """The body, refused (413) as soon as it is known to exceed ``max_body_bytes``.

        A ``Content-Length`` over the limit is refused before reading; a streamed body is
        read chunk by chunk and refused at the first byte over the limit.
        """
        limit = self.max_body_bytes
        length = header_value(headers, "content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise WebhookRejected(400, "invalid Content-Length header") from None
            if declared > limit:
                raise WebhookRejected(413, _too_large(limit, f"{declared} bytes declared"))
        if isinstance(body, bytes | bytearray | memoryview):
            data = bytes(body)
            if len(data) > limit:
                raise WebhookRejected(413, _too_large(limit, f"{len(data)} bytes"))
            return data
        chunks: list[bytes] = []
        size = 0
        async for chunk in body:
            size += len(chunk)
            if size > limit:
                raise WebhookRejected(413, _too_large(limit, "more"))
            chunks.append(chunk)
        return b"".join(chunks)

    def parse(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Decode the body (400 when it is not an event); a delivery-id header wins."""
        if not body.strip():
            raise WebhookRejected(400, "empty body: expected a JSON webhook event")
        try:
            event = parse_event(body)
        except WebhookPayloadError as exc:
            raise WebhookRejected(400, f"invalid webhook event: {exc}") from None
        if self.delivery_id_header is not None:
            delivery_id = header_value(headers, self.delivery_id_header)
            if delivery_id:
                event = attrs.evolve(event, id=delivery_id)
        return event

    async def receive(
        self, headers: Mapping[str, str], body: bytes | AsyncIterable[bytes]
    ) -> Delivery:
        """Verify, read, parse and claim one delivery; ``WebhookRejected`` on any refusal.

        Only a delivery that passed every check is claimed in the store, so a refused one
        never hides a later, valid redelivery.
        """
        self.verify(headers)
        data = await self.read_body(headers, body)
        event = self.parse(headers, data)
        key = event.dedupe_key
        first = await self.store.claim(key, self.dedupe_ttl)
        return Delivery(event=event, key=key, duplicate=not first)

    async def forget(self, delivery: Delivery) -> None:
        """Un-claim a delivery whose processing failed before it was acknowledged."""
        await self.store.forget(delivery.key)


def _too_large(limit: int, got: str) -> str:
    return f"body too large: {got}, the limit is {limit} bytes (max_body_bytes)"
