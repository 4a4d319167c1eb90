"""The compiled row reader against the checked one, on layouts built to reach each of its paths.

The generated reader reads a string column's type byte and first length byte together with the
run of fixed-width columns before it, then takes the short, non-NOTHING case inline and hands
anything else (NOTHING, a length of 128 bytes or more, a cell typed other than its column) to
the per-cell reader; a JSON column is parsed once per table. These tests pin each branch against
:func:`read_rows_checked`, on well-formed, truncated and mutated tables.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.alwayson import (
    AlwaysOnError,
    BaseType,
    DataShape,
    FieldDefinition,
    IncompleteMessage,
    InfoTable,
    ProtocolError,
    decode_infotable,
    encode_infotable,
)
from agent.alwayson.valuecodec import read_rows_checked, read_shape, write_rows_checked, write_shape

from .strategies import cell_value, long_texts

# Each string-like column follows a run of fixed-width columns (its header is read with the
# run), except the first column and TEXT, which follows a string (read cell by cell).
LAYOUT = DataShape.of(
    FieldDefinition("s0", BaseType.STRING),
    FieldDefinition("n1", BaseType.NUMBER),
    FieldDefinition("i2", BaseType.INTEGER),
    FieldDefinition("s3", BaseType.STRING),
    FieldDefinition("t4", BaseType.TEXT),
    FieldDefinition("d5", BaseType.DATETIME),
    FieldDefinition("b6", BaseType.BOOLEAN),
    FieldDefinition("j7", BaseType.JSON),
    FieldDefinition("l8", BaseType.LONG),
    FieldDefinition("n9", BaseType.NUMBER),
    FieldDefinition("j10", BaseType.JSON),
    FieldDefinition("i11", BaseType.INTEGER),
)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _cell(f: FieldDefinition) -> st.SearchStrategy[Any]:
    values = st.none() | cell_value(f.base_type, 0)
    if f.base_type in (BaseType.STRING, BaseType.TEXT):
        values = values | long_texts  # lengths of 128 bytes and more
    return values


rows = st.fixed_dictionaries({}, optional={f.name: _cell(f) for f in LAYOUT.fields})
tables = st.lists(rows, max_size=5).map(lambda rs: InfoTable(LAYOUT, rs))


def _checked(data: bytes) -> list[dict[str, Any]] | type[BaseException]:
    """The rows the checked reader gives, or the class of what it raises."""
    try:
        shape, pos = read_shape(data, 0, cached=False)
        return read_rows_checked(data, pos, shape)[0]
    except (IndexError, struct.error):
        return IncompleteMessage
    except AlwaysOnError as exc:
        return type(exc)


def _fast(data: bytes) -> list[dict[str, Any]] | type[BaseException]:
    try:
        return decode_infotable(data).rows
    except AlwaysOnError as exc:
        return type(exc)


@SETTINGS
@given(tables)
def test_fast_paths_encode_and_decode_like_the_checked_ones(table: InfoTable) -> None:
    data = encode_infotable(table)
    checked = bytearray()
    write_shape(checked, table.shape, cached=False)
    write_rows_checked(checked, table)
    assert data == bytes(checked)
    assert decode_infotable(data).rows == _checked(data)
    assert decode_infotable(data) == table


@SETTINGS
@given(tables.filter(lambda t: len(t.rows) > 0), st.data())
def test_truncated_tables_raise_incomplete(table: InfoTable, data: st.DataObject) -> None:
    encoded = encode_infotable(table)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(IncompleteMessage):
        decode_infotable(encoded[:cut])


@SETTINGS
@given(tables.filter(lambda t: len(t.rows) > 0), st.data())
def test_mutated_tables_decode_like_the_checked_reader(
    table: InfoTable, data: st.DataObject
) -> None:
    encoded = bytearray(encode_infotable(table))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(encoded) - 1))
        encoded[at] = data.draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF, encoded[at] ^ 1]))
    assert _fast(bytes(encoded)) == _checked(bytes(encoded))


def test_every_branch_of_a_string_after_a_run() -> None:
    long_text = "é" * 100  # 200 bytes: a 4-byte length
    table = InfoTable(
        LAYOUT,
        [
            {"s3": "short", "t4": "x", "j7": {"a": 1}, "j10": [1]},
            {"s3": long_text, "t4": long_text, "j7": "é" * 80, "j10": None},
            {"s3": None, "j7": None, "j10": 2},
            {"s0": long_text, "n1": 1.5, "i2": 3, "l8": 2**40, "n9": 0.0, "i11": -1},
        ],
    )
    data = encode_infotable(table)
    assert decode_infotable(data) == table
    assert decode_infotable(data).rows == _checked(data)


def _json_column(texts: list[bytes]) -> bytes:
    shape = DataShape.of(FieldDefinition("j", BaseType.JSON), FieldDefinition("n", BaseType.NUMBER))
    out = bytearray()
    write_shape(out, shape)
    for text in texts:
        out += b"\x01\x00\x02" + bytes((BaseType.JSON.wire_byte, len(text))) + text + b"\xff"
    out += b"\x00"
    return bytes(out)


def test_json_cells_that_are_not_json_alone_are_refused_like_the_checked_reader() -> None:
    data = _json_column([b"1,2", b"[3"])
    assert _fast(data) == _checked(data) == ProtocolError


def test_json_cells_whose_join_parses_to_the_right_count_are_refused() -> None:
    data = _json_column([b"1,2", b"[3", b"4]"])
    assert _fast(data) == _checked(data)
