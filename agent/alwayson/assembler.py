"""Reassembly of incoming messages: multipart sets and split bodies (reference §6.5, §12.1).

:class:`MessageAssembler` takes every incoming websocket payload, in arrival order, and returns a
message once one is complete:

- a plain message decodes at once; bytes after its body are ignored (§5.2, §12.1);
- multipart chunks are kept per set until all have come, interleaved with other traffic, in any
  order; for requests each chunk's entity prefix is read and the body rebuilt as prefix (from
  chunk 1) + the data of chunks 1..n; the message takes its header fields from the last chunk
  received (§6.5);
- a plain message whose body ends early is held; the next plain message with the same request id
  continues it (the C SDK's "body split without multipart", §12.1), up to ``MAX_SPLIT_PIECES``
  pieces in all;
- a set whose ``count x chunk size`` exceeds the max message size is refused (§6.5), as is any set
  or held body that grows over it;
- incomplete sets and held bodies older than ``stale_after`` seconds are dropped (§1.5, §6.5) by
  :meth:`MessageAssembler.expire`, which the I/O layer calls on a timer (``feed`` calls it too).

Sets are keyed by request id *and* direction class (response or not): the request ids of the
requests a peer sends and of the responses it returns come from two independent counters (§2.3),
so they may coincide. Time is injected (``now``, in seconds on any monotonic clock).

Rules (what a peer can pin):

- every byte held for an incomplete set or split body is counted, plus ``ENTRY_OVERHEAD`` per
  chunk and per set (so empty chunks are not free); the total of one assembler (one connection)
  stays within ``max_pending_bytes``, and the total of every assembler sharing a
  :class:`PendingBudget` (one process) within the budget's limit. The chunk that would go over a
  limit is refused with :class:`PendingLimitExceeded` and its whole set is dropped; sets already
  held are kept (an attacker cannot evict a good peer's sets by sending more);
- at most ``max_pending_sets`` sets and held bodies are kept; the oldest is dropped beyond it;
- a held body is decoded again from its start with each piece that continues it, so the number of
  pieces is bounded (``MAX_SPLIT_PIECES``; the C SDK sends two, §12.1): a peer sending a body in
  thousands of slices would otherwise cost time quadratic in its length (1 MB in 1 KB slices:
  about a minute). Past the bound the body is dropped with a ProtocolError;
- :meth:`MessageAssembler.restrict` makes it refuse, before reading any body, every message whose
  code is not allowed and every multipart chunk or split body (:class:`MessageRefused`): a server
  reads nothing but AUTH before AUTH;
- :meth:`MessageAssembler.clear` drops everything and gives the bytes back to the budget: the
  I/O layer calls it when the connection closes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from agent.alwayson import unconfirmed
from agent.alwayson.errors import (
    IncompleteMessage,
    MessageRefused,
    MessageTooLarge,
    PendingLimitExceeded,
    ProtocolError,
)
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

__all__ = [
    "DEFAULT_MAX_PENDING_BYTES",
    "DEFAULT_STALE_AFTER",
    "ENTRY_OVERHEAD",
    "MAX_PENDING",
    "MAX_SPLIT_PIECES",
    "MessageAssembler",
    "PendingBudget",
]

DEFAULT_STALE_AFTER = 50.0
"""Seconds after which an incomplete set is dropped: 5 x the 10 s message timeout (§1.5)."""

MAX_SPLIT_PIECES = 4
"""Most plain messages one split body may arrive in (the C SDK sends two, reference §12.1)."""

MAX_PENDING = 512
"""Most incomplete sets and held bodies kept at once; the oldest is dropped beyond it."""

DEFAULT_MAX_PENDING_BYTES = 4 * DEFAULT_MAX_MESSAGE_SIZE
"""Bytes of incomplete messages one connection may hold: four max-size messages (§1.5) under
way at once. A C SDK edge sends the chunks of one message back to back, so it has one set (rarely
two) under way; four is room to spare."""

ENTRY_OVERHEAD = 128
"""Bytes charged per held chunk and per set on top of its data: the cost of keeping it (object
headers, dict slots), so that a flood of empty chunks is bounded like a flood of full ones."""


class PendingBudget:
    """The bytes of incomplete messages a whole process may hold, shared by its assemblers.

    Plain bookkeeping (one event loop, no locks): an assembler takes bytes before it holds them
    and gives them back when it lets them go.

    Args:
        limit: the most bytes held at once by every assembler sharing this budget.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        """Reserve ``size`` bytes; False (nothing reserved) when that would pass the limit."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        """Return ``size`` bytes taken earlier."""
        self.used = max(0, self.used - size)


@dataclass
class _Set:
    count: int
    created: float
    parts: dict[int, bytes] = field(default_factory=dict)
    prefix: bytes | None = None
    size: int = 0
    header: tuple[int, int, int, int] = (0, 0, 0, 0)
    charged: int = 0


@dataclass
class _Held:
    header: tuple[int, int, int, int]
    body: bytes
    created: float
    charged: int = 0
    pieces: int = 1


class MessageAssembler:
    """Turns incoming payloads into messages (reference §6.5, §12.1).

    Args:
        max_message_size: the largest complete message accepted (§1.5).
        stale_after: seconds after which an incomplete set or held body is dropped.
        max_pending_bytes: the most bytes of incomplete messages held at once (one connection).
        budget: the process-wide budget shared with other assemblers, or None.
        max_pending_sets: the most incomplete sets and held bodies kept at once.
    """

    def __init__(
        self,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        stale_after: float = DEFAULT_STALE_AFTER,
        *,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        budget: PendingBudget | None = None,
        max_pending_sets: int = MAX_PENDING,
    ) -> None:
        self.max_message_size = max_message_size
        self.stale_after = stale_after
        self.max_pending_bytes = max_pending_bytes
        self.max_pending_sets = max_pending_sets
        self._budget = budget
        self._sets: dict[tuple[int, bool], _Set] = {}
        self._held: dict[tuple[int, bool], _Held] = {}
        self._used = 0
        self._oldest = math.inf  # no entry is older than this (a lower bound after removals)
        self._allowed: frozenset[int] | None = None
        self._refusal = ""

    @property
    def pending(self) -> int:
        """Number of incomplete multipart sets and held split bodies."""
        return len(self._sets) + len(self._held)

    @property
    def pending_bytes(self) -> int:
        """Bytes charged for the incomplete sets and held bodies (data plus overhead)."""
        return self._used

    def restrict(self, allowed: frozenset[int] | None, reason: str = "") -> None:
        """Refuse every message whose code is not in ``allowed``, and every multipart chunk or
        split body, before reading its body (:class:`MessageRefused` with ``reason``).

        Args:
            allowed: the codes still read (e.g. AUTH alone before AUTH), or None to lift it.
            reason: the refusal's text.
        """
        self._allowed = allowed
        self._refusal = reason

    def expire(self, now: float) -> int:
        """Drop incomplete sets and held bodies older than ``stale_after``; return how many."""
        limit = now - self.stale_after
        if self._oldest >= limit:
            return 0
        dropped = 0
        for table in (self._sets, self._held):
            stale = [key for key, entry in table.items() if entry.created < limit]
            for key in stale:
                self._release(table.pop(key).charged)
            dropped += len(stale)
        self._oldest = min(
            [e.created for e in self._sets.values()] + [e.created for e in self._held.values()],
            default=math.inf,
        )
        return dropped

    def clear(self) -> int:
        """Drop every incomplete set and held body (the connection closed); return the bytes
        given back."""
        freed = self._used
        self._sets.clear()
        self._held.clear()
        self._release(freed)
        self._oldest = math.inf
        return freed

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
            MessageRefused: the payload is refused by :meth:`restrict` (a ProtocolError).
            MessageTooLarge: a set or body over the max message size (it is dropped).
            PendingLimitExceeded: the incomplete messages held would pass a limit (a
                MessageTooLarge; the set is dropped).
        """
        data = bytes(data)
        self.expire(now)
        if len(data) < HEADER_SIZE:
            raise IncompleteMessage(f"{len(data)} bytes is shorter than the 15-byte header")
        version, code, rid, eid, sid, marker = HEADER.unpack_from(data)
        if version != 1:
            raise ProtocolError(f"unknown protocol version {version}", code=code, request_id=rid)
        header = (code, rid, eid, sid)
        if self._allowed is not None and (marker != 0 or code not in self._allowed):
            raise MessageRefused(self._refusal, code=code, request_id=rid, endpoint_id=eid)
        if marker == 0:
            return self._plain(header, data, now)
        return self._chunk(header, data, now)

    # -------------------------------------------------------------------------------- plain

    def _plain(self, header: tuple[int, int, int, int], data: bytes, now: float) -> Message | None:
        code, rid, eid, sid = header
        key = (rid, code >= _RESPONSE_MIN)
        held = self._held.pop(key, None)
        if held is not None:
            self._release(held.charged)
            if held.header[0] == code:
                if held.pieces >= MAX_SPLIT_PIECES:
                    raise ProtocolError(
                        f"body split over more than {MAX_SPLIT_PIECES} plain messages (a sender "
                        "splits a body in two at most; larger messages go multipart)",
                        code=code,
                        request_id=rid,
                    )
                held.pieces += 1
                body = held.body + data[HEADER_SIZE:]
                self._check_size(len(body) + HEADER_SIZE, code, rid)
                try:
                    return decode_body(*held.header, body)  # type: ignore[no-any-return]
                except IncompleteMessage:
                    held.body = body
                    held.charged = 0
                    self._hold(key, held, code, rid)
                    return None
                except ProtocolError:
                    pass  # not a continuation after all: read this payload on its own
        body = data[HEADER_SIZE:]
        try:
            return decode_body(code, rid, eid, sid, body)  # type: ignore[no-any-return]
        except IncompleteMessage:
            if self._allowed is not None:
                raise
            self._check_size(len(data), code, rid)
            self._make_room()
            self._hold(key, _Held(header, body, now), code, rid)
            self._oldest = min(self._oldest, now)
            return None

    def _hold(self, key: tuple[int, bool], held: _Held, code: int, rid: int) -> None:
        self._charge(len(held.body) + ENTRY_OVERHEAD, code, rid)
        held.charged = len(held.body) + ENTRY_OVERHEAD
        self._held[key] = held

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
        key = (rid, code >= _RESPONSE_MIN)
        if count * chunk_size > self.max_message_size:
            self._drop_set(key)
            raise MessageTooLarge(
                count * chunk_size, self.max_message_size, request_id=rid, code=code
            )
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
        entry = self._sets.get(key)
        if entry is None or entry.count != count:
            self._drop_set(key)
            self._make_room()
            self._charge(ENTRY_OVERHEAD, code, rid)
            entry = self._sets[key] = _Set(count, now, charged=ENTRY_OVERHEAD)
            self._oldest = min(self._oldest, now)
        payload = data[pos:]
        old = entry.parts.get(chunk_id)
        old_len = len(old) if old is not None else 0
        size = entry.size + len(payload) - old_len
        if size + MULTIPART_OVERHEAD > self.max_message_size:
            self._drop_set(key)
            raise MessageTooLarge(size + MULTIPART_OVERHEAD, self.max_message_size,
                                  request_id=rid, code=code)  # fmt: skip
        growth = len(payload) - old_len + (0 if old is not None else ENTRY_OVERHEAD)
        try:
            self._charge(growth, code, rid)
        except PendingLimitExceeded:
            self._drop_set(key)
            raise
        entry.charged += growth
        entry.size = size
        entry.parts[chunk_id] = payload
        if prefix is not None and (chunk_id == 1 or entry.prefix is None):
            entry.prefix = prefix
        entry.header = header
        if len(entry.parts) < count:
            return None
        self._drop_set(key)
        body = (entry.prefix or b"") + b"".join(entry.parts[i] for i in range(1, count + 1))
        return decode_body(*entry.header, body)  # type: ignore[no-any-return]

    # -------------------------------------------------------------------------------- limits

    def _check_size(self, size: int, code: int, rid: int) -> None:
        if size > self.max_message_size:
            raise MessageTooLarge(size, self.max_message_size, request_id=rid, code=code)

    def _charge(self, size: int, code: int, rid: int) -> None:
        """Count ``size`` more bytes held, or raise PendingLimitExceeded (nothing counted)."""
        if size <= 0:
            self._release(-size)
            return
        if self._used + size > self.max_pending_bytes:
            raise PendingLimitExceeded(
                "connection", self._used + size, self.max_pending_bytes, code=code, request_id=rid
            )
        budget = self._budget
        if budget is not None and not budget.take(size):
            raise PendingLimitExceeded(
                "process", budget.used + size, budget.limit, code=code, request_id=rid
            )
        self._used += size

    def _release(self, size: int) -> None:
        self._used -= size
        if self._budget is not None:
            self._budget.give(size)

    def _drop_set(self, key: tuple[int, bool]) -> None:
        entry = self._sets.pop(key, None)
        if entry is not None:
            self._release(entry.charged)

    def _make_room(self) -> None:
        while len(self._sets) + len(self._held) >= self.max_pending_sets:
            oldest = min(
                [(e.created, 0, k) for k, e in self._sets.items()]
                + [(e.created, 1, k) for k, e in self._held.items()]
            )
            if oldest[1] == 0:
                self._drop_set(oldest[2])
            else:
                self._release(self._held.pop(oldest[2]).charged)
