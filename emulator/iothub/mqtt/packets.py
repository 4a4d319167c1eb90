"""MQTT 3.1.1 packets, sans-I/O: frozen dataclasses, their encoders and an incremental reader.

Follows OASIS MQTT Version 3.1.1 (29 October 2014), section numbers cited below. Only the packet
types IoT Hub's device protocol uses are modelled: CONNECT, CONNACK, PUBLISH (QoS 0/1/2 flags),
PUBACK, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT. The QoS 2 flow
packets (PUBREC, PUBREL, PUBCOMP) are refused as a protocol error: IoT Hub closes a connection that
uses QoS 2 (reference/iothub.md §2.2).

Rules:

- No asyncio, no sockets, no logging here. Bytes in, packets out, and back.
- Every packet validates itself on construction (``__post_init__``), so a packet that exists can
  be encoded, and decoding produces only valid packets.
- The one exception is :class:`MqttProtocolError`, raised for anything malformed, for a packet
  larger than the reader's maximum, and for packet types this codec does not speak. After a
  :class:`PacketReader` raised once, every later ``feed`` raises again (fail fast, as h11 does).
- Both directions are encoded and decoded: the device endpoint reads client packets and writes
  server packets, the simulated fleet does the reverse. Direction checks (a client must not send
  CONNACK) belong to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from emulator.errors import EmulatorError

__all__ = [
    "MAX_PACKET_SIZE",
    "ConnAck",
    "Connect",
    "Disconnect",
    "MqttProtocolError",
    "Packet",
    "PacketReader",
    "PingReq",
    "PingResp",
    "PubAck",
    "Publish",
    "SubAck",
    "Subscribe",
    "UnsubAck",
    "Unsubscribe",
    "encode",
]

#: IoT Hub's maximum MQTT packet size (256 KiB), the reader's default limit.
MAX_PACKET_SIZE = 256 * 1024

_MAX_REMAINING_LENGTH = 268_435_455  # §2.2.3: four length bytes at most
_MAX_STRING = 65_535

# Control packet types, §2.2.1.
_CONNECT = 1
_CONNACK = 2
_PUBLISH = 3
_PUBACK = 4
_SUBSCRIBE = 8
_SUBACK = 9
_UNSUBSCRIBE = 10
_UNSUBACK = 11
_PINGREQ = 12
_PINGRESP = 13
_DISCONNECT = 14


class MqttProtocolError(EmulatorError):
    """Bytes or a packet that break MQTT 3.1.1 (malformed, oversized, or unsupported).

    The text says what was wrong; the right reaction is to close the connection.
    """


# --- validation helpers -------------------------------------------------------------------


def _check_string(value: str, what: str) -> None:
    """§1.5.3: UTF-8, at most 65535 bytes, no U+0000 and no surrogates."""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise MqttProtocolError(f"{what} is not valid UTF-8") from None
    if size > _MAX_STRING:
        raise MqttProtocolError(f"{what} is longer than 65535 bytes")
    if "\x00" in value:
        raise MqttProtocolError(f"{what} contains U+0000")


def _check_packet_id(packet_id: int) -> None:
    if not 1 <= packet_id <= 0xFFFF:
        raise MqttProtocolError(f"packet identifier {packet_id} outside 1..65535")


def _check_topic_name(topic: str) -> None:
    """§4.7.3: at least one character, no wildcards in a topic name."""
    _check_string(topic, "topic name")
    if not topic:
        raise MqttProtocolError("empty topic name")
    if "+" in topic or "#" in topic:
        raise MqttProtocolError(f"wildcard in topic name {topic!r}")


def _check_topic_filter(topic_filter: str) -> None:
    """§4.7.1: '#' only last and alone in its level, '+' alone in its level."""
    _check_string(topic_filter, "topic filter")
    if not topic_filter:
        raise MqttProtocolError("empty topic filter")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise MqttProtocolError(f"misplaced '#' in topic filter {topic_filter!r}")
        if "+" in level and level != "+":
            raise MqttProtocolError(f"misplaced '+' in topic filter {topic_filter!r}")


def _check_qos(qos: int, what: str) -> None:
    if qos not in (0, 1, 2):
        raise MqttProtocolError(f"{what} QoS {qos} is not 0, 1 or 2")


# --- packets ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    """CONNECT (§3.1). ``password`` is bytes (IoT Hub puts a SAS token there)."""

    client_id: str
    keepalive: int = 60
    clean_session: bool = True
    username: str | None = None
    password: bytes | None = None
    will_topic: str | None = None
    will_message: bytes | None = None
    will_qos: int = 0
    will_retain: bool = False
    protocol_name: str = "MQTT"
    protocol_level: int = 4

    def __post_init__(self) -> None:
        _check_string(self.client_id, "client id")
        _check_string(self.protocol_name, "protocol name")
        if not 0 <= self.keepalive <= 0xFFFF:
            raise MqttProtocolError(f"keep-alive {self.keepalive} outside 0..65535")
        if not 0 <= self.protocol_level <= 0xFF:
            raise MqttProtocolError(f"protocol level {self.protocol_level} outside 0..255")
        if self.username is not None:
            _check_string(self.username, "user name")
        if self.password is not None:
            if self.username is None:
                raise MqttProtocolError("password without user name")  # §3.1.2.9
            if len(self.password) > _MAX_STRING:
                raise MqttProtocolError("password longer than 65535 bytes")
        if (self.will_topic is None) != (self.will_message is None):
            raise MqttProtocolError("will topic and will message go together")
        if self.will_topic is None:
            if self.will_qos or self.will_retain:
                raise MqttProtocolError("will QoS or retain without a will")  # §3.1.2.6
        else:
            _check_topic_name(self.will_topic)
            assert self.will_message is not None
            if len(self.will_message) > _MAX_STRING:
                raise MqttProtocolError("will message longer than 65535 bytes")
            if self.will_qos not in (0, 1, 2):
                raise MqttProtocolError(f"will QoS {self.will_qos} is not 0, 1 or 2")

    def encode(self) -> bytes:
        """The packet's bytes."""
        flags = 0
        if self.clean_session:
            flags |= 0x02
        payload = bytearray(_string(self.client_id))
        if self.will_topic is not None and self.will_message is not None:
            flags |= 0x04 | (self.will_qos << 3) | (0x20 if self.will_retain else 0)
            payload += _string(self.will_topic) + _binary(self.will_message)
        if self.username is not None:
            flags |= 0x80
            payload += _string(self.username)
        if self.password is not None:
            flags |= 0x40
            payload += _binary(self.password)
        header = (
            _string(self.protocol_name)
            + bytes((self.protocol_level, flags))
            + self.keepalive.to_bytes(2, "big")
        )
        return _frame(_CONNECT << 4, header + payload)


@dataclass(frozen=True, slots=True)
class ConnAck:
    """CONNACK (§3.2). Return codes: 0 accepted, 1 bad protocol level, 2 identifier rejected,
    3 server unavailable, 4 bad user name or password, 5 not authorized."""

    return_code: int = 0
    session_present: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.return_code <= 0xFF:
            raise MqttProtocolError(f"CONNACK return code {self.return_code} outside 0..255")
        if self.session_present and self.return_code != 0:
            raise MqttProtocolError("session present on a refused connection")  # §3.2.2.2

    def encode(self) -> bytes:
        """The packet's bytes."""
        return bytes((_CONNACK << 4, 2, 1 if self.session_present else 0, self.return_code))


@dataclass(frozen=True, slots=True)
class Publish:
    """PUBLISH (§3.3). ``packet_id`` is required for QoS 1 and 2 and absent for QoS 0."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    packet_id: int | None = None
    dup: bool = False
    retain: bool = False

    def __post_init__(self) -> None:
        _check_topic_name(self.topic)
        _check_qos(self.qos, "PUBLISH")
        if self.qos == 0:
            if self.packet_id is not None:
                raise MqttProtocolError("QoS 0 PUBLISH with a packet identifier")
            if self.dup:
                raise MqttProtocolError("QoS 0 PUBLISH with DUP set")  # §3.3.1.1
        else:
            if self.packet_id is None:
                raise MqttProtocolError(f"QoS {self.qos} PUBLISH without a packet identifier")
            _check_packet_id(self.packet_id)

    def encode(self) -> bytes:
        """The packet's bytes."""
        first = (_PUBLISH << 4) | (self.qos << 1)
        if self.dup:
            first |= 0x08
        if self.retain:
            first |= 0x01
        body = _string(self.topic)
        if self.packet_id is not None:
            body += self.packet_id.to_bytes(2, "big")
        return _frame(first, body + self.payload)


@dataclass(frozen=True, slots=True)
class PubAck:
    """PUBACK (§3.4)."""

    packet_id: int

    def __post_init__(self) -> None:
        _check_packet_id(self.packet_id)

    def encode(self) -> bytes:
        """The packet's bytes."""
        return bytes((_PUBACK << 4, 2)) + self.packet_id.to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE (§3.8): ``(topic filter, requested QoS)`` pairs, at least one."""

    packet_id: int
    topics: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        _check_packet_id(self.packet_id)
        if not self.topics:
            raise MqttProtocolError("SUBSCRIBE without topic filters")  # §3.8.3
        for topic_filter, qos in self.topics:
            _check_topic_filter(topic_filter)
            _check_qos(qos, "requested")

    def encode(self) -> bytes:
        """The packet's bytes."""
        body = bytearray(self.packet_id.to_bytes(2, "big"))
        for topic_filter, qos in self.topics:
            body += _string(topic_filter)
            body.append(qos)
        return _frame((_SUBSCRIBE << 4) | 0x02, bytes(body))


@dataclass(frozen=True, slots=True)
class SubAck:
    """SUBACK (§3.9): one return code per filter, 0/1/2 granted QoS or 0x80 failure."""

    packet_id: int
    return_codes: tuple[int, ...]

    FAILURE: ClassVar[int] = 0x80

    def __post_init__(self) -> None:
        _check_packet_id(self.packet_id)
        if not self.return_codes:
            raise MqttProtocolError("SUBACK without return codes")
        for code in self.return_codes:
            if code not in (0, 1, 2, 0x80):
                raise MqttProtocolError(f"SUBACK return code {code:#x} not allowed")  # §3.9.3

    def encode(self) -> bytes:
        """The packet's bytes."""
        return _frame(_SUBACK << 4, self.packet_id.to_bytes(2, "big") + bytes(self.return_codes))


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """UNSUBSCRIBE (§3.10): topic filters, at least one."""

    packet_id: int
    topics: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_packet_id(self.packet_id)
        if not self.topics:
            raise MqttProtocolError("UNSUBSCRIBE without topic filters")  # §3.10.3
        for topic_filter in self.topics:
            _check_topic_filter(topic_filter)

    def encode(self) -> bytes:
        """The packet's bytes."""
        body = bytearray(self.packet_id.to_bytes(2, "big"))
        for topic_filter in self.topics:
            body += _string(topic_filter)
        return _frame((_UNSUBSCRIBE << 4) | 0x02, bytes(body))


@dataclass(frozen=True, slots=True)
class UnsubAck:
    """UNSUBACK (§3.11)."""

    packet_id: int

    def __post_init__(self) -> None:
        _check_packet_id(self.packet_id)

    def encode(self) -> bytes:
        """The packet's bytes."""
        return bytes((_UNSUBACK << 4, 2)) + self.packet_id.to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class PingReq:
    """PINGREQ (§3.12)."""

    def encode(self) -> bytes:
        """The packet's bytes."""
        return bytes((_PINGREQ << 4, 0))


@dataclass(frozen=True, slots=True)
class PingResp:
    """PINGRESP (§3.13)."""

    def encode(self) -> bytes:
        """The packet's bytes."""
        return bytes((_PINGRESP << 4, 0))


@dataclass(frozen=True, slots=True)
class Disconnect:
    """DISCONNECT (§3.14)."""

    def encode(self) -> bytes:
        """The packet's bytes."""
        return bytes((_DISCONNECT << 4, 0))


Packet = (
    Connect
    | ConnAck
    | Publish
    | PubAck
    | Subscribe
    | SubAck
    | Unsubscribe
    | UnsubAck
    | PingReq
    | PingResp
    | Disconnect
)


def encode(packet: Packet) -> bytes:
    """The bytes of any packet (same as ``packet.encode()``)."""
    return packet.encode()


# --- framing ------------------------------------------------------------------------------


def _string(value: str) -> bytes:
    data = value.encode("utf-8")
    return len(data).to_bytes(2, "big") + data


def _binary(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def _frame(first_byte: int, body: bytes | bytearray) -> bytes:
    length = len(body)
    if length > _MAX_REMAINING_LENGTH:
        raise MqttProtocolError("packet longer than MQTT's 256 MB limit")
    header = bytearray((first_byte,))
    while True:  # §2.2.3 variable-length encoding
        digit = length % 128
        length //= 128
        header.append(digit | 0x80 if length else digit)
        if not length:
            break
    return bytes(header) + body


class _Cursor:
    """Reads the fields of one packet body; running past its end is a protocol error."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def byte(self) -> int:
        if self._pos >= len(self._data):
            raise MqttProtocolError("packet ends inside a field")
        value = self._data[self._pos]
        self._pos += 1
        return value

    def uint16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def take(self, count: int) -> bytes:
        end = self._pos + count
        if end > len(self._data):
            raise MqttProtocolError("packet ends inside a field")
        value = self._data[self._pos : end]
        self._pos = end
        return value

    def rest(self) -> bytes:
        value = self._data[self._pos :]
        self._pos = len(self._data)
        return value

    def binary(self) -> bytes:
        return self.take(self.uint16())

    def string(self, what: str) -> str:
        raw = self.binary()
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MqttProtocolError(f"{what} is not valid UTF-8") from None
        if "\x00" in value:
            raise MqttProtocolError(f"{what} contains U+0000")
        return value

    def end(self, what: str) -> None:
        if self._pos != len(self._data):
            raise MqttProtocolError(f"{what} has trailing bytes")


def _decode(first: int, body: bytes) -> Packet:
    kind, flags = first >> 4, first & 0x0F
    cur = _Cursor(body)
    if kind == _PUBLISH:
        qos = (flags >> 1) & 0x03
        if qos == 3:
            raise MqttProtocolError("PUBLISH with QoS 3")  # §3.3.1.2
        topic = cur.string("topic name")
        packet_id = cur.uint16() if qos else None
        return Publish(topic, cur.rest(), qos, packet_id, bool(flags & 0x08), bool(flags & 0x01))
    expected_flags = 0x02 if kind in (_SUBSCRIBE, _UNSUBSCRIBE) else 0
    if flags != expected_flags:
        raise MqttProtocolError(f"packet type {kind} with reserved flags {flags:#x}")  # §2.2.2
    if kind == _CONNECT:
        return _decode_connect(cur)
    if kind == _CONNACK:
        ack_flags = cur.byte()
        if ack_flags & 0xFE:
            raise MqttProtocolError("CONNACK reserved flag bits set")
        code = cur.byte()
        cur.end("CONNACK")
        return ConnAck(code, bool(ack_flags))
    if kind in (_PUBACK, _UNSUBACK):
        packet_id = cur.uint16()
        cur.end("acknowledgement")
        return PubAck(packet_id) if kind == _PUBACK else UnsubAck(packet_id)
    if kind == _SUBSCRIBE:
        packet_id = cur.uint16()
        topics: list[tuple[str, int]] = []
        while cur.remaining():
            topic_filter = cur.string("topic filter")
            requested = cur.byte()
            if requested & 0xFC:
                raise MqttProtocolError("SUBSCRIBE requested-QoS reserved bits set")  # §3.8.3.1
            topics.append((topic_filter, requested))
        return Subscribe(packet_id, tuple(topics))
    if kind == _SUBACK:
        packet_id = cur.uint16()
        return SubAck(packet_id, tuple(cur.rest()))
    if kind == _UNSUBSCRIBE:
        packet_id = cur.uint16()
        filters: list[str] = []
        while cur.remaining():
            filters.append(cur.string("topic filter"))
        return Unsubscribe(packet_id, tuple(filters))
    if kind in (_PINGREQ, _PINGRESP, _DISCONNECT):
        cur.end("packet")
        if kind == _PINGREQ:
            return PingReq()
        return PingResp() if kind == _PINGRESP else Disconnect()
    raise MqttProtocolError(f"unsupported packet type {kind}")


def _decode_connect(cur: _Cursor) -> Connect:
    protocol_name = cur.string("protocol name")
    if protocol_name != "MQTT":
        # §3.1.2.1: the server MAY disconnect; 3.1's "MQIsdp" is not spoken either.
        raise MqttProtocolError(f"protocol name {protocol_name!r} is not 'MQTT'")
    level = cur.byte()
    flags = cur.byte()
    if flags & 0x01:
        raise MqttProtocolError("CONNECT reserved flag set")  # §3.1.2.3
    keepalive = cur.uint16()
    client_id = cur.string("client id")
    will_topic: str | None = None
    will_message: bytes | None = None
    if flags & 0x04:
        will_topic = cur.string("will topic")
        will_message = cur.binary()
    username = cur.string("user name") if flags & 0x80 else None
    password = cur.binary() if flags & 0x40 else None
    cur.end("CONNECT")
    return Connect(
        client_id=client_id,
        keepalive=keepalive,
        clean_session=bool(flags & 0x02),
        username=username,
        password=password,
        will_topic=will_topic,
        will_message=will_message,
        will_qos=(flags >> 3) & 0x03,
        will_retain=bool(flags & 0x20),
        protocol_name=protocol_name,
        protocol_level=level,
    )


class PacketReader:
    """Turns a byte stream into packets, incrementally.

    Feed it whatever the transport delivered; it returns every packet completed so far and keeps
    the rest. Work per call is linear in the bytes fed.

    Args:
        max_packet_size: the largest whole packet (fixed header included) accepted; a larger
            one is refused as soon as its length field is read, before its body arrives.
    """

    __slots__ = ("_buffer", "_error", "_max")

    def __init__(self, max_packet_size: int = MAX_PACKET_SIZE) -> None:
        self._buffer = bytearray()
        self._max = max_packet_size
        self._error: MqttProtocolError | None = None

    def feed(self, data: bytes) -> list[Packet]:
        """Add bytes and return the packets they complete, in order.

        Raises:
            MqttProtocolError: the stream is malformed; every later call raises it again.
        """
        if self._error is not None:
            raise self._error
        self._buffer += data
        packets: list[Packet] = []
        try:
            while True:
                packet = self._next()
                if packet is None:
                    return packets
                packets.append(packet)
        except MqttProtocolError as exc:
            self._error = exc
            self._buffer.clear()
            raise

    def buffered(self) -> int:
        """How many bytes wait for the rest of their packet."""
        return len(self._buffer)

    def _next(self) -> Packet | None:
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        length = 0
        multiplier = 1
        index = 1
        while True:
            if index >= len(buffer):
                return None
            digit = buffer[index]
            length += (digit & 0x7F) * multiplier
            index += 1
            if not digit & 0x80:
                break
            if index == 5:
                raise MqttProtocolError("remaining length longer than four bytes")  # §2.2.3
            multiplier *= 128
        total = index + length
        if total > self._max:
            raise MqttProtocolError(f"packet of {total} bytes exceeds the {self._max} limit")
        if len(buffer) < total:
            return None
        first = buffer[0]
        body = bytes(buffer[index:total])
        del buffer[:total]
        return _decode(first, body)
