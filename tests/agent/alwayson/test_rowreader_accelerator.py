"""The C row reader (agent/alwayson/_rowreader.c) against the generated Python one.

Every comparison decodes the same bytes twice, once as the agent does (the C reader when the
extension is built) and once inside :func:`rowcodec.pure_python`, and asks for the same outcome:
equal rows down to exact types (``bool`` vs ``int``, a float's bits, a datetime's ``tzinfo``
object, dict key order), or the same exception type and message. The comparisons are skipped
only when the extension is absent; a separate test fails when a C compiler is there but the
extension was not built, so that a broken build cannot go unnoticed.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import struct
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.alwayson import (
    BaseType,
    DataShape,
    FieldDefinition,
    InfoTable,
    Location,
    ProtocolError,
    Variant,
    decode_infotable,
    decode_message,
    decode_value,
    encode_infotable,
    rowcodec,
)
from agent.alwayson.basetypes import STRING_LIKE_TYPES
from agent.alwayson.valuecodec import read_shape, write_shape
from agent.alwayson.values import EPOCH

from .strategies import MAX_MS, MIN_MS, cell_value, infotables, long_texts

accelerated = pytest.mark.skipif(
    not rowcodec.ACCELERATED, reason=f"C row reader not in use: {rowcodec.ACCELERATOR}"
)
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
VECTORS = json.loads((Path(__file__).parent / "golden_vectors.json").read_text())


def test_the_extension_is_built_wherever_a_c_compiler_is() -> None:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler: the pure-Python reader is the expected path")
    # Imported directly: JOBS_AGENT_PURE_PYTHON only says whether it is used.
    module = importlib.import_module("agent.alwayson._rowreader")
    assert hasattr(module, "RowReader")
    if os.environ.get("JOBS_AGENT_PURE_PYTHON", "") in ("", "0"):
        assert rowcodec.ACCELERATED, rowcodec.ACCELERATOR


def test_the_package_says_which_path_is_active() -> None:
    from agent import alwayson

    assert alwayson.ACCELERATED is rowcodec.ACCELERATED
    assert rowcodec.ACCELERATOR.startswith("on" if rowcodec.ACCELERATED else "off")


# ------------------------------------------------------------------------------ comparing


def exact(value: Any) -> Any:
    """A comparable form of ``value`` that also pins every type, float bits and tzinfo ids."""
    t = type(value)
    if t is float:
        return ("float", struct.pack(">d", value))
    if t is dict:
        return ("dict", [(k, exact(v)) for k, v in value.items()])
    if t in (list, tuple):
        return (t.__name__, [exact(v) for v in value])
    if t is datetime:
        return ("datetime", value, value.fold, id(value.tzinfo))
    if t is InfoTable:
        return ("InfoTable", value.shape, exact(value.rows))
    if t in (Variant, Location) or dataclasses.is_dataclass(value):
        return (
            t.__name__,
            [(f.name, exact(getattr(value, f.name))) for f in dataclasses.fields(value)],
        )
    return (t.__name__, value)


def outcome(fn: Callable[[], Any]) -> Any:
    try:
        return ("value", exact(fn()))
    except Exception as exc:
        return ("error", type(exc), str(exc))


def both(fn: Callable[[], Any]) -> tuple[Any, Any]:
    """The outcome of ``fn`` on the default path and on the generated Python reader."""
    fast = outcome(fn)
    with rowcodec.pure_python():
        pure = outcome(fn)
    return fast, pure


def same_decoding(data: bytes) -> Any:
    fast, pure = both(lambda: decode_infotable(data))
    assert fast == pure
    return fast


# ------------------------------------------------------------------------- golden vectors


def _hex(entry: dict[str, Any]) -> bytes:
    if "repeat" in entry:
        count: int = entry["count"]
        return bytes.fromhex(entry["hex_prefix"]) + bytes.fromhex(entry["repeat"]) * count
    return bytes.fromhex(entry["hex"])


@accelerated
@pytest.mark.parametrize("entry", VECTORS["messages"], ids=lambda e: e["name"])
def test_golden_messages(entry: dict[str, Any]) -> None:
    fast, pure = both(lambda: decode_message(_hex(entry)))
    assert fast == pure
    assert fast[0] == "value"


@accelerated
@pytest.mark.parametrize("entry", VECTORS["values"], ids=lambda e: e["name"])
def test_golden_values(entry: dict[str, Any]) -> None:
    fast, pure = both(lambda: decode_value(_hex(entry)))
    assert fast == pure


# ------------------------------------------------------------------- generated tables

# Every base type as a column, strings of 128 bytes and more included.
EVERY_TYPE = DataShape(
    tuple(
        FieldDefinition(f"c{i}_{bt.name.lower()}", bt)
        for i, bt in enumerate(t for t in BaseType if t is not BaseType.NOTHING)
    )
)


def _cell(f: FieldDefinition) -> st.SearchStrategy[Any]:
    values = st.none() | cell_value(f.base_type, 1)
    if f.base_type in STRING_LIKE_TYPES:
        values = values | long_texts
    return values


every_type_tables = st.lists(
    st.fixed_dictionaries({}, optional={f.name: _cell(f) for f in EVERY_TYPE.fields}),
    max_size=4,
).map(lambda rows: InfoTable(EVERY_TYPE, rows))


@accelerated
@SETTINGS
@given(every_type_tables)
def test_tables_of_every_base_type(table: InfoTable) -> None:
    data = encode_infotable(table)
    assert same_decoding(data) == ("value", exact(decode_infotable(data)))
    assert decode_infotable(data) == table


@accelerated
@SETTINGS
@given(infotables())
def test_tables_of_random_shapes(table: InfoTable) -> None:
    data = encode_infotable(table)
    result = same_decoding(data)
    assert result[0] == "value"


@accelerated
@SETTINGS
@given(every_type_tables.filter(lambda t: len(t.rows) > 0), st.data())
def test_truncated_tables(table: InfoTable, data: st.DataObject) -> None:
    encoded = encode_infotable(table)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    assert same_decoding(encoded[:cut])[0] == "error"


@accelerated
@SETTINGS
@given(every_type_tables.filter(lambda t: len(t.rows) > 0), st.data())
def test_mutated_tables(table: InfoTable, data: st.DataObject) -> None:
    encoded = bytearray(encode_infotable(table))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(encoded) - 1))
        encoded[at] = data.draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF, encoded[at] ^ 1]))
    if data.draw(st.booleans()):
        encoded = encoded[: data.draw(st.integers(0, len(encoded)))]
    same_decoding(bytes(encoded))


# Rows made of bytes that matter to the reader, after a valid shape.
SMALL = DataShape.of(
    FieldDefinition("s", BaseType.STRING),
    FieldDefinition("n", BaseType.NUMBER),
    FieldDefinition("d", BaseType.DATETIME),
    FieldDefinition("t", BaseType.TEXT),
    FieldDefinition("b", BaseType.BOOLEAN),
    FieldDefinition("j", BaseType.JSON),
    FieldDefinition("v", BaseType.VARIANT),
)
_shape_bytes = bytearray()
write_shape(_shape_bytes, SMALL)
SMALL_SHAPE = bytes(_shape_bytes)
row_bytes = st.lists(
    st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x07, 0x08, 0x12, 0x7F, 0x80, 0xC3, 0xFF])
    | st.integers(0, 255),
    max_size=120,
).map(bytes)


@accelerated
@SETTINGS
@given(row_bytes)
def test_arbitrary_bytes_after_a_shape(rows: bytes) -> None:
    same_decoding(SMALL_SHAPE + rows)
    same_decoding(SMALL_SHAPE + b"\x01\x00\x07" + rows)


@accelerated
@SETTINGS
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    same_decoding(data)


# ------------------------------------------------------------------------------ datetimes


def _datetime_table(*millis: int) -> bytes:
    shape = DataShape.of(
        FieldDefinition("d", BaseType.DATETIME), FieldDefinition("x", BaseType.NUMBER)
    )
    out = bytearray()
    write_shape(out, shape)
    for ms in millis:
        out += b"\x01\x00\x02\x03" + struct.pack(">q", ms) + b"\x01" + struct.pack(">d", 0.5)
    out += b"\x00"
    return bytes(out)


EDGE_MILLIS = [
    MIN_MS, MIN_MS + 1, MIN_MS + 999, MIN_MS + 1000, MAX_MS, MAX_MS - 1, MAX_MS - 999,
    0, 1, -1, 999, -999, 1000, -1000, 1001, -1001, 86_399_999, -86_400_001,
    951_782_400_000,  # 2000-02-29
    -2_203_891_200_000,  # 1900-03-01 (1900 is no leap year)
    -62_104_060_800_000,  # 0002-01-01
    253_370_764_800_000,  # 9998-12-31
]  # fmt: skip


@accelerated
@pytest.mark.parametrize("ms", EDGE_MILLIS)
def test_datetimes_at_the_edges(ms: int) -> None:
    result = same_decoding(_datetime_table(ms))
    assert result[0] == "value"
    (row,) = decode_infotable(_datetime_table(ms)).rows
    assert row["d"] == EPOCH + timedelta(milliseconds=ms)
    assert row["d"].tzinfo is EPOCH.tzinfo


@accelerated
@pytest.mark.parametrize("ms", [MIN_MS - 1, MAX_MS + 1, -(2**63), 2**63 - 1, MIN_MS - 1000])
def test_datetimes_beyond_the_edges_are_refused_alike(ms: int) -> None:
    result = same_decoding(_datetime_table(0, ms))
    assert result == ("error", ProtocolError, f"DATETIME {ms} ms is outside the years 1-9999")


@accelerated
@SETTINGS
@given(st.lists(st.integers(MIN_MS - 5, MAX_MS + 5) | st.integers(-(2**63), 2**63 - 1), max_size=6))
def test_any_datetime(millis: list[int]) -> None:
    same_decoding(_datetime_table(*millis))


# -------------------------------------------------------------------------------- strings


def _strings_table(*cells: bytes, shape: DataShape | None = None) -> bytes:
    """Rows of (STRING, JSON, STRING) from raw cell bytes, three per row."""
    shape = shape or DataShape.of(
        FieldDefinition("a", BaseType.STRING),
        FieldDefinition("j", BaseType.JSON),
        FieldDefinition("z", BaseType.STRING),
    )
    out = bytearray()
    write_shape(out, shape)
    n = len(shape.fields)
    for i in range(0, len(cells), n):
        out += b"\x01" + struct.pack(">H", n) + b"".join(cells[i : i + n])
    out += b"\x00"
    return bytes(out)


def _text(type_byte: int, raw: bytes, long: bool | None = None) -> bytes:
    long = len(raw) >= 128 if long is None else long
    length = struct.pack(">I", 0x80000000 | len(raw)) if long else bytes((len(raw),))
    return bytes((type_byte,)) + length + raw


S, J = BaseType.STRING.wire_byte, BaseType.JSON.wire_byte


@accelerated
@pytest.mark.parametrize("n", [0, 1, 127, 128, 129, 300])
def test_string_lengths(n: int) -> None:
    data = _strings_table(
        _text(S, b"x" * n), _text(J, b"[" + b"1," * n + b"2]"), _text(S, b"y" * n)
    )
    result = same_decoding(data)
    assert result[0] == "value"
    assert decode_infotable(data).rows[0]["a"] == "x" * n


@accelerated
def test_a_short_string_with_a_long_length_prefix() -> None:
    data = _strings_table(_text(S, b"ab", long=True), _text(J, b"1", long=True), b"\xff")
    assert same_decoding(data)[0] == "value"


@accelerated
@pytest.mark.parametrize(
    "raw", [b"\xff", b"\xc3", b"\xc3(", b"\xed\xa0\x80", b"a\x80b", b"\xf4\x90\x80\x80"]
)
def test_invalid_utf8(raw: bytes) -> None:
    assert same_decoding(_strings_table(_text(S, raw), b"\xff", b"\xff"))[0] == "error"
    assert same_decoding(_strings_table(b"\xff", _text(J, raw), b"\xff"))[0] == "error"
    assert same_decoding(_strings_table(b"\xff", b"\xff", _text(S, raw)))[0] == "error"


BAD_JSON = _text(J, b"[1")


@accelerated
@pytest.mark.parametrize("column", [0, 1, 2])
@pytest.mark.parametrize("earlier_bad_json", [False, True])
def test_a_string_running_past_the_end(column: int, earlier_bad_json: bool) -> None:
    # Row 0 may hold an invalid JSON cell: which error wins then depends on how the generated
    # reader meets the overrun (a later read inside the row, or the next row marker).
    first = [_text(S, b"a"), BAD_JSON if earlier_bad_json else _text(J, b"1"), _text(S, b"z")]
    second = [_text(S, b"b"), _text(J, b"2"), _text(S, b"c")]
    second[column] = bytes((second[column][0], 100)) + b"only a few bytes"
    data = _strings_table(*first, *second[: column + 1])[:-1]  # no end marker
    assert same_decoding(data)[0] == "error"
    long_length = bytes((S,)) + struct.pack(">I", 0x80000000 | 10**6) + b"abc"
    data = _strings_table(*first, long_length)[:-1]
    assert same_decoding(data)[0] == "error"


@accelerated
def test_a_string_running_past_the_end_with_a_bad_tail() -> None:
    # The last cell's text stops inside a UTF-8 sequence: the Python slice fails to decode.
    for tail in (b"ok", b"\xc3"):
        first = [_text(S, b"a"), BAD_JSON, _text(S, b"z")]
        data = _strings_table(*first, _text(S, b"b"), b"\xff", bytes((S, 50)) + tail)[:-1]
        assert same_decoding(data)[0] == "error"


@accelerated
@pytest.mark.parametrize("cut", range(1, 40))
def test_every_truncation_of_a_small_table(cut: int) -> None:
    data = _strings_table(
        _text(S, b"abc"),
        _text(J, b'{"k": [1, 2]}'),
        b"\xff",
        b"\xff",
        BAD_JSON,
        _text(S, "é".encode()),
    )
    same_decoding(data[: len(data) - cut])


@accelerated
@pytest.mark.parametrize("text_follows", [False, True])
def test_a_run_cut_short_at_the_end_of_the_data(text_follows: bool) -> None:
    # The generated reader unpacks a run of fixed-width columns (and the next string's header)
    # at once: a row whose NOTHING cells would fit cell by cell is irregular when the run does
    # not, and the checked reader then reports the row's own bad JSON before an earlier row's.
    fields = [FieldDefinition("j", BaseType.JSON)]
    fields += [FieldDefinition("n", BaseType.NUMBER), FieldDefinition("i", BaseType.INTEGER)]
    if text_follows:
        fields.append(FieldDefinition("s", BaseType.STRING))
    shape = DataShape(tuple(fields))
    typed = [b"\x01" + struct.pack(">d", 1.5), b"\x16" + struct.pack(">i", 7), _text(S, b"s")]
    nothing = b"\xff" * (len(fields) - 1)
    first = [_text(J, b"[1"), *typed[: len(fields) - 1]]
    data = _strings_table(*first, _text(J, b"{") + nothing, shape=shape)[:-1]
    fast = same_decoding(data)
    assert fast[0] == "error" and "line 1 column 2" in fast[2]


@accelerated
def test_json_cells_parsed_like_the_python_path() -> None:
    cells = [b" 1", b"1 ", b"1,2", b"[3", b"NaN", b"-Infinity", b'"\\ud800"', b"", b"{}", b"[]"]
    for raw in cells:
        fast = same_decoding(_strings_table(b"\xff", _text(J, raw), b"\xff"))
        bad_then_raw = _strings_table(b"\xff", BAD_JSON, b"\xff", b"\xff", _text(J, raw), b"\xff")
        same_decoding(bad_then_raw)
        assert fast[0] in ("value", "error")


# ---------------------------------------------------------------------------- re-entrance

NESTED = DataShape.of(
    FieldDefinition("name", BaseType.STRING),
    FieldDefinition("inner", BaseType.INFOTABLE),
    FieldDefinition("j", BaseType.JSON),
)


@accelerated
def test_a_nested_table_of_the_same_layout() -> None:
    inner = InfoTable(NESTED, [{"name": "in", "j": {"x": [1]}}, {"name": "in2", "j": 2}])
    middle = InfoTable(NESTED, [{"name": "mid", "inner": inner, "j": [3]}])
    outer = InfoTable(NESTED, [{"name": "out", "inner": middle, "j": None}, {"j": "s"}])
    data = encode_infotable(outer)
    assert same_decoding(data)[0] == "value"
    assert decode_infotable(data) == outer
    broken = data.replace(b'{"x":[1]}', b'{"x":[1}}')
    assert same_decoding(broken)[0] == "error"


@accelerated
def test_other_buffer_types_take_the_python_reader() -> None:
    table = InfoTable(NESTED, [{"name": "a", "j": [1, 2]}])
    data = encode_infotable(table)
    _, pos = read_shape(data, 0)
    codec = rowcodec.row_codec(NESTED)
    # Deliberately not the declared bytes: the C reader takes bytes only, anything else must be
    # turned to the Python reader at run time.
    buffer = bytearray(data)
    assert codec.read_rows(buffer, pos, 0) == codec.read_rows_pure(data, pos, 0)  # type: ignore[arg-type]
    assert codec.read_rows(data, pos, 0) == codec.read_rows_pure(data, pos, 0)


@accelerated
def test_the_c_reader_refuses_bad_arguments() -> None:
    from agent.alwayson import _rowreader  # type: ignore[attr-defined]

    scan, fallback = json.loads, json.loads
    with pytest.raises(TypeError):
        _rowreader.RowReader([], EPOCH.tzinfo, scan, fallback)
    with pytest.raises(TypeError):
        _rowreader.RowReader((), None, scan, fallback)
    with pytest.raises(ValueError):
        _rowreader.RowReader((("a", 0, "x", 0, None),), EPOCH.tzinfo, scan, fallback)
    with pytest.raises(ValueError):
        _rowreader.RowReader((("a", 256, "s", 0, None),), EPOCH.tzinfo, scan, fallback)
    reader = _rowreader.RowReader((("a", 8, "j", 0, None),), EPOCH.tzinfo, scan, fallback)
    with pytest.raises(TypeError):
        reader.read(bytearray(b"\x00"), 0, 0, [], [[]])
    with pytest.raises(ValueError):
        reader.read(b"\x00", -1, 0, [], [[]])
    with pytest.raises(ValueError):
        reader.read(b"\x00", 0, 0, [], [])
    with pytest.raises(ValueError):
        reader.read(b"\x00", 0, 0, [{}], [[]])
    with pytest.raises(TypeError):
        reader.parse_json([], [])
    rows: list[dict[str, Any]] = []
    pending: list[list[Any]] = [[]]
    assert reader.read(b"\x01\x00\x01\x08\x02[]\x00", 0, 0, rows, pending) == 7
    assert rows == [{"a": None}] and pending == [[b"[]"]]
    reader.parse_json(rows, pending)
    assert rows == [{"a": []}]
