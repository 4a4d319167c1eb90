"""ThingWorx's JSON convention for service inputs and results, typed by the Thing's metadata.

Inputs (a REST call's JSON object) are typed from the service's input DataShape, never from the
JSON value's look (reference §12: an edge reads a NUMBER cell as a double whatever its type
byte says). Per base type, a JSON input becomes:

==========================  ==================================================================
STRING and string types     a JSON string; a JSON number is taken as its decimal text
NUMBER                      a JSON number, or a string holding one
INTEGER, LONG, TIMESPAN     an integral JSON number (``4`` or ``4.0``), or a string holding one;
                            range-checked (int32 / int64)
BOOLEAN                     ``true``/``false``, or the strings ``"true"``/``"false"``
DATETIME                    ISO-8601 text (no zone = UTC) or epoch milliseconds
JSON                        any JSON value; a string holding JSON text is parsed first
INFOTABLE                   ThingWorx InfoTable JSON ``{"dataShape": {"fieldDefinitions":
                            {...}}, "rows": [...]}`` (or that as a string); cells are typed
                            by the field definitions, recursively; without a dataShape the
                            columns are inferred from the rows
LOCATION                    ``{"longitude", "latitude", "elevation"}``
BLOB, IMAGE                 base64 text
VARIANT                     typed from the JSON value's look (the only such case)
``null`` or absent          a NOTHING cell
==========================  ==================================================================

Results are answered as ThingWorx InfoTable JSON: ``{"dataShape": {"fieldDefinitions": {name:
{"name", "baseType", "description", "aspects", "ordinal"}}}, "rows": [...]}``, ``ordinal`` being
the 0-based column index, with DATETIME as epoch milliseconds (ThingWorx's JSON convention),
BLOB/IMAGE as base64, LOCATION as an object, JSON cells inline, nested InfoTables in the same
form, and a NUMBER that is not finite as ``null``.

Rules (untrusted input):
- JSON text (a REST body, a string holding JSON text) is parsed by :func:`parse_json_text`,
  which first measures its nesting in one linear pass and refuses more than
  :data:`MAX_JSON_DEPTH` levels of arrays and objects with an :class:`InputError` (400), so the
  parser and every conversion after it recurse a bounded number of times.
- InfoTables nested in inputs (INFOTABLE and VARIANT cells, also through strings holding
  InfoTable JSON) are refused past :data:`~agent.alwayson.MAX_NESTING` levels, the
  codec's own limit, before descending.
"""

from __future__ import annotations

import base64
import difflib
import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from agent.alwayson import (
    MAX_NESTING,
    STRING_LIKE_TYPES,
    AlwaysOnError,
    BaseType,
    DataShape,
    FieldDefinition,
    IdentityCache,
    InfoTable,
    Location,
    ServiceMetadata,
    Variant,
    coerce_value,
    infer_base_type,
    is_frozen,
    millis_from_datetime,
)
from emulator.thingworx.errors import InputError
from emulator.thingworx.unconfirmed import NO_INPUTS_AS_NOTHING, UNKNOWN_INPUTS_REFUSED

__all__ = [
    "MAX_JSON_DEPTH",
    "infotable_from_json",
    "infotable_json_text",
    "infotable_to_json",
    "json_nesting_exceeds",
    "parse_json_text",
    "shape_to_json",
    "type_inputs",
    "value_from_json",
    "value_to_json",
]

_INTEGRAL = {BaseType.INTEGER, BaseType.LONG, BaseType.TIMESPAN}

MAX_JSON_DEPTH = 256
"""Deepest nesting of arrays and objects read from JSON text (a REST body, or a string input
holding JSON text); deeper text is refused before it is parsed."""

# What changes the nesting: a string's quote, an escape pair (which may hide a quote), a bracket.
_JSON_STRUCTURE = re.compile(r'\\.|["\[\]{}]', re.DOTALL)

# json.dumps(doc, separators=(",", ":"), allow_nan=False), without building an encoder per call.
_COMPACT = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
# DataShape object -> the compact text of its fieldDefinitions (None: a mutable aspect value).
_FIELD_DEFINITIONS_TEXT: IdentityCache[str | None] = IdentityCache()


def json_nesting_exceeds(text: str, limit: int) -> bool:
    """Whether JSON ``text`` nests arrays and objects more than ``limit`` deep.

    One pass over the structural characters, stopping at the first level past ``limit``: linear
    in the length, whatever the text (valid or not). Brackets inside strings do not count. For
    text that is not valid JSON the count may be off after the first mistake, where the parser
    stops anyway.
    """
    depth = 0
    in_string = False
    for found in _JSON_STRUCTURE.finditer(text):
        char = found.group()
        if in_string:
            in_string = char != '"'
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def parse_json_text(text: str | bytes, *, where: str) -> Any:
    """JSON text parsed, its nesting checked first (at most :data:`MAX_JSON_DEPTH` levels).

    Args:
        text: the JSON text, or its bytes (UTF-8, -16 or -32, as :func:`json.loads` reads them).
        where: what the text is, for messages (``"the body"``, ``"input 'patch'"``).

    Raises:
        InputError: the bytes are not text, the text nests too deeply, or it is not JSON.
    """
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode(json.detect_encoding(text))
        except UnicodeDecodeError:
            raise InputError(f"{where} is not JSON text (it is not UTF-8)") from None
    _check_nesting(text, where)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputError(f"{where} is not JSON ({exc})") from None


def _check_nesting(text: str, where: str) -> None:
    if json_nesting_exceeds(text, MAX_JSON_DEPTH):
        raise InputError(
            f"{where} nests arrays and objects more than {MAX_JSON_DEPTH} deep; the stand-in "
            f"reads at most {MAX_JSON_DEPTH} levels"
        )


def type_inputs(service: ServiceMetadata, body: Mapping[str, Any]) -> InfoTable | None:
    """The params InfoTable (one row) of a call, typed from the service's inputs.

    Args:
        service: the service as the Thing's GetMetadata describes it.
        body: the REST call's JSON object.

    Returns:
        A one-row InfoTable whose columns are the service's inputs (absent ones are NOTHING), or
        None when the service declares no inputs and none were given.

    Raises:
        InputError: an input the metadata does not list, or a value that does not fit its type.
    """
    shape = service.inputs
    unknown = [name for name in body if name not in shape]
    if unknown and UNKNOWN_INPUTS_REFUSED:
        close = difflib.get_close_matches(unknown[0], shape.names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(
            f"service {service.name!r} has no input {unknown[0]!r}{hint}"
            f" (inputs: {', '.join(shape.names) or 'none'})"
        )
    if not shape.fields:
        return None if NO_INPUTS_AS_NOTHING else InfoTable(shape, [{}])
    row = {
        f.name: value_from_json(f, body[f.name], where=f"input {f.name}")
        for f in shape.fields
        if f.name in body
    }
    return InfoTable(shape, [row])


def value_from_json(field: FieldDefinition, value: Any, *, where: str, depth: int = 0) -> Any:
    """One JSON value as the Python value of ``field``'s base type (table in the module doc).

    Args:
        field: the field the value is for.
        value: the JSON value.
        where: what the value is, for messages.
        depth: how many InfoTables the value sits in (0: a service input).

    Raises:
        InputError: the value does not fit; the text names ``where`` and the expected type.
    """
    bt = field.base_type
    if value is None:
        return None
    try:
        converted = _from_json(bt, value, where, depth)
        return coerce_value(bt, converted)
    except InputError:
        raise
    except (AlwaysOnError, ValueError, TypeError, OverflowError) as exc:
        # Text that is no value of the type needs no more words; a value of the wrong kind or
        # out of range keeps the codec's reason.
        detail = "" if isinstance(value, str) else f" ({exc})"
        raise InputError(f"{where} must be {_a_type(bt)}; got {_shown(value)}{detail}") from None


def _a_type(bt: BaseType) -> str:
    """A base type's name with its article, as ThingWorx speaks: ``an INTEGER``, ``a NUMBER``."""
    name = bt.type_name
    return f"{'an' if name[0] in 'AEIOU' else 'a'} {name}"


def _shown(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _from_json(bt: BaseType, value: Any, where: str, depth: int) -> Any:
    if bt is BaseType.NUMBER:
        if isinstance(value, str):
            return float(value.strip())
        return value
    if bt in _INTEGRAL:
        if isinstance(value, str):
            text = value.strip()
            try:
                return int(text)
            except ValueError:
                return float(text)
        return value
    if bt is BaseType.BOOLEAN:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        return value
    if bt is BaseType.DATETIME:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value.strip())
        return value
    if bt is BaseType.JSON:
        if isinstance(value, str):
            _check_nesting(value, where)
            try:
                return json.loads(value)
            except ValueError:
                return value  # not JSON text: the string itself is the JSON value
        return value
    if bt is BaseType.INFOTABLE:
        return infotable_from_json(value, where=where, depth=depth + 1)
    if bt is BaseType.VARIANT:
        if isinstance(value, dict) and "rows" in value:
            return Variant(
                BaseType.INFOTABLE, infotable_from_json(value, where=where, depth=depth + 1)
            )
        return Variant(infer_base_type(value), value)
    if bt in STRING_LIKE_TYPES and isinstance(value, int | float) and not isinstance(value, bool):
        return json.dumps(value)
    return value


def _field_from_json(key: str, d: Any, where: str) -> FieldDefinition:
    if not isinstance(d, Mapping):
        raise InputError(f"{where}: field definition {key!r} must be an object")
    name = d.get("name", key)
    base = d.get("baseType", "STRING")
    try:
        bt = BaseType.from_name(str(base))
    except AlwaysOnError:
        raise InputError(f"{where}: field {name!r} has unknown baseType {base!r}") from None
    aspects = d.get("aspects")
    return FieldDefinition(
        str(name),
        bt,
        str(d.get("description") or ""),
        dict(aspects) if isinstance(aspects, Mapping) else {},
    )


def _shape_from_json(obj: Any, rows: list[Any], where: str) -> DataShape:
    if isinstance(obj, Mapping):
        defs = obj.get("fieldDefinitions", {})
        if isinstance(defs, Mapping):
            items = list(defs.items())
        elif isinstance(defs, list):
            items = [(str(d.get("name", "")) if isinstance(d, Mapping) else "", d) for d in defs]
        else:
            raise InputError(f"{where}: fieldDefinitions must be an object")
        fields = [(d.get("ordinal") if isinstance(d, Mapping) else None, k, d) for k, d in items]
        if fields and all(isinstance(o, int) for o, _, _ in fields):
            fields.sort(key=lambda t: t[0] if isinstance(t[0], int) else 0)
        shape_name = obj.get("name", "")
        try:
            return DataShape(
                tuple(_field_from_json(k, d, where) for _, k, d in fields),
                str(shape_name) if isinstance(shape_name, str) else "",
            )
        except AlwaysOnError as exc:
            raise InputError(f"{where}: {exc}") from None
    # No dataShape: columns from the rows' keys, typed from the values' look.
    seen: dict[str, BaseType] = {}
    for row in rows:
        if isinstance(row, Mapping):
            for k, v in row.items():
                if v is not None and k not in seen:
                    seen[k] = BaseType.JSON if isinstance(v, dict | list) else infer_base_type(v)
                elif k not in seen:
                    seen.setdefault(k, BaseType.STRING)
    return DataShape(tuple(FieldDefinition(k, bt) for k, bt in seen.items()))


def infotable_from_json(obj: Any, *, where: str = "infotable", depth: int = 1) -> InfoTable:
    """An InfoTable from ThingWorx InfoTable JSON (or its text).

    Args:
        obj: the InfoTable JSON, or its text.
        where: what the table is, for messages.
        depth: this table's nesting level (1: not inside another InfoTable).

    Raises:
        InputError: not an InfoTable document, a cell that does not fit its field, or tables
            nested more than :data:`~agent.alwayson.MAX_NESTING` deep.
    """
    if depth > MAX_NESTING:
        raise InputError(f"{where}: InfoTables nested more than {MAX_NESTING} deep")
    if isinstance(obj, str):
        _check_nesting(obj, where)
        try:
            obj = json.loads(obj)
        except ValueError:
            raise InputError(f"{where}: not InfoTable JSON") from None
    if not isinstance(obj, Mapping):
        raise InputError(f"{where}: an INFOTABLE must be a JSON object with rows")
    rows = obj.get("rows", [])
    if not isinstance(rows, list):
        raise InputError(f"{where}: rows must be a list")
    shape = _shape_from_json(obj.get("dataShape"), rows, where)
    out: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InputError(f"{where}: row {i} must be an object")
        extra = [k for k in row if k not in shape]
        if extra:
            raise InputError(f"{where}: row {i} has a column {extra[0]!r} not in its dataShape")
        out.append(
            {
                f.name: value_from_json(
                    f, row[f.name], where=f"{where} row {i} {f.name!r}", depth=depth
                )
                for f in shape.fields
                if f.name in row
            }
        )
    return InfoTable(shape, out)


def shape_to_json(shape: DataShape) -> dict[str, Any]:
    """ThingWorx's ``fieldDefinitions`` object of a DataShape (0-based ``ordinal``)."""
    return {
        f.name: {
            "name": f.name,
            "baseType": f.base_type.type_name,
            "description": f.description,
            "aspects": {k: _json_of(v) for k, v in f.aspects.items()},
            "ordinal": i,
        }
        for i, f in enumerate(shape.fields)
    }


def value_to_json(base_type: BaseType, value: Any) -> Any:
    """One cell as ThingWorx JSON (table in the module doc)."""
    return _json_of(value)


def _json_of(value: Any) -> Any:
    # A cell's or an aspect's JSON form: its Python type decides (a Variant by its value).
    if value is None:
        return None
    if isinstance(value, Variant):
        return _json_of(value.value)
    if isinstance(value, datetime):
        return millis_from_datetime(value)
    if isinstance(value, InfoTable):
        return infotable_to_json(value)
    if isinstance(value, Location):
        return {
            "longitude": _finite(value.longitude),
            "latitude": _finite(value.latitude),
            "elevation": _finite(value.elevation),
        }
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, float):
        return _finite(value)
    return value


def _finite(value: float) -> float | None:
    # JSON has no infinities or NaN: a NUMBER or a LOCATION part holding one is null, as ThingWorx
    # has no JSON for it either (a Location's part used to go out as the invalid token Infinity).
    return value if math.isfinite(value) else None


def _rows_json(table: InfoTable) -> list[dict[str, Any]]:
    fields = table.shape.fields
    return [{f.name: _json_of(row.get(f.name)) for f in fields} for row in table.rows]


def infotable_to_json(table: InfoTable) -> dict[str, Any]:
    """A decoded InfoTable as ThingWorx InfoTable JSON."""
    return {
        "dataShape": {"fieldDefinitions": shape_to_json(table.shape)},
        "rows": _rows_json(table),
    }


def _field_definitions_text(shape: DataShape) -> str | None:
    return _COMPACT(shape_to_json(shape)) if is_frozen(shape) else None


def infotable_json_text(table: InfoTable) -> str:
    """:func:`infotable_to_json` as compact JSON text, exactly ``json.dumps(infotable_to_json(
    table), separators=(",", ":"), allow_nan=False)``.

    The ``fieldDefinitions`` text of a shape object seen before is reused (bounded cache keyed by
    identity; shapes with a mutable aspect value are converted every time).

    Raises:
        ValueError: a value JSON cannot carry (as ``json.dumps`` raises it).
    """
    shape = table.shape
    definitions = _FIELD_DEFINITIONS_TEXT.get(shape, _field_definitions_text)
    if definitions is None:
        definitions = _COMPACT(shape_to_json(shape))
    rows = _COMPACT(_rows_json(table))
    return '{"dataShape":{"fieldDefinitions":' + definitions + '},"rows":' + rows + "}"
