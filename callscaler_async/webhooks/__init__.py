"""CallScaler webhooks: typed events, shared-secret verification, de-duplication.

CallScaler POSTs a JSON body after each call (``call.completed``, ``call.missed``,
``call.voicemail``, ``call.failed``; older accounts send ``call.ended``), retries a failed
delivery after 1, 5 and 15 minutes, and signs nothing: add a custom header with a long random
secret to the webhook in CallScaler and give the receiver the same secret.

Framework-independent::

    from callscaler_async.webhooks import WebhookReceiver, WebhookRejected

    receiver = WebhookReceiver(secret=os.environ["CALLSCALER_WEBHOOK_SECRET"])
    delivery = await receiver.receive(request_headers, request_body)  # may raise
    if not delivery.duplicate:
        handle(delivery.event)           # event.event, event.call (a Call), event.raw

With FastAPI: ``callscaler_async.contrib.fastapi.webhook_router(handler, secret=...)``.
"""

from __future__ import annotations

from ._dedupe import DeliveryStore, InMemoryDeliveryStore
from ._events import WebhookEvent, WebhookEventType, WebhookPayloadError, parse_event
from ._receiver import (
    DEFAULT_DEDUPE_TTL,
    DEFAULT_MAX_BODY_BYTES,
    Delivery,
    WebhookReceiver,
    WebhookRejected,
)
from ._verify import DEFAULT_SECRET_HEADER, WebhookAuthError, verify_secret

__all__ = [
    "DEFAULT_DEDUPE_TTL",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_SECRET_HEADER",
    "Delivery",
    "DeliveryStore",
    "InMemoryDeliveryStore",
    "WebhookAuthError",
    "WebhookEvent",
    "WebhookEventType",
    "WebhookPayloadError",
    "WebhookReceiver",
    "WebhookRejected",
    "parse_event",
    "verify_secret",
]

# Tracebacks name an exception by its ``__module__``: the public path, not the private module.
for _error_class in (WebhookAuthError, WebhookPayloadError, WebhookRejected):
    _error_class.__module__ = __name__
del _error_class
