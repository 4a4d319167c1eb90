"""Reassembly of incoming messages: multipart sets and split bodies (reference §6.5, §12.1).

:class:`MessageAssembler` takes every incoming websocket payload, in arrival order, and returns a
message once one is complete:

- a plain message decodes at once; bytes after its body are ignored (§5.2, §12.1);
- multipart chunks are kept per set until all have come, interleaved with other traffic, in any
  order; for requests each chunk's entity prefix is read and the body rebuilt as prefix (from
  chunk 1) + the data of chunks 1..n; the message takes its header fields from the last chunk
  received (§6.5);
- a plain message whose body ends early is held; the next plain message with the same request id
  continues it (the C SDK's "body split without multipart", §12.1);
- a set whose ``count x chunk size`` exceeds the max message size is refused (§6.5), as is any set
  or held body that grows over it;
- incomplete sets and held bodies older than ``stale_after`` seconds are dropped (§1.5, §6.5).

Sets are keyed by request id *and* direction class (response or not): the request ids of the
requests a peer sends and of the responses it returns come from two independent counters (§2.3),
so they may coincide. Time is injected (``now``, in seconds on any monotonic clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.alwayson import unconfirmed
from agent.alwayson.errors import IncompleteMessage, MessageTooLarge, ProtocolError
from agent.alwayson.messagecodec import (
    _BIND_CODES,
    _REQUEST_CODES,
    _RESPONSE_MIN,
    DEFAULT_MAX_MESSAGE_SIZE,
    HEADER,
    HEADER_SIZE,
    MULTIPART_HEADER,
    MULTIPART_OVERHEAD,
    decode_body,
)
from agent.alwayson.messages import Message, Method
from agent.alwayson.valuecodec import read_string

__all__ = ["DEFAULT_STALE_AFTER", "MAX_PENDING", "MessageAssembler"]

DEFAULT_STALE_AFTER = 50.0
"""Seconds after which an incomplete set is dropped: 5 x the 10 s message timeout (§1.5)."""

MAX_PENDING = 512
"""Most incomplete sets and held bodies kept at once; the oldest is dropped beyond it."""


@dataclass
class _Set:
    count: int
    created: float
    parts: dict[int, bytes] = field(default_factory=dict)
    prefix: bytes | None = None
    size: int = 0
    header: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass
class _Held:
    header: tuple[int, int, int, int]
    body: bytes
    created: float


class MessageAssembler:
    """Turns incoming payloads into messages (reference §6.5, §12.1).

    Args:
        max_message_size: the largest complete message accepted (§1.5).
        stale_after: seconds after which an incomplete set or held body is dropped.
    """

    def __init__(
        self,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        stale_after: float = DEFAULT_STALE_AFTER,
    ) -> None:
        self.max_message_size = max_message_size
        self.stale_after = stale_after
        self._sets: dict[tuple[int, bool], _Set] = {}
        self._held: dict[tuple[int, bool], _Held] = {}

    @property
    def pending(self) -> int:
        """Number of incomplete multipart sets and held split bodies."""
        return len(self._sets) + len(self._held)

    def expire(self, now: float) -> int:
        """Drop incomplete sets and held bodies older than ``stale_after``; return how many."""
        limit = now - self.stale_after
        dropped = 0
        for table in (self._sets, self._held):
            stale = [key for key, entry in table.items() if entry.created < limit]
            for key in stale:
                del table[key]
            dropped += len(stale)
        return dropped

    def feed(self, data: bytes, now: float) -> Message | None:
        """Take one incoming websocket payload.

        Args:
            data: the payload (one AlwaysOn message or one multipart chunk).
            now: the current time in seconds (monotonic), for stale-set expiry.

        Returns:
            The message this payload completes, or None while a set or split body is incomplete.

        Raises:
            ProtocolError: the payload does not parse (it carries ``code`` and ``request_id``
                when the header was read); the assembler stays usable.
            MessageTooLarge: a set or body over the max message size (it is dropped).
        """
        data = bytes(data)
        if self._sets or self._held:
            self.expire(now)
        if len(data) < HEADER_SIZE:
            raise IncompleteMessage(f"{len(data)} bytes is shorter than the 15-byte header")
        version, code, rid, eid, sid, marker = HEADER.unpack_from(data)
        if version != 1:
            raise ProtocolError(f"unknown protocol version {version}", code=code, request_id=rid)
        header = (code, rid, eid, sid)
        if marker == 0:
            return self._plain(header, data, now)
        return self._chunk(header, data, now)

    # -------------------------------------------------------------------------------- plain

    def _plain(self, header: tuple[int, int, int, int], data: bytes, now: float) -> Message | None:
        code, rid, eid, sid = header
        key = (rid, code >= _RESPONSE_MIN)
        held = self._held.pop(key, None)
        if held is not None and held.header[0] == code:
            body = held.body + data[HEADER_SIZE:]
            self._check_size(len(body) + HEADER_SIZE, rid)
            try:
                return decode_body(*held.header, body)  # type: ignore[no-any-return]
            except IncompleteMessage:
                held.body = body
                self._held[key] = held
                return None
            except ProtocolError:
                pass  # not a continuation after all: read this payload on its own
        body = data[HEADER_SIZE:]
        try:
            return decode_body(code, rid, eid, sid, body)  # type: ignore[no-any-return]
        except IncompleteMessage:
            self._check_size(len(data), rid)
            self._make_room()
            self._held[key] = _Held(header, body, now)
            return None

    # ---------------------------------------------------------------------------- multipart

    def _chunk(self, header: tuple[int, int, int, int], data: bytes, now: float) -> Message | None:
        code, rid, _, _ = header
        if len(data) < MULTIPART_OVERHEAD:
            raise IncompleteMessage("multipart chunk shorter than its 21-byte header",
                                    code=code, request_id=rid)  # fmt: skip
        chunk_id, count, chunk_size = MULTIPART_HEADER.unpack_from(data, HEADER_SIZE)
        if not 1 <= chunk_id <= count:
            raise ProtocolError(
                f"chunk id {chunk_id} outside 1..{count}", code=code, request_id=rid
            )
        if count * chunk_size > self.max_message_size:
            self._sets.pop((rid, code >= _RESPONSE_MIN), None)
            raise MessageTooLarge(count * chunk_size, self.max_message_size, request_id=rid)
        prefix = None
        pos = MULTIPART_OVERHEAD
        if code in _REQUEST_CODES:
            try:
                _, pos = read_string(data, pos + 1)
            except (IndexError, ValueError):
                raise IncompleteMessage(
                    "request chunk ends inside its entity prefix", code=code, request_id=rid
                ) from None
            except ProtocolError as exc:
                exc.code, exc.request_id = code, rid
                raise
            prefix = data[MULTIPART_OVERHEAD:pos]
        elif code >= _RESPONSE_MIN or (code in _BIND_CODES or code == Method.AUTH):
            if code < _RESPONSE_MIN and not unconfirmed.BIND_MULTIPART_ACCEPTED:
                raise ProtocolError("multipart AUTH/BIND refused", code=code, request_id=rid)
        else:
            raise ProtocolError(f"unhandled message code 0x{code:02X}", code=code, request_id=rid)
        key = (rid, code >= _RESPONSE_MIN)
        entry = self._sets.get(key)
        if entry is None or entry.count != count:
            self._make_room()
            entry = self._sets[key] = _Set(count, now)
        payload = data[pos:]
        old = entry.parts.get(chunk_id)
        entry.size += len(payload) - (len(old) if old is not None else 0)
        entry.parts[chunk_id] = payload
        if prefix is not None and (chunk_id == 1 or entry.prefix is None):
            entry.prefix = prefix
        entry.header = header
        if entry.size + MULTIPART_OVERHEAD > self.max_message_size:
            del self._sets[key]
            raise MessageTooLarge(entry.size + MULTIPART_OVERHEAD, self.max_message_size,
                                  request_id=rid)  # fmt: skip
        if len(entry.parts) < count:
            return None
        del self._sets[key]
        body = (entry.prefix or b"") + b"".join(entry.parts[i] for i in range(1, count + 1))
        return decode_body(*entry.header, body)  # type: ignore[no-any-return]

    # -------------------------------------------------------------------------------- limits

    def _check_size(self, size: int, rid: int) -> None:
        if size > self.max_message_size:
            raise MessageTooLarge(size, self.max_message_size, request_id=rid)

    def _make_room(self) -> None:
        while len(self._sets) + len(self._held) >= MAX_PENDING:
            oldest = min(
                [(e.created, 0, k) for k, e in self._sets.items()]
                + [(e.created, 1, k) for k, e in self._held.items()]
            )
            if oldest[1] == 0:
                del self._sets[oldest[2]]
            else:
                del self._held[oldest[2]]
