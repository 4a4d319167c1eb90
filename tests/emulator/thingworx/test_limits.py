"""The stand-in's limits on one connection (issue 15 §3, §4): AUTH deadline, nothing but AUTH
before AUTH, bytes of incomplete multipart sets, Things per connection, frame rate, and refused
frames logged as counts. A real stand-in on 127.0.0.1 port 0, raw C-SDK-like edges."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable

import pytest
import structlog

from agent.alwayson import Response, Status, decode_message
from emulator.thingworx.limits import FrameRate, RefusalCounter, StandInLimits
from emulator.thingworx.server import ThingWorxStandIn
from tests.emulator.thingworx.conftest import APP_KEY
from tests.emulator.thingworx.csdk_edge import CsdkEdge, RawSocket

SMALL = StandInLimits(
    auth_timeout=0.4,
    stale_multipart_after=0.5,
    multipart_pending_bytes=200_000,
    multipart_pending_bytes_total=300_000,
    max_things_per_connection=5,
    unbound_things_kept=3,
    frame_rate=200.0,
    frame_burst=400,
    refusal_log_interval=0.2,
)


@pytest.fixture
async def small() -> AsyncIterator[ThingWorxStandIn]:
    server = ThingWorxStandIn(APP_KEY, port=0, call_timeout=2.0, limits=SMALL)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _edge(server: ThingWorxStandIn, *, auth: bool = True) -> CsdkEdge:
    edge = CsdkEdge(await RawSocket.connect(server.port, app_key=APP_KEY))
    if auth:
        assert (await edge.auth(APP_KEY)).ok
    return edge


def _chunk(code: int, request_id: int, data: int, *, session: int = 0, count: int = 4) -> bytes:
    """Chunk 1 of ``count`` of a set that never completes; requests carry the entity prefix."""
    head = struct.pack(">BBIIIB", 1, code, request_id, 0, session, 1)
    head += struct.pack(">HHH", 1, count, 65535)
    prefix = b"\x0a\x03Gw1" if code < 0x40 else b""
    return head + prefix + b"x" * data


async def _wait(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` (state of the server under test, which has no event for it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if condition():
            return
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


async def _closed_with(sock: RawSocket) -> tuple[int, str]:
    while await sock.recv_message(timeout=5) is not None:
        pass
    assert sock.close_payload is not None
    return struct.unpack(">H", sock.close_payload[:2])[0], sock.close_payload[2:].decode()


async def test_no_auth_within_the_deadline_closes_the_link(small: ThingWorxStandIn) -> None:
    sock = await RawSocket.connect(small.port, app_key=APP_KEY)
    try:
        started = asyncio.get_running_loop().time()
        assert await _closed_with(sock) == (1008, "no AUTH within 0.4 s")
        assert asyncio.get_running_loop().time() - started < 3
        await _wait(lambda: not small.sessions())
    finally:
        await sock.close()


async def test_authenticated_link_outlives_the_auth_deadline(small: ThingWorxStandIn) -> None:
    edge = await _edge(small)
    try:
        await asyncio.sleep(0.8)
        assert not edge.sock.reader.at_eof() and len(small.sessions()) == 1
    finally:
        await edge.close()


async def test_nothing_but_auth_is_read_before_auth(small: ThingWorxStandIn) -> None:
    edge = await _edge(small, auth=False)
    try:
        # A multipart request: refused like any request before AUTH, nothing held.
        await edge.sock.send_message(_chunk(0x03, 7, 150_000))
        answer = decode_message(await edge.sock.recv_message() or b"")
        assert isinstance(answer, Response) and answer.request_id == 7
        assert (answer.status, answer.reason) == (Status.UNAUTHORIZED, "authenticate first")
        # An answer whose body is garbage: dropped unread, no reply; a multipart one too.
        await edge.sock.send_message(struct.pack(">BBIIIB", 1, 0x40, 8, 0, 0, 0) + b"\x99" * 99)
        await edge.sock.send_message(_chunk(0x40, 9, 150_000))
        assert small.pending_multipart_bytes == 0
        assert (await edge.auth(APP_KEY)).ok  # the next message read is the AUTH's answer
    finally:
        await edge.close()


async def test_incomplete_sets_are_bounded_expired_on_a_timer_and_freed_on_close(
    small: ThingWorxStandIn,
) -> None:
    a, b = await _edge(small), await _edge(small)
    try:
        for rid in range(1, 20):  # 19 x 50 kB never completed: ~1 MB offered
            await a.sock.send_message(_chunk(0x40, rid, 50_000, session=a.session_id))
        await a.sock.send_message(_chunk(0x03, 99, 50_000, session=a.session_id))
        answer = decode_message(await a.sock.recv_message() or b"")
        assert isinstance(answer, Response) and answer.request_id == 99
        assert answer.status is Status.ENTITY_TOO_LARGE
        assert answer.reason is not None
        assert "over the connection limit of 200000: message 99 dropped" in answer.reason
        assert 150_000 < small.pending_multipart_bytes <= 200_000
        for rid in range(1, 5):  # the second connection meets the stand-in's total
            await b.sock.send_message(_chunk(0x40, rid, 50_000, session=b.session_id))
        await b.sock.send_message(_chunk(0x03, 99, 50_000, session=b.session_id))
        answer = decode_message(await b.sock.recv_message() or b"")
        assert isinstance(answer, Response) and answer.status is Status.ENTITY_TOO_LARGE
        assert "over the process limit of 300000" in (answer.reason or "")
        assert small.pending_multipart_bytes <= 300_000
        # Silence: the timer drops the stale sets, no new message needed.
        await _wait(lambda: small.pending_multipart_bytes == 0, timeout=3)
        # A connection that closes gives its sets back at once.
        await b.sock.send_message(_chunk(0x40, 50, 50_000, session=b.session_id))
        await _wait(lambda: small.pending_multipart_bytes > 0)
        await b.close()
        await _wait(lambda: small.pending_multipart_bytes == 0, timeout=1)
    finally:
        await a.close()
        await b.close()


async def test_things_per_connection_are_capped_and_released(small: ThingWorxStandIn) -> None:
    edge = await _edge(small)
    edge.serve()
    try:
        assert (await edge.bind("T1", "T2", "T3", "T4")).ok
        refused = await edge.bind("T4", "T5", "T6")
        assert refused.status is Status.BAD_REQUEST
        assert refused.reason == (
            "BIND of 2 Things refused: this connection would hold 6, over the limit of 5; "
            "bind them over more connections"
        )
        assert small.bound_things() == ["T1", "T2", "T3", "T4"]
        assert (await edge.bind("T4", "T5")).ok  # T4 is held already: one new name
        assert (await edge.bind("T1", "T2", unbind=True)).ok
        assert (await edge.bind("T6", "T7")).ok  # room again after the UNBIND
        assert small.bound_things() == ["T3", "T4", "T5", "T6", "T7"]
    finally:
        await edge.close()
    await _wait(lambda: small.bound_things() == [])
    # Unbound names are remembered (503 rather than 404) only up to unbound_things_kept.
    assert [e.name for e in small.registry.all()] == ["T5", "T6", "T7"]


async def test_a_client_over_the_frame_rate_is_closed_others_are_not(
    small: ThingWorxStandIn,
) -> None:
    flood, good = await _edge(small), await _edge(small)
    try:
        await flood.sock.send_raw(b"".join(flood.sock._frame(True, False, 0x9, b"p")
                                           for _ in range(1000)))  # fmt: skip
        assert await _closed_with(flood.sock) == (1008, "rate limit exceeded (200 frames/s)")
        await _wait(lambda: len(small.sessions()) == 1)
        good.serve()
        assert (await good.bind("Gw1")).ok
    finally:
        await flood.close()
        await good.close()


async def test_refused_frames_are_logged_as_counts(small: ThingWorxStandIn) -> None:
    with structlog.testing.capture_logs() as logs:
        edge = await _edge(small, auth=False)
        try:
            for rid in range(1, 101):
                await edge.sock.send_message(struct.pack(">BBIIIB", 1, 0x03, rid, 0, 0, 0))
            for _ in range(100):
                assert await edge.sock.recv_message() is not None
            await asyncio.sleep(0.5)
        finally:
            await edge.close()
        await _wait(lambda: not small.sessions())
    refused = [e for e in logs if e["event"] == "refused before auth"]
    counts = [e for e in logs if e["event"] == "frames refused"]
    assert len(refused) == 1  # the first one, in full
    assert sum(e["counts"]["refused before auth"] for e in counts) == 100
    assert 1 <= len(counts) <= 5


def test_frame_rate_bucket() -> None:
    rate = FrameRate(10.0, 3, now=0.0)
    assert [rate.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert rate.allow(0.1) and not rate.allow(0.1)  # one token back after 0.1 s
    assert [rate.allow(10.0) for _ in range(4)] == [True, True, True, False]  # capped at burst


def test_refusal_counter() -> None:
    counter = RefusalCounter()
    assert counter.add("a") and not counter.add("a") and counter.add("b")
    assert counter.take() == {"a": 2, "b": 1} and counter.take() == {}
    assert not counter.add("a") and counter.total == 4


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="auth_timeout must be positive"):
        StandInLimits(auth_timeout=0)
    with pytest.raises(ValueError, match="at most multipart_pending_bytes_total"):
        StandInLimits(multipart_pending_bytes=10, multipart_pending_bytes_total=5)
