"""Calls and their AI transcriptions."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import attrs

from .._money import Money
from .common import OpenStrEnum

__all__ = ["Call", "CallDirection", "CallStatus", "Transcription", "TranscriptionSegment"]


class CallStatus(OpenStrEnum):
    """Outcome of a call. Values the SDK does not know yet are kept (see ``OpenStrEnum``)."""

    ANSWERED = "answered"
    MISSED = "missed"
    VOICEMAIL = "voicemail"
    # Newer API revision:
    COMPLETED = "completed"
    NO_ANSWER = "no-answer"
    BUSY = "busy"
    FAILED = "failed"


class CallDirection(OpenStrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


@attrs.frozen(kw_only=True)
class Call:
    """One call. ``cost``/``value`` come from ``cost_cents``/``value_cents``.

    Only ``id``, ``status`` and ``started_at`` are required; every other field may be
    missing or null in a response and is then None.
    """

    id: UUID
    status: CallStatus
    started_at: datetime
    number_id: UUID | None = None
    call_flow_id: UUID | None = None
    call_flow_name: str | None = None
    tracking_number: str | None = None
    caller_number: str | None = None
    caller_name: str | None = None
    caller_city: str | None = None
    caller_state: str | None = None
    destination_number: str | None = None
    direction: CallDirection | None = None
    duration_seconds: int | None = None
    recording_url: str | None = None
    has_transcription: bool | None = None
    source: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    gclid: str | None = None
    landing_page_url: str | None = None
    qualified: bool | None = None
    # 0-100; a float so that a fractional score from a newer revision still decodes.
    ai_score: float | None = None
    ai_category: str | None = None
    cost: Money | None = None
    value: Money | None = None
    created_at: datetime | None = None


@attrs.frozen(kw_only=True)
class TranscriptionSegment:
    """One utterance: who spoke, when (seconds from the start of the call) and what."""

    start_seconds: float
    end_seconds: float
    text: str
    speaker: str | None = None


@attrs.frozen(kw_only=True)
class Transcription:
    """The AI transcription of a call (``GET calls/{id}/transcription``)."""

    call_id: UUID
    text: str | None = None
    language: str | None = None
    segments: list[TranscriptionSegment] = attrs.field(factory=list)
