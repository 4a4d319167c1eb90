"""Wire encoding of strings, typed values and InfoTables (reference §3, §4).

This module is the reference implementation: one small function per base type, checked value by
value. :mod:`agent.alwayson.rowcodec` holds the fast row codecs compiled per DataShape; the
InfoTable functions here use them and fall back on the checked path when a row does not fit
them (a wrong Python type, a NOTHING cell, a cell typed other than its column), so an error is
always raised from here, with a precise message.

Decoding reads by structure only (§5.2, §12.1): every function takes ``(buf, pos)`` and returns
``(value, new_pos)``; running off the end raises :class:`IncompleteMessage`.

Rules for decoding untrusted bytes (docs/alwayson.md, "Decoding cost"):

- Decoding is linear in the length of the data, whatever the error and wherever it sits. The
  fast row readers hand a row they cannot read to the checked reader, which reads it again; a
  nested InfoTable cell inside such a row is therefore asked for twice (and its table's rows may
  be asked for a third time when the table's end is bad). So the outcome of every nested
  InfoTable read (the table, or the exception) is kept for the duration of the outermost table
  read of the same buffer (:func:`read_infotable`, keyed by position and depth): asked again, it
  answers at once, with the same value or the same exception. Without this, each level above a
  bad cell doubled the work (depth 20: 19 s), and a valid table one level past the nesting limit
  never finished. Encoding has the same pattern (the checked row writer after the fast one) and
  the same remedy: :func:`write_infotable` keeps the bytes of every nested table it wrote.
- The nesting limit is checked before anything of a deeper level is read.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from agent.alwayson import unconfirmed
from agent.alwayson.basetypes import STRING_LIKE_TYPES, BaseType, Location, Variant
from agent.alwayson.errors import (
    AlwaysOnError,
    IncompleteMessage,
    ProtocolError,
    UsageError,
    ValueTypeError,
)
from agent.alwayson.infotable import DataShape, FieldDefinition, InfoTable
from agent.alwayson.shapecache import DecodedShapeCache, IdentityCache, is_frozen
from agent.alwayson.values import (
    coerce_value,
    datetime_from_millis,
    infer_base_type,
    millis_from_datetime,
)

__all__ = [
    "MAX_NESTING",
    "decode_infotable",
    "decode_value",
    "encode_infotable",
    "encode_value",
    "read_infotable",
    "read_string",
    "read_typed",
    "write_infotable",
    "write_string",
    "write_typed",
]

MAX_NESTING = 32
"""Deepest InfoTable/VARIANT nesting decoded; deeper input is refused as a protocol error."""

U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
I32 = struct.Struct(">i")
I64 = struct.Struct(">q")
F64 = struct.Struct(">d")
F64X3 = struct.Struct(">ddd")

_NOTHING = BaseType.NOTHING
_BYTE_TO_TYPE: dict[int, BaseType] = {t.wire_byte: t for t in BaseType}

_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))

ENCODED_SHAPES: IdentityCache[bytes | None] = IdentityCache()
"""DataShape object → its encoded field definitions (None: not frozen, encoded on every use)."""
DECODED_SHAPES = DecodedShapeCache()
"""Encoded field definitions → the decoded DataShape (see :mod:`agent.alwayson.shapecache`)."""


# ----------------------------------------------------------------------------------- strings §3.1


def string_prefix(length: int) -> bytes:
    """The length prefix of a string of ``length`` UTF-8 bytes (reference §3.1)."""
    if length < 128:
        return bytes((length,))
    if length > 0x7FFFFFFF:
        raise UsageError(f"string of {length} bytes is too long for the AlwaysOn length prefix")
    return U32.pack(0x80000000 | length)


def write_string(out: bytearray, text: str, what: str = "string") -> None:
    """Append an AlwaysOn string (reference §3.1).

    Raises:
        UsageError: ``text`` is not a str, contains NUL (§12.1) or is not encodable as UTF-8.
    """
    if not isinstance(text, str):
        raise UsageError(f"{what} must be a str, not {type(text).__name__}")
    if "\x00" in text:
        raise UsageError(f"{what} {text[:40]!r} contains a NUL character (the C SDK stops there)")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} {text[:40]!r} is not encodable as UTF-8") from None
    out += string_prefix(len(data))
    out += data


def write_name(out: bytearray, text: str, what: str) -> None:
    """Append a name that a C SDK peer must read: a string under 128 bytes (§12.1)."""
    if isinstance(text, str) and len(text.encode("utf-8", "surrogatepass")) >= 128:
        raise UsageError(f"{what} {text[:40]!r}... is 128 bytes or more; the C SDK cannot read it")
    write_string(out, text, what)


def read_string(buf: bytes, pos: int) -> tuple[str, int]:
    """Read an AlwaysOn string at ``pos``.

    Raises:
        IncompleteMessage: the data ends inside the string.
        ProtocolError: the bytes are not UTF-8.
    """
    n = buf[pos]
    if n < 128:
        start = pos + 1
    else:
        n = U32.unpack_from(buf, pos)[0] & 0x7FFFFFFF
        start = pos + 4
    end = start + n
    if end > len(buf):
        raise IncompleteMessage(f"string of {n} bytes runs past the end of the data")
    try:
        return buf[start:end].decode("utf-8"), end
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"string is not valid UTF-8: {exc}") from None


# ------------------------------------------------------------------------------ typed values §3.2


def _w_string(out: bytearray, bt: BaseType, value: Any) -> None:
    write_string(out, coerce_value(bt, value), bt.type_name)


def _w_number(out: bytearray, bt: BaseType, value: Any) -> None:
    out += F64.pack(coerce_value(bt, value))


def _w_integer(out: bytearray, bt: BaseType, value: Any) -> None:
    out += I32.pack(coerce_value(bt, value))


def _w_long(out: bytearray, bt: BaseType, value: Any) -> None:
    out += unconfirmed.LONG_STRUCT.pack(coerce_value(bt, value))


def _w_timespan(out: bytearray, bt: BaseType, value: Any) -> None:
    out += unconfirmed.TIMESPAN_STRUCT.pack(coerce_value(bt, value))


def _w_boolean(out: bytearray, bt: BaseType, value: Any) -> None:
    out.append(1 if coerce_value(bt, value) else 0)


def _w_datetime(out: bytearray, bt: BaseType, value: Any) -> None:
    out += I64.pack(millis_from_datetime(coerce_value(bt, value)))


def _w_json(out: bytearray, bt: BaseType, value: Any) -> None:
    coerce_value(bt, value)
    write_string(out, _JSON_ENCODER.encode(value), "JSON text")


def _w_location(out: bytearray, bt: BaseType, value: Any) -> None:
    loc = coerce_value(bt, value)
    out += F64X3.pack(loc.longitude, loc.latitude, loc.elevation)


def _w_bytes(out: bytearray, bt: BaseType, value: Any) -> None:
    data = coerce_value(bt, value)
    out += U32.pack(len(data))
    out += data


# The nested tables written so far by the outermost write_infotable in this thread (or task):
# id(table) -> (table, its bytes or the exception writing it raised). The fast row writer gives up
# on a row it cannot write and the checked writer writes the row again, nested tables included;
# answering a nested table from here keeps encoding linear (see the module's rules).
_NESTED_WRITES: ContextVar[dict[int, tuple[InfoTable, Any]] | None] = ContextVar(
    "alwayson_nested_writes", default=None
)


def _w_infotable(out: bytearray, bt: BaseType, value: Any) -> None:
    table = coerce_value(bt, value)
    writes = _NESTED_WRITES.get()
    if writes is None:
        write_infotable(out, table)
        return
    done = writes.get(id(table))
    if done is None or done[0] is not table:
        mark = len(out)
        try:
            write_infotable(out, table)
        except Exception as exc:
            writes[id(table)] = (table, exc)
            raise
        writes[id(table)] = (table, bytes(out[mark:]))
        return
    if isinstance(done[1], BaseException):
        raise done[1].with_traceback(None)
    out += done[1]


def _w_variant(out: bytearray, bt: BaseType, value: Any) -> None:
    v = coerce_value(bt, value)
    write_typed(out, v.base_type, v.value)


_WRITERS: dict[BaseType, Callable[[bytearray, BaseType, Any], None]] = {
    BaseType.NUMBER: _w_number,
    BaseType.BOOLEAN: _w_boolean,
    BaseType.DATETIME: _w_datetime,
    BaseType.TIMESPAN: _w_timespan,
    BaseType.INFOTABLE: _w_infotable,
    BaseType.LOCATION: _w_location,
    BaseType.JSON: _w_json,
    BaseType.IMAGE: _w_bytes,
    BaseType.BLOB: _w_bytes,
    BaseType.VARIANT: _w_variant,
    BaseType.INTEGER: _w_integer,
    BaseType.LONG: _w_long,
}
for _t in STRING_LIKE_TYPES:
    _WRITERS[_t] = _w_string


def write_typed(out: bytearray, base_type: BaseType, value: Any) -> None:
    """Append a typed value: the type byte, then the value (``0xFF`` alone for ``None``).

    A :class:`Variant` given for a base type other than VARIANT is written with its own type.

    Raises:
        ValueTypeError: the value does not fit the base type.
    """
    if value is None:
        out.append(0xFF)
        return
    if isinstance(value, Variant) and base_type is not BaseType.VARIANT:
        write_typed(out, BaseType(value.base_type), value.value)
        return
    if base_type is _NOTHING:
        raise ValueTypeError("NOTHING", value, "NOTHING holds only None")
    writer = _WRITERS.get(base_type)
    if writer is None:
        raise ValueTypeError(str(base_type), value, "unknown base type")
    out.append(base_type.wire_byte)
    writer(out, base_type, value)


def encode_value(base_type: BaseType, value: Any) -> bytes:
    """Encode a typed value (type byte + value) as bytes (reference §3.2).

    Raises:
        ValueTypeError: the value does not fit the base type.
    """
    out = bytearray()
    write_typed(out, BaseType(base_type), value)
    return bytes(out)


def _r_string(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    return read_string(buf, pos)


def _r_number(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    return F64.unpack_from(buf, pos)[0], pos + 8


def _r_integer(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    return I32.unpack_from(buf, pos)[0], pos + 4


def _r_long(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    return unconfirmed.LONG_STRUCT.unpack_from(buf, pos)[0], pos + unconfirmed.LONG_STRUCT.size


def _r_timespan(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    size = unconfirmed.TIMESPAN_STRUCT.size
    return unconfirmed.TIMESPAN_STRUCT.unpack_from(buf, pos)[0], pos + size


def _r_boolean(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    return buf[pos] != 0, pos + 1


def datetime_cell(millis: int) -> Any:
    """The datetime of a DATETIME cell, or a ProtocolError outside Python's range."""
    try:
        return datetime_from_millis(millis)
    except OverflowError:
        raise ProtocolError(f"DATETIME {millis} ms is outside the years 1-9999") from None


def _r_datetime(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    return datetime_cell(I64.unpack_from(buf, pos)[0]), pos + 8


def json_cell(text: str) -> Any:
    """The value of a JSON cell's text, or a ProtocolError."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"JSON cell is not valid JSON: {exc}") from None


def json_cell_bytes(raw: bytes) -> Any:
    """The value of a JSON cell's UTF-8 bytes, or a ProtocolError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"string is not valid UTF-8: {exc}") from None
    return json_cell(text)


def _r_json(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    text, pos = read_string(buf, pos)
    return json_cell(text), pos


def _r_location(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    return Location(*F64X3.unpack_from(buf, pos)), pos + 24


def _r_bytes(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    n = U32.unpack_from(buf, pos)[0]
    start = pos + 4
    end = start + n
    if end > len(buf):
        raise IncompleteMessage(f"binary value of {n} bytes runs past the end of the data")
    return buf[start:end], end


# The nested reads of the outermost InfoTable being read in this thread (or task): the buffer,
# and (position, depth) -> (table, end) or the exception its read raised. Set and cleared by
# read_infotable; see the module's rules.
_NESTED_READS: ContextVar[tuple[bytes, dict[tuple[int, int], Any]] | None] = ContextVar(
    "alwayson_nested_reads", default=None
)


def _r_infotable(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    scope = _NESTED_READS.get()
    if scope is None or scope[0] is not buf:
        return read_infotable(buf, pos, depth + 1)
    reads = scope[1]
    key = (pos, depth)
    done = reads.get(key)
    if done is not None:
        if isinstance(done, BaseException):
            raise done.with_traceback(None)
        return done  # type: ignore[no-any-return]
    try:
        result = read_infotable(buf, pos, depth + 1)
    except Exception as exc:
        reads[key] = exc
        raise
    reads[key] = result
    return result


def _r_variant(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth >= MAX_NESTING:
        raise ProtocolError(f"values nested deeper than {MAX_NESTING}")
    bt, value, pos = read_typed(buf, pos, depth + 1)
    return Variant(bt, value), pos


def _r_nothing(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    return None, pos


def _schedule_reader() -> Callable[[bytes, int, int], tuple[Any, int]]:
    return _r_string if unconfirmed.SCHEDULE_IS_STRING else _r_unknown


def _r_unknown(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    raise ProtocolError(f"base type byte 0x{buf[pos - 1]:02X} cannot be decoded")


CELL_READERS: dict[int, Callable[[bytes, int, int], tuple[Any, int]]] = {
    0xFF: _r_nothing,
    BaseType.NUMBER: _r_number,
    BaseType.BOOLEAN: _r_boolean,
    BaseType.DATETIME: _r_datetime,
    BaseType.TIMESPAN: _r_timespan,
    BaseType.INFOTABLE: _r_infotable,
    BaseType.LOCATION: _r_location,
    BaseType.JSON: _r_json,
    BaseType.IMAGE: _r_bytes,
    BaseType.BLOB: _r_bytes,
    BaseType.VARIANT: _r_variant,
    BaseType.INTEGER: _r_integer,
    BaseType.LONG: _r_long,
}
for _t in STRING_LIKE_TYPES:
    CELL_READERS[_t.wire_byte] = _r_string
CELL_READERS[BaseType.SCHEDULE] = _schedule_reader()
"""Type byte → reader of the value that follows it: ``(buf, pos, depth) -> (value, pos)``."""


def read_typed(buf: bytes, pos: int, depth: int = 0) -> tuple[BaseType, Any, int]:
    """Read a typed value at ``pos``: returns its base type, Python value and the next position.

    Raises:
        ProtocolError: unknown type byte (the value cannot be skipped: §3.2) or bad content.
        IncompleteMessage: the data ends inside the value.
    """
    tb = buf[pos]
    reader = CELL_READERS.get(tb)
    if reader is None:
        raise ProtocolError(f"unknown base type byte 0x{tb:02X}")
    value, pos = reader(buf, pos + 1, depth)
    return _BYTE_TO_TYPE[tb], value, pos


def decode_value(data: bytes, pos: int = 0) -> tuple[BaseType, Any]:
    """Decode one typed value (type byte + value) from ``data`` at ``pos``.

    Returns:
        The base type and the Python value. Bytes after the value are ignored.

    Raises:
        ProtocolError: the bytes do not parse (:class:`IncompleteMessage` if they end early).
    """
    bt, value, _ = _guarded(read_typed, bytes(data), pos)
    return bt, value


# -------------------------------------------------------------------------------- InfoTables §4


def _write_aspect(out: bytearray, name: str, value: Any) -> None:
    write_string(out, name, "aspect name")
    if isinstance(value, Variant):
        write_typed(out, BaseType(value.base_type), value.value)
    else:
        write_typed(out, infer_base_type(value), value)


def _write_fields(out: bytearray, shape: DataShape) -> None:
    for f in shape.fields:
        out.append(1)
        write_string(out, f.name, "field name")
        write_string(out, f.description, "field description")
        out.append(f.base_type.wire_byte)
        aspects = f.aspects
        if len(aspects) > 0xFFFF:
            raise UsageError(f"field {f.name!r} has more than 65535 aspects")
        out += U16.pack(len(aspects))
        for name, value in aspects.items():
            _write_aspect(out, name, value)
    out.append(0)


def _encoded_fields(shape: DataShape) -> bytes | None:
    out = bytearray()
    _write_fields(out, shape)
    return bytes(out) if is_frozen(shape) else None


def write_shape(out: bytearray, shape: DataShape, *, cached: bool = True) -> None:
    """Append the field definitions of ``shape`` and the end-of-fields marker (reference §4).

    Args:
        out: the buffer to append to.
        shape: the shape.
        cached: reuse the bytes this shape *object* encoded to before (:data:`ENCODED_SHAPES`;
            shapes with a mutable aspect value are encoded every time); False encodes afresh.

    Raises:
        UsageError: a name or description that is not a NUL-free str, over 65535 aspects, or
            an aspect value with no base type.
    """
    encoded = ENCODED_SHAPES.get(shape, _encoded_fields) if cached else None
    if encoded is None:
        _write_fields(out, shape)
    else:
        out += encoded


def write_rows_checked(out: bytearray, table: InfoTable) -> None:
    """Append the rows of ``table`` value by value, checking each (the reference path)."""
    fields = table.shape.fields
    names = frozenset(f.name for f in fields)
    count = U16.pack(len(fields) & 0xFFFF)
    for index, row in enumerate(table.rows):
        if not isinstance(row, dict):
            raise UsageError(f"row {index} is a {type(row).__name__}, not a dict")
        if not names.issuperset(row):
            extra = sorted(map(repr, set(row) - names))
            raise UsageError(f"row {index} has keys not in the DataShape: {', '.join(extra)}")
        out.append(1)
        out += count
        for f in fields:
            try:
                write_typed(out, f.base_type, row.get(f.name))
            except ValueTypeError as exc:
                raise ValueTypeError(
                    f.base_type.type_name, exc.value, f"row {index}, field {f.name!r}: {exc}"
                ) from None
    out.append(0)


def write_infotable(out: bytearray, table: InfoTable) -> None:
    """Append an InfoTable (reference §4).

    Raises:
        UsageError: a row has a key not in the shape, or more than 65535 columns.
        ValueTypeError: a cell does not fit its column's base type.
    """
    if not isinstance(table, InfoTable):
        raise ValueTypeError("INFOTABLE", table, "expected an InfoTable")
    if len(table.shape.fields) > 0xFFFF:
        raise UsageError("an InfoTable has at most 65535 columns")
    if _NESTED_WRITES.get() is None:
        # The outermost table: its nested tables are remembered until it is written.
        token = _NESTED_WRITES.set({})
        try:
            _write_table(out, table)
        finally:
            _NESTED_WRITES.reset(token)
    else:
        _write_table(out, table)


def _write_table(out: bytearray, table: InfoTable) -> None:
    from agent.alwayson.rowcodec import row_codec  # rowcodec imports this module

    write_shape(out, table.shape)
    mark = len(out)
    try:
        row_codec(table.shape).write_rows(out, table.rows)
    except Exception:  # the fast path only knows well-typed rows: redo it checked
        del out[mark:]
        write_rows_checked(out, table)


def encode_infotable(table: InfoTable) -> bytes:
    """Encode an InfoTable as bytes (reference §4), without a leading type byte.

    Raises:
        UsageError: a row has a key not in the shape.
        ValueTypeError: a cell does not fit its column's base type.
    """
    out = bytearray()
    write_infotable(out, table)
    return bytes(out)


def _read_aspect_value(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    bt, value, pos = read_typed(buf, pos, depth)
    # Keep the wire type when the Python type alone would not give it back (§4: any aspect name
    # with any typed value).
    try:
        same = infer_base_type(value) is bt
    except AlwaysOnError:
        same = False
    return (value if same else Variant(bt, value)), pos


def read_shape(
    buf: bytes, pos: int, depth: int = 0, *, cached: bool = True
) -> tuple[DataShape, int]:
    """Read field definitions up to and including the end-of-fields marker.

    Args:
        buf: the data.
        pos: where the field definitions start.
        depth: the InfoTable nesting depth of this shape.
        cached: when ``buf`` is ``bytes``, answer the shape decoded earlier from the same bytes
            (:data:`DECODED_SHAPES`; equal to a fresh read, and shared, so only shapes with
            immutable aspect values are kept); False always reads afresh.

    Returns:
        The shape and the position after its end-of-fields marker.

    Raises:
        ProtocolError: a bad marker, an unknown type byte, a duplicate field name, bad text.
        IncompleteMessage: the data ends inside the field definitions.
    """
    if cached and type(buf) is bytes:
        hit = DECODED_SHAPES.lookup(buf, pos)
        if hit is not None:
            return hit
        shape, end = _read_fields(buf, pos, depth)
        DECODED_SHAPES.remember(buf[pos:end], shape)
        return shape, end
    return _read_fields(buf, pos, depth)


def _read_fields(buf: bytes, pos: int, depth: int) -> tuple[DataShape, int]:
    fields: list[FieldDefinition] = []
    while True:
        marker = buf[pos]
        pos += 1
        if marker == 0:
            break
        if marker != 1:
            raise ProtocolError(f"bad field definition marker 0x{marker:02X}")
        name, pos = read_string(buf, pos)
        description, pos = read_string(buf, pos)
        tb = buf[pos]
        bt = _BYTE_TO_TYPE.get(tb)
        if bt is None:
            raise ProtocolError(f"field {name!r} has unknown base type byte 0x{tb:02X}")
        count = U16.unpack_from(buf, pos + 1)[0]
        pos += 3
        aspects: dict[str, Any] = {}
        for _ in range(count):
            aspect, pos = read_string(buf, pos)
            aspects[aspect], pos = _read_aspect_value(buf, pos, depth)
        fields.append(FieldDefinition(name, bt, description, aspects))
    try:
        return DataShape(tuple(fields)), pos
    except UsageError as exc:
        raise ProtocolError(str(exc)) from None


def checked_columns(shape: DataShape) -> tuple[tuple[str, int], ...]:
    """The (name, wire type byte) of each column, as :func:`read_row_checked` takes them."""
    return tuple((f.name, f.base_type.wire_byte) for f in shape.fields)


def read_row_checked(
    buf: bytes, pos: int, columns: tuple[tuple[str, int], ...], depth: int = 0
) -> tuple[dict[str, Any], int]:
    """Read one row (marker included) cell by cell, checking everything."""
    n = len(columns)
    marker = buf[pos]
    if marker != 1:
        raise ProtocolError(f"bad row marker 0x{marker:02X}")
    count = U16.unpack_from(buf, pos + 1)[0]
    # The C SDK writes only the low byte of the count (§4), hence the second form.
    if count != n and not (n > 255 and count == n & 0xFF):
        raise ProtocolError(f"row has {count} cells, the DataShape has {n} fields")
    pos += 3
    row: dict[str, Any] = {}
    readers = CELL_READERS
    for name, col_byte in columns:
        tb = buf[pos]
        reader = readers.get(tb)
        if reader is None:
            raise ProtocolError(f"unknown base type byte 0x{tb:02X} in field {name!r}")
        value, pos = reader(buf, pos + 1, depth)
        if tb != col_byte and tb != 0xFF:  # typed other than its column (0x12 if VARIANT)
            value = Variant(_BYTE_TO_TYPE[tb], value)
        row[name] = value
    return row, pos


def read_rows_checked(
    buf: bytes, pos: int, shape: DataShape, depth: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """Read rows up to and including the end-of-rows marker, cell by cell (reference path)."""
    columns = checked_columns(shape)
    rows: list[dict[str, Any]] = []
    while True:
        marker = buf[pos]
        if marker == 0:
            return rows, pos + 1
        row, pos = read_row_checked(buf, pos, columns, depth)
        rows.append(row)


def read_infotable(buf: bytes, pos: int, depth: int = 0) -> tuple[InfoTable, int]:
    """Read an InfoTable at ``pos`` (reference §4); returns it and the next position.

    Raises:
        ProtocolError: a bad marker, a row of the wrong width, an unknown type byte, bad text.
        IncompleteMessage: the data ends inside the table.
    """
    if depth > MAX_NESTING:
        raise ProtocolError(f"InfoTables nested deeper than {MAX_NESTING}")
    scope = _NESTED_READS.get()
    if scope is not None and scope[0] is buf:
        return _read_table(buf, pos, depth)
    # The outermost table read of this buffer: its nested reads are remembered until it ends.
    token = _NESTED_READS.set((buf, {}))
    try:
        return _read_table(buf, pos, depth)
    finally:
        _NESTED_READS.reset(token)


def _read_table(buf: bytes, pos: int, depth: int) -> tuple[InfoTable, int]:
    from agent.alwayson.rowcodec import row_codec  # rowcodec imports this module

    shape, pos = read_shape(buf, pos, depth)
    try:
        rows, end = row_codec(shape).read_rows(buf, pos, depth)
    except AlwaysOnError:
        raise
    except Exception:  # the fast path knows only well-typed rows: redo them checked
        rows, end = read_rows_checked(buf, pos, shape, depth)
    return InfoTable(shape, rows), end


def _guarded(fn: Callable[..., Any], buf: bytes, pos: int) -> Any:
    try:
        return fn(buf, pos)
    except (IndexError, struct.error):
        raise IncompleteMessage("data ends inside a value") from None
    except RecursionError:
        raise ProtocolError("values nested too deeply") from None


def decode_infotable(data: bytes, pos: int = 0) -> InfoTable:
    """Decode an InfoTable (no leading type byte) from ``data`` at ``pos``.

    Bytes after the table are ignored (§12.1).

    Raises:
        ProtocolError: the bytes do not parse (:class:`IncompleteMessage` if they end early).
    """
    table, _ = _guarded(read_infotable, bytes(data), pos)
    return table  # type: ignore[no-any-return]
