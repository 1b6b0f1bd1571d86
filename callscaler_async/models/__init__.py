"""Typed, frozen models of every object the CallScaler API returns.

Decode JSON into them with :func:`callscaler_async._convert.decode`; they do no I/O.
"""

from .._money import Money
from .account import Balance
from .analytics import GROUP_KEYS, METRIC_NAMES, AnalyticsReport, AnalyticsRow, MetricValue
from .call_flows import CallFlow, CallFlowSettings, CallFlowStep, CallFlowVersion, StepType
from .calls import Call, CallDirection, CallStatus, Transcription, TranscriptionSegment
from .common import Deleted, OpenStrEnum
from .numbers import AvailableNumber, Number, NumberStatus, NumberType

__all__ = [
    "GROUP_KEYS",
    "METRIC_NAMES",
    "AnalyticsReport",
    "AnalyticsRow",
    "AvailableNumber",
    "Balance",
    "Call",
    "CallDirection",
    "CallFlow",
    "CallFlowSettings",
    "CallFlowStep",
    "CallFlowVersion",
    "CallStatus",
    "Deleted",
    "MetricValue",
    "Money",
    "Number",
    "NumberStatus",
    "NumberType",
    "OpenStrEnum",
    "StepType",
    "Transcription",
    "TranscriptionSegment",
]
