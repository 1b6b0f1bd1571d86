"""Arguments checked and turned into query values before any request is sent.

Rules (documented in the README):

* ids: a ``uuid.UUID`` or a string that parses as one;
* timestamps: an *aware* ``datetime`` (converted to UTC) or a ``date`` (``date_from`` takes
  the start of that day, ``date_to`` its last second, both UTC). A naive ``datetime`` is
  refused: silently reading local time as UTC shifts a sync by hours;
* ``per_page``: 1..100 (the API's maximum); booleans as ``true``/``false``.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import uuid
from collections.abc import Iterable
from typing import Final

__all__ = [
    "MAX_PER_PAGE",
    "check_per_page",
    "format_bool",
    "format_id",
    "format_time",
    "query",
]

MAX_PER_PAGE: Final = 100
# The canonical form ``str(uuid.UUID(...))`` produces; anything else is parsed to be sure.
# (re.ASCII matches the same strings, the classes being ASCII ranges, at half the cost.)
_is_canonical_uuid: Final = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII
).fullmatch


def format_id(value: uuid.UUID | str, *, name: str) -> str:
    # A canonical id string first: the common case (ids read from earlier answers) and,
    # with type() rather than isinstance(), one check on every request.
    if type(value) is str and _is_canonical_uuid(value) is not None:
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a UUID or a UUID string, got {type(value).__name__}")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError(f"{name} must be a UUID, got {value!r}") from None


def format_time(value: dt.datetime | dt.date, *, name: str, end_of_day: bool = False) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"{name} is a naive datetime ({value.isoformat()}); pass an aware datetime "
                "(e.g. tzinfo=datetime.UTC) or a date"
            )
        moment = value.astimezone(dt.UTC)
    elif isinstance(value, dt.date):
        clock = dt.time(23, 59, 59) if end_of_day else dt.time(0, 0, 0)
        moment = dt.datetime.combine(value, clock, tzinfo=dt.UTC)
    else:
        raise TypeError(f"{name} must be a datetime or a date, got {type(value).__name__}")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_bool(value: bool, *, name: str) -> str:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return "true" if value else "false"


def format_choice(
    value: str | enum.Enum, *, name: str, choices: Iterable[str] | None = None
) -> str:
    raw = value.value if isinstance(value, enum.Enum) else value
    if not isinstance(raw, str) or not raw:
        raise TypeError(f"{name} must be a non-empty string, got {value!r}")
    if choices is not None and raw not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {raw!r}")
    return raw


def check_per_page(per_page: int) -> int:
    if isinstance(per_page, bool) or not isinstance(per_page, int):
        raise TypeError(f"per_page must be an int, got {per_page!r}")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}, got {per_page}")
    return per_page


def query(**values: str | None) -> dict[str, str]:
    """The query mapping without the parameters left unset."""
    return {key: value for key, value in values.items() if value is not None}
