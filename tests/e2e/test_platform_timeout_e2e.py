"""Every direct call fits in the platform's request timeout (issue 12), end to end.

REST call on the stand-in (request timeout 30 s, ThingWorx's default) → AlwaysOn → agent →
azure-iot-hub SDK → IoT Hub emulator → simulated fleet, device-0002 offline. With the old
defaults (connect 30 s + response 30 s) a call to an offline device outlived the platform and
ended in a generic 504; now the defaults fit and the caller gets the hub's 404103 in time, and
timeouts that cannot fit are refused before anything is sent.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.support.chain import GATEWAY, AgentChain

PLATFORM_TIMEOUT = 30.0
ONLINE, OFFLINE = "device-0001", "device-0002"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chain(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentChain]:
    async with AgentChain(
        tmp_path_factory.mktemp("fit"),
        devices=2,
        offline_share=0.5,
        tier=None,
        bind=[ONLINE, OFFLINE],
        call_timeout=PLATFORM_TIMEOUT,
    ) as running:
        assert running.fleets[0].offline_at_start() == [OFFLINE]
        yield running


pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]


async def test_offline_device_with_default_inputs_answers_404103_in_time(
    chain: AgentChain,
) -> None:
    started = time.monotonic()
    status, body = await chain.call(OFFLINE, "Reboot")
    took = time.monotonic() - started
    assert status != 200 and "404103" in str(body), (status, body)
    assert took < PLATFORM_TIMEOUT, took
    print(f"direct call to an offline device, default inputs: {status} after {took:.1f} s")


async def test_timeouts_that_cannot_fit_are_refused_in_one_line(chain: AgentChain) -> None:
    started = time.monotonic()
    status, body = await chain.call(
        ONLINE, "Reboot", {"connectTimeoutInSeconds": 30, "responseTimeoutInSeconds": 30}
    )
    assert time.monotonic() - started < 5
    assert status == 400, (status, body)
    text = str(body)
    assert "\n" not in text
    for part in (
        "connectTimeoutInSeconds (30)",
        "responseTimeoutInSeconds (30)",
        "thingworx.request_timeout (30 s)",
        f"Reboot on the gateway Thing {GATEWAY}",
    ):
        assert part in text, text
    # Inputs that fit go through; the job form on the gateway takes long waits.
    status, body = await chain.call(
        ONLINE, "Reboot", {"connectTimeoutInSeconds": 5, "responseTimeoutInSeconds": 15}
    )
    assert status == 200, (status, body)
    status, body = await chain.call(
        GATEWAY,
        "Reboot",
        {
            "queryCondition": f"deviceId = '{ONLINE}'",
            "connectTimeoutInSeconds": 300,
            "responseTimeoutInSeconds": 300,
        },
    )
    assert status == 200, (status, body)
