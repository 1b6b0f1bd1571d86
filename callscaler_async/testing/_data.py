"""Seeded, deterministic data model of the fake CallScaler API.

Everything here is plain dicts shaped exactly like the JSON the contract describes
(``/work/shared/callscaler-api.md`` section 2), built from ``random.Random`` seeded per
business, so two fakes with the same ``seed`` hold identical data. Nothing here imports the SDK.

Calls are spread over the 120 days before the fixed anchor ``2026-11-01T00:00:00Z`` (never
"now"-dependent). Numbers store their display name under ``friendly_name``; the server renames
the key on the way out when the ``number_name_field`` fault asks for ``name``.
"""

from __future__ import annotations

import calendar
import random
import secrets
import string
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CALL_FIELDS",
    "DATA_ANCHOR_UNIX",
    "ApiKey",
    "Business",
    "CallRecord",
    "build_business",
    "format_ts",
    "new_uuid",
]

JSONDict = dict[str, Any]

#: Fixed anchor of the seeded call history: 2026-11-01T00:00:00Z.
DATA_ANCHOR_UNIX = calendar.timegm((2026, 11, 1, 0, 0, 0, 0, 0, 0))

#: Every Call field of the contract, in CSV column order.
CALL_FIELDS: tuple[str, ...] = (
    "id", "number_id", "call_flow_id", "call_flow_name", "tracking_number", "caller_number",
    "caller_name", "caller_city", "caller_state", "destination_number", "direction", "status",
    "duration_seconds", "recording_url", "has_transcription", "source", "utm_source",
    "utm_medium", "utm_campaign", "utm_term", "utm_content", "gclid", "landing_page_url",
    "qualified", "ai_score", "ai_category", "cost_cents", "value_cents", "started_at",
    "created_at",
)

_AREAS: tuple[tuple[str, str, str], ...] = (
    ("573", "Columbia", "MO"), ("314", "St. Louis", "MO"), ("816", "Kansas City", "MO"),
    ("212", "New York", "NY"), ("415", "San Francisco", "CA"), ("512", "Austin", "TX"),
    ("312", "Chicago", "IL"), ("206", "Seattle", "WA"), ("305", "Miami", "FL"),
    ("617", "Boston", "MA"),
)
AREA_INFO: dict[str, tuple[str, str]] = {a: (c, s) for a, c, s in _AREAS}
TOLL_FREE_PREFIXES: tuple[str, ...] = ("800", "888", "877", "866", "855", "844", "833")

_STATUSES = ("answered", "missed", "voicemail", "completed", "no-answer", "busy", "failed")
_STATUS_WEIGHTS = (50, 15, 10, 12, 6, 4, 3)
_SOURCES: tuple[str | None, ...] = (
    "google_ads", "organic", "facebook", "direct", "bing", "referral", None,
)
_CAMPAIGNS = ("spring_promo", "brand", "retargeting", "emergency_service", "summer_sale")
_TERMS = ("plumber near me", "emergency plumber", "water heater repair", "drain cleaning")
_CATEGORIES = ("sales_lead", "support", "spam", "wrong_number", "existing_customer")
_FIRST = ("John", "Maria", "Wei", "Aisha", "Carlos", "Emma", "Liam", "Olivia", "Noah", "Ava")
_LAST = ("Smith", "Garcia", "Chen", "Khan", "Lopez", "Brown", "Miller", "Davis", "Wilson")
_FLOW_NAMES = (
    "Main line", "After hours", "Sales IVR", "Support queue", "Spanish line",
    "Emergency dispatch", "Round robin sales", "Weekend coverage",
)
_GROUPS = (("Paid search", 0), ("Organic", 1), ("Offline", 2))


def format_ts(unix: float) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` for a Unix time (seconds truncated)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(unix)))


def new_uuid(rng: random.Random) -> str:
    """A lowercase version-4 UUID string drawn from ``rng`` (deterministic per seed)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _phone(rng: random.Random, area: str) -> str:
    return f"+1{area}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"


def _key(rng: random.Random) -> str:
    prefix = "".join(rng.choice("0123456789abcdef") for _ in range(8))
    secret = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(40))
    return f"cs_key_{prefix}{secret}"


@dataclass(slots=True)
class ApiKey:
    """One API key: the full bearer string, its business, role and state."""

    key: str
    business: str
    role: str  # "admin" | "member" | "viewer"
    email: str
    revoked: bool = False

    @property
    def prefix(self) -> str:
        """The safe visible part: ``cs_key_`` + 8 chars."""
        return self.key[:15]


@dataclass(slots=True)
class CallRecord:
    """A call: its JSON-ready dict plus the parsed ``started_at`` for fast filtering."""

    ts: int
    data: JSONDict


@dataclass
class Business:
    """All state of one business: data, keys, balance. Rate-limit state lives beside it."""

    name: str
    rng: random.Random
    keys: list[ApiKey] = field(default_factory=list)
    numbers: dict[str, JSONDict] = field(default_factory=dict)
    released_numbers: dict[str, JSONDict] = field(default_factory=dict)
    call_flows: dict[str, JSONDict] = field(default_factory=dict)
    versions: dict[str, list[JSONDict]] = field(default_factory=dict)
    #: Calls sorted newest first by (started_at, id). The server binary-searches the
    #: ``date_from``/``date_to`` bounds in it: after any change call :meth:`sort_calls` (or
    #: insert in place).
    calls: list[CallRecord] = field(default_factory=list)
    calls_by_id: dict[str, CallRecord] = field(default_factory=dict)
    balance: JSONDict = field(default_factory=dict)
    emails: tuple[str, ...] = ()

    def sort_calls(self) -> None:
        """Restore newest-first order by ``started_at`` then ``id`` (both descending)."""
        self.calls.sort(key=lambda c: (c.ts, c.data["id"]), reverse=True)

    def make_call(self, started: int) -> CallRecord:
        """Draw one new random call that started at ``started`` (Unix seconds)."""
        return _make_call(self, self.rng, started)


def _steps(rng: random.Random) -> list[JSONDict]:
    steps: list[JSONDict] = [
        {"type": "greeting", "message": "Thanks for calling. This call may be recorded."},
    ]
    kind = rng.choice(("forward", "ivr", "multi_ring", "round_robin", "schedule"))
    dest = _phone(rng, rng.choice(_AREAS)[0])
    if kind == "forward":
        steps.append({"type": "forward", "number": dest, "timeout_seconds": rng.choice((20, 30))})
    elif kind == "ivr":
        steps.append({
            "type": "ivr",
            "message": "Press 1 for sales, 2 for support.",
            "timeout_seconds": 10,
            "options": [
                {"digit": "1", "label": "Sales", "number": dest},
                {"digit": "2", "label": "Support", "number": _phone(rng, "573")},
            ],
        })
    elif kind == "multi_ring":
        steps.append({
            "type": "multi_ring",
            "numbers": [dest, _phone(rng, "314")],
            "timeout_seconds": 25,
        })
    elif kind == "round_robin":
        steps.append({
            "type": "round_robin",
            "numbers": [dest, _phone(rng, "816"), _phone(rng, "512")],
            "timeout_seconds": 20,
        })
    else:
        steps.append({
            "type": "schedule",
            "timezone": "America/Chicago",
            "hours": {"mon-fri": "08:00-18:00", "sat": "09:00-13:00"},
            "number": dest,
        })
    if rng.random() < 0.4:
        steps.append({"type": "webhook", "url": "https://hooks.example.com/call", "method": "POST"})
    steps.append({"type": "voicemail", "message": "Please leave a message.", "max_seconds": 120})
    return steps


def _make_call(biz: Business, rng: random.Random, started: int) -> CallRecord:
    numbers = list(biz.numbers.values())
    number = rng.choice(numbers) if numbers else None
    flow_id = number["call_flow_id"] if number else None
    flow = biz.call_flows.get(flow_id) if flow_id else None
    status = rng.choices(_STATUSES, _STATUS_WEIGHTS)[0]
    talked = status in ("answered", "completed")
    if talked:
        duration = rng.randint(15, 900)
    elif status == "voicemail":
        duration = rng.randint(8, 120)
    else:
        duration = 0
    call_id = new_uuid(rng)
    has_audio = (talked or status == "voicemail") and rng.random() < 0.92
    source = rng.choice(_SOURCES)
    paid = source in ("google_ads", "facebook", "bing")
    area, city, state = rng.choice(_AREAS)
    known = rng.random() < 0.7
    ai_score = None if rng.random() < 0.2 else rng.randint(0, 100)
    qualified = talked and duration >= 60 and rng.random() < 0.6
    data: JSONDict = {
        "id": call_id,
        "number_id": number["id"] if number else None,
        "call_flow_id": flow_id,
        "call_flow_name": flow["name"] if flow else None,
        "tracking_number": number["phone_number"] if number else _phone(rng, "573"),
        "caller_number": _phone(rng, area),
        "caller_name": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}" if known else None,
        "caller_city": city if known else None,
        "caller_state": state if known else None,
        "destination_number": _phone(rng, "573") if status != "failed" else None,
        "direction": "inbound" if rng.random() < 0.9 else "outbound",
        "status": status,
        "duration_seconds": duration,
        "recording_url": (
            f"https://storage.callscaler.com/recordings/{call_id}.mp3" if has_audio else None
        ),
        "has_transcription": has_audio and rng.random() < 0.7,
        "source": source,
        "utm_source": {"google_ads": "google", "facebook": "facebook", "bing": "bing"}.get(
            source or ""
        ),
        "utm_medium": ("cpc" if source != "facebook" else "paid_social") if paid else None,
        "utm_campaign": rng.choice(_CAMPAIGNS) if paid else None,
        "utm_term": rng.choice(_TERMS) if paid and source != "facebook" else None,
        "utm_content": rng.choice(("ad_a", "ad_b", None)) if paid else None,
        "gclid": (
            "Cj0KCQ" + "".join(rng.choice(string.ascii_letters) for _ in range(20))
            if source == "google_ads" else None
        ),
        "landing_page_url": (
            f"https://{biz.name}.example.com/{rng.choice(('', 'services', 'contact'))}"
            if source not in (None, "direct") else None
        ),
        "qualified": qualified,
        "ai_score": ai_score,
        "ai_category": rng.choice(_CATEGORIES) if ai_score is not None else None,
        "cost_cents": rng.randint(0, 150),
        "value_cents": rng.randint(5000, 50000) if qualified else 0,
        "started_at": format_ts(started),
        "created_at": format_ts(started + duration + rng.randint(1, 30)),
    }
    return CallRecord(ts=started, data=data)


def build_business(
    name: str, seed: int, *, calls: int, numbers: int, call_flows: int, history_days: int = 120
) -> Business:
    """Build one business's seeded data set: keys, call flows, numbers, calls, balance.

    Calls start in the ``history_days`` days before the anchor."""
    rng = random.Random(f"{seed}:{name}")
    biz = Business(name=name, rng=rng)
    admin = f"admin@{name}.example.com"
    biz.emails = (admin, f"ops@{name}.example.com")
    for i in range(3):
        biz.keys.append(ApiKey(_key(rng), name, "admin", admin if i == 0 else biz.emails[1]))
    biz.keys.append(ApiKey(_key(rng), name, "admin", admin, revoked=True))
    biz.keys.append(ApiKey(_key(rng), name, "viewer", f"viewer@{name}.example.com"))

    base = DATA_ANCHOR_UNIX - 400 * 86400
    for i in range(call_flows):
        fid = new_uuid(rng)
        created = base + rng.randint(0, 100 * 86400)
        n_versions = rng.randint(1, 4)
        history: list[JSONDict] = []
        steps = _steps(rng)
        t = created
        for v in range(1, n_versions + 1):
            steps = _steps(rng)
            history.append({
                "version": v,
                "created_at": format_ts(t),
                "created_by": rng.choice((*biz.emails, None)),
                "steps": steps,
            })
            t += rng.randint(3600, 30 * 86400)
        biz.call_flows[fid] = {
            "id": fid,
            "name": _FLOW_NAMES[i % len(_FLOW_NAMES)] + (f" {i // len(_FLOW_NAMES) + 1}"
                                                       if i >= len(_FLOW_NAMES) else ""),
            "steps": steps,
            "settings": {
                "recording": rng.random() < 0.8,
                "whisper": rng.random() < 0.3,
                "press1": rng.random() < 0.2,
            },
            "version": n_versions,
            "created_at": format_ts(created),
            "updated_at": history[-1]["created_at"],
        }
        biz.versions[fid] = history

    flow_ids = list(biz.call_flows)
    for _ in range(numbers):
        nid = new_uuid(rng)
        toll_free = rng.random() < 0.15
        area = rng.choice(TOLL_FREE_PREFIXES) if toll_free else rng.choice(_AREAS)[0]
        group_name, _g = rng.choice(_GROUPS)
        biz.numbers[nid] = {
            "id": nid,
            "phone_number": _phone(rng, area),
            "friendly_name": f"{group_name} {area} #{len(biz.numbers) + 1}",
            "type": "toll_free" if toll_free else "local",
            "status": "paused" if rng.random() < 0.1 else "active",
            "call_flow_id": rng.choice(flow_ids) if flow_ids and rng.random() < 0.9 else None,
            "group_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}/groups/{group_name}")),
            "group_name": group_name,
            "number_source": rng.choice(("owned", "owned", "ported")),
            "sms_enabled": rng.random() < 0.5,
            "monthly_cost_cents": 500 if toll_free else 300,
            "created_at": format_ts(base + rng.randint(100 * 86400, 200 * 86400)),
        }

    for _ in range(calls):
        started = DATA_ANCHOR_UNIX - rng.randint(1, history_days * 86400)
        rec = _make_call(biz, rng, started)
        biz.calls.append(rec)
        biz.calls_by_id[rec.data["id"]] = rec
    biz.sort_calls()
    biz.balance = {
        "balance_cents": rng.randint(1000, 50000),
        "low_balance_threshold_cents": 500,
        "auto_recharge": True,
        "auto_recharge_amount_cents": 2000,
    }
    return biz


def storage_secret() -> str:
    """A per-fake secret that signs recording URLs on the storage origin."""
    return secrets.token_hex(16)
