"""The simulated fleet against the real DeviceEndpoint over TLS on 127.0.0.1 port 0."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from emulator.iothub.errors import HubError
from emulator.iothub.fleet import Fleet, FleetError, method_answer
from emulator.iothub.mqtt import DeviceEndpoint
from tests.emulator.iothub.mqtt.support import (
    CA_PEM,
    HUB,
    eventually,
    new_endpoint,
    server_context,
)
from tests.support.fakes import FakeTwins, device_key

IDS = [f"sim-{i:03d}" for i in range(50)]


@pytest.fixture
def twins() -> FakeTwins:
    return FakeTwins(IDS, host=HUB)


@pytest.fixture
async def endpoint(twins: FakeTwins) -> AsyncIterator[tuple[DeviceEndpoint, int]]:
    hub = new_endpoint(twins)
    port = await hub.start("127.0.0.1", 0, server_context("127.0.0.1"))
    yield hub, port
    await hub.stop()


def make_fleet(port: int, ids: list[str], **kwargs: float) -> Fleet:
    devices = [(d, device_key(d)) for d in ids]
    return Fleet("127.0.0.1", port, CA_PEM, HUB, devices, **kwargs)  # type: ignore[arg-type]


async def test_fifty_devices_twenty_percent_offline_answer_and_report(
    endpoint: tuple[DeviceEndpoint, int], twins: FakeTwins
) -> None:
    hub, port = endpoint
    fleet = make_fleet(port, IDS, offline_share=0.2)
    offline = fleet.offline_at_start()
    assert offline == IDS[4::5]  # every 5th device with seed 0
    await fleet.start()
    try:
        online = fleet.online_ids()
        assert online == [d for d in IDS if d not in offline]
        assert hub.connected_count() == 40

        replies = await asyncio.gather(
            *(
                hub.invoke_method(
                    d, "reboot", {"delaySeconds": 3}, response_timeout=10, connect_timeout=0
                )
                for d in online
            )
        )
        assert {(r.status, str(r.payload)) for r in replies} == {
            (200, str({"rebooting": True, "delaySeconds": 3}))
        }
        interval = await hub.invoke_method(
            online[0],
            "setTelemetryInterval",
            {"intervalSeconds": 15},
            response_timeout=5,
            connect_timeout=0,
        )
        assert (interval.status, interval.payload) == (200, {"intervalSeconds": 15})
        bad = await hub.invoke_method(
            online[0],
            "setTelemetryInterval",
            {"intervalSeconds": -1},
            response_timeout=5,
            connect_timeout=0,
        )
        assert bad.status == 400
        echo = await hub.invoke_method(
            online[1], "anything", {"k": [1, 2]}, response_timeout=5, connect_timeout=0
        )
        assert (echo.status, echo.payload) == (200, {"k": [1, 2]})

        with pytest.raises(HubError) as not_online:
            await hub.invoke_method(
                offline[0], "reboot", None, response_timeout=5, connect_timeout=0
            )
        assert not_online.value.code == 404103

        for device_id in IDS:
            hub.push_desired(device_id, twins.desired_patch(device_id, {"interval": 7}))
        await eventually(lambda: all(twins.reported[d].get("interval") == 7 for d in online))
        assert all("interval" not in twins.reported[d] for d in offline)
        # What each device received is counted: the reboot for all, 3 more for the first two.
        extra = Counter({online[0]: 2, online[1]: 1})
        assert fleet.methods_received == Counter(online) + extra
        assert fleet.patches_received == Counter(online)
    finally:
        await fleet.stop()
    await eventually(lambda: hub.connected_count() == 0)
    assert fleet.online_ids() == []


async def test_set_online_reconnects_with_the_persistent_session(
    endpoint: tuple[DeviceEndpoint, int],
) -> None:
    hub, port = endpoint
    fleet = make_fleet(port, IDS[:3], offline_share=1 / 3, seed=1)
    (offline,) = fleet.offline_at_start()
    await fleet.start()
    try:
        assert offline not in fleet.online_ids()
        call = asyncio.create_task(
            hub.invoke_method(offline, "ping", 1, response_timeout=5, connect_timeout=5)
        )
        await fleet.set_online(offline, True)
        assert (await call).payload == 1

        await fleet.set_online(offline, False)
        await eventually(lambda: not hub.is_connected(offline))
        assert offline not in fleet.online_ids()
        await fleet.set_online(offline, True)
        # the device did not subscribe again: the hub kept its session
        assert hub.is_method_ready(offline)
        assert (
            await hub.invoke_method(offline, "m", 2, response_timeout=5, connect_timeout=0)
        ).payload == 2
    finally:
        await fleet.stop()


async def test_answer_delay_beyond_the_response_timeout_gives_504101(
    endpoint: tuple[DeviceEndpoint, int],
) -> None:
    hub, port = endpoint
    fleet = make_fleet(port, IDS[:1], answer_delay=0.5)
    await fleet.start()
    try:
        with pytest.raises(HubError) as late:
            await hub.invoke_method(IDS[0], "m", None, response_timeout=0.2, connect_timeout=0)
        assert late.value.code == 504101
        reply = await hub.invoke_method(IDS[0], "m", None, response_timeout=2, connect_timeout=0)
        assert reply.status == 200
    finally:
        await fleet.stop()


async def test_refused_device_raises_fleet_error(
    endpoint: tuple[DeviceEndpoint, int], twins: FakeTwins
) -> None:
    _, port = endpoint
    fleet = Fleet("127.0.0.1", port, CA_PEM, HUB, [(IDS[0], device_key("other"))])
    with pytest.raises(FleetError, match="return code 5"):
        await fleet.start()
    assert fleet.online_ids() == []


@pytest.mark.parametrize(
    ("name", "payload", "answer"),
    [
        ("reboot", None, (200, {"rebooting": True, "delaySeconds": 0})),
        ("reboot", {"delaySeconds": 9}, (200, {"rebooting": True, "delaySeconds": 9})),
        ("setTelemetryInterval", {"intervalSeconds": 2.5}, (200, {"intervalSeconds": 2.5})),
        ("setTelemetryInterval", {}, (400, {"error": "intervalSeconds must be a positive number"})),
        (
            "setTelemetryInterval",
            {"intervalSeconds": True},
            (400, {"error": "intervalSeconds must be a positive number"}),
        ),
        (
            "setTelemetryInterval",
            {"intervalSeconds": "5"},
            (400, {"error": "intervalSeconds must be a positive number"}),
        ),
        ("other", [1, "x"], (200, [1, "x"])),
    ],
)
def test_method_answers(name: str, payload: object, answer: tuple[int, object]) -> None:
    assert method_answer(name, payload) == answer


async def test_devices_renew_their_sas_token_by_reconnecting(
    endpoint: tuple[DeviceEndpoint, int], twins: FakeTwins
) -> None:
    hub, port = endpoint
    fleet = make_fleet(port, IDS[:2], sas_ttl=121)  # renewal due 120 s early: after 1 s
    await fleet.start()
    try:
        await eventually(lambda: twins.state_changes.count((IDS[0], True)) >= 2, timeout=5)
        await eventually(lambda: fleet.online_ids() == IDS[:2])
        reply = await hub.invoke_method(IDS[0], "m", "x", response_timeout=5, connect_timeout=5)
        assert reply.payload == "x"
    finally:
        await fleet.stop()
