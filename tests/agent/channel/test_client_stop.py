"""How the AlwaysOn client stops and how fast it gives up a dead link, against the real
websockets server (the mini AlwaysOn server): the drain of the calls in flight
(``thingworx.drain_timeout``) and a dead link closed without waiting for the close handshake."""

from __future__ import annotations

import asyncio
import time

from agent.alwayson import BaseType, Status
from agent.channel import AlwaysOnClient
from tests.agent.channel.miniserver import MiniServer, result_of
from tests.support.channel import GATEWAY, make_registry, one, settings, text_params


async def _in_flight(client: AlwaysOnClient, count: int) -> None:
    deadline = time.monotonic() + 5
    while client.calls_in_flight < count:
        assert time.monotonic() < deadline, f"{client.calls_in_flight} calls in flight"
        await asyncio.sleep(0.01)


async def test_stop_answers_calls_in_flight_with_their_result_before_unbinding() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(settings(server.url, drain_timeout=5.0), make_registry())
        run = asyncio.create_task(client.run())
        await client.wait_ready(5)
        link = await server.wait_link(1)
        sleepy = one("seconds", BaseType.NUMBER, 0.5)
        calls = [asyncio.create_task(server.call(GATEWAY, "Sleep", sleepy)) for _ in range(5)]
        await _in_flight(client, 5)
        stopping = asyncio.create_task(client.stop())
        await asyncio.sleep(0.05)
        # A call arriving while the agent drains is refused at once; nothing was done.
        late = await server.call(GATEWAY, "Echo", text_params("late"), timeout=2)
        assert late.status is Status.SERVICE_UNAVAILABLE
        assert late.reason is not None and "is stopping" in late.reason
        assert link.unbinds == []  # still bound while the calls finish
        answers = await asyncio.gather(*calls)
        assert [result_of(a) for a in answers] == ["slept"] * 5
        await stopping
        async with asyncio.timeout(5):
            await run
        assert [b.names for b in link.unbinds] == [(GATEWAY,)]
        assert client.stats.abandoned_calls == 0


async def test_call_still_running_at_the_drain_deadline_is_answered_as_unfinished() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(settings(server.url, drain_timeout=0.3), make_registry())
        run = asyncio.create_task(client.run())
        await client.wait_ready(5)
        quick = asyncio.create_task(
            server.call(GATEWAY, "Sleep", one("seconds", BaseType.NUMBER, 0.1))
        )
        slow = asyncio.create_task(
            server.call(GATEWAY, "Sleep", one("seconds", BaseType.NUMBER, 4.0))
        )
        await _in_flight(client, 2)
        started = time.monotonic()
        await client.stop()
        async with asyncio.timeout(5):
            await run
        assert time.monotonic() - started < 2.5  # the drain deadline, not the 4 s call
        assert result_of(await quick) == "slept"
        unfinished = await slow
        assert unfinished.status is Status.GATEWAY_TIMEOUT
        reason = unfinished.reason or ""
        assert "may have taken effect" in reason and "thingworx.drain_timeout = 0.3 s" in reason
        assert "retry" not in reason


async def test_dead_link_is_dropped_within_ping_interval_plus_pong_timeout() -> None:
    # connect_timeout (5 s) was also the close handshake's wait after a pong timeout: a dead
    # link took ping_interval + pong_timeout + 5 s to be given up.
    async with MiniServer() as server:
        client = AlwaysOnClient(
            settings(server.url, ping_interval=0.2, pong_timeout=0.3, connect_timeout=5.0),
            make_registry(),
        )
        run = asyncio.create_task(client.run())
        try:
            await client.wait_ready(5)
            first = await server.wait_link(1)
            first.ws.transport.pause_reading()  # the server is gone: no pong, no close frame
            started = time.monotonic()
            error = await client.wait_error(10)
            took = time.monotonic() - started
            first.ws.transport.resume_reading()
            assert error.startswith("link lost: pong timeout")
            assert took < 0.2 + 0.3 + 1.5, f"dead link given up after {took:.2f} s"
            await server.wait_link(2)
        finally:
            await client.stop()
            async with asyncio.timeout(5):
                await run
