"""``client.analytics``: aggregated call statistics."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Final

from .._convert import decode
from ..models import AnalyticsReport
from ._base import Resource
from .calls import CallStatusFilter, call_filters

__all__ = ["GROUP_BY", "METRICS", "Analytics"]

GROUP_BY: Final = frozenset(
    {
        "source",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "call_flow_id",
        "number_id",
        "status",
        "direction",
        "date",
        "week",
        "month",
        "hour_of_day",
        "day_of_week",
    }
)
METRICS: Final = frozenset({"count", "avg_duration", "qualified_pct", "avg_ai_score"})


def _names(value: str | Sequence[str], *, name: str, allowed: frozenset[str]) -> list[str]:
    names = [part.strip() for part in value.split(",")] if isinstance(value, str) else list(value)
    for item in names:
        if item not in allowed:
            raise ValueError(f"{name} has unknown value {item!r}; allowed: {sorted(allowed)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{name} repeats a value: {names}")
    return names


class Analytics(Resource):
    """Call analytics grouped by up to three dimensions."""

    async def calls(
        self,
        *,
        group_by: str | Sequence[str] = (),
        metrics: str | Sequence[str] = ("count",),
        date_from: dt.datetime | dt.date | None = None,
        date_to: dt.datetime | dt.date | None = None,
        status: CallStatusFilter | None = None,
        number_id: uuid.UUID | str | None = None,
        call_flow_id: uuid.UUID | str | None = None,
        qualified: bool | None = None,
    ) -> AnalyticsReport:
        """Rows per group and totals.

        >>> async def by_source(client) -> None:
        ...     report = await client.analytics.calls(group_by=["source"], metrics=["count"])
        """
        groups = _names(group_by, name="group_by", allowed=GROUP_BY)
        if len(groups) > 3:
            raise ValueError(f"group_by takes at most 3 dimensions, got {len(groups)}")
        wanted = _names(metrics, name="metrics", allowed=METRICS)
        if not wanted:
            raise ValueError("metrics needs at least one metric")
        params = call_filters(
            date_from=date_from,
            date_to=date_to,
            status=status,
            number_id=number_id,
            call_flow_id=call_flow_id,
            qualified=qualified,
        )
        if groups:
            params["group_by"] = ",".join(groups)
        params["metrics"] = ",".join(wanted)
        raw = await self._send("GET", "analytics/calls", route="analytics/calls", params=params)
        payload, path = self._received(raw)
        return decode(payload, AnalyticsReport, path=path)
