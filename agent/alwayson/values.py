"""Checking and normalising Python values for ThingWorx base types.

:func:`coerce_value` is the one place that says which Python values a base type accepts and what
they become (the table is in :mod:`agent.alwayson.basetypes`). It is lenient where the meaning is
unambiguous (an ``int`` for NUMBER, an integral ``float`` for INTEGER, ISO-8601 text or epoch
milliseconds for DATETIME, base64 text for BLOB, a mapping for LOCATION), and strict elsewhere:
``bool`` is never a number, a naive ``datetime`` is refused, strings may not contain NUL
(reference §12.1). ``None`` is accepted for every type: it is the NOTHING cell.

:func:`infer_base_type` types a bare Python value (aspects, VARIANT cells without a
:class:`~agent.alwayson.basetypes.Variant`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.alwayson.basetypes import STRING_LIKE_TYPES, BaseType, Location, Variant
from agent.alwayson.errors import ValueTypeError
from agent.alwayson.infotable import InfoTable

__all__ = [
    "EPOCH",
    "INT32_MAX",
    "INT32_MIN",
    "INT64_MAX",
    "INT64_MIN",
    "coerce_value",
    "datetime_from_millis",
    "infer_base_type",
    "millis_from_datetime",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def millis_from_datetime(value: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime (truncated towards the past)."""
    return (value - EPOCH) // _ONE_MS


def datetime_from_millis(millis: int) -> datetime:
    """The aware UTC datetime ``millis`` milliseconds after the epoch.

    Raises:
        OverflowError: outside Python's datetime range (years 1-9999).
    """
    return EPOCH + timedelta(milliseconds=millis)


def infer_base_type(value: Any) -> BaseType:
    """The base type a bare Python value travels as.

    ``None`` → NOTHING, ``bool`` → BOOLEAN, ``int`` → INTEGER (LONG outside int32), ``float`` →
    NUMBER, ``str`` → STRING, ``datetime`` → DATETIME, ``timedelta`` → TIMESPAN, ``InfoTable``
    → INFOTABLE, ``Location`` → LOCATION, bytes → BLOB, ``dict``/``list`` → JSON, a
    ``Variant`` → its own type.

    Raises:
        ValueTypeError: no base type fits.
    """
    t = type(value)
    found = _INFER.get(t)
    if found is not None:
        return found
    if value is None:
        return BaseType.NOTHING
    if isinstance(value, bool):
        return BaseType.BOOLEAN
    if isinstance(value, int):
        if INT32_MIN <= value <= INT32_MAX:
            return BaseType.INTEGER
        if INT64_MIN <= value <= INT64_MAX:
            return BaseType.LONG
        raise ValueTypeError("LONG", value, "outside the int64 range")
    if isinstance(value, Variant):
        return value.base_type
    for cls, base_type in _INFER.items():
        if isinstance(value, cls):
            return base_type
    raise ValueTypeError("VARIANT", value, "no base type for this Python type")


_INFER: dict[type, BaseType] = {
    bool: BaseType.BOOLEAN,
    float: BaseType.NUMBER,
    str: BaseType.STRING,
    datetime: BaseType.DATETIME,
    timedelta: BaseType.TIMESPAN,
    InfoTable: BaseType.INFOTABLE,
    Location: BaseType.LOCATION,
    bytes: BaseType.BLOB,
    bytearray: BaseType.BLOB,
    memoryview: BaseType.BLOB,
    dict: BaseType.JSON,
    list: BaseType.JSON,
}


def coerce_value(base_type: BaseType, value: Any) -> Any:
    """Check ``value`` for ``base_type`` and return its normal Python form.

    Args:
        base_type: the base type the value must fit.
        value: a Python value (``None`` is a NOTHING cell and always accepted).

    Returns:
        The normalised value (e.g. ``4`` → ``4.0`` for NUMBER, an ISO string → an aware UTC
        ``datetime`` for DATETIME).

    Raises:
        ValueTypeError: the value does not fit; the message names the type and the value.
    """
    if value is None:
        return None
    coercer = _COERCERS.get(base_type)
    if coercer is None:
        if base_type not in STRING_LIKE_TYPES:
            raise ValueTypeError(str(base_type), value, "unknown base type")
        coercer = _coerce_string
    return coercer(BaseType(base_type), value)


def _fail(base_type: BaseType, value: Any, detail: str = "") -> ValueTypeError:
    return ValueTypeError(base_type.type_name, value, detail)


def _coerce_nothing(bt: BaseType, value: Any) -> Any:
    raise _fail(bt, value, "NOTHING holds only None")


def _coerce_string(bt: BaseType, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(bt, value, "expected a str")
    if "\x00" in value:
        raise _fail(bt, value, "contains a NUL character, which the C SDK cannot carry")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(bt, value, "not encodable as UTF-8 (lone surrogate)") from None
    return str(value)


_JSON_CHECK = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _coerce_json(bt: BaseType, value: Any) -> Any:
    try:
        text = _JSON_CHECK.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise _fail(bt, value, f"not JSON-serialisable ({exc})") from None
    if "\x00" in text:
        raise _fail(bt, value, "JSON text contains a NUL character")
    return value


def _coerce_number(bt: BaseType, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(bt, value, "expected a float or an int")
    try:
        return float(value)
    except OverflowError:
        raise _fail(bt, value, "too large for a double") from None


def _integral(bt: BaseType, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise _fail(bt, value, "a bool is not a number")
    if isinstance(value, float):
        if not value.is_integer():
            raise _fail(bt, value, "not an integral value")
        value = int(value)
    if not isinstance(value, int):
        raise _fail(bt, value, "expected an int")
    if not low <= value <= high:
        raise _fail(bt, value, f"outside [{low}, {high}]")
    return int(value)


def _coerce_integer(bt: BaseType, value: Any) -> int:
    return _integral(bt, value, INT32_MIN, INT32_MAX)


def _coerce_long(bt: BaseType, value: Any) -> int:
    return _integral(bt, value, INT64_MIN, INT64_MAX)


def _coerce_timespan(bt: BaseType, value: Any) -> int:
    if isinstance(value, timedelta):
        value = value // _ONE_MS
    return _integral(bt, value, INT64_MIN, INT64_MAX)


def _coerce_boolean(bt: BaseType, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(bt, value, "expected a bool")
    return value


def _coerce_datetime(bt: BaseType, value: Any) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise _fail(bt, value, "naive datetime; give it a timezone")
        millis = millis_from_datetime(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _fail(bt, value, "not ISO-8601 text") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        millis = millis_from_datetime(parsed)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(bt, value, "not a finite number of milliseconds")
        millis = math.floor(value)
    else:
        raise _fail(bt, value, "expected an aware datetime, ISO-8601 text or epoch milliseconds")
    if not INT64_MIN <= millis <= INT64_MAX:
        raise _fail(bt, value, "outside the int64 millisecond range")
    try:
        return datetime_from_millis(millis)
    except OverflowError:
        raise _fail(bt, value, "outside Python's datetime range") from None


def _coerce_infotable(bt: BaseType, value: Any) -> InfoTable:
    if not isinstance(value, InfoTable):
        raise _fail(bt, value, "expected an InfoTable")
    return value


def _coerce_location(bt: BaseType, value: Any) -> Location:
    if isinstance(value, Location):
        parts: Sequence[Any] = (value.longitude, value.latitude, value.elevation)
    elif isinstance(value, Mapping):
        try:
            parts = (value["longitude"], value["latitude"], value.get("elevation", 0.0))
        except KeyError:
            raise _fail(bt, value, "a mapping needs longitude and latitude") from None
    elif isinstance(value, list | tuple) and len(value) in (2, 3):
        parts = (*value, 0.0) if len(value) == 2 else value
    else:
        raise _fail(bt, value, "expected a Location")
    numbers = []
    for part in parts:
        if isinstance(part, bool) or not isinstance(part, int | float):
            raise _fail(bt, value, "coordinates must be numbers")
        numbers.append(float(part))
    return Location(numbers[0], numbers[1], numbers[2])


def _coerce_bytes(bt: BaseType, value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    elif isinstance(value, str):
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _fail(bt, value, "a str must be base64 text") from None
    else:
        raise _fail(bt, value, "expected bytes")
    if len(data) > 0xFFFFFFFF:
        raise _fail(bt, value, "longer than a uint32 length")
    return data


def _coerce_variant(bt: BaseType, value: Any) -> Variant:
    if isinstance(value, Variant):
        inner = BaseType(value.base_type)
        if inner is BaseType.NOTHING:
            if value.value is not None:
                raise _fail(bt, value, "a NOTHING variant holds only None")
            return Variant(inner, None)
        coerced = coerce_value(inner, value.value)
        if coerced is None:
            return Variant(BaseType.NOTHING, None)
        return Variant(inner, coerced)
    inner = infer_base_type(value)
    return Variant(inner, coerce_value(inner, value))


_COERCERS: dict[BaseType, Callable[[BaseType, Any], Any]] = {
    BaseType.NOTHING: _coerce_nothing,
    BaseType.NUMBER: _coerce_number,
    BaseType.BOOLEAN: _coerce_boolean,
    BaseType.DATETIME: _coerce_datetime,
    BaseType.TIMESPAN: _coerce_timespan,
    BaseType.INFOTABLE: _coerce_infotable,
    BaseType.LOCATION: _coerce_location,
    BaseType.JSON: _coerce_json,
    BaseType.IMAGE: _coerce_bytes,
    BaseType.BLOB: _coerce_bytes,
    BaseType.VARIANT: _coerce_variant,
    BaseType.INTEGER: _coerce_integer,
    BaseType.LONG: _coerce_long,
}
