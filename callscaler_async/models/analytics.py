"""Call analytics: grouped rows of metrics (``GET analytics/calls``)."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["GROUP_KEYS", "METRIC_NAMES", "AnalyticsReport", "AnalyticsRow", "MetricValue"]

MetricValue = int | float | None

# Metrics the API documents; a row's other numeric keys are treated as metrics too.
METRIC_NAMES = frozenset({"count", "avg_duration", "qualified_pct", "avg_ai_score"})
# Values accepted by ``group_by``; their values in a row stay raw JSON (str, int or null).
GROUP_KEYS = frozenset(
    {
        "source", "utm_source", "utm_medium", "utm_campaign", "call_flow_id", "number_id",
        "status", "direction", "date", "week", "month", "hour_of_day", "day_of_week",
    }
)  # fmt: skip


@attrs.frozen(kw_only=True)
class AnalyticsRow:
    """One row of an analytics report, split into what it groups by and what it measures.

    The API sends a flat object (``{"source": "google", "count": 12, "avg_duration": 64.5}``).
    ``groups`` holds the group-by keys with their raw JSON values; ``metrics`` the numbers.
    A key is a metric if it is a documented metric name, or an unknown key with a numeric
    value; a documented group key (``hour_of_day`` is an int) is always a group. Encoding
    merges both dicts back into the flat object.

    >>> row = AnalyticsRow(groups={"source": "google"}, metrics={"count": 12})
    >>> row["source"], row.count, row.avg_duration
    ('google', 12, None)
    """

    groups: dict[str, Any] = attrs.field(factory=dict)
    metrics: dict[str, MetricValue] = attrs.field(factory=dict)

    def __getitem__(self, key: str) -> Any:
        """Look a key up in ``groups`` then ``metrics``, as in the flat JSON row."""
        if key in self.groups:
            return self.groups[key]
        return self.metrics[key]

    @property
    def count(self) -> int | None:
        value = self.metrics.get("count")
        return int(value) if value is not None else None

    @property
    def avg_duration(self) -> float | None:
        return _as_float(self.metrics.get("avg_duration"))

    @property
    def qualified_pct(self) -> float | None:
        return _as_float(self.metrics.get("qualified_pct"))

    @property
    def avg_ai_score(self) -> float | None:
        return _as_float(self.metrics.get("avg_ai_score"))


@attrs.frozen(kw_only=True)
class AnalyticsReport:
    """The rows of a report and the ``totals`` of every requested metric."""

    rows: list[AnalyticsRow] = attrs.field(factory=list)
    totals: dict[str, MetricValue] = attrs.field(factory=dict)


def _as_float(value: MetricValue) -> float | None:
    return float(value) if value is not None else None
