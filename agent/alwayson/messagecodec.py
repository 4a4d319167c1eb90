"""Encoding and decoding of whole AlwaysOn messages (reference §2, §5, §6).

``encode_message`` turns a message into the websocket payloads to send: one plain message, or the
chunks of a multipart message when ``body + 21 > chunk_size`` (§6.1). Our chunking is the clean
form of §6.2: every request chunk carries the entity prefix and then the next slice of the body
after it, every chunk but the last is exactly ``chunk_size`` bytes, there is never an empty last
chunk, and no body is ever split over plain messages (§12.1 describes the C SDK doing so).

``decode_message`` reads one complete plain message by structure, ignoring bytes after the body
(§5.2, §12.1). Multipart chunks and split bodies go through
:class:`~agent.alwayson.assembler.MessageAssembler`.
"""

from __future__ import annotations

import struct
from typing import Any

from agent.alwayson.errors import (
    AlwaysOnError,
    IncompleteMessage,
    MessageTooLarge,
    ProtocolError,
    UsageError,
)
from agent.alwayson.messages import (
    REQUEST_METHODS,
    Auth,
    Bind,
    Characteristic,
    EntityType,
    Message,
    Method,
    Request,
    Response,
    Status,
)
from agent.alwayson.valuecodec import (
    U16,
    read_infotable,
    read_string,
    write_infotable,
    write_name,
    write_string,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "HEADER",
    "HEADER_SIZE",
    "MULTIPART_HEADER",
    "MULTIPART_OVERHEAD",
    "decode_body",
    "decode_message",
    "encode_body",
    "encode_message",
]

HEADER = struct.Struct(">BBIIIB")
"""version, code, requestId, endpointId, sessionId, multipart marker (§2.1)."""
HEADER_SIZE = HEADER.size  # 15
MULTIPART_HEADER = struct.Struct(">HHH")
"""chunk id (1-based), chunk count, sender's chunk size (§6.2)."""
MULTIPART_OVERHEAD = HEADER_SIZE + MULTIPART_HEADER.size  # 21

DEFAULT_CHUNK_SIZE = 8192
DEFAULT_MAX_MESSAGE_SIZE = 1_048_576

_VERSION = 1
_RESPONSE_MIN = 0x40
_REQUEST_CODES = frozenset(int(m) for m in REQUEST_METHODS)
_BIND_CODES = frozenset({int(Method.BIND), int(Method.UNBIND)})
_STATUSES = {int(s): s for s in Status}
_ENTITY_TYPES = {int(e): e for e in EntityType}
_CHARACTERISTICS = {int(c): c for c in Characteristic}
_METHODS = {int(m): m for m in Method}
_INFOTABLE_BYTE = 0x05
_NOTHING_BYTE = 0xFF


# ------------------------------------------------------------------------------------- encoding


def _header_fields(msg: Message) -> tuple[int, int, int, int]:
    if isinstance(msg, Request):
        return int(msg.method), msg.request_id, msg.endpoint_id, msg.session_id
    if isinstance(msg, Response):
        return int(msg.status), msg.request_id, msg.endpoint_id, msg.session_id
    if isinstance(msg, Auth):
        return int(Method.AUTH), msg.request_id, msg.endpoint_id, msg.session_id
    if isinstance(msg, Bind):
        return int(msg.method), msg.request_id, msg.endpoint_id, msg.session_id
    raise UsageError(f"not an AlwaysOn message: {type(msg).__name__}")


def _entity_prefix(msg: Request) -> bytearray:
    out = bytearray((int(msg.entity_type),))
    write_name(out, msg.entity_name, "entity name")
    return out


def encode_body(msg: Message) -> tuple[bytes, int]:
    """The body of ``msg`` (§5) and the length of its entity prefix (0 unless a request).

    Raises:
        UsageError: a name of 128 bytes or more, a string with NUL, too many headers.
        ValueTypeError: a params/content cell does not fit its column.
    """
    if isinstance(msg, Request):
        out = _entity_prefix(msg)
        prefix_len = len(out)
        out.append(int(msg.characteristic))
        write_name(out, msg.target, "target name")
        if len(msg.headers) > 255:
            raise UsageError("at most 255 request headers fit the header count byte")
        out.append(len(msg.headers))
        for name, value in msg.headers:
            write_string(out, name, "header name")
            write_string(out, value, "header value")
        if msg.params is None:
            out.append(_NOTHING_BYTE)
        else:
            out.append(_INFOTABLE_BYTE)
            write_infotable(out, msg.params)
        return bytes(out), prefix_len
    out = bytearray()
    if isinstance(msg, Response):
        if msg.reason is None:
            out.append(0)
        else:
            out.append(1)
            write_string(out, msg.reason, "reason")
        if msg.content is None:
            out.append(_NOTHING_BYTE)
        else:
            out.append(_INFOTABLE_BYTE)
            write_infotable(out, msg.content)
    elif isinstance(msg, Auth):
        out.append(len(msg.claims))
        for name, value in msg.claims:
            write_name(out, name, "claim name")
            write_name(out, value, "claim value")
    elif isinstance(msg, Bind):
        if msg.gateway_name is not None and msg.gateway_type is not None:
            out.append(1)
            write_name(out, msg.gateway_name, "gateway name")
            write_name(out, msg.gateway_type, "gateway type")
        else:
            out.append(0)
        out += U16.pack(len(msg.names))
        for name in msg.names:
            write_name(out, name, "Thing name")
    else:
        raise UsageError(f"not an AlwaysOn message: {type(msg).__name__}")
    return bytes(out), 0


def encode_message(
    msg: Message,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> list[bytes]:
    """Encode a message into the websocket payloads to send, in order (reference §2, §5, §6).

    Args:
        msg: the message.
        chunk_size: the sender's chunk size (§1.5); a message with ``body + 21 > chunk_size`` is
            split into multipart chunks of at most this size, which also goes in each chunk's
            size field. Subtract 4 when permessage-deflate is on (§1.4).
        max_message_size: the largest message allowed (§1.5).

    Returns:
        One payload, or the multipart chunks 1..n.

    Raises:
        MessageTooLarge: ``body + 21`` exceeds ``max_message_size``, or the chunks would
            (``count x chunk_size`` is what a receiver checks, §6.5).
        UsageError: bad names or strings, a chunk size that cannot carry a chunk.
        ValueTypeError: a params/content cell does not fit its column.
    """
    code, request_id, endpoint_id, session_id = _header_fields(msg)
    body, prefix_len = encode_body(msg)
    size = len(body) + MULTIPART_OVERHEAD
    if size > max_message_size:
        raise MessageTooLarge(size, max_message_size, request_id=request_id)
    if size <= chunk_size:
        return [HEADER.pack(_VERSION, code, request_id, endpoint_id, session_id, 0) + body]
    if chunk_size > 0xFFFF:
        raise UsageError(f"chunk size {chunk_size} does not fit the 16-bit chunk size field")
    effective = chunk_size - MULTIPART_OVERHEAD - prefix_len
    if effective <= 0:
        raise UsageError(f"chunk size {chunk_size} leaves no room for the body")
    prefix = body[:prefix_len]
    rest = memoryview(body)[prefix_len:]
    count = max(1, -(-len(rest) // effective))
    if count > 0xFFFF:
        raise UsageError(f"{count} chunks do not fit the 16-bit chunk count")
    if count * chunk_size > max_message_size:
        raise MessageTooLarge(count * chunk_size, max_message_size, request_id=request_id)
    head = HEADER.pack(_VERSION, code, request_id, endpoint_id, session_id, 1)
    chunks = []
    for index in range(count):
        part = rest[index * effective : (index + 1) * effective]
        chunks.append(
            b"".join((head, MULTIPART_HEADER.pack(index + 1, count, chunk_size), prefix, part))
        )
    return chunks


# ------------------------------------------------------------------------------------- decoding


def _read_pairs(buf: bytes, pos: int) -> tuple[tuple[tuple[str, str], ...], int]:
    """A count byte, then that many (name, value) strings: request headers, AUTH claims."""
    count = buf[pos]
    pos += 1
    pairs = []
    for _ in range(count):
        name, pos = read_string(buf, pos)
        value, pos = read_string(buf, pos)
        pairs.append((name, value))
    return tuple(pairs), pos


def _decode_request(code: int, rid: int, eid: int, sid: int, buf: bytes, pos: int) -> Request:
    entity_byte = buf[pos]
    entity_type = _ENTITY_TYPES.get(entity_byte)
    if entity_type is None:
        raise ProtocolError(f"unknown entity type 0x{entity_byte:02X}")
    entity_name, pos = read_string(buf, pos + 1)
    char_byte = buf[pos]
    characteristic = _CHARACTERISTICS.get(char_byte)
    if characteristic is None:
        raise ProtocolError(f"unknown characteristic 0x{char_byte:02X}")
    target, pos = read_string(buf, pos + 1)
    headers, pos = _read_pairs(buf, pos)
    params = None
    if buf[pos] == _INFOTABLE_BYTE:  # the C SDK ends the body at any other byte (§5.1)
        params, pos = read_infotable(buf, pos + 1)
    return Request(
        _METHODS[code], rid, eid, sid, entity_type, entity_name, characteristic, target,
        headers, params,
    )  # fmt: skip


def _decode_response(code: int, rid: int, eid: int, sid: int, buf: bytes, pos: int) -> Response:
    status = _STATUSES.get(code)
    if status is None:
        raise ProtocolError(f"unknown response status 0x{code:02X}")
    reason = None
    if buf[pos] != 0:
        reason, pos = read_string(buf, pos + 1)
    else:
        pos += 1
    content = None
    if buf[pos] == _INFOTABLE_BYTE:  # any other byte ends the body (§5.2)
        content, pos = read_infotable(buf, pos + 1)
    return Response(status, rid, eid, sid, reason, content)


def _decode_auth(code: int, rid: int, eid: int, sid: int, buf: bytes, pos: int) -> Auth:
    claims, _ = _read_pairs(buf, pos)
    return Auth(rid, claims, sid, eid)


def _decode_bind(code: int, rid: int, eid: int, sid: int, buf: bytes, pos: int) -> Bind:
    gateway_name = gateway_type = None
    if buf[pos] != 0:
        gateway_name, pos = read_string(buf, pos + 1)
        gateway_type, pos = read_string(buf, pos)
    else:
        pos += 1
    count = U16.unpack_from(buf, pos)[0]
    pos += 2
    names = []
    for _ in range(count):
        name, pos = read_string(buf, pos)
        names.append(name)
    return Bind(rid, sid, tuple(names), gateway_name, gateway_type, code == Method.UNBIND, eid)


def decode_body(code: int, request_id: int, endpoint_id: int, session_id: int, body: bytes) -> Any:
    """Decode a message body given its header fields; bytes after the body are ignored.

    Raises:
        ProtocolError: the body does not parse, or the code is not one a receiver handles
            (UNKNOWN, KEEP_ALIVE, undefined codes: §2.2 says drop them without a reply). The
            error carries ``code`` and ``request_id``.
        IncompleteMessage: the body ends early.
    """
    if code in _REQUEST_CODES:
        decoder: Any = _decode_request
    elif code >= _RESPONSE_MIN:
        decoder = _decode_response
    elif code == Method.AUTH:
        decoder = _decode_auth
    elif code in _BIND_CODES:
        decoder = _decode_bind
    else:
        raise ProtocolError(
            f"unhandled message code 0x{code:02X}", code=code, request_id=request_id
        )
    try:
        return decoder(code, request_id, endpoint_id, session_id, body, 0)
    except (IndexError, struct.error):
        raise IncompleteMessage(
            f"message 0x{code:02X} #{request_id} ends inside its body",
            code=code,
            request_id=request_id,
        ) from None
    except RecursionError:
        raise ProtocolError("values nested too deeply", code=code, request_id=request_id) from None
    except ProtocolError as exc:
        exc.code, exc.request_id = code, request_id
        raise
    except AlwaysOnError as exc:  # e.g. a decoded value refused by a dataclass check
        raise ProtocolError(str(exc), code=code, request_id=request_id) from None


def decode_message(data: bytes) -> Message:
    """Decode one complete, non-multipart message (reference §2, §5).

    Bytes after a complete body are ignored (§5.2, §12.1).

    Raises:
        IncompleteMessage: the data ends before the body does.
        ProtocolError: bad version, a multipart chunk (feed those to a ``MessageAssembler``), an
            unhandled code, or a body that does not parse.
    """
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise IncompleteMessage(f"{len(data)} bytes is shorter than the 15-byte header")
    version, code, rid, eid, sid, marker = HEADER.unpack_from(data)
    if version != _VERSION:
        raise ProtocolError(f"unknown protocol version {version}", code=code, request_id=rid)
    if marker != 0:
        raise ProtocolError(
            "multipart chunk: feed it to a MessageAssembler", code=code, request_id=rid
        )
    result: Message = decode_body(code, rid, eid, sid, data[HEADER_SIZE:])
    return result
