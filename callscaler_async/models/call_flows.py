"""Call flows: the routing a tracking number runs, step by step, and its history."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import attrs

from .common import OpenStrEnum

__all__ = ["CallFlow", "CallFlowSettings", "CallFlowStep", "CallFlowVersion", "StepType"]


class StepType(OpenStrEnum):
    GREETING = "greeting"
    FORWARD = "forward"
    VOICEMAIL = "voicemail"
    IVR = "ivr"
    MULTI_RING = "multi_ring"
    SCHEDULE = "schedule"
    ROUND_ROBIN = "round_robin"
    ZIP_CODE = "zip_code"
    TAG_ROUTE = "tag_route"
    WEBHOOK = "webhook"


@attrs.frozen(kw_only=True)
class CallFlowStep:
    """One step of a call flow.

    Steps are open-ended: each type has its own fields and new types appear. The common
    fields are attributes; every other field (``options``, ``schedule``, ``url`` ...) is
    kept as raw JSON in ``extra``, so a step the SDK does not understand is sent back
    exactly as it arrived. A known field that arrived as an explicit ``null`` is kept in
    ``extra`` as ``None`` (the attribute is None either way) for the same reason.

    >>> step = CallFlowStep(type=StepType.FORWARD, number="+15735551234", timeout_seconds=20)
    """

    type: StepType
    message: str | None = None
    number: str | None = None
    timeout_seconds: int | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class CallFlowSettings:
    """Flow-wide switches; settings the SDK does not know are kept in ``extra``."""

    recording: bool | None = None
    whisper: bool | None = None
    press1: bool | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class CallFlow:
    """A call flow. List endpoints may omit ``steps`` (then an empty list)."""

    id: UUID
    name: str
    steps: list[CallFlowStep] = attrs.field(factory=list)
    settings: CallFlowSettings | None = None
    version: int | None = None
    # A count of numbers using this flow, not a list.
    assigned_numbers: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@attrs.frozen(kw_only=True)
class CallFlowVersion:
    """One saved version of a call flow (``GET call-flows/{id}/versions``)."""

    version: int
    created_at: datetime | None = None
    # E-mail of the user who saved it; None for changes made through the API.
    created_by: str | None = None
    steps: list[CallFlowStep] = attrs.field(factory=list)
