"""The sans-I/O Connection, bytes only: an edge and a server talking through byte lists,
malformed input, limits, ids wrapping (as websockets tests its protocol)."""

from __future__ import annotations

import struct

import pytest

from agent.alwayson import (
    AUTH_FAILURE_STATUS,
    Auth,
    AuthReceived,
    BaseType,
    BindReceived,
    Characteristic,
    Connection,
    DataShape,
    EntityType,
    FieldDefinition,
    InfoTable,
    MalformedMessage,
    Method,
    OversizedMessage,
    PendingBudget,
    PendingLimitRefused,
    RefusedBeforeAuth,
    Request,
    RequestIds,
    RequestReceived,
    Response,
    ResponseReceived,
    Side,
    Status,
    UnmatchedResponse,
    UnsupportedMessage,
    UsageError,
    decode_message,
    encode_message,
)
from agent.alwayson.connection import ConnectionEvent

KEY = (("appKey", "k"),)


def deliver(frames: list[bytes], to: Connection, now: float = 0.0) -> list[ConnectionEvent]:
    """Feed payloads to a connection; the events it returned."""
    events = [to.receive_data(frame, now) for frame in frames]
    return [e for e in events if e is not None]


def one(frames: list[bytes], to: Connection) -> ConnectionEvent:
    (event,) = deliver(frames, to)
    return event


def pair(**server_options: object) -> tuple[Connection, Connection]:
    """An edge and a server, authenticated to each other."""
    edge = Connection(Side.EDGE)
    server = Connection(Side.SERVER, endpoint_id=7, session_ids=lambda: 0x2A, **server_options)  # type: ignore[arg-type]
    rid, frames = edge.send_auth(KEY)
    event = one(frames, server)
    assert isinstance(event, AuthReceived)
    answer = one(server.accept_auth(event.auth), edge)
    assert isinstance(answer, ResponseReceived) and answer.response.request_id == rid
    return edge, server


def table(text: str) -> InfoTable:
    shape = DataShape((FieldDefinition("text", BaseType.STRING),))
    return InfoTable(shape, [{"text": text}])


# -- the happy path, both ways ---------------------------------------------------------------


def test_auth_assigns_and_stamps_the_session_id() -> None:
    edge = Connection(Side.EDGE)
    server = Connection(Side.SERVER, session_ids=lambda: 0x2A)
    assert edge.session_id is None and not server.authenticated
    rid, frames = edge.send_auth(KEY)
    assert decode_message(frames[0]).session_id == 0xFFFFFFFF  # AUTH's marker (§2.3)
    assert edge.pending_ids == {rid}
    event = one(frames, server)
    assert isinstance(event, AuthReceived) and event.auth.claims == KEY
    reply = server.accept_auth(event.auth)
    assert server.session_id == 0x2A
    event = one(reply, edge)
    assert isinstance(event, ResponseReceived) and event.response.ok
    assert edge.session_id == 0x2A and edge.pending_ids == frozenset()
    _, frames = edge.send_bind(("A", "B"))
    bind = decode_message(frames[0])
    assert bind.session_id == 0x2A
    event = one(frames, server)
    assert isinstance(event, BindReceived) and event.bind.names == ("A", "B")


def test_refused_auth_keeps_the_edge_unauthenticated() -> None:
    edge = Connection(Side.EDGE)
    server = Connection(Side.SERVER)
    _, frames = edge.send_auth(KEY)
    event = one(frames, server)
    assert isinstance(event, AuthReceived)
    answer = one(server.refuse_auth(event.auth, "invalid application key"), edge)
    assert isinstance(answer, ResponseReceived)
    assert answer.response.status == AUTH_FAILURE_STATUS
    assert answer.response.session_id == 0xFFFFFFFF  # the AUTH's own
    assert edge.session_id is None and not server.authenticated


def test_server_request_and_edge_answer_echo_ids() -> None:
    edge, server = pair()
    rid, frames = server.send_request(Method.POST, "Thing", Characteristic.SERVICES, "Echo",
                                      table("hi"))  # fmt: skip
    request = decode_message(frames[0])
    assert (request.endpoint_id, request.session_id) == (7, 0x2A)
    event = one(frames, edge)
    assert isinstance(event, RequestReceived) and event.request.target == "Echo"
    reply = edge.send_response(event.request, Status.SUCCESS, content=table("hi"))
    decoded = decode_message(reply[0])
    assert (decoded.request_id, decoded.endpoint_id, decoded.session_id) == (rid, 7, 0x2A)
    event = one(reply, server)
    assert isinstance(event, ResponseReceived) and event.response.content == table("hi")
    assert server.pending_ids == frozenset()
    # The same answer again matches nothing any more.
    assert isinstance(one(reply, server), UnmatchedResponse)


def test_large_messages_go_multipart_and_come_back_whole() -> None:
    edge, server = pair()
    edge.chunk_size = server.chunk_size = 512
    big = table("x" * 5000)
    _, frames = server.send_request(Method.POST, "Thing", Characteristic.SERVICES, "Echo", big)
    assert len(frames) > 1 and all(len(f) <= 512 for f in frames)
    events = deliver(frames, edge)
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    reply = edge.send_response(events[0].request, Status.SUCCESS, content=big)
    assert len(reply) > 1
    (event,) = deliver(list(reversed(reply)), server)  # any order (§6.5)
    assert isinstance(event, ResponseReceived) and event.response.content == big


def test_forgotten_request_answer_is_unmatched() -> None:
    edge, server = pair()
    rid, frames = server.send_request(Method.POST, "Thing", Characteristic.SERVICES, "Slow")
    event = one(frames, edge)
    assert isinstance(event, RequestReceived)
    server.forget(rid)  # the I/O timed out
    assert isinstance(one(edge.send_response(event.request, Status.SUCCESS), server),
                      UnmatchedResponse)  # fmt: skip


def test_close_returns_pending_ids_and_frees_held_bytes() -> None:
    _, server = pair()
    rid, _ = server.send_request(Method.POST, "Thing", Characteristic.SERVICES, "Echo")
    chunk = encode_message(
        Response(Status.SUCCESS, 99, 0, 0x2A, None, table("y" * 3000)), chunk_size=512
    )[0]
    assert server.receive_data(chunk, 0.0) is None
    assert server.pending_bytes > 0
    pending, freed = server.close()
    assert pending == {rid} and freed > 0
    assert server.pending_ids == frozenset() and server.pending_bytes == 0


# -- request ids ------------------------------------------------------------------------------


def test_request_ids_wrap_and_skip_zero() -> None:
    ids = RequestIds(0xFFFFFFFE)
    assert [ids() for _ in range(3)] == [0xFFFFFFFE, 0xFFFFFFFF, 1]
    with pytest.raises(UsageError):
        RequestIds(0)


def test_one_counter_for_auth_bind_and_requests_shared_by_connections() -> None:
    ids = RequestIds(0xFFFFFFFF)
    first = Connection(Side.EDGE, request_ids=ids)
    rid_auth, _ = first.send_auth(KEY)
    second = Connection(Side.EDGE, request_ids=ids)
    rid_bind, _ = second.send_bind(("A",))
    assert (rid_auth, rid_bind) == (0xFFFFFFFF, 1)


def test_side_checks() -> None:
    edge, server = pair()
    with pytest.raises(UsageError):
        server.send_auth(KEY)
    with pytest.raises(UsageError):
        server.send_bind(("A",))
    _, frames = Connection(Side.EDGE).send_auth(KEY)
    auth = decode_message(frames[0])
    assert isinstance(auth, Auth)
    with pytest.raises(UsageError):
        edge.accept_auth(auth)


def test_an_unencodable_request_is_not_pending() -> None:
    _, server = pair(max_message_size=4096)
    with pytest.raises(UsageError):
        server.send_request(Method.POST, "bad\x00name", Characteristic.SERVICES, "Echo")
    assert server.pending_ids == frozenset()


# -- the policy -------------------------------------------------------------------------------


def _header(code: int, rid: int, marker: int = 0, sid: int = 0x2A) -> bytes:
    return struct.pack(">BBIIIB", 1, code, rid, 5, sid, marker)


def test_server_reads_nothing_but_auth_before_auth() -> None:
    server = Connection(Side.SERVER)
    edge = Connection(Side.EDGE)
    _, frames = edge.send_bind(("A",))
    event = one(frames, server)
    assert isinstance(event, RefusedBeforeAuth) and event.answered
    (answer,) = [decode_message(f) for f in server.data_to_send()]
    assert isinstance(answer, Response)
    assert (answer.status, answer.reason) == (Status.UNAUTHORIZED, "authenticate first")
    assert answer.request_id == event.request_id and answer.endpoint_id == 0  # edge's own
    # KEEP_ALIVE is refused unread and never answered.
    event = one([_header(0x1F, 9) + b"\xff" * 100], server)
    assert isinstance(event, RefusedBeforeAuth) and not event.answered
    assert server.data_to_send() == []


def test_auth_or_bind_sent_to_the_edge_is_bad_request() -> None:
    edge, _ = pair()
    _, frames = Connection(Side.EDGE).send_bind(("A",))
    event = one(frames, edge)
    assert isinstance(event, UnsupportedMessage) and event.answered
    (answer,) = [decode_message(f) for f in edge.data_to_send()]
    assert isinstance(answer, Response)
    assert (answer.status, answer.reason) == (Status.BAD_REQUEST, "Message Type not supported")
    assert answer.session_id == 0x2A


@pytest.mark.parametrize("side", [Side.EDGE, Side.SERVER])
def test_malformed_request_is_answered_bad_request(side: Side) -> None:
    edge, server = pair()
    conn = edge if side is Side.EDGE else server
    # POST with an undefined entity type 0x99.
    event = one([_header(0x03, 0x2A) + b"\x99\x03Gw1\x02\x01x\x00\xff"], conn)
    assert isinstance(event, MalformedMessage) and event.answered and event.failed is None
    (answer,) = [decode_message(f) for f in conn.data_to_send()]
    assert isinstance(answer, Response) and answer.status is Status.BAD_REQUEST
    assert answer.request_id == 0x2A and (answer.reason or "").startswith("malformed message: ")
    assert len(answer.reason or "") <= 200


def test_malformed_answer_fails_its_pending_request_only() -> None:
    _, server = pair()
    rid, _ = server.send_request(Method.POST, "Thing", Characteristic.SERVICES, "Echo")
    (good,) = encode_message(Response(Status.SUCCESS, rid, 7, 0x2A, None, table("x")))
    broken = good.replace(b"\x04text\x00\x00", b"\x04text\x00\x99")  # unknown base type
    assert broken != good
    event = one([broken], server)
    assert isinstance(event, MalformedMessage)
    assert event.failed == rid and not event.answered
    assert server.pending_ids == frozenset() and server.data_to_send() == []
    # The same broken answer to nothing pending is dropped.
    event = one([broken], server)
    assert isinstance(event, MalformedMessage) and event.failed is None


@pytest.mark.parametrize("data", [b"", b"\x07junk", _header(0x1F, 3), _header(0x00, 3),
                                  b"\x02" + _header(0x40, 3)[1:]])  # fmt: skip
def test_unreadable_or_unhandled_is_dropped(data: bytes) -> None:
    edge, _ = pair()
    event = one([data], edge)
    assert isinstance(event, MalformedMessage)
    assert not event.answered and event.failed is None
    assert edge.data_to_send() == []


def test_oversized_answer_fails_its_request_and_request_is_not_answered() -> None:
    _, server = pair(max_message_size=2048)
    rid, _ = server.send_request(Method.POST, "Thing", Characteristic.SERVICES, "Echo")
    answer = encode_message(Response(Status.SUCCESS, rid, 7, 0x2A, None, table("z" * 4000)),
                            chunk_size=1024, max_message_size=8192)  # fmt: skip
    event = one(answer[:1], server)
    assert isinstance(event, OversizedMessage) and event.failed == rid
    request = encode_message(_request(9, "z" * 4000), chunk_size=1024, max_message_size=8192)
    event = one(request[:1], server)
    assert isinstance(event, OversizedMessage) and event.failed is None
    assert server.data_to_send() == []


def _request(rid: int, text: str) -> Request:
    return Request(Method.POST, rid, 0, 0x2A, EntityType.THING, "T", Characteristic.SERVICES,
                   "Echo", (), table(text))  # fmt: skip


def test_pending_limit_answers_a_request_and_fails_an_answer() -> None:
    budget = PendingBudget(3000)
    _, server = pair(budget=budget)
    frames = encode_message(_request(11, "r" * 6000), chunk_size=1024)
    events = deliver(frames, server)
    refused = [e for e in events if isinstance(e, PendingLimitRefused)]
    assert refused and refused[0].answered and refused[0].error.scope == "process"
    answers = [decode_message(f) for f in server.data_to_send()]
    assert next(a.status for a in answers if isinstance(a, Response)) is Status.ENTITY_TOO_LARGE
    rid, _ = server.send_request(Method.POST, "Thing", Characteristic.SERVICES, "Echo")
    frames = encode_message(Response(Status.SUCCESS, rid, 7, 0x2A, None, table("a" * 6000)),
                            chunk_size=1024)  # fmt: skip
    events = deliver(frames, server)
    failed = [e for e in events if isinstance(e, PendingLimitRefused)]
    assert failed and failed[0].failed == rid and not failed[0].answered
    assert budget.used <= budget.limit


def test_stale_sets_expire_with_the_injected_clock() -> None:
    edge = Connection(Side.EDGE, stale_after=10.0)
    chunk = encode_message(_request(5, "s" * 3000), chunk_size=512)[0]
    assert edge.receive_data(chunk, now=100.0) is None and edge.pending_bytes > 0
    assert edge.expire(105.0) == 0
    assert edge.expire(111.0) == 1 and edge.pending_bytes == 0
