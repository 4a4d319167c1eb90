"""The command line (run as a real process) and the JSON typing functions on their own."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.alwayson import BaseType, DataShape, FieldDefinition, InfoTable
from emulator.thingworx.errors import InputError
from emulator.thingworx.json_typing import (
    infotable_from_json,
    infotable_to_json,
    json_nesting_exceeds,
    value_from_json,
)

F = FieldDefinition


async def test_cli_runs_and_stops_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "emulator.thingworx", "--port", "0", "--app-key", "k",
        "--log-format", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(20):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "exited before ready"
                if line.startswith("ready "):
                    break
        assert line.strip().endswith("/Thingworx/WS")
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cli_requires_an_app_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "THINGWORX_APP_KEY"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "emulator.thingworx", "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**env, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2 and b"application key is required" in err


def test_number_and_integer_inputs_follow_the_declared_type() -> None:
    assert value_from_json(F("x", BaseType.NUMBER), 4, where="x") == 4.0
    assert isinstance(value_from_json(F("x", BaseType.NUMBER), 4, where="x"), float)
    assert value_from_json(F("x", BaseType.INTEGER), 4.0, where="x") == 4
    with pytest.raises(InputError, match="INTEGER"):
        value_from_json(F("x", BaseType.INTEGER), 2**31, where="x")
    assert value_from_json(F("x", BaseType.LONG), "9007199254740993", where="x") == 2**53 + 1


def test_datetime_inputs() -> None:
    field = F("d", BaseType.DATETIME)
    expected = datetime(2024, 1, 1, tzinfo=UTC)
    assert value_from_json(field, "2024-01-01T00:00:00Z", where="d") == expected
    assert value_from_json(field, "2024-01-01T00:00:00", where="d") == expected
    assert value_from_json(field, 1704067200000, where="d") == expected


def test_infotable_without_datashape_is_inferred() -> None:
    table = infotable_from_json({"rows": [{"a": "x", "b": 1.5, "c": True}]})
    assert [(f.name, f.base_type) for f in table.shape] == [
        ("a", BaseType.STRING), ("b", BaseType.NUMBER), ("c", BaseType.BOOLEAN),
    ]  # fmt: skip


def _not_json_text(value: Any) -> bool:
    """A JSON cell's string that holds JSON text is parsed on the way in (json_typing's rule for
    JSON: "a string holding JSON text is parsed first"), so it cannot round-trip as a string."""
    if not isinstance(value, str):
        return True
    try:
        json.loads(value)
    except ValueError:
        return True
    return False


_cells: dict[BaseType, st.SearchStrategy[Any]] = {
    BaseType.STRING: st.text(alphabet=st.characters(blacklist_characters="\x00", codec="utf-8")),
    BaseType.NUMBER: st.floats(allow_nan=False, allow_infinity=False),
    BaseType.INTEGER: st.integers(-(2**31), 2**31 - 1),
    BaseType.LONG: st.integers(-(2**63), 2**63 - 1),
    BaseType.BOOLEAN: st.booleans(),
    BaseType.DATETIME: st.datetimes(
        min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)),
    BaseType.JSON: st.recursive(
        st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        ),
        max_leaves=5,
    ).filter(_not_json_text),
}


@st.composite
def _tables(draw: st.DrawFn) -> InfoTable:
    types = draw(st.lists(st.sampled_from(sorted(_cells)), min_size=1, max_size=5))
    shape = DataShape(tuple(F(f"c{i}", t) for i, t in enumerate(types)))
    rows = draw(
        st.lists(
            st.fixed_dictionaries({f.name: st.none() | _cells[f.base_type] for f in shape}),
            max_size=4,
        )
    )
    return InfoTable(shape, rows)


@settings(max_examples=60, deadline=None)
@given(_tables())
def test_infotable_json_round_trip(table: InfoTable) -> None:
    again = infotable_from_json(infotable_to_json(table))
    assert again.shape == table.shape
    for a, b in zip(again.rows, table.rows, strict=True):
        for name in table.shape.names:
            x, y = a.get(name), b.get(name)
            if isinstance(y, float):
                assert isinstance(x, int | float), (x, y)
                assert math.isclose(x, y) or x == y
            else:
                assert x == y


def _json_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_json_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_json_depth, value), default=0)
    return 0


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text('[]{}"\\k'), inner),
    max_leaves=30,
)


@given(_JSON_VALUES, st.integers(0, 12))
def test_nesting_is_measured_as_the_parser_sees_it(value: Any, limit: int) -> None:
    # Brackets, quotes and backslashes inside strings do not count.
    text = json.dumps(value)
    assert json_nesting_exceeds(text, limit) == (_json_depth(value) > limit)


def test_nesting_scan_stops_at_the_limit() -> None:
    assert json_nesting_exceeds("[" * 1_500_000, 256)
    assert not json_nesting_exceeds('["[[[[", "\\"[[[["]', 1)
    assert json_nesting_exceeds('[{"a": [1]}]', 2) and not json_nesting_exceeds('[{"a": 1}]', 2)


def test_a_json_cell_holding_json_text_is_parsed_and_other_text_kept() -> None:
    shape = DataShape((F("c0", BaseType.JSON),))
    for text, value in (("0", 0), ('{"a": [1]}', {"a": [1]}), ("ab", "ab")):
        back = infotable_from_json(infotable_to_json(InfoTable(shape, [{"c0": text}])))
        assert back.rows[0]["c0"] == value
