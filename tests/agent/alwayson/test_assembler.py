"""MessageAssembler: multipart sets, C SDK split bodies, limits, staleness (§6.5, §12.1)."""

from __future__ import annotations

import struct

import pytest

from agent.alwayson import (
    Auth,
    BaseType,
    Bind,
    DataShape,
    FieldDefinition,
    IncompleteMessage,
    InfoTable,
    MessageAssembler,
    MessageTooLarge,
    PendingBudget,
    ProtocolError,
    Response,
    Status,
    decode_message,
    encode_message,
)
from agent.alwayson.assembler import ENTRY_OVERHEAD
from agent.alwayson.errors import MessageRefused, PendingLimitExceeded


def _response(request_id: int, length: int) -> Response:
    shape = DataShape.of(FieldDefinition("result", BaseType.STRING))
    return Response(
        Status.SUCCESS, request_id, 5, 42, None, InfoTable(shape, [{"result": "q" * length}])
    )


def test_interleaved_sets_and_plain_messages() -> None:
    a = encode_message(_response(1, 30_000))
    b = encode_message(_response(2, 20_000))
    plain = encode_message(_response(3, 10))
    assembler = MessageAssembler()
    out = []
    for payload in [a[0], b[0], *plain, a[1], b[1], b[2], a[2], a[3]]:
        msg = assembler.feed(payload, 0.0)
        if msg is not None:
            out.append(msg)
    assert out == [_response(3, 10), _response(2, 20_000), _response(1, 30_000)]
    assert assembler.pending == 0


def test_request_and_response_with_the_same_id_do_not_mix() -> None:
    # §2.3: the two id spaces are independent.
    from agent.alwayson import Characteristic, EntityType, Method, Request

    shape = DataShape.of(FieldDefinition("data", BaseType.STRING))
    req = Request(Method.POST, 1, 5, 42, EntityType.THING, "T", Characteristic.SERVICES, "S",
                  (), InfoTable(shape, [{"data": "r" * 20_000}]))  # fmt: skip
    resp = _response(1, 20_000)
    rc, pc = encode_message(req), encode_message(resp)
    assembler = MessageAssembler()
    got = [assembler.feed(x, 0.0) for pair in zip(rc, pc, strict=True) for x in pair]
    assert [m for m in got if m is not None] == [req, resp]


def test_split_body_without_multipart_is_joined() -> None:
    # §12.1: a plain message whose body is incomplete, then one with the same request id.
    whole = encode_message(_response(7, 8_100))[0]
    first, second = whole[:5000], whole[:15] + whole[5000:]
    assembler = MessageAssembler()
    assert assembler.feed(first, 0.0) is None
    assert assembler.pending == 1
    assert assembler.feed(second, 0.0) == _response(7, 8_100)
    assert assembler.pending == 0


def test_bare_header_after_complete_body_is_harmless() -> None:
    # §12.1: a body of exactly 8171 bytes: the second message is a bare header.
    whole = encode_message(_response(8, 100))[0]
    assembler = MessageAssembler(stale_after=50.0)
    assert assembler.feed(whole, 0.0) == _response(8, 100)
    assert assembler.feed(whole[:15], 0.1) is None
    assert assembler.expire(60.0) == 1


def test_trailing_bytes_ignored() -> None:
    whole = encode_message(_response(9, 10))[0]
    assert MessageAssembler().feed(whole + b"\x00" * 7, 0.0) == _response(9, 10)
    assert decode_message(whole + b"junk") == _response(9, 10)


def test_stale_sets_are_dropped() -> None:
    chunks = encode_message(_response(10, 20_000))
    assembler = MessageAssembler(stale_after=50.0)
    assert assembler.feed(chunks[0], 0.0) is None
    assert assembler.expire(49.0) == 0
    assert assembler.pending == 1
    # A later feed expires the set first, so the rest of it no longer completes anything.
    assert assembler.feed(chunks[1], 51.0) is None
    assert assembler.feed(chunks[2], 51.0) is None
    assert assembler.pending == 1  # only the new partial set made of chunks 2 and 3


def test_count_times_size_over_max_is_refused() -> None:
    chunks = encode_message(_response(11, 30_000))
    with pytest.raises(MessageTooLarge):
        MessageAssembler(max_message_size=16_384).feed(chunks[0], 0.0)


def test_sender_refuses_too_large() -> None:
    with pytest.raises(MessageTooLarge):
        encode_message(_response(12, 2_000_000))
    with pytest.raises(MessageTooLarge):
        encode_message(_response(12, 20_000), max_message_size=16_000)


def test_multipart_bind_is_reassembled() -> None:
    names = tuple(f"Thing{i:05d}" for i in range(1000))
    bind = Bind(3, 42, names)
    chunks = encode_message(bind)
    assert len(chunks) > 1
    assembler = MessageAssembler()
    assert [assembler.feed(c, 0.0) for c in chunks][-1] == bind


def test_bad_chunk_id_and_short_payloads() -> None:
    chunk = bytearray(encode_message(_response(13, 20_000))[0])
    chunk[15:17] = b"\x00\x09"
    assembler = MessageAssembler()
    with pytest.raises(ProtocolError) as info:
        assembler.feed(bytes(chunk), 0.0)
    assert info.value.request_id == 13
    with pytest.raises(IncompleteMessage):
        assembler.feed(b"\x01\x40", 0.0)


def test_decode_message_refuses_chunks_and_unknown_codes() -> None:
    chunk = encode_message(_response(14, 20_000))[0]
    with pytest.raises(ProtocolError):
        decode_message(chunk)
    keep_alive = bytes.fromhex("01 1F 00 00 00 05 00 00 00 00 00 00 00 2A 00")
    with pytest.raises(ProtocolError) as info:
        decode_message(keep_alive)
    assert (info.value.code, info.value.request_id) == (0x1F, 5)


# -- what a peer can pin (issue 15 §3) ---------------------------------------------------------


def _open_set(request_id: int, data: int, *, count: int = 16, code: int = 0x40) -> bytes:
    """Chunk 1 of a set of ``count`` chunks that never completes (a hostile peer's)."""
    header = struct.pack(">BBIIIB", 1, code, request_id, 0, 42, 1)
    return header + struct.pack(">HHH", 1, count, 8192) + b"x" * data


def test_pending_bytes_per_connection_are_bounded_and_refused_clearly() -> None:
    assembler = MessageAssembler(max_pending_bytes=100_000)
    for rid in range(1, 10):
        assert assembler.feed(_open_set(rid, 10_000), 0.0) is None
    assert assembler.pending_bytes == 9 * (10_000 + 2 * ENTRY_OVERHEAD)
    with pytest.raises(PendingLimitExceeded) as info:
        assembler.feed(_open_set(10, 10_000), 0.0)
    assert isinstance(info.value, MessageTooLarge)  # callers refusing big messages refuse this
    assert (info.value.scope, info.value.request_id, info.value.code) == ("connection", 10, 0x40)
    assert str(info.value).startswith("incomplete messages would hold ")
    assert "over the connection limit of 100000: message 10 dropped" in str(info.value)
    assert assembler.pending == 9 and assembler.pending_bytes <= 100_000
    # The sets held are kept (a flood cannot evict them); a new one waits for room.
    whole = encode_message(_response(30, 20_000))
    with pytest.raises(PendingLimitExceeded):
        assembler.feed(whole[0], 0.0)
    assert assembler.pending == 9
    assert assembler.expire(100.0) == 9
    assert assembler.pending_bytes == 0
    assert [assembler.feed(c, 100.0) for c in whole][-1] == _response(30, 20_000)


def test_empty_chunks_are_charged_too() -> None:
    assembler = MessageAssembler(max_pending_bytes=10 * ENTRY_OVERHEAD)
    with pytest.raises(PendingLimitExceeded):
        for rid in range(1, 100):
            assembler.feed(_open_set(rid, 0), 0.0)
    assert assembler.pending_bytes <= 10 * ENTRY_OVERHEAD


def test_process_budget_is_shared_and_given_back() -> None:
    budget = PendingBudget(50_000)
    a = MessageAssembler(budget=budget)
    b = MessageAssembler(budget=budget)
    a.feed(_open_set(1, 30_000), 0.0)
    with pytest.raises(PendingLimitExceeded) as info:
        b.feed(_open_set(1, 30_000), 0.0)
    assert info.value.scope == "process" and info.value.limit == 50_000
    assert budget.used == a.pending_bytes and b.pending_bytes == 0
    assert a.clear() == 30_000 + 2 * ENTRY_OVERHEAD  # the connection closed
    assert budget.used == 0
    b.feed(_open_set(1, 30_000), 0.0)
    assert b.expire(60.0) == 1
    assert budget.used == 0


def test_completed_replaced_and_refused_sets_give_their_bytes_back() -> None:
    budget = PendingBudget(10_000_000)
    assembler = MessageAssembler(budget=budget)
    chunks = encode_message(_response(4, 30_000))
    for chunk in chunks[:-1]:
        assembler.feed(chunk, 0.0)
    assembler.feed(chunks[0], 0.0)  # a chunk sent twice replaces the first
    assert assembler.feed(chunks[-1], 0.0) == _response(4, 30_000)
    assembler.feed(_open_set(5, 1000, count=3), 0.0)
    with pytest.raises(MessageTooLarge):
        MessageAssembler(16_384).feed(_open_set(5, 1000, count=3), 0.0)
    with pytest.raises(MessageTooLarge):  # a set that grows over the max message size
        assembler.feed(_open_set(5, 1_100_000, count=3)[:-1] + b"", 0.0)
    whole = encode_message(_response(6, 8_100))[0]
    assert assembler.feed(whole[:5000], 0.0) is None  # a held split body is charged
    assert assembler.pending_bytes == 5000 - 15 + ENTRY_OVERHEAD
    assert assembler.feed(whole[:15] + whole[5000:], 0.0) == _response(6, 8_100)
    assert (assembler.pending, assembler.pending_bytes, budget.used) == (0, 0, 0)


def test_expire_is_cheap_when_nothing_is_due() -> None:
    assembler = MessageAssembler(stale_after=50.0)
    assembler.feed(_open_set(1, 10), 0.0)
    assembler.feed(_open_set(2, 10), 30.0)
    assert assembler.expire(50.0) == 0
    assert assembler.expire(50.5) == 1  # without any new message: the timer's call
    assert assembler.expire(79.0) == 0
    assert assembler.expire(81.0) == 1
    assert assembler.pending_bytes == 0


def test_restrict_refuses_before_reading_the_body() -> None:
    assembler = MessageAssembler()
    assembler.restrict(frozenset({0x14}), "authenticate first")
    nested = encode_message(_response(7, 10))[0]
    with pytest.raises(MessageRefused) as info:
        assembler.feed(nested[:15] + b"\x99" * 100, 0.0)  # garbage body: never read
    assert (str(info.value), info.value.code, info.value.request_id) == (
        "authenticate first",
        0x40,
        7,
    )
    assert info.value.endpoint_id == 5
    with pytest.raises(MessageRefused):
        assembler.feed(_open_set(8, 100, code=0x14), 0.0)  # multipart AUTH
    with pytest.raises(IncompleteMessage):  # a split AUTH body is not held
        assembler.feed(encode_message(Auth(9, (("appKey", "k"),)))[0][:-1], 0.0)
    assert assembler.pending == 0
    assembler.restrict(None)
    assert assembler.feed(nested, 0.0) == _response(7, 10)
