"""Tracking numbers, owned or available to buy."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import attrs

from .._money import Money
from .common import OpenStrEnum

__all__ = ["AvailableNumber", "Number", "NumberStatus", "NumberType"]


class NumberStatus(OpenStrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    RELEASED = "released"


class NumberType(OpenStrEnum):
    LOCAL = "local"
    TOLL_FREE = "toll_free"


@attrs.frozen(kw_only=True)
class Number:
    """A tracking number the business owns.

    ``friendly_name`` is read from ``friendly_name`` (older API revision) or ``name`` (newer
    one) and always encoded as ``friendly_name``. ``monthly_cost`` comes from
    ``monthly_cost_cents``.
    """

    id: UUID
    phone_number: str
    friendly_name: str | None = None
    type: NumberType | None = None
    status: NumberStatus | None = None
    call_flow_id: UUID | None = None
    call_flow_name: str | None = None
    group_id: UUID | None = None
    group_name: str | None = None
    number_source: str | None = None
    total_calls: int | None = None
    sms_enabled: bool | None = None
    monthly_cost: Money | None = None
    created_at: datetime | None = None


@attrs.frozen(kw_only=True)
class AvailableNumber:
    """A number offered by ``POST numbers/search``; buy it with ``numbers/purchase``."""

    phone_number: str
    locality: str | None = None
    region: str | None = None
    type: NumberType | None = None
    monthly_cost: Money | None = None
