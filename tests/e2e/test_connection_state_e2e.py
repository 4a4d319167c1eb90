"""AzureIotDeviceGetConnectionState end to end: "bound" is not "device online" (issue 13).

REST convention on the stand-in → AlwaysOn → agent → IoT Hub client → IoT Hub emulator (the
device's twin) → simulated fleet. Two devices, one of them offline, both bound as device Things,
plus a device Thing the hub does not know: all three are bound; only the twin tells which device
is online.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.support.chain import GATEWAY, AgentChain

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

STATE = "AzureIotDeviceGetConnectionState"
UNKNOWN = "device-0099"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chain(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentChain]:
    async with AgentChain(
        tmp_path_factory.mktemp("state"),
        devices=2,
        offline_share=0.5,
        tier=None,
        bind=["device-0001", "device-0002", UNKNOWN],
    ) as running:
        yield running


async def test_twin_connection_state_of_online_and_offline_devices(chain: AgentChain) -> None:
    (offline,) = chain.fleets[0].offline_at_start()
    online = next(d for d in ("device-0001", "device-0002") if d != offline)
    for device, state in ((online, "Connected"), (offline, "Disconnected")):
        (row,) = await chain.rows(device, STATE)
        assert row["deviceId"] == device
        assert row["connectionState"] == state
        assert row["status"] == "enabled"
    status, body = await chain.call(offline, STATE, {"deviceId": online})
    assert status == 400 and "deviceId" in body, body


async def test_unknown_device_and_gateway(chain: AgentChain) -> None:
    status, body = await chain.call(UNKNOWN, STATE)
    assert status == 404, body
    assert UNKNOWN in body and "\n" not in body
    status, body = await chain.call(GATEWAY, STATE)
    assert status == 404, body
