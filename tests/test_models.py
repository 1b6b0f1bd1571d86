"""Models, Money and the converter against contract-shaped JSON."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import attrs
import pytest

from callscaler_async._convert import decode, decode_list, encode, strict_converter
from callscaler_async._errors import ResponseDecodeError
from callscaler_async.models import (
    AnalyticsReport,
    AnalyticsRow,
    AvailableNumber,
    Balance,
    Call,
    CallDirection,
    CallFlow,
    CallFlowSettings,
    CallFlowStep,
    CallFlowVersion,
    CallStatus,
    Deleted,
    Money,
    Number,
    NumberStatus,
    NumberType,
    StepType,
    Transcription,
)

ID = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
ID2 = "b2c3d4e5-f6a7-8901-bcde-f12345678901"

CALL: dict[str, Any] = {
    "id": ID,
    "number_id": ID2,
    "call_flow_id": ID2,
    "call_flow_name": "Main line",
    "tracking_number": "+15735551234",
    "caller_number": "+15735550000",
    "caller_name": "JANE DOE",
    "caller_city": "Columbia",
    "caller_state": "MO",
    "destination_number": "+15735559999",
    "direction": "inbound",
    "status": "answered",
    "duration_seconds": 125,
    "recording_url": "https://callscaler.com/r/1.mp3",
    "has_transcription": True,
    "source": "google",
    "utm_source": "google",
    "utm_medium": "cpc",
    "utm_campaign": "spring",
    "utm_term": "plumber",
    "utm_content": "ad1",
    "gclid": "abc123",
    "landing_page_url": "https://example.com/",
    "qualified": True,
    "ai_score": 87,
    "ai_category": "lead",
    "cost_cents": 12,
    "value_cents": 25000,
    "started_at": "2026-03-23T14:30:00Z",
    "created_at": "2026-03-23T14:32:05.123456Z",
}
NUMBER: dict[str, Any] = {
    "id": ID,
    "phone_number": "+15735551234",
    "friendly_name": "Google Ads",
    "type": "local",
    "status": "active",
    "call_flow_id": ID2,
    "call_flow_name": "Main line",
    "group_id": ID2,
    "group_name": "Ads",
    "number_source": "owned",
    "total_calls": 42,
    "sms_enabled": False,
    "monthly_cost_cents": 300,
    "created_at": "2026-01-02T03:04:05Z",
}
STEPS: list[dict[str, Any]] = [
    {"type": "greeting", "message": "Thanks for calling"},
    {"type": "forward", "number": "+15735559999", "timeout_seconds": 20, "record": True},
    {"type": "ivr", "options": [{"digit": "1", "steps": [{"type": "voicemail"}]}]},
    {"type": "sms_blast", "template": "hi {name}", "message": None},
]
CALL_FLOW: dict[str, Any] = {
    "id": ID,
    "name": "Main line",
    "steps": STEPS,
    "settings": {"recording": True, "whisper": False, "press1": False, "spam_filter": "strict"},
    "version": 3,
    "assigned_numbers": 2,
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-02-01T00:00:00+00:00",
}
BALANCE = {
    "balance_cents": 2500,
    "low_balance_threshold_cents": 500,
    "auto_recharge": True,
    "auto_recharge_amount_cents": 2000,
}
TRANSCRIPTION = {
    "call_id": ID,
    "text": "Hello. Hi.",
    "language": "en",
    "segments": [
        {"speaker": "caller", "start_seconds": 0, "end_seconds": 1.5, "text": "Hello."},
        {"speaker": "agent", "start_seconds": 1.5, "end_seconds": 2.25, "text": "Hi."},
    ],
}
ANALYTICS = {
    "rows": [
        {"source": "google", "hour_of_day": 9, "count": 12, "avg_duration": 64.5},
        {"source": None, "hour_of_day": 10, "count": 0, "avg_duration": None},
    ],
    "totals": {"count": 12, "avg_duration": 64.5},
}


def decode_error(data: Any, model: type[Any], path: str = "$") -> ResponseDecodeError:
    with pytest.raises(ResponseDecodeError) as info:
        decode(data, model, path=path)
    return info.value


# -- each model ------------------------------------------------------------------------------


def test_call_full() -> None:
    call = decode(CALL, Call)
    assert call.id == UUID(ID)
    assert call.number_id == UUID(ID2)
    assert call.status is CallStatus.ANSWERED
    assert call.direction is CallDirection.INBOUND
    assert call.cost == Money.from_cents(12)
    assert call.value == Money.from_cents(25000)
    assert call.started_at == datetime(2026, 3, 23, 14, 30, tzinfo=UTC)
    assert call.created_at is not None
    assert call.created_at.microsecond == 123456
    assert call.ai_score == 87
    assert call.qualified is True
    assert call.duration_seconds == 125
    assert not hasattr(call, "cost_cents")


def test_call_minimal_and_nulls() -> None:
    minimal = {"id": ID, "status": "missed", "started_at": "2026-03-23T14:30:00Z"}
    call = decode(minimal, Call)
    assert call.cost is None
    assert call.caller_name is None
    assert call.direction is None
    nulls = {k: (None if k not in minimal else v) for k, v in CALL.items()}
    call = decode(nulls, Call)
    assert call.number_id is None
    assert call.qualified is None
    assert call.value is None


def test_number_and_name_variant() -> None:
    number = decode(NUMBER, Number)
    assert number.friendly_name == "Google Ads"
    assert number.type is NumberType.LOCAL
    assert number.status is NumberStatus.ACTIVE
    assert number.monthly_cost == Money.from_cents(300)
    assert number.total_calls == 42
    assert number.sms_enabled is False
    newer = {k: v for k, v in NUMBER.items() if k != "friendly_name"} | {"name": "Bing"}
    renamed = decode(newer, Number)
    assert renamed.friendly_name == "Bing"
    assert encode(renamed)["friendly_name"] == "Bing"
    assert "name" not in encode(renamed)
    # "name" is a known spelling, not drift
    assert strict_converter.structure(newer, Number) == renamed


def test_available_number() -> None:
    available = decode(
        {
            "phone_number": "+18005551234",
            "locality": None,
            "region": "MO",
            "type": "toll_free",
            "monthly_cost_cents": 200,
        },
        AvailableNumber,
    )
    assert available.type is NumberType.TOLL_FREE
    assert available.monthly_cost == Money.from_cents(200)
    assert available.locality is None


def test_call_flow_steps_and_settings_round_trip_exactly() -> None:
    original = copy.deepcopy(CALL_FLOW)
    flow = decode(CALL_FLOW, CallFlow)
    assert original == CALL_FLOW  # input untouched
    assert flow.steps[0].type is StepType.GREETING
    assert flow.steps[0].message == "Thanks for calling"
    assert flow.steps[1].timeout_seconds == 20
    assert flow.steps[1].extra == {"record": True}
    assert flow.steps[3].type.value == "sms_blast"
    assert not flow.steps[3].type.is_known
    assert flow.settings == CallFlowSettings(
        recording=True, whisper=False, press1=False, extra={"spam_filter": "strict"}
    )
    encoded = encode(flow)
    assert encoded["steps"] == STEPS
    assert encoded["settings"] == CALL_FLOW["settings"]
    assert encoded["updated_at"] == "2026-02-01T00:00:00Z"


def test_call_flow_without_steps() -> None:
    assert decode({"id": ID, "name": "x"}, CallFlow).steps == []
    assert decode({"id": ID, "name": "x", "steps": None, "settings": None}, CallFlow).steps == []


def test_built_step_encodes_cleanly() -> None:
    step = CallFlowStep(type=StepType.FORWARD, number="+15735551234", timeout_seconds=20)
    assert encode(step) == {"type": "forward", "number": "+15735551234", "timeout_seconds": 20}


def test_call_flow_version() -> None:
    version = decode(
        {"version": 2, "created_at": "2026-01-01T00:00:00Z", "created_by": None, "steps": STEPS},
        CallFlowVersion,
    )
    assert version.version == 2
    assert version.created_by is None
    assert len(version.steps) == 4


def test_transcription() -> None:
    transcription = decode(TRANSCRIPTION, Transcription)
    assert transcription.call_id == UUID(ID)
    assert transcription.segments[0].start_seconds == 0.0
    assert isinstance(transcription.segments[0].start_seconds, float)
    assert transcription.segments[1].speaker == "agent"


def test_analytics() -> None:
    report = decode(ANALYTICS, AnalyticsReport)
    row = report.rows[0]
    assert row.groups == {"source": "google", "hour_of_day": 9}
    assert row.metrics == {"count": 12, "avg_duration": 64.5}
    assert row.count == 12
    assert row["source"] == "google"
    assert report.rows[1].avg_duration is None
    assert report.totals == {"count": 12, "avg_duration": 64.5}
    assert encode(report) == ANALYTICS
    new_metric = decode({"rows": [{"week": "2026-W12", "median_ring": 3}]}, AnalyticsReport)
    assert new_metric.rows[0].metrics == {"median_ring": 3}
    assert isinstance(new_metric.rows[0], AnalyticsRow)


def test_balance() -> None:
    balance = decode(BALANCE, Balance)
    assert balance.balance == Money.from_cents(2500)
    assert str(balance.balance) == "$25.00"
    assert balance.low_balance_threshold == Money.from_cents(500)
    assert balance.auto_recharge is True
    assert balance.auto_recharge_amount == Money.from_cents(2000)
    assert encode(balance) == BALANCE


def test_deleted() -> None:
    deleted = decode({"deleted": True, "id": ID}, Deleted)
    assert deleted == Deleted(deleted=True, id=UUID(ID))
    assert encode(deleted) == {"deleted": True, "id": ID}


def test_decode_list() -> None:
    calls = decode_list([CALL, CALL], Call, path="$.data.calls")
    assert len(calls) == 2
    assert decode_list([], Number, path="$") == []


def test_models_are_frozen_and_slotted() -> None:
    call = decode(CALL, Call)
    with pytest.raises(AttributeError):
        call.status = CallStatus.MISSED  # type: ignore[misc]
    assert not hasattr(call, "__dict__")


# -- unknown fields and values ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "model"),
    [
        (CALL, Call),
        (NUMBER, Number),
        (BALANCE, Balance),
        (TRANSCRIPTION, Transcription),
        ({"deleted": True, "id": ID}, Deleted),
    ],
)
def test_unknown_fields_ignored_but_rejected_by_strict(
    payload: dict[str, Any], model: type
) -> None:
    drifted = payload | {"brand_new_field": {"x": 1}}
    assert decode(drifted, model) == decode(payload, model)
    assert strict_converter.structure(payload, model) == decode(payload, model)
    error = None
    try:
        decode(drifted, model, strict=True)
    except ResponseDecodeError as exc:
        error = exc
    assert error is not None
    assert error.path == "$.brand_new_field"


def test_unknown_enum_values_survive() -> None:
    status = CallStatus("brand_new")
    assert status.value == "brand_new"
    assert status == "brand_new"
    assert CallStatus("brand_new") is status
    assert not status.is_known
    assert CallStatus.ANSWERED.is_known
    assert "brand_new" not in [m.value for m in CallStatus]
    call = decode(CALL | {"status": "brand_new", "direction": "sideways"}, Call)
    assert call.status.value == "brand_new"
    encoded = encode(call)
    assert encoded["status"] == "brand_new"
    assert type(encoded["status"]) is str
    assert encoded["direction"] == "sideways"
    assert decode(CALL | {"status": "no-answer"}, Call).status is CallStatus.NO_ANSWER
    with pytest.raises(ValueError):
        CallStatus(5)  # type: ignore[arg-type]


def test_encode_round_trip_call() -> None:
    call = decode(CALL, Call)
    encoded = encode(call)
    assert encoded["cost_cents"] == 12
    assert encoded["id"] == ID
    assert encoded["started_at"] == "2026-03-23T14:30:00Z"
    # the wire format has whole seconds (YYYY-MM-DDTHH:MM:SSZ): sub-second precision is dropped
    assert decode(encoded, Call) == attrs.evolve(
        call, created_at=datetime(2026, 3, 23, 14, 32, 5, tzinfo=UTC)
    )


# -- timestamps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-23T14:30:00Z", datetime(2026, 3, 23, 14, 30, tzinfo=UTC)),
        ("2026-03-23T14:30:00+00:00", datetime(2026, 3, 23, 14, 30, tzinfo=UTC)),
        ("2026-03-23T16:30:00+02:00", datetime(2026, 3, 23, 14, 30, tzinfo=UTC)),
        ("2026-03-23T09:30:00-05:00", datetime(2026, 3, 23, 14, 30, tzinfo=UTC)),
        ("2026-03-23T14:30:00.5Z", datetime(2026, 3, 23, 14, 30, 0, 500000, tzinfo=UTC)),
        ("2026-03-23T14:30:00", datetime(2026, 3, 23, 14, 30, tzinfo=UTC)),  # naive = UTC
    ],
)
def test_timestamps_become_aware_utc(text: str, expected: datetime) -> None:
    started = decode(CALL | {"started_at": text}, Call).started_at
    assert started == expected
    assert started.tzinfo is UTC


def test_encode_datetime_to_utc_z() -> None:
    from datetime import timedelta, timezone

    moment = datetime(2026, 3, 23, 16, 30, 0, 999, tzinfo=timezone(timedelta(hours=2)))
    assert encode(moment) == "2026-03-23T14:30:00Z"
    assert encode(UUID(ID)) == ID
    assert encode(Money.from_cents(5)) == 5
    assert encode(StepType.IVR) == "ivr"


# -- errors name the JSON path ---------------------------------------------------------------


def test_error_paths() -> None:
    error = decode_error(CALL | {"started_at": "yesterday"}, Call, "$.data.call")
    assert error.path == "$.data.call.started_at"
    assert error.model == "Call"
    assert "expected an ISO 8601 timestamp, got 'yesterday'" in error.message

    with pytest.raises(ResponseDecodeError) as info:
        decode_list([CALL, CALL, CALL, CALL | {"id": "nope"}], Call, path="$.data.calls")
    assert info.value.path == "$.data.calls[3].id"

    missing = decode_error({k: v for k, v in CALL.items() if k != "status"}, Call)
    assert missing.path == "$.status"
    assert "missing" in missing.message

    assert decode_error(CALL | {"cost_cents": "12"}, Call).path == "$.cost_cents"
    flow = CALL_FLOW | {"steps": [*STEPS, {"type": "forward", "timeout_seconds": "20"}]}
    assert decode_error(flow, CallFlow).path == "$.steps[4].timeout_seconds"
    assert (
        decode_error(CALL_FLOW | {"steps": [{"message": "x"}]}, CallFlow).path == "$.steps[0].type"
    )
    settings = CALL_FLOW | {"settings": {"recording": "yes"}}
    assert decode_error(settings, CallFlow).path == "$.settings.recording"
    bad_row = {"rows": [{"count": "many"}]}
    assert decode_error(bad_row, AnalyticsReport).path == "$.rows[0].count"
    assert decode_error([CALL], Call).path == "$"
    assert decode_error(None, Call).path == "$"
    assert decode_error(CALL | {"started_at": None}, Call).path == "$.started_at"
    assert decode_error(NUMBER | {"steps": 1, "monthly_cost_cents": 1.5}, Number).path == (
        "$.monthly_cost_cents"
    )


# -- strictness of JSON types ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("qualified", "true"),
        ("qualified", 1),
        ("has_transcription", 0),
        ("duration_seconds", True),
        ("duration_seconds", 12.5),
        ("duration_seconds", "12"),
        ("cost_cents", False),
        ("caller_name", 123),
        ("tracking_number", ["+1"]),
        ("ai_score", "87"),
        ("ai_score", True),
        ("number_id", 12345),
        ("started_at", 1700000000),
        ("status", None),
        ("status", 1),
    ],
)
def test_json_types_are_not_coerced(field: str, value: Any) -> None:
    error = decode_error(CALL | {field: value}, Call)
    key = field
    assert error.path == f"$.{key}"


def test_integral_float_accepted_for_int() -> None:
    assert decode(CALL | {"duration_seconds": 12.0}, Call).duration_seconds == 12


# -- Money -----------------------------------------------------------------------------------


def test_money_basics() -> None:
    m = Money.from_cents(2500)
    assert m.cents == 2500
    assert m.amount == Decimal("25.00")
    assert m.currency == "USD"
    assert str(m) == "$25.00"
    assert repr(m) == "Money(cents=2500)"
    assert str(Money.from_cents(-150)) == "-$1.50"
    assert str(Money.from_cents(123456)) == "$1,234.56"
    assert str(Money.from_cents(5)) == "$0.05"
    assert m.cents == 2500 and m.amount == Decimal("25")
    assert bool(Money.from_cents(0)) is False
    assert bool(m) is True
    assert Money.from_amount("25.00") == m
    assert Money.from_amount(Decimal("0.01")) == Money.from_cents(1)
    assert Money.from_amount(3) == Money.from_cents(300)
    assert m + Money.from_cents(50) == Money.from_cents(2550)
    assert m - Money.from_cents(2600) == Money.from_cents(-100)
    assert sum([m, m]) == Money.from_cents(5000)
    assert Money.from_cents(1) < m <= m
    assert max(Money.from_cents(1), m) is m
    assert len({m, Money.from_cents(2500)}) == 1
    assert Money.from_amount("-1.5").amount == Decimal("-1.5")


@pytest.mark.parametrize("bad", [0.1, 25.0, "1.005", "abc", Decimal("NaN"), "Infinity"])
def test_money_from_amount_refuses(bad: Any) -> None:
    with pytest.raises(ValueError):
        Money.from_amount(bad)


def test_money_refuses_mixed_types() -> None:
    with pytest.raises(TypeError):
        Money.from_cents(1) + 1  # type: ignore[operator]
    with pytest.raises(TypeError):
        Money(cents=True)
    with pytest.raises(ValueError):
        Money.from_cents(1) + Money.from_cents(1, "EUR")
    with pytest.raises(AttributeError):
        Money.from_cents(1).cents = 2  # type: ignore[misc]
