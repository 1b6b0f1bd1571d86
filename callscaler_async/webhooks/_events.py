"""Webhook payloads -> typed events, through the SDK's one converter.

CallScaler documents the events (``call.completed``, ``call.missed``, ``call.voicemail``,
``call.failed``; older accounts send ``call.ended``) but not a schema, so parsing is lenient
where it may be and strict where it must be:

* the event name is read from ``event`` (or ``type``) and must be a string; unknown names
  are kept (``WebhookEventType`` is an open enum);
* the call is read from ``call``, ``data.call`` or ``data``, or, in the flat legacy shape,
  from the body itself; it is decoded into ``Call`` by the same converter as API answers
  (unknown fields ignored, wrong types rejected with their JSON path). A known ``call.*``
  event needs a call that decodes; an unknown event keeps ``call=None`` when it has none;
* ``id`` is the delivery/event id when the payload has one (``delivery_id``, ``event_id``,
  ``webhook_id``, or ``id`` beside a nested call), ``occurred_at`` its timestamp
  (``occurred_at``, ``timestamp`` or ``created_at``);
* ``raw`` keeps the whole decoded body: nothing the SDK does not know is lost.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Final

import attrs
import orjson

from .._convert import decode, parse_timestamp
from .._errors import ResponseDecodeError
from ..models.calls import Call
from ..models.common import OpenStrEnum

__all__ = ["WebhookEvent", "WebhookEventType", "WebhookPayloadError", "parse_event"]

_ID_KEYS: Final = ("delivery_id", "event_id", "webhook_id")
_TIME_KEYS: Final = ("occurred_at", "timestamp", "created_at")


class WebhookPayloadError(ValueError):
    """The body is not a webhook event: not JSON, not an object, or a field of a wrong type.

    ``path`` is the JSON path of the offending value (``$`` for the body itself).
    """

    def __init__(self, message: str, *, path: str = "$") -> None:
        super().__init__(f"{path}: {message}" if path != "$" else message)
        self.message = message
        self.path = path


class WebhookEventType(OpenStrEnum):
    """Event names; values the SDK does not know are kept (``.is_known`` is False)."""

    CALL_COMPLETED = "call.completed"
    CALL_MISSED = "call.missed"
    CALL_VOICEMAIL = "call.voicemail"
    CALL_FAILED = "call.failed"
    CALL_ENDED = "call.ended"  # older accounts: one event for every outcome


@attrs.frozen(kw_only=True)
class WebhookEvent:
    """One webhook delivery, decoded.

    >>> event = parse_event(b'{"event": "call.missed", "call": {"id": '
    ...     b'"a1b2c3d4-e5f6-7890-abcd-ef1234567890", "status": "missed", '
    ...     b'"started_at": "2026-03-23T14:30:00Z", "caller_number": "+15735551234"}}')
    >>> event.event, event.call.caller_number
    (<WebhookEventType.CALL_MISSED: 'call.missed'>, '+15735551234')
    """

    event: WebhookEventType
    call: Call | None
    id: str | None = None
    occurred_at: datetime | None = None
    raw: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def is_legacy(self) -> bool:
        """True for ``call.ended``, the single event of older accounts."""
        return self.event == WebhookEventType.CALL_ENDED

    @property
    def dedupe_key(self) -> str:
        """The key redeliveries share: the delivery id, else a hash of event, call and body."""
        if self.id is not None:
            return f"id:{self.id}"
        digest = hashlib.sha256()
        digest.update(str(self.event).encode())
        digest.update(b"\0")
        digest.update(str(self.call.id if self.call is not None else "").encode())
        digest.update(b"\0")
        # Canonical JSON: a redelivery that reorders keys or spaces is still the same event.
        digest.update(orjson.dumps(self.raw, option=orjson.OPT_SORT_KEYS))
        return f"sha256:{digest.hexdigest()}"


def _string(body: dict[str, Any], keys: tuple[str, ...]) -> tuple[str | None, str]:
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise WebhookPayloadError(
                f"expected a string id, got {type(value).__name__}", path=f"$.{key}"
            )
        return str(value), key
    return None, ""


def _find_call(body: dict[str, Any]) -> tuple[Any, str, bool]:
    """The call object, its JSON path, and whether the body itself is the call (flat)."""
    if "call" in body:
        return body["call"], "$.call", False
    data = body.get("data")
    if isinstance(data, dict):
        if "call" in data:
            return data["call"], "$.data.call", False
        return data, "$.data", False
    if "started_at" in body and "status" in body:
        return body, "$", True
    return None, "", False


def parse_event(body: bytes | str | dict[str, Any]) -> WebhookEvent:
    """Decode one webhook body (bytes, text, or already-parsed JSON) into a ``WebhookEvent``.

    Raises ``WebhookPayloadError`` when the body is not JSON, not an object, or has a field
    of the wrong type; nothing else escapes.
    """
    if isinstance(body, dict):
        data: Any = body
    else:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise WebhookPayloadError(f"the body is not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise WebhookPayloadError(f"expected a JSON object, got {type(data).__name__}")
    name_key = "event" if "event" in data else "type"
    name = data.get(name_key)
    if not isinstance(name, str) or not name:
        got = "nothing" if name is None else repr(name)[:40]
        raise WebhookPayloadError(
            f"expected the event name as a string, got {got}", path=f"$.{name_key}"
        )
    event_type = WebhookEventType(name)

    call_data, call_path, flat = _find_call(data)
    delivery_id, _ = _string(data, _ID_KEYS)
    if delivery_id is None and not flat:
        delivery_id, _ = _string(data, ("id",))

    occurred_at = None
    time_value, time_key = None, ""
    for key in _TIME_KEYS:
        if data.get(key) is not None and not (flat and key == "created_at"):
            time_value, time_key = data[key], key
            break
    if time_value is not None:
        try:
            occurred_at = parse_timestamp(time_value)
        except (TypeError, ValueError) as exc:
            raise WebhookPayloadError(str(exc), path=f"$.{time_key}") from None

    call: Call | None = None
    if call_data is not None:
        try:
            call = decode(call_data, Call, path=call_path)
        except ResponseDecodeError as exc:
            if event_type.is_known:
                raise WebhookPayloadError(exc.message, path=exc.path) from None
            # An event this SDK does not know may carry another shape: keep it raw.
    elif event_type.is_known:
        raise WebhookPayloadError(f"a {name} event needs a call object", path="$.call")
    return WebhookEvent(
        event=event_type, call=call, id=delivery_id, occurred_at=occurred_at, raw=data
    )
