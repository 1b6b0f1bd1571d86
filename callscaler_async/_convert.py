"""The one cattrs converter: JSON values <-> models.

Everything that turns API JSON into models (and back) is configured here, once:

* UUID strings -> ``uuid.UUID``; ISO 8601 timestamps -> aware UTC ``datetime`` (``Z``,
  offsets, fractional seconds; a naive timestamp is taken as UTC, as the API documents);
* every ``*_cents`` JSON field -> a ``Money`` attribute without the suffix, and back;
* open enums keep unknown values; ``Number`` reads ``friendly_name`` or ``name``;
* call-flow steps, settings and analytics rows keep fields the SDK does not know;
* JSON types are checked, never coerced: ``"true"`` is not a bool, ``1.5`` not an int,
  ``123`` not a string. Unknown fields are ignored (``strict_converter`` forbids them).

Decoding runs the plain (fast) converter first; only when that fails is the input
structured again with the detailed converter to name the JSON path of the first bad value.

Nothing is built at import (import time is part of the SDK's cost): cattrs is imported and
a converter configured on first use, and a model's structuring function is generated the first time
that model is decoded (hook factories). cattrs is therefore imported inside the functions
that use it, all of which run after the first decode or encode.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from ._errors import ResponseDecodeError
from ._money import Money
from .models.account import Balance
from .models.analytics import METRIC_NAMES, AnalyticsReport, AnalyticsRow, MetricValue
from .models.call_flows import CallFlow, CallFlowSettings, CallFlowStep, CallFlowVersion
from .models.calls import Call, Transcription, TranscriptionSegment
from .models.common import Deleted, OpenStrEnum
from .models.numbers import AvailableNumber, Number

if TYPE_CHECKING:
    from cattrs import Converter
    from cattrs.errors import ClassValidationError

__all__ = [
    "CSVRowDecoder",
    "converter",
    "csv_columns",
    "decode",
    "decode_list",
    "encode",
    "format_timestamp",
    "parse_timestamp",
    "strict_converter",
]

T = TypeVar("T")
E = TypeVar("E", bound=OpenStrEnum)

# Models (un)structured by generated functions, each built the first time it is needed.
_MODELS: Final[tuple[type[Any], ...]] = (
    Call,
    Transcription,
    TranscriptionSegment,
    Number,
    AvailableNumber,
    CallFlow,
    CallFlowVersion,
    AnalyticsReport,
    Balance,
    Deleted,
)
_ZERO = timedelta(0)
_CENTS_SUFFIX = "_cents"
_MAX_QUOTE = 60

# attribute name -> JSON key, per model, for the renamed ``*_cents`` fields (error paths).
_JSON_KEYS: dict[type[Any], dict[str, str]] = {}


# -- messages -------------------------------------------------------------------------------


def _quote(value: Any) -> str:
    """A short, safe rendering of a bad value for an error message."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = repr(value)
    if len(text) > _MAX_QUOTE:
        text = text[: _MAX_QUOTE - 3] + "..."
    return text


# -- scalar hooks ---------------------------------------------------------------------------


def structure_str(value: Any, _: Any = None) -> str:
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {_quote(value)}")


def structure_int(value: Any, _: Any = None) -> int:
    if type(value) is int:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise TypeError(f"expected an integer, got {_quote(value)}")


def structure_float(value: Any, _: Any = None) -> float:
    if isinstance(value, float | int) and not isinstance(value, bool):
        number = float(value)  # OverflowError for a huge int: reported as such by decode()
        if number - number != 0:  # inf or nan
            raise ValueError(f"expected a finite number, got {_quote(value)}")
        return number
    raise TypeError(f"expected a number, got {_quote(value)}")


def structure_bool(value: Any, _: Any = None) -> bool:
    if value is True or value is False:
        return value
    raise TypeError(f"expected true or false, got {_quote(value)}")


_new_object = object.__new__


def _slot_setter(cls: type[Any], name: str) -> Callable[[Any, Any], None]:
    """The ``__set__`` of a slot: stores into a frozen instance being built (no __setattr__)."""
    setter: Callable[[Any, Any], None] = cls.__dict__[name].__set__
    return setter


def _builder(cls: type[Any]) -> type[Any]:
    """A subclass of the slotted ``cls`` whose instances take plain attribute assignments.

    A frozen instance is built as ``b = _new_object(builder); b.field = ...;
    b.__class__ = cls``. Why: with object's own ``__setattr__`` *and* ``__delattr__`` (one
    Python-level override of either keeps the slow setattr slot) ``b.field = x`` is a
    specialised slot store, about 4x cheaper than calling the slot's ``__set__``: a third
    of the decoding time of a 30-field ``Call``. The subclass adds no slot, so its layout
    is the parent's and ``__class__`` may be switched back; the object is then a plain
    ``cls`` (type, equality, hashing, pickling). A builder instance never leaves the
    function building it.
    """
    namespace = {
        "__slots__": (),
        "__setattr__": object.__setattr__,
        "__delattr__": object.__delattr__,
    }
    return type(f"_{cls.__name__}Builder", (cls,), namespace)


# UUID is slotted (int, is_safe); its __setattr__ refuses, these bypass it like __init__ does.
_set_uuid_int = _slot_setter(uuid.UUID, "int")
_set_uuid_is_safe = _slot_setter(uuid.UUID, "is_safe")
_SAFE_UNKNOWN: Final = uuid.SafeUUID.unknown


def structure_uuid(value: Any, _: Any = None) -> uuid.UUID:
    if type(value) is not str:
        raise TypeError(f"expected a UUID string, got {_quote(value)}")
    digits = value.replace("-", "")
    if len(digits) == 32:
        # uuid.UUID(value) parses exactly so (hyphens dropped, 32 chars, int(_, 16)) after
        # stripping braces and urn:uuid:, which leave a '{' or ':' that int() refuses: what
        # passes here is the UUID uuid.UUID(value) makes, built without its argument
        # handling (about half the cost; ids are on every object). No canonical-form regex
        # first: it cost as much as the parse and accepted nothing uuid.UUID would not.
        try:
            number = int(digits, 16)
        except ValueError:
            pass
        else:
            parsed = _new_object(uuid.UUID)
            _set_uuid_int(parsed, number)
            _set_uuid_is_safe(parsed, _SAFE_UNKNOWN)
            return parsed
    try:  # other spellings uuid.UUID accepts (braces, urn:uuid:), or its error
        return uuid.UUID(value)
    except ValueError:
        raise ValueError(f"expected a UUID, got {_quote(value)}") from None


# Optional UUID fields are references (number_id, call_flow_id): a page of calls repeats a
# few dozen of them. UUIDs are immutable, so the parsed object is shared; bounded by clearing.
_UUID_REFS: dict[str, uuid.UUID] = {}
_UUID_REFS_MAX: Final = 1024


def _structure_uuid_ref(value: Any) -> uuid.UUID:
    if type(value) is str:
        parsed = _UUID_REFS.get(value)
        if parsed is not None:
            return parsed
    parsed = structure_uuid(value)
    if len(_UUID_REFS) >= _UUID_REFS_MAX:
        _UUID_REFS.clear()
    _UUID_REFS[value] = parsed
    return parsed


def parse_timestamp(value: Any, _: Any = None) -> datetime:
    """ISO 8601 text -> aware UTC datetime; a timestamp without offset is taken as UTC."""
    if type(value) is not str:
        raise TypeError(f"expected an ISO 8601 timestamp string, got {_quote(value)}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"expected an ISO 8601 timestamp, got {_quote(value)}") from None
    offset = moment.utcoffset()
    if offset is None:
        return moment.replace(tzinfo=UTC)
    if offset == _ZERO:
        return moment if moment.tzinfo is UTC else moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"timestamp out of range in UTC: {_quote(value)}") from None


def format_timestamp(moment: datetime) -> str:
    """Aware or naive (taken as UTC) datetime -> ``YYYY-MM-DDTHH:MM:SSZ``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    elif moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # isoformat is ~1.5x faster than strftime (and always writes a four-digit year).
    return moment.isoformat(timespec="seconds")[:19] + "Z"


_set_money_cents = _slot_setter(Money, "cents")
_set_money_currency = _slot_setter(Money, "currency")


# Amounts repeat (a few prices, many zeros) and a Money is immutable: like UUID references,
# the objects are shared, about half the cost of building one; bounded by clearing.
_MONEY: dict[int, Money] = {}
_MONEY_MAX: Final = 1024


def _money(cents: int) -> Money:
    # cents is a validated int here: skip Money's own check (hot path, two per call).
    money = _MONEY.get(cents)
    if money is None:
        money = _new_object(Money)
        _set_money_cents(money, cents)
        _set_money_currency(money, "USD")
        if len(_MONEY) >= _MONEY_MAX:
            _MONEY.clear()
        _MONEY[cents] = money
    return money


def structure_money_cents(value: Any, _: Any = None) -> Money:
    return _money(value if type(value) is int else structure_int(value))


def unstructure_money(money: Money) -> int:
    """A ``Money`` back to the API's integer cents."""
    return money.cents


def structure_open_enum(value: Any, cls: type[E]) -> E:
    if type(value) is not str:
        raise TypeError(f"expected a {cls.__name__} string, got {_quote(value)}")
    member = cls._value2member_map_.get(value)
    return member if member is not None else cls(value)  # type: ignore[return-value]


def structure_metric_value(value: Any, _: Any = None) -> MetricValue:
    if value is None or type(value) is int or type(value) is float:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    raise TypeError(f"expected a number or null, got {_quote(value)}")


# The optional variants check the common case inline: most fields are optional, and one
# function call per field instead of two is most of the decoding time saved.
def structure_optional_str(value: Any, _: Any = None) -> str | None:
    if value is None or type(value) is str:
        return value
    return structure_str(value)


def structure_optional_int(value: Any, _: Any = None) -> int | None:
    if value is None or type(value) is int:
        return value
    return structure_int(value)


def structure_optional_float(value: Any, _: Any = None) -> float | None:
    return None if value is None else structure_float(value)


def structure_optional_bool(value: Any, _: Any = None) -> bool | None:
    if value is None or value is True or value is False:
        return value
    raise TypeError(f"expected true, false or null, got {_quote(value)}")


def structure_optional_uuid(value: Any, _: Any = None) -> uuid.UUID | None:
    return None if value is None else structure_uuid(value)


def parse_optional_timestamp(value: Any, _: Any = None) -> datetime | None:
    return None if value is None else parse_timestamp(value)


def structure_optional_money_cents(value: Any, _: Any = None) -> Money | None:
    if value is None:
        return None
    return _money(value if type(value) is int else structure_int(value))


def _is_open_enum(type_: Any) -> bool:
    return isinstance(type_, type) and issubclass(type_, OpenStrEnum)


def _optional_open_enum(type_: Any) -> Any:
    args = getattr(type_, "__args__", ())
    return len(args) == 2 and type(None) in args and any(_is_open_enum(a) for a in args)


def _make_optional_enum_hook(type_: Any) -> Callable[[Any, Any], Any]:
    enum_cls = next(a for a in type_.__args__ if _is_open_enum(a))

    def structure_optional_open_enum(value: Any, _: Any) -> Any:
        return None if value is None else structure_open_enum(value, enum_cls)

    return structure_optional_open_enum


def unstructure_open_enum(member: OpenStrEnum) -> str:
    return member._value_


def unstructure_optional_open_enum(member: OpenStrEnum | None) -> str | None:
    return None if member is None else member._value_


# -- containers -----------------------------------------------------------------------------


def _is_list(type_: Any) -> bool:
    return getattr(type_, "__origin__", None) is list


def _note_index(exc: Exception, index: int | str, type_: Any) -> Exception:
    from cattrs.errors import IterableValidationNote

    note = IterableValidationNote(f"Structuring {type_!r} @ index {index!r}", index, type_)
    exc.__notes__ = [*getattr(exc, "__notes__", []), note]
    return exc


def _make_list_hook(conv: Converter) -> Callable[[Any], Callable[[Any, Any], list[Any]]]:
    def factory(type_: Any) -> Callable[[Any, Any], list[Any]]:
        from cattrs.errors import IterableValidationError

        (elem_type,) = type_.__args__
        elem_hook = conv.get_structure_hook(elem_type)
        detailed = conv.detailed_validation

        # Only a JSON array is a list: cattrs would happily iterate a string or an object.
        def structure_json_array(value: Any, _: Any) -> list[Any]:
            if type(value) is not list:
                raise TypeError(f"expected an array, got {_quote(value)}")
            if not detailed:
                return [elem_hook(item, elem_type) for item in value]
            result: list[Any] = []
            errors: list[Exception] = []
            for index, item in enumerate(value):
                try:
                    result.append(elem_hook(item, elem_type))
                except Exception as exc:
                    errors.append(_note_index(exc, index, elem_type))
            if errors:
                raise IterableValidationError(f"While structuring {type_!r}", errors, type_)
            return result

        return structure_json_array

    return factory


def _null_as_empty_list(hook: Callable[[Any, Any], list[Any]]) -> Callable[[Any, Any], list[Any]]:
    def structure_list_or_null(value: Any, type_: Any) -> list[Any]:
        return [] if value is None else hook(value, type_)

    return structure_list_or_null


def _field_errors(cls: type[Any], errors: list[tuple[str, Exception]]) -> ClassValidationError:
    from cattrs.errors import AttributeValidationNote, ClassValidationError

    noted = []
    for key, exc in errors:
        note = AttributeValidationNote(f"Structuring class {cls.__name__} @ {key}", key, Any)
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]
        noted.append(exc)
    return ClassValidationError(f"While structuring {cls.__name__}", noted, cls)


def _require_object(value: Any, cls: type[Any]) -> dict[str, Any]:
    if type(value) is not dict:
        raise TypeError(f"expected a JSON object for {cls.__name__}, got {_quote(value)}")
    return value


# -- open-ended objects: steps, settings, analytics rows ------------------------------------

_STEP_FIELDS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "message": structure_str,
    "number": structure_str,
    "timeout_seconds": structure_int,
}
_SETTINGS_FIELDS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "recording": structure_bool,
    "whisper": structure_bool,
    "press1": structure_bool,
}


def structure_call_flow_step(value: Any, _: Any = None) -> CallFlowStep:
    from .models.call_flows import StepType

    obj = _require_object(value, CallFlowStep)
    known: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    errors: list[tuple[str, Exception]] = []
    for key, raw in obj.items():
        if key == "type":
            try:
                known["type"] = structure_open_enum(raw, StepType)
            except Exception as exc:
                errors.append((key, exc))
        elif key in _STEP_FIELDS and raw is not None:
            try:
                known[key] = _STEP_FIELDS[key](raw, None)
            except Exception as exc:
                errors.append((key, exc))
        else:  # unknown fields, and known ones sent as null: kept for an exact round trip
            extra[key] = raw
    if "type" not in obj:
        errors.append(("type", KeyError("type")))
    if errors:
        raise _field_errors(CallFlowStep, errors)
    return CallFlowStep(**known, extra=extra)


def unstructure_call_flow_step(step: CallFlowStep) -> dict[str, Any]:
    out: dict[str, Any] = {"type": step.type._value_}
    out.update(_detailed_converter().unstructure(step.extra))
    for key in _STEP_FIELDS:
        attr = getattr(step, key)
        if attr is not None:
            out[key] = attr
    return out


def structure_call_flow_settings(value: Any, _: Any = None) -> CallFlowSettings:
    obj = _require_object(value, CallFlowSettings)
    known: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    errors: list[tuple[str, Exception]] = []
    for key, raw in obj.items():
        if key in _SETTINGS_FIELDS and raw is not None:
            try:
                known[key] = _SETTINGS_FIELDS[key](raw, None)
            except Exception as exc:
                errors.append((key, exc))
        else:
            extra[key] = raw
    if errors:
        raise _field_errors(CallFlowSettings, errors)
    return CallFlowSettings(**known, extra=extra)


def unstructure_call_flow_settings(settings: CallFlowSettings) -> dict[str, Any]:
    out: dict[str, Any] = _detailed_converter().unstructure(settings.extra)
    for key in _SETTINGS_FIELDS:
        attr = getattr(settings, key)
        if attr is not None:
            out[key] = attr
    return out


def _split_analytics(
    obj: dict[str, Any], cls: type[Any]
) -> tuple[dict[str, Any], dict[str, MetricValue]]:
    from .models.analytics import GROUP_KEYS

    groups: dict[str, Any] = {}
    metrics: dict[str, MetricValue] = {}
    errors: list[tuple[str, Exception]] = []
    for key, raw in obj.items():
        if key in METRIC_NAMES:
            try:
                metrics[key] = structure_metric_value(raw)
            except Exception as exc:
                errors.append((key, exc))
        elif key in GROUP_KEYS or raw is None or isinstance(raw, bool):
            groups[key] = raw
        elif isinstance(raw, int | float):
            metrics[key] = raw
        else:
            groups[key] = raw
    if errors:
        raise _field_errors(cls, errors)
    return groups, metrics


def structure_analytics_row(value: Any, _: Any = None) -> AnalyticsRow:
    groups, metrics = _split_analytics(_require_object(value, AnalyticsRow), AnalyticsRow)
    return AnalyticsRow(groups=groups, metrics=metrics)


def unstructure_analytics_row(row: AnalyticsRow) -> dict[str, Any]:
    out: dict[str, Any] = _detailed_converter().unstructure(row.groups)
    out.update(row.metrics)
    return out


def _make_totals_hook(forbid_extra: bool) -> Callable[[Any, Any], dict[str, MetricValue]]:
    from cattrs.errors import ForbiddenExtraKeysError

    def structure_analytics_totals(value: Any, _: Any) -> dict[str, MetricValue]:
        groups, metrics = _split_analytics(_require_object(value, AnalyticsReport), dict)
        if groups and forbid_extra:  # totals carry metrics only
            raise ForbiddenExtraKeysError("", AnalyticsReport, set(groups))
        return metrics

    return structure_analytics_totals


# -- models ---------------------------------------------------------------------------------


def _is_money(type_: Any) -> bool:
    return type_ is Money or (type_ == Money | None)


def _is_factory(default: Any) -> bool:
    return isinstance(default, attrs.Factory)  # type: ignore[arg-type]


def _is_model(type_: Any) -> bool:
    return type_ in _MODELS


def _money_renames(cls: type[Any]) -> dict[str, str]:
    """attribute -> JSON key of a model's ``Money`` fields (``cost`` -> ``cost_cents``)."""
    attrs.resolve_types(cls)  # the models use postponed annotations
    return {f.name: f.name + _CENTS_SUFFIX for f in attrs.fields(cls) if _is_money(f.type)}


def _make_model_structure_hook(cls: type[Any], conv: Converter) -> Callable[[Any, Any], Any]:
    """The structuring function of a model (a cattrs hook factory: called once per model
    and converter, the first time that model is structured)."""
    from cattrs.gen import make_dict_structure_fn, override

    renames = _money_renames(cls)
    overrides: dict[str, Any] = {}
    for field in attrs.fields(cls):
        hook: Callable[[Any, Any], Any] | None = None
        if _is_factory(field.default) and _is_list(field.type):
            hook = _null_as_empty_list(conv.get_structure_hook(field.type))
        if cls is AnalyticsReport and field.name == "totals":
            hook = _make_totals_hook(bool(conv.forbid_extra_keys))
        if field.name in renames or hook is not None:
            overrides[field.name] = override(rename=renames.get(field.name), struct_hook=hook)
    if renames:
        _JSON_KEYS[cls] = renames
    generated: Callable[[Any, Any], Any] | None = None
    if not conv.detailed_validation:
        generated = _make_fast_structure_fn(cls, conv, overrides, renames)
    if generated is None:
        cattrs_fn = make_dict_structure_fn(cls, conv, **overrides)
        name = cls.__name__

        def structure_object(value: Any, type_: Any) -> Any:
            if type(value) is not dict:
                raise TypeError(f"expected a JSON object for {name}, got {_quote(value)}")
            return cattrs_fn(value, type_)

        generated = structure_object
    return _number_hook(generated) if cls is Number else generated


def _make_model_unstructure_hook(cls: type[Any], conv: Converter) -> Callable[[Any], Any]:
    from cattrs.gen import make_dict_unstructure_fn, override

    overrides = {name: override(rename=key) for name, key in _money_renames(cls).items()}
    return make_dict_unstructure_fn(cls, conv, **overrides)  # type: ignore[arg-type]


# Expressions that accept a valid JSON value without calling its hook ({} is the value);
# anything else goes through the hook, which converts or raises.
_INLINE_CHECKS: Final[dict[Any, str]] = {
    str: "type({}) is str",
    str | None: "{} is None or type(v) is str",
    int: "type({}) is int",
    int | None: "{} is None or type(v) is int",
    bool: "{} is True or v is False",
    bool | None: "{} is None or v is True or v is False",
}


def _without_none(type_: Any) -> Any:
    """``X`` for ``X | None``; None for any other type."""
    args: tuple[Any, ...] = getattr(type_, "__args__", ())
    if len(args) == 2 and type(None) in args:
        return args[0] if args[1] is type(None) else args[1]
    return None


def _builds_by_slots(cls: type[Any]) -> bool:
    """Whether setting each slot is all ``cls.__init__`` does (no validators, converters,
    hooks or extra slots), so an instance may be built without calling it."""
    fields = attrs.fields(cls)
    names = {field.name for field in fields}
    slots = set(getattr(cls, "__slots__", ())) - {"__weakref__"}
    return (
        slots == names
        and not hasattr(cls, "__attrs_post_init__")
        and not hasattr(cls, "__attrs_pre_init__")
        and all(
            field.init
            and field.validator is None
            and field.converter is None
            and type(cls.__dict__.get(field.name)).__name__ == "member_descriptor"
            for field in fields
        )
    )


def _fast_value(name: str, type_: Any, hook_call: str, namespace: dict[str, Any]) -> str | None:
    """An expression that structures a valid, non-null ``v`` of ``type_`` without a call to
    its hook (which still handles everything else, raising for invalid values)."""
    if _is_open_enum(type_):
        namespace[f"__m_{name}"] = type_._value2member_map_.get
        return f"x if type(v) is str and (x := __m_{name}(v)) is not None else {hook_call}"
    if type_ is datetime:
        # What parse_timestamp returns as is: an ISO string with a Z or +00:00 offset.
        return f"x if type(v) is str and (x := __fromiso(v)).tzinfo is __UTC else {hook_call}"
    if type_ is Money:
        return f"__money(v) if type(v) is int else {hook_call}"
    if type_ is float:
        # structure_float's result for a finite float or an int (float() of a huge int
        # raises OverflowError here too: the detailed path then reports it).
        finite = "type(v) is float and v - v == 0"
        return f"v if {finite} else (float(v) if type(v) is int else {hook_call})"
    if type_ is uuid.UUID:
        return "__uuid(v)"
    return None


def _fast_optional_value(name: str, type_: Any, hook_call: str, ns: dict[str, Any]) -> str | None:
    if type_ is uuid.UUID:  # a reference: usually already in the cache, read inline
        return "x if (x := __uuid_refs_get(v)) is not None else __uuid_ref(v)"
    return _fast_value(name, type_, hook_call, ns)


def _make_fast_structure_fn(
    cls: type[Any], conv: Converter, overrides: dict[str, Any], renames: dict[str, str]
) -> Callable[[Any, Any], Any] | None:
    """A leaner structuring function than cattrs' for the fast (non-detailed) path.

    A missing optional key and an explicit null mean the same thing for every model here
    (None, or [] for lists), so ``o.get(key)`` through the same hooks is equivalent to
    cattrs' ``if key in o`` and saves building a kwargs dict. The common valid values of
    scalars, enums, timestamps, UUIDs and amounts are converted inline; anything else goes
    through the same hook as before. A slotted class whose ``__init__`` only stores its
    fields is built slot by slot (about twice as fast as the frozen ``__init__``). Returns
    None for a class whose defaults do not allow this; cattrs' function is used then.
    """
    namespace: dict[str, Any] = {
        "__cl": cls,
        "__quote": _quote,
        "__new": _new_object,
        "__fromiso": datetime.fromisoformat,
        "__UTC": UTC,
        "__money": _money,
        "__uuid": structure_uuid,
        "__uuid_ref": _structure_uuid_ref,
        "__uuid_refs_get": _UUID_REFS.get,  # the dict is cleared, never replaced
    }
    by_slots = _builds_by_slots(cls)
    values: list[tuple[str, str]] = []
    for field in attrs.fields(cls):
        name = field.name
        key = renames.get(name, name)
        override_hook = overrides[name].struct_hook if name in overrides else None
        namespace[f"__h_{name}"] = override_hook or conv.get_structure_hook(field.type)
        namespace[f"__t_{name}"] = field.type
        if field.default is attrs.NOTHING:
            source = f"o[{key!r}]"
        elif (field.default is None and type(None) in getattr(field.type, "__args__", ())) or (
            _is_factory(field.default) and override_hook is not None
        ):
            source = f"g({key!r})"
        else:
            return None
        call = f"__h_{name}({{}}, __t_{name})"
        inline = None if override_hook else _INLINE_CHECKS.get(field.type)
        if override_hook is not None:
            values.append((name, call.format(source)))
        elif inline is not None:  # the common valid case without a function call
            check = inline.format(f"(v := {source})")
            values.append((name, f"v if ({check}) else {call.format('v')}"))
        else:
            inner = _without_none(field.type)
            if inner is not None:  # optional: null is None without a call
                fast = _fast_optional_value(name, inner, call.format("v"), namespace)
                body = fast or call.format("v")
                values.append((name, f"None if (v := {source}) is None else ({body})"))
            elif (fast := _fast_value(name, field.type, call.format("v"), namespace)) is not None:
                hook_call = call.format("v")
                values.append((name, f"({fast}) if (v := {source}) is not None else {hook_call}"))
            else:
                values.append((name, call.format(source)))
    lines = [
        "def structure_fast(o, _=None):",
        "    if type(o) is not dict:",
        f"        raise TypeError('expected a JSON object for {cls.__name__}, got ' + __quote(o))",
        "    g = o.get",
    ]
    if by_slots:  # see _builder: plain stores, then the instance becomes a ``cls``
        namespace["__builder"] = _builder(cls)
        lines.append("    obj = __new(__builder)")
        lines.extend(f"    obj.{name} = {expr}" for name, expr in values)
        lines.append("    obj.__class__ = __cl")
        lines.append("    return obj")
    else:
        lines.append("    return __cl(")
        lines.extend(f"        {name}={expr}," for name, expr in values)
        lines.append("    )")
    exec(
        compile("\n".join(lines), f"<callscaler fast structure {cls.__name__}>", "exec"), namespace
    )
    fn: Callable[[Any, Any], Any] = namespace["structure_fast"]
    fn.__name__ = fn.__qualname__ = f"structure_{cls.__name__}_fast"
    return fn


def _number_hook(generated: Callable[[Any, Any], Number]) -> Callable[[Any, Any], Number]:
    def structure_number(value: Any, type_: Any) -> Number:
        if type(value) is not dict:
            raise TypeError(f"expected a JSON object for Number, got {_quote(value)}")
        if "name" in value:  # the newer revision's spelling of friendly_name
            value = dict(value)
            name = value.pop("name")
            if value.get("friendly_name") is None:
                value["friendly_name"] = name
        return generated(value, type_)

    return structure_number


def _configure(conv: Converter) -> Converter:
    """Register every hook on ``conv``; the three converters differ only in their flags."""
    conv.register_structure_hook(str, structure_str)
    conv.register_structure_hook(int, structure_int)
    conv.register_structure_hook(float, structure_float)
    conv.register_structure_hook(bool, structure_bool)
    conv.register_structure_hook(uuid.UUID, structure_uuid)
    conv.register_structure_hook(datetime, parse_timestamp)
    conv.register_structure_hook(Money, structure_money_cents)
    conv.register_structure_hook(MetricValue, structure_metric_value)
    # Direct hooks for the optional scalars: most fields are optional and this is the hot path.
    conv.register_structure_hook(str | None, structure_optional_str)
    conv.register_structure_hook(int | None, structure_optional_int)
    conv.register_structure_hook(float | None, structure_optional_float)
    conv.register_structure_hook(bool | None, structure_optional_bool)
    conv.register_structure_hook(uuid.UUID | None, structure_optional_uuid)
    conv.register_structure_hook(datetime | None, parse_optional_timestamp)
    conv.register_structure_hook(Money | None, structure_optional_money_cents)
    # Registered on the base class: singledispatch then prefers it to the ``str`` hook.
    conv.register_structure_hook(OpenStrEnum, structure_open_enum)
    conv.register_structure_hook_factory(_optional_open_enum, _make_optional_enum_hook)
    conv.register_structure_hook_factory(_is_list, _make_list_hook(conv))
    conv.register_structure_hook(CallFlowStep, structure_call_flow_step)
    conv.register_structure_hook(CallFlowSettings, structure_call_flow_settings)
    conv.register_structure_hook(AnalyticsRow, structure_analytics_row)

    conv.register_unstructure_hook(uuid.UUID, str)
    conv.register_unstructure_hook(datetime, format_timestamp)
    conv.register_unstructure_hook(Money, unstructure_money)
    conv.register_unstructure_hook(OpenStrEnum, unstructure_open_enum)
    conv.register_unstructure_hook_func(_optional_open_enum, unstructure_optional_open_enum)
    conv.register_unstructure_hook(CallFlowStep, unstructure_call_flow_step)
    conv.register_unstructure_hook(CallFlowSettings, unstructure_call_flow_settings)
    conv.register_unstructure_hook(AnalyticsRow, unstructure_analytics_row)
    conv.register_structure_hook_factory(_is_model, _make_model_structure_hook)
    conv.register_unstructure_hook_factory(_is_model, _make_model_unstructure_hook)
    return conv


# The converters are configured on first use, not at import: importing cattrs and building
# a converter would be most of the SDK's own import time.
_fast_converter: Converter | None = None
_fast_hooks: dict[Any, Callable[[Any, Any], Any]] = {}
_detailed: dict[bool, Converter] = {}
if TYPE_CHECKING:  # built lazily by __getattr__ below
    converter: Converter
    strict_converter: Converter


def _fast_hook(type_: Any) -> Callable[[Any, Any], Any]:
    """The fast converter's structuring function for ``type_`` (cached). That converter has
    the same hooks without per-field bookkeeping: tried first, the detailed one on failure."""
    global _fast_converter
    hook = _fast_hooks.get(type_)
    if hook is None:
        if _fast_converter is None:
            from cattrs import Converter

            _fast_converter = _configure(Converter(detailed_validation=False))
        hook = _fast_hooks.setdefault(type_, _fast_converter.get_structure_hook(type_))
    return hook


def _detailed_converter(strict: bool = False) -> Converter:
    """The detailed converter (errors name their JSON path; ``strict``: unknown fields are
    errors), configured on first use: only a failed decode, ``encode`` and tests need it."""
    conv = _detailed.get(strict)
    if conv is None:
        from cattrs import Converter

        conv = _configure(Converter(detailed_validation=True, forbid_extra_keys=strict))
        conv = _detailed.setdefault(strict, conv)
    return conv


def __getattr__(name: str) -> Any:
    # ``converter``: detailed validation, unknown fields ignored. ``strict_converter``: the
    # same hooks, but unknown fields are errors (tests use it to catch model drift).
    if name == "converter":
        return _detailed_converter(False)
    if name == "strict_converter":
        return _detailed_converter(True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- errors -> JSON paths -------------------------------------------------------------------


def _join(path: str, key: int | str) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{key!r}]"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, RecursionError):
        return "value nested too deeply"
    if isinstance(exc, OverflowError):
        return f"number out of range ({exc})"
    text = str(exc) if isinstance(exc, TypeError | ValueError) else f"{type(exc).__name__}: {exc}"
    return text or type(exc).__name__


def _locate(exc: BaseException, path: str) -> tuple[str, str]:
    """The JSON path and message of the first leaf error inside a cattrs error tree."""
    from cattrs.errors import (
        BaseValidationError,
        ClassValidationError,
        ForbiddenExtraKeysError,
        IterableValidationError,
    )

    while isinstance(exc, BaseValidationError):
        if isinstance(exc, ClassValidationError):
            with_notes, others = exc.group_exceptions()
            if with_notes:
                sub, note = with_notes[0]
                key = _JSON_KEYS.get(exc.cl, {}).get(note.name, note.name)
                path, exc = _join(path, key), sub
                continue
        elif isinstance(exc, IterableValidationError):
            with_index, others = exc.group_exceptions()
            if with_index:
                sub, index_note = with_index[0]
                path, exc = _join(path, index_note.index), sub
                continue
        else:
            others = list(exc.exceptions)
        if not others:
            break
        exc = others[0]
    if isinstance(exc, ForbiddenExtraKeysError):
        first = sorted(exc.extra_fields)[0]
        return _join(path, first), f"unknown field {first!r} (strict decoding)"
    return path, _describe(exc)


# -- public API -----------------------------------------------------------------------------


def _model_name(model: Any) -> str:
    return getattr(model, "__name__", None) or repr(model)


def decode(data: Any, model: type[T], *, path: str = "$", strict: bool = False) -> T:
    """Structure decoded JSON into ``model``; any mismatch is a ``ResponseDecodeError``.

    ``path`` is where ``data`` sits in the response, so errors name the full JSON path.
    ``strict=True`` uses ``strict_converter`` (unknown fields are errors).

    >>> from callscaler_async.models import Balance
    >>> decode({"balance_cents": 2500}, Balance).balance
    Money(cents=2500)
    >>> try:
    ...     decode({"balance_cents": "lots"}, Balance, path="$.data")
    ... except ResponseDecodeError as exc:
    ...     print(exc.path, "-", exc.message)
    $.data.balance_cents - expected an integer, got 'lots'
    """
    if not strict:
        try:
            return _fast_hook(model)(data, model)  # type: ignore[no-any-return]
        except Exception:
            pass  # structured again below, slowly, to say where and why
    try:
        return _detailed_converter(strict).structure(data, model)
    except Exception as exc:
        where, message = _locate(exc, path)
        raise ResponseDecodeError(message, path=where, model=_model_name(model)) from exc


def decode_list(data: Any, model: type[T], *, path: str = "$", strict: bool = False) -> list[T]:
    """Structure a JSON array of ``model`` objects (``path`` is the array's JSON path).

    >>> from callscaler_async.models import Deleted
    >>> decode_list([{"deleted": True, "id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890"}], Deleted)
    [Deleted(deleted=True, id=UUID('a1b2c3d4-e5f6-7890-abcd-ef1234567890'))]
    """
    list_type = list[model]  # type: ignore[valid-type]
    if not strict:
        try:
            return _fast_hook(list_type)(data, list_type)  # type: ignore[no-any-return]
        except Exception:
            pass
    try:
        return _detailed_converter(strict).structure(data, list_type)
    except Exception as exc:
        where, message = _locate(exc, path)
        raise ResponseDecodeError(message, path=where, model=_model_name(model)) from exc


def encode(obj: Any) -> Any:
    """Unstructure to JSON-ready values: UUID -> str, datetime -> ``...Z``, Money -> cents.

    Inside a model a ``Money`` attribute goes back under its ``*_cents`` key.

    >>> from callscaler_async.models import Balance
    >>> encode(Balance(balance=Money.from_cents(2500)))["balance_cents"]
    2500
    """
    return _detailed_converter().unstructure(obj)


# -- the CSV dialect ------------------------------------------------------------------------
#
# A CSV export carries every value as text. Each cell is turned into the JSON value the same
# field would have in a JSON answer, chosen by the field's type: an empty cell is null,
# ``true``/``false`` a bool, integers (``*_cents`` included) and numbers are parsed strictly;
# UUIDs, timestamps and enum values stay strings. The result goes through ``decode``, so
# both formats share every hook (unknown enum values kept, UTC timestamps, Money).

_CSV_INT = re.compile(r"-?[0-9]+")
_CSV_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")


def _csv_text(cell: str) -> str:
    return cell


def _csv_int(cell: str) -> int:
    if _CSV_INT.fullmatch(cell):
        return int(cell)
    raise ValueError(f"expected an integer, got {_quote(cell)}")


def _csv_number(cell: str) -> int | float:
    if _CSV_INT.fullmatch(cell):
        return int(cell)
    if _CSV_NUMBER.fullmatch(cell):
        return float(cell)  # finite: the pattern has no inf or nan
    raise ValueError(f"expected a number, got {_quote(cell)}")


def _csv_bool(cell: str) -> bool:
    if cell == "true":
        return True
    if cell == "false":
        return False
    raise ValueError(f"expected true or false, got {_quote(cell)}")


def _csv_cell_parser(type_: Any) -> Callable[[str], Any]:
    inner = _without_none(type_) or type_
    if inner is bool:
        return _csv_bool
    if inner is int or inner is Money:
        return _csv_int
    if inner is float:
        return _csv_number
    return _csv_text  # str, UUID, datetime, open enums: the JSON form is the text itself


def csv_columns(model: type[Any]) -> tuple[str, ...]:
    """The columns a CSV export of ``model`` must carry: its JSON keys, in field order."""
    renames = _money_renames(model)
    return tuple(renames.get(f.name, f.name) for f in attrs.fields(model))


class CSVRowDecoder:
    """Rows of a CSV export (under ``header``) -> ``model`` objects, through ``decode``.

    Columns the model does not know are ignored (like unknown JSON fields); a column the
    model needs but the header lacks reads as null (``missing`` lists them). A bad cell is a
    ``ResponseDecodeError`` naming the row (1 = the first row after the header) and column.

    >>> rows = CSVRowDecoder(["id", "status", "started_at", "duration_seconds"], Call)
    >>> rows(["a1b2c3d4-e5f6-7890-abcd-ef1234567890", "transferred", "2026-03-23T14:30:00Z",
    ...       ""], 1).status
    CallStatus('transferred')
    """

    def __init__(self, header: list[str] | tuple[str, ...], model: type[Any]) -> None:
        self.header = tuple(header)
        self.model = model
        attrs.resolve_types(model)
        renames = _money_renames(model)
        types = {renames.get(f.name, f.name): f.type for f in attrs.fields(model)}
        self.missing = tuple(key for key in types if key not in self.header)
        self._columns = tuple(
            (index, key, _csv_cell_parser(types[key]))
            for index, key in enumerate(self.header)
            if key in types and key not in self.header[:index]  # a repeated column: the first
        )
        self._width = len(self.header)
        self._fast = self._make_fast()
        self._structure = _fast_hook(model)

    def _make_fast(self) -> Callable[[list[str]], dict[str, Any]]:
        """The cells -> JSON values step as one generated expression: text columns inline
        (``cell or None``), the others through their parser. A row it cannot convert goes
        the slow way, which names the bad cell."""
        namespace: dict[str, Any] = {}
        items = []
        for index, key, parse in self._columns:
            if parse is _csv_text:
                items.append(f"    {key!r}: c[{index}] or None,")
            else:
                namespace[f"__p{index}"] = parse
                items.append(f"    {key!r}: __p{index}(x) if (x := c[{index}]) else None,")
        source = "def cells_to_json(c):\n  return {\n" + "\n".join(items) + "\n  }"
        exec(compile(source, f"<callscaler CSV {_model_name(self.model)}>", "exec"), namespace)
        fast: Callable[[list[str]], dict[str, Any]] = namespace["cells_to_json"]
        return fast

    def __call__(self, cells: list[str], row: int) -> Any:
        if len(cells) == self._width:
            try:
                return self._structure(self._fast(cells), self.model)
            except Exception:
                pass  # again below, slowly, to say which cell and why
        return self._slow(cells, row)

    def _slow(self, cells: list[str], row: int) -> Any:
        if len(cells) != len(self.header):
            raise ResponseDecodeError(
                f"row has {len(cells)} cells, the header {len(self.header)}",
                path=f"row {row}",
                model=_model_name(self.model),
                row=row,
            )
        obj: dict[str, Any] = {}
        for index, key, parse in self._columns:
            cell = cells[index]
            if not cell:
                obj[key] = None
                continue
            try:
                obj[key] = parse(cell)
            except ValueError as exc:
                raise self._error(str(exc), row, key) from None
        try:
            return decode(obj, self.model)
        except ResponseDecodeError as exc:
            column = exc.path[2:] if exc.path.startswith("$.") else exc.path
            message = exc.message
            if column not in self.header:
                message = "required column missing from the header"
            elif obj.get(column) is None:
                message = "required cell empty"
            raise self._error(message, row, column) from exc

    def _error(self, message: str, row: int, column: str) -> ResponseDecodeError:
        return ResponseDecodeError(
            message,
            path=f"row {row}, column {column!r}",
            model=_model_name(self.model),
            row=row,
            column=column,
        )
