"""infotable_json_text: the same text as json.dumps(infotable_to_json(...)), cache warm or cold."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings

from agent.alwayson import BaseType, DataShape, FieldDefinition, InfoTable, Location, Variant
from emulator.thingworx.json_typing import infotable_json_text, infotable_to_json
from tests.agent.alwayson.strategies import infotables


def _reference(table: InfoTable) -> str:
    return json.dumps(infotable_to_json(table), separators=(",", ":"), allow_nan=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(infotables())
def test_text_equals_dumps_of_the_dict_form(table: InfoTable) -> None:
    expected = _reference(table)
    assert infotable_json_text(table) == expected  # cold (or warm from an earlier example)
    assert infotable_json_text(table) == expected  # warm


def test_non_finite_numbers_and_location_parts_are_null() -> None:
    # Hypothesis found a Location with an infinite elevation: its JSON text held `Infinity`.
    shape = DataShape(
        (FieldDefinition("n", BaseType.NUMBER), FieldDefinition("l", BaseType.LOCATION))
    )
    table = InfoTable(shape, [{"n": float("-inf"), "l": Location(1.0, float("nan"), float("inf"))}])
    assert json.loads(infotable_json_text(table))["rows"] == [
        {"n": None, "l": {"longitude": 1.0, "latitude": None, "elevation": None}}
    ]
    assert infotable_json_text(table) == _reference(table)


def test_a_shape_with_a_mutable_aspect_is_converted_every_time() -> None:
    payload = [1]
    shape = DataShape(
        (FieldDefinition("c", BaseType.STRING, "", {"a": Variant(BaseType.JSON, payload)}),)
    )
    table = InfoTable(shape, [{"c": "x"}])
    assert infotable_json_text(table) == _reference(table)
    payload.append(2)  # the aspect's value changed in place: the text must follow
    assert '"a":[1,2]' in infotable_json_text(table)
    assert infotable_json_text(table) == _reference(table)


def test_no_rows_and_no_columns() -> None:
    empty = InfoTable(DataShape(()))
    assert infotable_json_text(empty) == '{"dataShape":{"fieldDefinitions":{}},"rows":[]}'
    assert infotable_json_text(empty) == _reference(empty)
