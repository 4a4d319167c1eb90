"""Pushed progress end to end: a job's status changes arrive at the stand-in as property values
and events (through the real channel, the real server-side synchronisation and the REST
convention), across a link drop; and 100 concurrent GetJob callers cost the hub one read per
watch interval (reads counted on the emulator).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.support.chain import ENDED, GATEWAY, METHOD, AgentChain

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

ONLINE = "device-0001"
SLOW = "device-0004"
WATCH = 0.5
GET_JOB_ROUTE = "GET /jobs/v2/{id}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chain(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentChain]:
    async with AgentChain(
        tmp_path_factory.mktemp("push"),
        devices=3,
        offline_share=0.0,
        slow_devices=1,
        slow_delay=4.0,
        bind=[ONLINE, SLOW],
        jobs={"watch_interval": WATCH, "watch_max_interval": WATCH},
    ) as running:
        yield running


async def _get(chain: AgentChain, path: str) -> tuple[int, Any]:
    async with chain.http.get(
        f"http://127.0.0.1:{chain.standin.port}{path}", headers={"appKey": chain.app_key}
    ) as reply:
        return reply.status, await (
            reply.json() if reply.content_type == "application/json" else reply.text()
        )


async def _events(chain: AgentChain, thing: str) -> list[dict[str, Any]]:
    status, body = await _get(chain, f"/standin/events?thing={thing}")
    assert status == 200, body
    return list(body["events"])


async def _wait_event(
    chain: AgentChain, thing: str, event: str, job_id: str, timeout: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        for fired in await _events(chain, thing):
            rows = fired["data"]["rows"]
            if fired["event"] == event and rows and rows[0].get("jobId") == job_id:
                return fired
        assert time.monotonic() < deadline, f"no {event} of {job_id} on {thing} in {timeout} s"
        await asyncio.sleep(0.1)


async def _method_job(chain: AgentChain, job_id: str, devices: list[str]) -> None:
    condition = "deviceId IN [" + ",".join(f"'{d}'" for d in devices) + "]"
    await chain.rows(
        GATEWAY,
        METHOD,
        {
            "jobId": job_id,
            "queryCondition": condition,
            "methodName": "reboot",
            "payload": {},
            "responseTimeoutInSeconds": 10,
            "connectTimeoutInSeconds": 0,
        },
    )


async def test_metadata_declares_properties_and_events(chain: AgentChain) -> None:
    entry = await chain.standin.wait_metadata(GATEWAY, 10)
    assert entry.metadata is not None
    assert {"activeJobCount", "lastJob"} <= set(entry.metadata.properties)
    events = entry.metadata.events
    assert events["AzureIotDeviceJobStatusChanged"].data_shape.name == "AzureIotDeviceJob"
    assert "summary" in events["AzureIotDeviceJobEnded"].data_shape
    device = await chain.standin.wait_metadata(ONLINE, 10)
    assert device.metadata is not None
    assert "lastJobResult" in device.metadata.properties
    assert "AzureIotDeviceJobDeviceResult" in device.metadata.events


async def test_status_changes_arrive_as_properties_and_events(chain: AgentChain) -> None:
    await _method_job(chain, "push-1", [ONLINE])
    ended = await _wait_event(chain, GATEWAY, "AzureIotDeviceJobEnded", "push-1")
    assert ended["data"]["rows"][0]["status"] in ENDED
    changed = [
        f["data"]["rows"][0]["status"]
        for f in await _events(chain, GATEWAY)
        if f["event"] == "AzureIotDeviceJobStatusChanged"
        and f["data"]["rows"][0]["jobId"] == "push-1"
    ]
    assert changed and changed[-1] in ENDED
    status, body = await _get(chain, f"/Thingworx/Things/{GATEWAY}/Properties/lastJob")
    assert status == 200, body
    assert body["rows"][0]["lastJob"]["jobId"] == "push-1"
    assert body["dataShape"]["fieldDefinitions"]["lastJob"]["baseType"] == "JSON"
    status, body = await _get(chain, f"/Thingworx/Things/{GATEWAY}/Properties")
    assert status == 200 and body["rows"][0]["activeJobCount"] == 0
    result = await _wait_event(chain, ONLINE, "AzureIotDeviceJobDeviceResult", "push-1")
    assert result["data"]["rows"][0]["deviceId"] == ONLINE
    status, body = await _get(chain, f"/Thingworx/Things/{ONLINE}/Properties/lastJobResult")
    assert status == 200 and body["rows"][0]["lastJobResult"]["jobId"] == "push-1"


async def test_pushes_survive_a_link_drop(chain: AgentChain) -> None:
    await _method_job(chain, "push-2", [SLOW])  # the slow device answers after 4 s
    await _wait_event(chain, GATEWAY, "AzureIotDeviceJobStatusChanged", "push-2")
    for session in chain.standin.sessions():
        await session.link.close(1011, "test drops the link")
    ended = await _wait_event(chain, GATEWAY, "AzureIotDeviceJobEnded", "push-2", timeout=40)
    assert ended["data"]["rows"][0]["jobId"] == "push-2"
    assert chain.app.channel.stats.links_lost >= 1


async def test_concurrent_getjob_callers_share_one_read_per_interval(chain: AgentChain) -> None:
    await _method_job(chain, "push-3", [SLOW])
    await asyncio.sleep(WATCH)
    before = chain.hub.requests(GET_JOB_ROUTE)
    started = time.monotonic()
    rows = await asyncio.gather(*(chain.job("push-3") for _ in range(100)))
    elapsed = time.monotonic() - started
    reads = chain.hub.requests(GET_JOB_ROUTE) - before
    assert all(r["jobId"] == "push-3" for r in rows)
    # One read per interval (plus the watcher's own and one in flight at each edge).
    assert reads <= elapsed / WATCH + 3, f"{reads} hub reads in {elapsed:.2f} s for 100 callers"
    await chain.wait_status("push-3", ENDED, timeout=30)
