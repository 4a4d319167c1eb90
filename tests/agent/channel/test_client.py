"""The AlwaysOn client against a real websockets server on 127.0.0.1 (see miniserver.py)."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from agent.alwayson import (
    BaseType,
    Bind,
    Characteristic,
    DataShape,
    EntityType,
    FieldDefinition,
    InfoTable,
    Method,
    Request,
    Status,
    encode_message,
)
from agent.channel import AlwaysOnClient, ChannelNotReady, ChannelState
from agent.channel.client import MAX_CALLS_IN_FLIGHT
from tests.agent.channel.miniserver import MiniServer, result_of
from tests.support.channel import GATEWAY, make_registry, one, running, settings, text_params

F = FieldDefinition


async def test_auth_stores_session_and_binds_every_thing() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(settings(server.url), make_registry("Dev1", "Dev2"))
        async with running(client):
            link = await server.wait_link(1)
            assert client.state is ChannelState.READY
            assert client.session_id == link.session_id == 0x2A
            assert link.bound == [GATEWAY, "Dev1", "Dev2"]
            assert client.bound_things == [GATEWAY, "Dev1", "Dev2"]
            # Upgrade headers as the C SDK sends them (reference §1.1).
            assert link.headers["Max-Frame-Size"] == "8192"
            assert link.headers["appKey"] == "test-key"
            assert "Sec-WebSocket-Protocol" not in link.headers
            answer = await server.call("Dev1", "Echo", text_params("hi"))
            assert answer.status is Status.SUCCESS and result_of(answer) == "Dev1:hi"
            # Every message after AUTH carried the assigned session id.
            assert link.sessions_seen and set(link.sessions_seen) == {0x2A}


async def test_wrong_app_key_is_refused_and_retried_with_backoff() -> None:
    async with MiniServer(refuse_auth=2) as server:
        client = AlwaysOnClient(settings(server.url), make_registry(), rng=random.Random(7))
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with running(client):
            assert server.auth_attempts == 3
            assert client.stats.connection_attempts == 3
            assert [link.authenticated for link in server.links] == [False, False, True]
            assert loop.time() - started < 2
    # Never authenticated: the channel keeps retrying and is not ready.
    async with MiniServer(app_key="other") as server:
        client = AlwaysOnClient(settings(server.url), make_registry())
        async with running(client, ready=False):
            with pytest.raises(ChannelNotReady):
                await client.wait_ready(0.6)
            assert server.auth_attempts >= 2


async def test_bind_split_under_chunk_size() -> None:
    things = [f"device-{i:04d}-with-a-long-name" for i in range(60)]
    async with MiniServer() as server:
        client = AlwaysOnClient(settings(server.url, chunk_size=512), make_registry(*things))
        async with running(client):
            link = await server.wait_link(1)
            assert link.bound == [GATEWAY, *things]
            assert len(link.binds) >= 3
            for bind in link.binds:
                (payload,) = encode_message(bind, chunk_size=512)
                assert len(payload) <= 512
            assert max(link.payload_sizes) <= 512
        # stop(): UNBINDs under the chunk size too, listing every Thing.
        assert [n for b in link.unbinds for n in b.names] == [GATEWAY, *things]


async def test_notify_property_update_and_get_metadata() -> None:
    async with MiniServer() as server:
        registry = make_registry("Dev1")
        client = AlwaysOnClient(settings(server.url), registry)
        async with running(client):
            answer = await server.call("Dev1", "NotifyPropertyUpdate")
            assert answer.status is Status.SUCCESS and answer.content is None
            answer = await server.call("Dev1", "NotifyPropertyUpdate", InfoTable(DataShape(()), []))
            assert answer.status is Status.SUCCESS
            answer = await server.call("Dev1", "GetMetadata")
            assert answer.status is Status.SUCCESS and answer.content is not None
            assert answer.content.shape.field("result").base_type is BaseType.JSON
            document = result_of(answer)
            if isinstance(document, str):
                document = json.loads(document)
            assert document == registry.metadata("Dev1")
            assert {"Echo", "GetMetadata", "NotifyPropertyUpdate"} <= set(
                document["serviceDefinitions"]
            )


async def test_errors_not_found_and_unsupported() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(settings(server.url), make_registry("Dev1"))
        async with running(client):
            link = server.link
            answer = await server.call("Dev1", "Fail")
            assert answer.status is Status.SERVICE_UNAVAILABLE
            assert answer.reason == "the hub is throttling; retry in a minute"
            answer = await server.call("Dev1", "Echo")
            assert answer.status is Status.BAD_REQUEST
            assert answer.reason == "missing required input text (STRING) of service Echo"
            answer = await server.call("Nobody", "Echo", text_params("x"))
            assert answer.status is Status.NOT_FOUND and answer.content is None
            answer = await server.call("Dev1", "Nope")
            assert answer.status is Status.NOT_FOUND
            answer = await server.call("Dev1", "Temp", characteristic=Characteristic.PROPERTIES)
            assert answer.status is Status.NOT_FOUND
            # A BIND sent to the edge: not a message type it serves (reference §7.5).
            bind = Bind(0x77, link.session_id, ("X",))
            (payload,) = encode_message(bind)
            answer = await server.request_raw(link, payload, 0x77)
            assert answer.status is Status.BAD_REQUEST
            assert answer.reason == "Message Type not supported"
            stats = client.stats.snapshot()
            assert stats.errors["Fail"] == 1 and stats.calls["Echo"] == 1


async def test_hundred_concurrent_calls() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(settings(server.url), make_registry("Dev1"))
        async with running(client):
            answers = await asyncio.gather(
                *(server.call("Dev1", "Echo", text_params(str(i))) for i in range(100))
            )
            assert [result_of(a) for a in answers] == [f"Dev1:{i}" for i in range(100)]
            stats = client.stats.snapshot()
            assert stats.calls["Echo"] == 100 and len(stats.latencies) == 100


async def test_large_result_goes_multipart_and_large_request_is_reassembled() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(settings(server.url), make_registry("Dev1"))
        async with running(client):
            link = server.link
            before = len(link.payload_sizes)
            answer = await server.call("Dev1", "Big", one("size", BaseType.INTEGER, 200_000))
            assert result_of(answer) == "x" * 200_000
            sizes = link.payload_sizes[before:]
            assert len(sizes) == 25 and max(sizes) <= 8192
            # A request over the chunk size arrives as multipart and is reassembled by the agent.
            text = "y" * 30_000
            answer = await server.call("Dev1", "Echo", text_params(text), chunk_size=4096)
            assert result_of(answer) == f"Dev1:{text}"
            # A result over the max message size is refused with a one-line reason.
            answer = await server.call("Dev1", "Big", one("size", BaseType.INTEGER, 1_100_000))
            assert answer.status is Status.ENTITY_TOO_LARGE
            assert "too large" in (answer.reason or "")


async def test_slow_call_does_not_block_fast_one() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(settings(server.url), make_registry())
        async with running(client):
            loop = asyncio.get_running_loop()
            slow = asyncio.create_task(
                server.call(GATEWAY, "Sleep", one("seconds", BaseType.NUMBER, 1.5))
            )
            await asyncio.sleep(0.05)
            started = loop.time()
            fast = await server.call(GATEWAY, "Echo", text_params("quick"))
            assert loop.time() - started < 0.5
            assert result_of(fast) == f"{GATEWAY}:quick"
            assert not slow.done()
            assert result_of(await slow) == "slept"


async def test_link_dropped_mid_call_reconnects_and_rebinds() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(settings(server.url), make_registry("Dev1"))
        async with running(client):
            first = await server.wait_link(1)
            pending = asyncio.create_task(
                server.call("Dev1", "Sleep", one("seconds", BaseType.NUMBER, 0.3))
            )
            await asyncio.sleep(0.05)
            await first.ws.close(1001, "server restarting")
            with pytest.raises(ConnectionError):
                await pending
            second = await server.wait_link(2)
            await client.wait_ready(5)
            assert second.bound == [GATEWAY, "Dev1"]
            assert second.session_id != first.session_id
            assert client.session_id == second.session_id
            answer = await server.call("Dev1", "Echo", text_params("again"), link=second)
            assert result_of(answer) == "Dev1:again"
            # The call in flight finished on the agent but its answer had nowhere to go.
            await asyncio.sleep(0.5)
            assert client.stats.abandoned_calls == 1
            stats = client.stats.snapshot()
            assert stats.links_lost == 1 and stats.reconnects == 1


async def test_malformed_frames_are_answered_or_dropped_and_link_survives() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(settings(server.url), make_registry("Dev1"))
        async with running(client):
            link = server.link
            await link.ws.send(b"\x01\x02")  # shorter than a header: dropped
            await link.ws.send("a text frame")  # not binary: dropped
            # A POST whose params carry an unknown base type byte: the header is readable.
            good = encode_message(
                service_request(link.session_id, 0x99, one("text", BaseType.STRING, "z"))
            )[0]
            marker = good.index(b"\x04text") + 5 + 1  # name, description "", then the type byte
            bad = good[:marker] + b"\x63" + good[marker + 1 :]
            answer = await server.request_raw(link, bad, 0x99)
            assert answer.status is Status.BAD_REQUEST
            assert "malformed" in (answer.reason or "")
            answer = await server.call("Dev1", "Echo", text_params("still here"))
            assert result_of(answer) == "Dev1:still here"
            assert len(server.links) == 1 and client.state is ChannelState.READY


def service_request(session_id: int, request_id: int, params: InfoTable) -> Request:
    return Request(
        Method.POST,
        request_id,
        5,
        session_id,
        EntityType.THING,
        "Dev1",
        Characteristic.SERVICES,
        "Echo",
        (),
        params,
    )


async def test_ping_keepalive_keeps_link_and_missing_pong_drops_it() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(
            settings(server.url, ping_interval=0.1, pong_timeout=0.3), make_registry()
        )
        async with running(client):
            first = await server.wait_link(1)
            await asyncio.sleep(0.6)  # several pings answered by the server
            assert len(server.links) == 1 and client.state is ChannelState.READY
            # The server stops reading: pings go unanswered, the agent drops and reconnects.
            first.ws.transport.pause_reading()
            await server.wait_link(2)
            first.ws.transport.resume_reading()  # let the old link finish closing
            await client.wait_ready(5)
            assert client.stats.links_lost == 1


async def test_stop_sends_unbind_then_close_1000() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(settings(server.url), make_registry("Dev1"))
        async with running(client):
            link = await server.wait_link(1)
        async with asyncio.timeout(2):
            await link.closed.wait()
        assert [b.names for b in link.unbinds] == [(GATEWAY, "Dev1")]
        assert link.bound == []
        assert link.close_code == 1000
        assert client.state is ChannelState.DISCONNECTED


async def test_stop_while_never_connected_returns() -> None:
    client = AlwaysOnClient(settings("ws://127.0.0.1:9/Thingworx/WS"), make_registry())
    task = asyncio.create_task(client.run())
    await asyncio.sleep(0.2)
    await client.stop()
    async with asyncio.timeout(3):
        await task
    assert client.state is ChannelState.DISCONNECTED
    assert client.stats.connection_attempts >= 1


async def test_things_added_after_ready_are_bound_on_request() -> None:
    async with MiniServer() as server:
        registry = make_registry("Dev1")
        client = AlwaysOnClient(settings(server.url), registry)
        async with running(client):
            link = await server.wait_link(1)
            registry.add_thing("Dev2")
            assert await client.bind_new_things() == ["Dev2"]
            assert await client.bind_new_things() == []
            assert link.bound == [GATEWAY, "Dev1", "Dev2"]
            answer = await server.call("Dev2", "GetMetadata")
            assert answer.status is Status.SUCCESS
        assert [n for b in link.unbinds for n in b.names] == [GATEWAY, "Dev1", "Dev2"]


async def test_calls_beyond_the_in_flight_cap_are_refused() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(settings(server.url), make_registry())
        async with running(client):
            sleepy = one(
                "seconds", BaseType.NUMBER, 3.0
            )  # all 503 calls arrive before the first ends, even on a loaded machine
            answers = await asyncio.gather(
                *(server.call(GATEWAY, "Sleep", sleepy) for _ in range(MAX_CALLS_IN_FLIGHT + 3))
            )
            statuses = [a.status for a in answers]
            assert statuses.count(Status.SUCCESS) == MAX_CALLS_IN_FLIGHT
            assert statuses.count(Status.SERVICE_UNAVAILABLE) == 3
            answer = await server.call(GATEWAY, "Echo", text_params("after"))
            assert answer.status is Status.SUCCESS
