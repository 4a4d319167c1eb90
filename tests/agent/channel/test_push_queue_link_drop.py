"""Pushes across a link drop (issue 12): the bounded queue keeps the newest pushes and the latest
value of every property, counts what it dropped in ``/metrics``, and sends the survivors after
the next bind and synchronisation. Real channel, real stand-in, both on loopback."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aiohttp

from agent.alwayson import (
    BaseType,
    DataShape,
    EventMetadata,
    FieldDefinition,
    InfoTable,
    PropertyMetadata,
    PropertyValue,
)
from agent.channel import AlwaysOnClient, ChannelState
from agent.health import HubHealth, LatencyHistogram, render_metrics
from emulator.thingworx.server import ThingWorxStandIn
from tests.support.channel import make_registry, running, settings

KEY = "test-key"
THING = "Dev1"
BOUND = 4  # thingworx.push_queue_size in this test
TICK = DataShape.of(FieldDefinition("n", BaseType.INTEGER, "the tick's number"), name="Tick")
PUSHED = {"pushType": "VALUE", "pushThreshold": 0.0}


def _registry() -> Any:
    registry = make_registry(THING)
    registry.add_property(THING, PropertyMetadata("level", BaseType.INTEGER, "a level", PUSHED))
    registry.add_property(THING, PropertyMetadata("mode", BaseType.STRING, "a mode", PUSHED))
    registry.add_event(THING, EventMetadata("Tick", TICK, "one tick"))
    return registry


def _metrics(client: AlwaysOnClient) -> dict[str, float]:
    """The channel's push figures as ``/metrics`` renders them."""
    text = render_metrics(
        client.stats.snapshot(), LatencyHistogram(), client.state, HubHealth("hub.example")
    )
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("jobs_agent_push"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def _get(server: ThingWorxStandIn, path: str) -> Any:
    url = f"http://127.0.0.1:{server.port}{path}"
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers={"appKey": KEY}) as reply,
    ):
        assert reply.status == 200, await reply.text()
        return await reply.json()


async def _until(check: Any, timeout: float, what: str) -> None:
    for _ in range(int(timeout / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    assert await check(), what


def _value(name: str, base_type: BaseType, value: Any) -> PropertyValue:
    return PropertyValue(name, base_type, value, datetime.now(UTC))


async def test_full_queue_keeps_the_newest_and_latest_values_and_sends_them_after_reconnect() -> (
    None
):
    first = ThingWorxStandIn(KEY, port=0, call_timeout=5.0)
    port = await first.start()
    url = f"ws://127.0.0.1:{port}/Thingworx/WS"
    client = AlwaysOnClient(settings(url, push_queue_size=BOUND), _registry())
    second: ThingWorxStandIn | None = None
    async with running(client):
        try:
            await first.wait_metadata(THING, 5)

            async def synchronised() -> bool:
                return THING in client.synchronised_things

            await _until(synchronised, 5, "the Thing never synchronised")
            await first.stop()

            async def down() -> bool:
                return client.state is not ChannelState.READY

            await _until(down, 5, "the channel never noticed the link drop")

            # Link down: 9 pushes into a queue of 4.
            client.push_properties(THING, [_value("mode", BaseType.STRING, "auto")])
            for level in (1, 2, 3):
                client.push_properties(THING, [_value("level", BaseType.INTEGER, level)])
            for n in range(1, 6):
                client.fire_event(THING, "Tick", InfoTable(TICK, [{"n": n}]))
            figures = _metrics(client)
            assert figures["jobs_agent_pushes_dropped_total"] == 5  # the 5 oldest
            assert figures["jobs_agent_push_queue"] == BOUND

            second = ThingWorxStandIn(KEY, port=port, call_timeout=5.0)
            await second.start()
            standin = second
            await standin.wait_metadata(THING, 10)

            async def delivered() -> bool:
                fired = await _get(standin, f"/standin/events?thing={THING}")
                return len(fired["events"]) >= 4

            await _until(delivered, 10, "the queued events never arrived")
            await asyncio.sleep(0.3)  # nothing more may follow
            fired = (await _get(standin, f"/standin/events?thing={THING}"))["events"]
            # The survivors: the newest pushes, in order (Tick 1 and the older property pushes
            # were dropped).
            assert [(e["event"], e["data"]["rows"]) for e in fired] == [
                ("Tick", [{"n": n}]) for n in (2, 3, 4, 5)
            ]
            # The latest value of every property arrives although its pushes were dropped.
            values = await _get(standin, f"/Thingworx/Things/{THING}/Properties")
            assert values["rows"] == [{"mode": "auto", "level": 3}] or values["rows"] == [
                {"level": 3, "mode": "auto"}
            ]
            figures = _metrics(client)
            assert figures["jobs_agent_push_queue"] == 0
            assert figures["jobs_agent_pushes_dropped_total"] == 5
            assert client.stats.snapshot().pushes_sent >= 5  # 4 events + the latest values
        finally:
            await client.stop()
            if second is not None:
                await second.stop()
