"""Data model, coerce_value, metadata JSON and the public API list."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

import agent.alwayson as alwayson
from agent.alwayson import (
    BaseType,
    DataShape,
    FieldDefinition,
    InfoTable,
    Location,
    ProtocolError,
    Request,
    ServiceMetadata,
    UsageError,
    ValueTypeError,
    Variant,
    coerce_value,
    decode_infotable,
    encode_infotable,
    encode_message,
    metadata_json,
    parse_metadata_json,
)
from agent.alwayson.messages import Characteristic, EntityType, Method


def test_all_is_honest() -> None:
    public = {n for n in dir(alwayson) if not n.startswith("_")}
    modules = {
        "assembler", "basetypes", "connection", "errors", "infotable", "messagecodec", "messages",
        "metadata", "push", "rowcodec", "shapecache", "unconfirmed", "valuecodec", "values",
        "annotations",
    }  # fmt: skip
    assert set(alwayson.__all__) == public - modules
    assert len(alwayson.__all__) == len(set(alwayson.__all__))
    for name in alwayson.__all__:
        assert getattr(alwayson, name) is not None


def test_base_type_names_and_bytes() -> None:
    assert BaseType.NOTHING.wire_byte == 0xFF
    assert BaseType.INTEGER.type_name == "INTEGER"
    assert BaseType.from_name("infotable") is BaseType.INFOTABLE
    assert BaseType.from_wire_byte(0x17) is BaseType.LONG
    assert BaseType.DASHBOARDNAME.value == 120
    with pytest.raises(UsageError):
        BaseType.from_name("THINGCODE")


@pytest.mark.parametrize(
    ("base_type", "value", "expected"),
    [
        (BaseType.NUMBER, 4, 4.0),
        (BaseType.INTEGER, 4.0, 4),
        (BaseType.LONG, 2**40, 2**40),
        (BaseType.DATETIME, 0, datetime(1970, 1, 1, tzinfo=UTC)),
        (BaseType.DATETIME, "2024-01-02T03:04:05.678Z", datetime(2024, 1, 2, 3, 4, 5, 678000, UTC)),
        (
            BaseType.DATETIME,
            datetime(2024, 1, 1, 1, 0, 0, 123999, tzinfo=timezone(timedelta(hours=1))),
            datetime(2024, 1, 1, 0, 0, 0, 123000, tzinfo=UTC),
        ),
        (BaseType.TIMESPAN, timedelta(seconds=2), 2000),
        (BaseType.LOCATION, {"longitude": 1, "latitude": 2}, Location(1.0, 2.0, 0.0)),
        (BaseType.BLOB, "AQID", b"\x01\x02\x03"),
        (BaseType.VARIANT, 5, Variant(BaseType.INTEGER, 5)),
        (BaseType.JSON, {"a": [1, 2]}, {"a": [1, 2]}),
        (BaseType.STRING, None, None),
    ],
)
def test_coerce_value_accepts(base_type: BaseType, value: object, expected: object) -> None:
    assert coerce_value(base_type, value) == expected


@pytest.mark.parametrize(
    ("base_type", "value"),
    [
        (BaseType.NUMBER, True),
        (BaseType.NUMBER, "1"),
        (BaseType.INTEGER, 2**31),
        (BaseType.INTEGER, 1.5),
        (BaseType.BOOLEAN, 1),
        (BaseType.STRING, "a\x00b"),
        (BaseType.STRING, b"x"),
        (BaseType.DATETIME, datetime(2024, 1, 1)),
        (BaseType.JSON, float("nan")),
        (BaseType.NOTHING, 1),
        (BaseType.INFOTABLE, {}),
    ],
)
def test_coerce_value_refuses(base_type: BaseType, value: object) -> None:
    with pytest.raises(ValueTypeError) as info:
        coerce_value(base_type, value)
    assert base_type.type_name in str(info.value)


def test_encoding_refuses_misuse_with_precise_errors() -> None:
    shape = DataShape.of(
        FieldDefinition("n", BaseType.INTEGER), FieldDefinition("s", BaseType.STRING)
    )
    with pytest.raises(ValueTypeError, match="row 1, field 'n'"):
        encode_infotable(InfoTable(shape, [{"n": 1}, {"n": "x"}]))
    with pytest.raises(UsageError, match="not in the DataShape"):
        encode_infotable(InfoTable(shape, [{"n": 1, "typo": 2}]))
    with pytest.raises(UsageError, match="NUL"):
        encode_infotable(InfoTable(shape, [{"s": "a\x00"}]))
    long_name = "T" * 128
    req = Request(Method.GET, 1, 0, 1, EntityType.THING, long_name, Characteristic.PROPERTIES, "p")
    with pytest.raises(UsageError, match="128 bytes"):
        encode_message(req)
    with pytest.raises(UsageError):
        DataShape.of(FieldDefinition("a", BaseType.STRING), FieldDefinition("a", BaseType.NUMBER))


def test_aspects_and_primary_key() -> None:
    f = FieldDefinition("id", BaseType.STRING, "key", {"is_primary_key": True, "n": 3})
    assert f.is_primary_key
    assert dict(f.aspects) == {"isPrimaryKey": True, "n": 3}
    table = InfoTable(DataShape.of(f), [{"id": "a"}])
    assert decode_infotable(encode_infotable(table)) == table


def test_single_and_first_row() -> None:
    table = InfoTable.single("result", BaseType.NUMBER, 3)
    assert table.first_row() == {"result": 3.0}
    assert InfoTable(table.shape, []).first_row() == {}
    shape = DataShape.of(
        FieldDefinition("a", BaseType.STRING), FieldDefinition("b", BaseType.NUMBER)
    )
    assert InfoTable(shape, [{"a": "x"}]).first_row() == {"a": "x", "b": None}
    assert (
        shape.names == ("a", "b") and "a" in shape and shape.field("b").base_type is BaseType.NUMBER
    )


def test_unknown_cell_type_byte_is_a_protocol_error() -> None:
    data = bytearray(encode_infotable(InfoTable.single("x", BaseType.INTEGER, 1)))
    data[data.index(0x16, 5)] = 0x42  # the cell's type byte
    with pytest.raises(ProtocolError):
        decode_infotable(bytes(data))


def _services() -> list[ServiceMetadata]:
    inputs = DataShape.of(
        FieldDefinition("deviceId", BaseType.STRING, "the device"),
        FieldDefinition("timeout", BaseType.INTEGER),
        name="RebootInputs",
    )
    result_shape = DataShape.of(
        FieldDefinition("jobId", BaseType.STRING), FieldDefinition("status", BaseType.STRING),
        name="JobStatus",
    )  # fmt: skip
    return [
        ServiceMetadata("Reboot", "reboot a device", inputs, BaseType.INFOTABLE, result_shape),
        ServiceMetadata("Ping", "", DataShape(()), BaseType.NUMBER, None),
    ]


def test_metadata_json_shape() -> None:
    doc = metadata_json("Gw1", _services())
    assert set(doc) == {
        "name", "description", "isSystemObject", "propertyDefinitions", "serviceDefinitions",
        "eventDefinitions",
    }  # fmt: skip
    reboot = doc["serviceDefinitions"]["Reboot"]
    assert reboot["Inputs"]["name"] == "RebootInputs"
    assert reboot["Inputs"]["fieldDefinitions"]["timeout"] == {
        "name": "timeout", "description": "", "baseType": "INTEGER", "aspects": {},
    }  # fmt: skip
    assert reboot["Outputs"] == {
        "baseType": "INFOTABLE",
        "aspects": {"dataShape": "JobStatus"},
        "fieldDefinitions": {
            "jobId": {"name": "jobId", "description": "", "baseType": "STRING", "aspects": {}},
            "status": {"name": "status", "description": "", "baseType": "STRING", "aspects": {}},
        },
        "name": "result",
    }
    ping = doc["serviceDefinitions"]["Ping"]
    assert ping["Inputs"] == {}
    assert ping["Outputs"] == {"baseType": "NUMBER", "fieldDefinitions": {}, "name": "result"}
    json.dumps(doc, separators=(",", ":"))


def test_metadata_round_trip_and_ems_variant() -> None:
    parsed = parse_metadata_json(json.dumps(metadata_json("Gw1", _services())))
    assert parsed.name == "Gw1"
    reboot = parsed.service("Reboot")
    assert reboot.inputs.names == ("deviceId", "timeout")
    assert reboot.result_type is BaseType.INFOTABLE
    assert reboot.result_shape is not None and reboot.result_shape.name == "JobStatus"
    assert parsed.service("Ping").result_type is BaseType.NUMBER
    ems = {
        "type": "Things", "implementedShapes": {}, "extra": [1],
        "propertyDefinitions": {
            "Temp": {"name": "Temp", "baseType": "NUMBER", "sourceType": "Unknown", "ordinal": 0},
            "Code": {"name": "Code", "baseType": "THINGCODE"},
        },
        "serviceDefinitions": {
            "Add": {
                "name": "Add", "category": "x",
                "Inputs": {"fieldDefinitions": {
                    "b": {"name": "b", "baseType": "NUMBER", "ordinal": 2},
                    "a": {"name": "a", "baseType": "NUMBER", "ordinal": 1},
                }},
                "Outputs": {"baseType": "NUMBER", "name": "result", "fieldDefinitions": {
                    "result": {"name": "result", "baseType": "NUMBER"}}},
            },
        },
    }  # fmt: skip
    thing = parse_metadata_json(ems)
    assert thing.properties["Temp"].base_type is BaseType.NUMBER
    assert thing.skipped == ("Code",)
    assert thing.service("Add").inputs.names == ("a", "b")
    assert thing.service("Add").result_shape is None
    with pytest.raises(ProtocolError):
        parse_metadata_json({"propertyDefinitions": {"x": {"name": "x"}}})
    with pytest.raises(ProtocolError):
        parse_metadata_json("not json")


def test_metadata_travels_as_a_json_result_cell() -> None:
    doc = metadata_json("Gw1", _services())
    table = InfoTable.single("result", BaseType.JSON, doc)
    assert decode_infotable(encode_infotable(table)).first_row()["result"] == doc
