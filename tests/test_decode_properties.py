"""Property tests: whatever JSON arrives, decode raises ResponseDecodeError or nothing.

Profiles (``HYPOTHESIS_PROFILE``): ``ci`` (default, >= 10,000 examples in total across this
file), ``dev`` (quick), ``thorough`` (long runs).
"""

from __future__ import annotations

import copy
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callscaler_async._convert import decode, decode_list, encode
from callscaler_async._errors import ResponseDecodeError
from callscaler_async.models import (
    AnalyticsReport,
    AvailableNumber,
    Balance,
    Call,
    CallFlow,
    CallFlowVersion,
    Deleted,
    Number,
    Transcription,
    TranscriptionSegment,
)

# Contract-shaped payloads (the same as in test_models.py; kept here so both files stand alone).
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

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "database": None,  # no example database: keeps the file fast on a busy CI box
}
settings.register_profile("ci", max_examples=1500, **_COMMON)
settings.register_profile("dev", max_examples=100, **_COMMON)
settings.register_profile("thorough", max_examples=20_000, **_COMMON)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
# Not loaded globally (other test files keep their own defaults): applied per test below,
# scaled by how costly one example is. With "ci" the file runs 10,800 examples in total.
_BASE = settings.get_profile(PROFILE)


def examples(weight: float) -> settings:
    return settings(_BASE, max_examples=max(1, int(_BASE.max_examples * weight)))


VALID: dict[type[Any], dict[str, Any]] = {
    Call: CALL,
    Number: NUMBER,
    AvailableNumber: {
        "phone_number": "+18005551234",
        "locality": "Columbia",
        "region": "MO",
        "type": "toll_free",
        "monthly_cost_cents": 200,
    },
    CallFlow: CALL_FLOW,
    CallFlowVersion: {
        "version": 2,
        "created_at": "2026-01-01T00:00:00Z",
        "created_by": "a@b.c",
        "steps": STEPS,
    },
    Transcription: TRANSCRIPTION,
    TranscriptionSegment: TRANSCRIPTION["segments"][0],
    AnalyticsReport: ANALYTICS,
    Balance: BALANCE,
    Deleted: {"deleted": True, "id": ID},
}
MODELS = list(VALID)


def _nest(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"type": value}
    return value


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
# Object keys: mostly real field names (so values land where the models look), some noise.
json_keys = st.sampled_from(
    sorted({key for payload in VALID.values() for key in payload} | {"name", "type", "count"})
) | st.text(max_size=6)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=4)
    ),
    max_leaves=8,
)
# Values chosen to break a field: wrong types, nulls, huge ints, bad UUIDs and timestamps,
# very long strings, deep nesting.
nasty_values = st.one_of(
    json_values,
    st.sampled_from(
        [
            None,
            True,
            False,
            0,
            -1,
            1.5,
            2**64,
            -(2**63) - 1,
            10**400,
            1e308,
            "",
            "true",
            "12",
            "not-a-uuid",
            "a1b2c3d4-e5f6-7890-abcd-ef123456789Z",
            "yesterday",
            "2026-13-45T99:99:99Z",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "x" * 100_000,
            [],
            {},
            [[[[[[[[[[[[]]]]]]]]]]]],
        ]
    ),
    st.integers(min_value=1, max_value=600).map(_nest),
)


def assert_decodes_or_names_path(data: Any, model: type[Any], path: str = "$") -> Any:
    error: ResponseDecodeError | None = None
    try:
        result = decode(data, model, path=path)
    except ResponseDecodeError as exc:
        error = exc
    if error is not None:
        assert error.path.startswith(path)
        assert error.model == model.__name__
        assert error.message
        return None
    assert isinstance(result, model)
    return result


@examples(1.4)
@given(model=st.sampled_from(MODELS), data=json_values)
def test_arbitrary_json_only_raises_decode_error(model: type[Any], data: Any) -> None:
    assert_decodes_or_names_path(data, model)


@examples(0.4)
@given(
    model=st.sampled_from(MODELS),
    data=st.dictionaries(json_keys, json_values, max_size=8),
)
def test_arbitrary_objects_only_raise_decode_error(model: type[Any], data: Any) -> None:
    assert_decodes_or_names_path(data, model, path="$.data.item")


@examples(2.4)
@given(model=st.sampled_from(MODELS), choice=st.data(), bad=nasty_values)
def test_one_field_replaced(model: type[Any], choice: st.DataObject, bad: Any) -> None:
    payload = copy.deepcopy(VALID[model])
    field = choice.draw(st.sampled_from(sorted(payload)), label="field")
    payload[field] = bad
    assert_decodes_or_names_path(payload, model, path="$.data")


@examples(1.6)
@given(model=st.sampled_from(MODELS), choice=st.data(), bad=nasty_values)
def test_one_field_removed_or_nested_field_replaced(
    model: type[Any], choice: st.DataObject, bad: Any
) -> None:
    payload = copy.deepcopy(VALID[model])
    field = choice.draw(st.sampled_from(sorted(payload)), label="field")
    target = payload[field]
    if isinstance(target, list) and target and isinstance(target[0], dict):
        inner = target[choice.draw(st.integers(0, len(target) - 1), label="index")]
        inner[choice.draw(st.sampled_from(sorted(inner)), label="inner")] = bad
    elif isinstance(target, dict) and target:
        target[choice.draw(st.sampled_from(sorted(target)), label="inner")] = bad
    else:
        del payload[field]
    assert_decodes_or_names_path(payload, model)


@examples(0.8)
@given(
    model=st.sampled_from(MODELS),
    items=st.lists(st.one_of(st.just(None), json_values, st.just("ok")), max_size=6),
)
def test_lists_only_raise_decode_error(model: type[Any], items: list[Any]) -> None:
    data = [VALID[model] if item == "ok" else item for item in items]
    try:
        result = decode_list(data, model, path="$.data.items")
    except ResponseDecodeError as exc:
        error_path = exc.path
    else:
        assert len(result) == len(data)
        return
    assert error_path.startswith("$.data.items")


@examples(0.4)
@given(
    model=st.sampled_from(MODELS),
    extra=st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=3),
)
def test_valid_payloads_with_unknown_fields_decode_and_round_trip(
    model: type[Any], extra: dict[str, Any]
) -> None:
    payload = copy.deepcopy(VALID[model])
    expected = decode(payload, model)
    payload.update({k: v for k, v in extra.items() if k not in payload and k != "name"})
    try:
        decoded = decode(payload, model)
    except ResponseDecodeError:
        # only analytics rows/totals or settings give meaning to every key
        assert model in (AnalyticsReport,)
        return
    if model not in (AnalyticsReport,):
        assert decoded == expected
    # encoding drops sub-second precision, so compare on the wire format
    assert encode(decode(encode(decoded), model)) == encode(decoded)


@examples(0.2)
@given(steps=st.lists(st.dictionaries(json_keys, json_values, max_size=4), max_size=3))
def test_steps_round_trip_exactly(steps: list[dict[str, Any]]) -> None:
    steps = [{"type": f"type_{index}"} | step for index, step in enumerate(steps)]
    payload = CALL_FLOW | {"steps": steps}
    try:
        flow = decode(payload, CallFlow)
    except ResponseDecodeError as exc:
        error_path = exc.path
    else:
        assert encode(flow)["steps"] == steps
        return
    assert error_path.startswith("$.steps[")
