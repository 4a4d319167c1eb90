"""Golden byte vectors from the reference (§3-§6, §11, §12), kept in golden_vectors.json."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.alwayson import (
    Auth,
    BaseType,
    Bind,
    Characteristic,
    DataShape,
    EntityType,
    FieldDefinition,
    InfoTable,
    Location,
    MessageAssembler,
    Method,
    Request,
    Response,
    Status,
    Variant,
    decode_message,
    decode_value,
    encode_message,
    encode_value,
)

VECTORS = json.loads((Path(__file__).parent / "golden_vectors.json").read_text())
APP_KEY = "0ec9a6b0-4f73-47aa-af2b-999f8b61a1e7"


def _hex(entry: dict[str, Any]) -> bytes:
    if "repeat" in entry:
        count: int = entry["count"]
        return bytes.fromhex(entry["hex_prefix"]) + bytes.fromhex(entry["repeat"]) * count
    return bytes.fromhex(entry["hex"])


def _single(name: str, base_type: BaseType, value: Any) -> InfoTable:
    return InfoTable(DataShape.of(FieldDefinition(name, base_type)), [{name: value}])


EXPECTED_MESSAGES: dict[str, Any] = {
    "auth_appkey_abc": Auth(1, (("appKey", "abc"),)),
    "auth_success": Response(Status.SUCCESS, 1, 0, 0x2A),
    "bind_gw1": Bind(2, 0x2A, ("Gw1",)),
    "bind_gw1_gateway": Bind(2, 0x2A, ("Gw1",), "Gw1", "SDKGateway"),
    "unbind_gw1": Bind(2, 0x2A, ("Gw1",), unbind=True),
    "service_request_echo": Request(
        Method.POST,
        0x10,
        5,
        0x2A,
        EntityType.THING,
        "Gw1",
        Characteristic.SERVICES,
        "Echo",
        (),
        _single("msg", BaseType.STRING, "hi"),
    ),
    "response_integer_42": Response(
        Status.SUCCESS, 0x10, 5, 0x2A, None, _single("result", BaseType.INTEGER, 42)
    ),
    "property_read_request": Request(
        Method.GET, 0x12, 5, 0x2A, EntityType.THING, "Gw1", Characteristic.PROPERTIES, "Temp"
    ),
    "property_read_reply": Response(
        Status.SUCCESS, 0x12, 5, 0x2A, None, _single("Temp", BaseType.NUMBER, 21.5)
    ),
    "error_not_found_reason": Response(Status.NOT_FOUND, 0x11, 5, 0x2A, "Not found"),
    "observed_auth_id2": Auth(2, (("appKey", APP_KEY),)),
    "observed_auth_reply": Response(Status.SUCCESS, 2, 0, 0x1234),
    "observed_not_found": Response(Status.NOT_FOUND, 7, 5, 0x1234),
    "quirk_trailing_nothing_cells": Response(
        Status.SUCCESS, 0x10, 5, 0x2A, None, _single("result", BaseType.INTEGER, None)
    ),
    "quirk_reason_trailing_bytes": Response(
        Status.BAD_REQUEST, 0x10, 5, 0x2A, None, _single("reason", BaseType.STRING, "boom")
    ),
    "params_nothing_then_junk": Request(
        Method.POST,
        0x13,
        5,
        0x2A,
        EntityType.THING,
        "Gw1",
        Characteristic.SERVICES,
        "NotifyPropertyUpdate",
    ),
}

EXPECTED_VALUES: dict[str, tuple[BaseType, Any]] = {
    "nothing": (BaseType.NOTHING, None),
    "string_hi": (BaseType.STRING, "hi"),
    "string_empty": (BaseType.STRING, ""),
    "number_21_5": (BaseType.NUMBER, 21.5),
    "boolean_true": (BaseType.BOOLEAN, True),
    "boolean_false": (BaseType.BOOLEAN, False),
    "datetime_2021": (
        BaseType.DATETIME,
        datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=0x177FF029C00),
    ),
    "datetime_before_epoch": (BaseType.DATETIME, datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)),
    "timespan_90s": (BaseType.TIMESPAN, 90_000),
    "infotable_empty": (BaseType.INFOTABLE, InfoTable(DataShape(()), [])),
    "location": (BaseType.LOCATION, Location(2.0, 1.0, 3.0)),
    "xml": (BaseType.XML, "<a/>"),
    "json_object": (BaseType.JSON, {"a": 1}),
    "query": (BaseType.QUERY, "{}"),
    "image": (BaseType.IMAGE, b"\x01\x02\x03"),
    "hyperlink": (BaseType.HYPERLINK, "x"),
    "guid": (BaseType.GUID, "g"),
    "blob_empty": (BaseType.BLOB, b""),
    "integer_42": (BaseType.INTEGER, 42),
    "integer_minus_1": (BaseType.INTEGER, -1),
    "long_2_pow_40": (BaseType.LONG, 2**40),
    "variant_integer": (BaseType.VARIANT, Variant(BaseType.INTEGER, 42)),
    "variant_nothing": (BaseType.VARIANT, Variant(BaseType.NOTHING, None)),
    "thingname": (BaseType.THINGNAME, "Gw1"),
    "schedule": (BaseType.SCHEDULE, "*"),
    "string_200": (BaseType.STRING, "a" * 200),
}


def test_every_vector_has_an_expectation() -> None:
    assert {v["name"] for v in VECTORS["messages"]} == set(EXPECTED_MESSAGES)
    assert {v["name"] for v in VECTORS["values"]} == set(EXPECTED_VALUES)


@pytest.mark.parametrize("entry", VECTORS["messages"], ids=lambda e: e["name"])
def test_message_vector_decodes(entry: dict[str, Any]) -> None:
    assert decode_message(_hex(entry)) == EXPECTED_MESSAGES[entry["name"]]
    # The assembler reads the same bytes the same way.
    assert MessageAssembler().feed(_hex(entry), 0.0) == EXPECTED_MESSAGES[entry["name"]]


@pytest.mark.parametrize(
    "entry", [e for e in VECTORS["messages"] if e["exact"]], ids=lambda e: e["name"]
)
def test_message_vector_encodes_byte_for_byte(entry: dict[str, Any]) -> None:
    assert encode_message(EXPECTED_MESSAGES[entry["name"]]) == [_hex(entry)]


def test_worked_example_lengths() -> None:
    lengths = {e["name"]: len(_hex(e)) for e in VECTORS["messages"]}
    assert lengths["auth_appkey_abc"] == 27  # §11.1
    assert lengths["auth_success"] == 17  # §11.2
    assert lengths["bind_gw1"] == 22  # §11.3
    assert lengths["bind_gw1_gateway"] == 37  # §11.3
    assert lengths["service_request_echo"] == 46  # §11.4
    assert lengths["response_integer_42"] == 39  # §11.5
    assert lengths["property_read_request"] == 28  # §11.6
    assert lengths["property_read_reply"] == 41  # §11.6


@pytest.mark.parametrize("entry", VECTORS["values"], ids=lambda e: e["name"])
def test_value_vector(entry: dict[str, Any]) -> None:
    base_type, value = EXPECTED_VALUES[entry["name"]]
    assert encode_value(base_type, value) == _hex(entry)
    assert decode_value(_hex(entry)) == (base_type, value)


def _string_response(length: int) -> Response:
    return Response(
        Status.SUCCESS, 9, 5, 0x2A, None, _single("result", BaseType.STRING, "x" * length)
    )


def test_multipart_headers_of_section_6_3_example() -> None:
    # A 20,000-byte response body (24 bytes of framing + a 19,976-byte string).
    chunks = encode_message(_string_response(19_976))
    assert [len(c) - 21 for c in chunks] == [8171, 8171, 3658]
    for k, chunk in enumerate(chunks, start=1):
        assert chunk[:15] == bytes.fromhex("01 40 00 00 00 09 00 00 00 05 00 00 00 2A 01")
        assert chunk[15:21] == bytes.fromhex(f"00 0{k} 00 03 20 00")


def test_observed_200k_string_result_is_25_chunks() -> None:
    # §12: a 200,000-character STRING result came as 25 chunks, header 00 01 | 00 19 | 20 00.
    chunks = encode_message(_string_response(200_000))
    assert len(chunks) == 25
    assert chunks[0][15:21] == bytes.fromhex("00 01 00 19 20 00")
    assert all(len(c) == 8192 for c in chunks[:-1])
    assembler = MessageAssembler()
    results = [assembler.feed(c, 0.0) for c in chunks]
    assert results[:-1] == [None] * 24
    assert results[-1] == _string_response(200_000)


def test_request_chunks_carry_the_entity_prefix() -> None:
    # §6.2, §12: every request chunk is header, 6 chunk bytes, entity type and name, then body.
    big = Request(
        Method.POST, 0x20, 5, 0x2A, EntityType.THING, "Gw1", Characteristic.SERVICES, "Put",
        (), _single("data", BaseType.STRING, "y" * 165_000),
    )  # fmt: skip
    chunks = encode_message(big)
    assert len(chunks) == 21
    for k, chunk in enumerate(chunks, start=1):
        assert chunk[0:2] == b"\x01\x03"
        assert chunk[14] == 1
        assert chunk[15:21] == bytes((0, k, 0, 21, 0x20, 0x00))
        assert chunk[21:26] == bytes.fromhex("0A 03 47 77 31")
    assert all(len(c) == 8192 for c in chunks[:-1])
    assembler = MessageAssembler()
    assert [assembler.feed(c, 0.0) for c in chunks][-1] == big


def test_c_sdk_style_first_request_chunk_is_accepted() -> None:
    # §12.1: the C SDK's first request chunk is 8192 - 2 - len(name) bytes; later chunks insert
    # the prefix. Build that form by hand and reassemble it.
    big = Request(
        Method.POST, 0x21, 5, 0x2A, EntityType.THING, "Gw1", Characteristic.SERVICES, "Put",
        (), _single("data", BaseType.STRING, "z" * 20_000),
    )  # fmt: skip
    body = encode_message(big, chunk_size=65_535)[0][15:]
    prefix = body[:5]
    effective = 8192 - 21 - 5
    slices = [body[i : i + effective] for i in range(0, len(body), effective)]
    head = bytes.fromhex("01 03 00 00 00 21 00 00 00 05 00 00 00 2A 01")
    chunks = [
        head + bytes((0, k, 0, len(slices), 0x20, 0)) + (b"" if k == 1 else prefix) + part
        for k, part in enumerate(slices, start=1)
    ]
    assert len(chunks[0]) == 8187
    assembler = MessageAssembler()
    assert [assembler.feed(c, 0.0) for c in chunks][-1] == big
