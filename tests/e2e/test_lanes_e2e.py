"""Slow devices and heavy callers, end to end (issue 16): direct calls to offline devices never
stall GetJob and FindJobs, the call over the device lane's limit is refused at once, and a
FindJobs that would read more than one call may is stopped at once.

The whole chain on loopback: ThingWorx REST convention on the stand-in → AlwaysOn → agent
(default lanes: ``iothub.workers`` 8, ``iothub.device_calls`` 32) → azure-iot-hub SDK → IoT Hub
emulator (no job quotas) → simulated fleet with four offline devices. Before the lanes, 8
direct calls to offline devices took every worker for their connect timeout and GetJob waited
behind them.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from agent.alwayson import BaseType, DataShape, FieldDefinition, InfoTable, Status
from agent.registry import ServiceError
from tests.support.chain import GATEWAY, AgentChain

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

OFFLINE = [f"device-{n:04d}" for n in range(1, 5)]
LANE = 32
CONNECT_TIMEOUT = 8  # each direct call waits this long for its offline device
GET = "AzureIotDeviceJobGetJob"
FIND = "AzureIotDeviceJobFindJobs"
TWIN = "AzureIotDeviceJobScheduleTwinUpdateJob"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chain(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentChain]:
    async with AgentChain(
        tmp_path_factory.mktemp("lanes"),
        devices=4,
        offline_share=1.0,
        tier=None,
        bind=OFFLINE,
        iothub={"workers": 8, "device_calls": LANE, "max_rows_per_call": 50},
    ) as running:
        assert running.fleets[0].offline_at_start() == OFFLINE
        yield running


async def _median(call: Callable[[], Awaitable[object]], n: int = 15) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _inputs(connect_timeout: int) -> InfoTable:
    name = "connectTimeoutInSeconds"
    return InfoTable(
        DataShape.of(FieldDefinition(name, BaseType.INTEGER)), [{name: connect_timeout}]
    )


async def _reboot(chain: AgentChain, device: str) -> tuple[int, object]:
    return await chain.call(device, "Reboot", {"connectTimeoutInSeconds": CONNECT_TIMEOUT})


async def test_offline_direct_calls_leave_getjob_and_findjobs_alone(chain: AgentChain) -> None:
    await chain.rows(GATEWAY, TWIN, {"jobId": "lanes-1", "patch": {"tags": {"a": 1}},
                                     "queryCondition": "deviceId = 'device-0001'"})  # fmt: skip

    async def get_job() -> None:
        await chain.rows(GATEWAY, GET, {"jobId": "lanes-1"})

    async def find_jobs() -> None:
        await chain.rows(GATEWAY, FIND, {"type": "twinUpdate"})

    idle_get, idle_find = await _median(get_job), await _median(find_jobs)

    calls = [asyncio.create_task(_reboot(chain, OFFLINE[i % len(OFFLINE)])) for i in range(LANE)]
    client = chain.app.client
    deadline = time.monotonic() + 10
    while client.load.device_busy < LANE:
        assert time.monotonic() < deadline, f"only {client.load.device_busy} calls in flight"
        await asyncio.sleep(0.02)

    busy_get, busy_find = await _median(get_job), await _median(find_jobs)
    started = time.perf_counter()
    status, body = await _reboot(chain, OFFLINE[0])  # the 33rd, through ThingWorx's REST
    refused_after = time.perf_counter() - started
    with pytest.raises(ServiceError) as direct:  # one more, straight into the agent's registry
        await chain.app.registry.dispatch(OFFLINE[1], "Reboot", _inputs(CONNECT_TIMEOUT))
    assert all(not c.done() for c in calls), "the direct calls must still be in flight"

    # Within 2x of idle (50 ms of slack for a shared 2-core machine); before the lanes GetJob
    # waited for the connect timeout (8 s) behind the direct calls.
    assert busy_get <= 2 * idle_get + 0.05, (idle_get, busy_get)
    assert busy_find <= 2 * idle_find + 0.05, (idle_find, busy_find)
    assert direct.value.status is Status.SERVICE_UNAVAILABLE
    assert status == 500, body  # ThingWorx answers an edge error status with HTTP 500
    assert refused_after < 2.0, refused_after
    assert isinstance(body, str) and "\n" not in body
    assert f"{LANE} direct-method calls are already waiting on devices" in body
    assert f"iothub.device_calls = {LANE}" in body
    assert client.load.refused_device == 2

    answers = await asyncio.gather(*calls)
    assert {status for status, _ in answers} == {404}  # DeviceNotOnline, each on its own
    assert client.load.device_busy == 0


async def test_findjobs_over_the_per_call_bound_answers_a_page_and_a_token(
    chain: AgentChain,
) -> None:
    # The per-call bound still stops the read at 50 rows (iothub.max_rows_per_call); since issue
    # 12's paging, the caller gets those rows and a continuationToken instead of
    # ENTITY_TOO_LARGE, and reaches every job by following the token.
    for n in range(60):  # more jobs than iothub.max_rows_per_call (50)
        await chain.rows(GATEWAY, TWIN, {"jobId": f"bulk-{n}", "patch": {"tags": {"n": n}},
                                         "queryCondition": "deviceId = 'device-0002'"})  # fmt: skip
    seen: list[str] = []
    token = ""
    for _ in range(10):
        rows = await chain.rows(GATEWAY, FIND, {"continuationToken": token} if token else {})
        # The read stops once past the bound: at most one hub page (100 here) over it.
        assert 0 < len(rows) <= 50 + 100
        seen += [row["jobId"] for row in rows]
        token = rows[0]["continuationToken"] or ""
        if not token:
            break
    bulk = [job for job in seen if job.startswith("bulk-")]
    assert sorted(bulk) == sorted(f"bulk-{n}" for n in range(60)) and len(seen) == len(set(seen))
    # The agent is still there for the next call.
    assert await chain.rows(GATEWAY, GET, {"jobId": "bulk-0"})
