"""Property pushes, events and subscriptions, bytes only: the edge's connection builds them, the
server's connection reads them back (reference §7.2, §7.3, §7.6)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.alwayson import (
    AuthReceived,
    BaseType,
    Characteristic,
    Connection,
    DataShape,
    EventMetadata,
    FieldDefinition,
    InfoTable,
    PropertySubscription,
    PropertyValue,
    ProtocolError,
    RequestReceived,
    Side,
    metadata_json,
    parse_metadata_json,
    read_property_values,
    read_subscriptions,
    subscriptions_from_aspects,
    subscriptions_table,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def _deliver(parts: list[bytes]) -> RequestReceived:
    server = Connection(Side.SERVER)
    _, auth_parts = Connection(Side.EDGE).send_auth((("appKey", "k"),))
    auth = server.receive_data(auth_parts[0], 0.0)
    assert isinstance(auth, AuthReceived)
    server.accept_auth(auth.auth)
    event = None
    for part in parts:
        event = server.receive_data(part, 0.0)
    assert isinstance(event, RequestReceived)
    return event


def test_property_values_round_trip() -> None:
    edge = Connection(Side.EDGE)
    values = [
        PropertyValue("activeJobCount", BaseType.INTEGER, 3, NOW),
        PropertyValue("lastJob", BaseType.JSON, {"jobId": "j1"}, NOW, "BAD"),
    ]
    _, parts = edge.send_property_values("AzureIotHub", values)
    request = _deliver(parts).request
    assert request.target == "UpdateSubscribedPropertyValues"
    assert request.characteristic is Characteristic.SERVICES
    assert request.params is not None and request.params.shape.names == ("values",)
    assert read_property_values(request.params) == values


def test_event_round_trip() -> None:
    shape = DataShape.of(FieldDefinition("jobId", BaseType.STRING), name="S")
    _, parts = Connection(Side.EDGE).send_event(
        "AzureIotHub", "Ended", InfoTable(shape, [{"jobId": "j1"}])
    )
    request = _deliver(parts).request
    assert (request.characteristic, request.target) == (Characteristic.EVENTS, "Ended")
    assert request.params is not None and request.params.rows == [{"jobId": "j1"}]


def test_subscriptions_request_and_answer() -> None:
    _, parts = Connection(Side.EDGE).send_subscriptions_request("T")
    request = _deliver(parts).request
    assert request.target == "GetPropertySubscriptions"
    assert request.params is not None
    assert request.params.rows == [{"options": {"hasDeadband": True}}]
    declared = {"a": {"pushType": "VALUE"}, "b": {"pushType": "NEVER"}, "c": {}}
    table = subscriptions_table(subscriptions_from_aspects(declared))
    assert read_subscriptions(table) == {
        "a": PropertySubscription("a", "VALUE"),
        "c": PropertySubscription("c", "VALUE"),
    }


def test_malformed_values_are_one_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        read_property_values(None)
    bad = InfoTable(DataShape.of(FieldDefinition("values", BaseType.STRING)), [{"values": "x"}])
    with pytest.raises(ProtocolError):
        read_property_values(bad)


def test_event_definitions_in_metadata_round_trip() -> None:
    shape = DataShape.of(FieldDefinition("jobId", BaseType.STRING), name="AzureIotDeviceJob")
    doc = metadata_json("T", [], events=[EventMetadata("Changed", shape, "d")])
    data = doc["eventDefinitions"]["Changed"]["EventData"]
    assert data["name"] == "AzureIotDeviceJob"
    assert data["aspects"] == {"dataShape": "AzureIotDeviceJob"}
    parsed = parse_metadata_json(doc)
    assert parsed.events["Changed"].data_shape.names == ("jobId",)
    assert parsed.events["Changed"].data_shape.name == "AzureIotDeviceJob"
