"""The MQTT 3.1.1 codec with bytes alone: round trips, known encodings, refusals, fuzzing."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.iothub.mqtt import packets
from emulator.iothub.mqtt.packets import (
    ConnAck,
    Connect,
    Disconnect,
    MqttProtocolError,
    Packet,
    PacketReader,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30)
topic_name = text.filter(lambda t: t and "+" not in t and "#" not in t)
topic_filter = st.one_of(
    topic_name,
    st.lists(st.sampled_from(["a", "+", "$iothub", "x y"]), min_size=1, max_size=4).map("/".join),
    st.just("$iothub/methods/POST/#"),
    st.just("#"),
)
packet_id = st.integers(1, 0xFFFF)
small_bytes = st.binary(max_size=200)


@st.composite
def publishes(draw: st.DrawFn) -> Publish:
    qos = draw(st.integers(0, 2))
    return Publish(
        draw(topic_name),
        draw(small_bytes),
        qos,
        draw(packet_id) if qos else None,
        draw(st.booleans()) if qos else False,
        draw(st.booleans()),
    )


@st.composite
def connects(draw: st.DrawFn) -> Connect:
    will = draw(st.booleans())
    username = draw(st.none() | text)
    return Connect(
        client_id=draw(text),
        keepalive=draw(st.integers(0, 0xFFFF)),
        clean_session=draw(st.booleans()),
        username=username,
        password=draw(st.none() | small_bytes) if username is not None else None,
        will_topic=draw(topic_name) if will else None,
        will_message=draw(small_bytes) if will else None,
        will_qos=draw(st.integers(0, 2)) if will else 0,
        will_retain=draw(st.booleans()) if will else False,
        protocol_level=draw(st.sampled_from([3, 4, 5])),
    )


any_packet: st.SearchStrategy[Packet] = st.one_of(
    connects(),
    st.builds(ConnAck, st.integers(1, 5)),
    st.builds(ConnAck, st.just(0), st.booleans()),
    publishes(),
    st.builds(PubAck, packet_id),
    st.builds(
        Subscribe,
        packet_id,
        st.lists(st.tuples(topic_filter, st.integers(0, 2)), min_size=1, max_size=5).map(tuple),
    ),
    st.builds(
        SubAck,
        packet_id,
        st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1, max_size=5).map(tuple),
    ),
    st.builds(Unsubscribe, packet_id, st.lists(topic_filter, min_size=1, max_size=5).map(tuple)),
    st.builds(UnsubAck, packet_id),
    st.just(PingReq()),
    st.just(PingResp()),
    st.just(Disconnect()),
)


@FUZZ
@given(st.lists(any_packet, min_size=1, max_size=5), st.integers(1, 64))
def test_every_packet_type_round_trips_through_any_split(
    sequence: list[Packet], chunk: int
) -> None:
    stream = b"".join(packets.encode(p) for p in sequence)
    reader = PacketReader()
    decoded: list[Packet] = []
    for start in range(0, len(stream), chunk):
        decoded.extend(reader.feed(stream[start : start + chunk]))
    assert decoded == sequence
    assert reader.buffered() == 0


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_packets_or_the_documented_error(data: bytes) -> None:
    reader = PacketReader(max_packet_size=300)
    try:
        out = reader.feed(data)
    except MqttProtocolError:
        with pytest.raises(MqttProtocolError):  # fail fast afterwards
            reader.feed(b"\xc0\x00")
        return
    for packet in out:
        assert packet == PacketReader().feed(packet.encode())[0]


@FUZZ
@given(any_packet, st.data())
def test_mutated_packets_give_packets_or_the_documented_error(
    packet: Packet, data: st.DataObject
) -> None:
    raw = bytearray(packet.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        position = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if action == "flip" and raw:
            raw[position] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "cut":
            del raw[position:]
        else:
            raw.insert(position, data.draw(st.integers(0, 255)))
    with contextlib.suppress(MqttProtocolError):
        PacketReader().feed(bytes(raw))


def test_known_encodings() -> None:
    assert PingReq().encode() == b"\xc0\x00"
    assert Disconnect().encode() == b"\xe0\x00"
    assert ConnAck(0, True).encode() == b"\x20\x02\x01\x00"
    assert PubAck(10).encode() == b"\x40\x02\x00\x0a"
    assert Publish("a/b", b"x", 1, 7).encode() == b"\x32\x08\x00\x03a/b\x00\x07x"
    assert Subscribe(1, (("a/#", 2),)).encode() == b"\x82\x08\x00\x01\x00\x03a/#\x02"
    connect = Connect("dev1", 60, False, "h/dev1/?api-version=1", b"pw").encode()
    assert connect[:2] == bytes((0x10, len(connect) - 2))
    assert connect[2:12] == b"\x00\x04MQTT\x04\xc0\x00\x3c"  # the SDK's flags: user+pass, clean 0


def test_remaining_length_uses_several_bytes() -> None:
    big = Publish("t", b"x" * 20_000)
    raw = big.encode()
    assert raw[1] & 0x80 and raw[2] & 0x80 and not raw[3] & 0x80
    assert PacketReader().feed(raw) == [big]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x30\x02\x00\x00", "empty topic"),  # zero-length topic name
        (b"\x36\x05\x00\x01a\x00\x01", "QoS 3"),
        (b"\x80\x06\x00\x01\x00\x01a\x01", "reserved flags"),  # SUBSCRIBE without 0b0010
        (b"\x82\x02\x00\x01", "without topic filters"),
        (b"\x82\x06\x00\x01\x00\x01a\x04", "reserved bits"),
        (b"\x50\x02\x00\x01", "unsupported packet type 5"),  # PUBREC: QoS 2 flow
        (b"\xc0\x01\x00", "trailing"),
        (b"\xc1\x00", "reserved flags"),
        (b"\x30\xff\xff\xff\xff\x01", "four bytes"),
        (b"\x32\x05\x00\x01a\x00\x00", "outside 1..65535"),  # QoS 1 with packet id 0
        (b"\x30\x04\x00\x02\xc3\x28", "UTF-8"),
        (b"\x30\x03\x00\x01\x00", "U+0000"),
        (b"\x30\x04\x00\x02a#", "wildcard"),
        (b"\x10\x0c\x00\x04MQTT\x04\x01\x00\x3c\x00\x00", "reserved flag"),
        (b"\x10\x0e\x00\x06MQIsdp\x03\x00\x00\x3c\x00\x00", "protocol name"),
        (b"\x10\x0f\x00\x04MQTT\x04\x40\x00\x3c\x00\x00\x00\x01x", "password without user"),
    ],
)
def test_malformed_packets_are_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(MqttProtocolError, match=re.escape(reason)):
        PacketReader().feed(raw)


def test_oversized_packet_is_refused_from_its_length_field() -> None:
    reader = PacketReader(max_packet_size=1024)
    header = b"\x30\x80\x08"  # remaining length 1024 (+3 header bytes > 1024)
    with pytest.raises(MqttProtocolError, match="exceeds"):
        reader.feed(header)
    assert PacketReader(max_packet_size=1027).feed(header) == []


def test_invalid_packets_cannot_be_built() -> None:
    with pytest.raises(MqttProtocolError):
        Publish("a", qos=1)
    with pytest.raises(MqttProtocolError):
        Publish("a/+")
    with pytest.raises(MqttProtocolError):
        Subscribe(1, (("a/#/b", 0),))
    with pytest.raises(MqttProtocolError):
        SubAck(1, (3,))
    with pytest.raises(MqttProtocolError):
        ConnAck(5, session_present=True)
