"""The IoT Hub client's lanes and per-call bound, against the scripted HTTPS server on loopback:
direct methods never take the quick calls' threads, a full lane refuses at once, and a call
that reads too much is stopped while it reads."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from aiohttp import web

from agent.iothub import CallTooLarge, IotHubClient, IotHubError, LaneFull
from agent.iothub.lanes import CallBudget, Lane
from tests.support.scripted_hub import JOB, Answer, Scripted

METHOD = "POST /twins/dev-1/methods"


def _jobs(count: int, *, continuation: bool) -> list[Answer]:
    headers = {"x-ms-continuation": "more"} if continuation else {}
    return [
        web.json_response([{**JOB, "jobId": f"j{i}"}] * 3, headers=headers) for i in range(count)
    ]


async def _busy(client: IotHubClient, lane: str, count: int) -> None:
    deadline = time.monotonic() + 5
    while getattr(client.load, f"{lane}_busy") < count:
        assert time.monotonic() < deadline, f"the {lane} lane never held {count} calls"
        await asyncio.sleep(0.01)


async def test_direct_calls_do_not_hold_the_quick_calls_and_a_full_device_lane_refuses(
    scripted: Scripted,
) -> None:
    scripted.answers[METHOD] = [1.5]  # the device takes 1.5 s to answer
    scripted.answers["GET /jobs/v2/j1"] = [web.json_response(JOB) for _ in range(5)]
    client = scripted.client(workers=1, device_calls=2)
    held = [
        asyncio.create_task(client.invoke_method("dev-1", "reboot", None, 5, 5)) for _ in range(2)
    ]
    await _busy(client, "device", 2)
    started = time.monotonic()
    job = await client.get_job("j1")  # the one hub thread is free
    assert job.job_id == "j1"
    with pytest.raises(LaneFull) as refused:
        await client.invoke_method("dev-1", "reboot", None, 5, 5)
    assert time.monotonic() - started < 1.0  # neither waited for the devices
    message = str(refused.value)
    assert "2 direct-method calls are already waiting on devices" in message
    assert "iothub.device_calls = 2" in message and "\n" not in message
    assert scripted.hits[METHOD] == 2  # the refused call sent nothing
    load = client.load
    assert (load.device_busy, load.refused_device, load.refused_hub) == (2, 1, 0)
    for outcome in await asyncio.gather(*held, return_exceptions=True):
        # The script answers {} (no status): a HubResponseError; what matters here is that
        # each ended with the client's own error and gave its slot back.
        assert isinstance(outcome, IotHubError), outcome
    assert client.load.device_busy == 0
    await client.close()


async def test_a_full_hub_lane_refuses_at_once_and_frees_its_slots(scripted: Scripted) -> None:
    scripted.answers["GET /jobs/v2/slow"] = [1.0]
    client = scripted.client(workers=1, hub_queue=1, read_retries=0)
    held = [asyncio.create_task(client.get_job("slow")) for _ in range(2)]
    await _busy(client, "hub", 2)
    started = time.monotonic()
    with pytest.raises(LaneFull, match=r"iothub.workers = 1, iothub.hub_queue = 1"):
        await client.get_job("slow")
    assert time.monotonic() - started < 0.5
    await asyncio.gather(*held, return_exceptions=True)
    assert client.load.hub_busy == 0 and client.load.refused_hub == 1
    await client.close()


async def test_job_listing_is_stopped_while_reading_past_max_rows(scripted: Scripted) -> None:
    scripted.answers["GET /jobs/v2/query"] = _jobs(50, continuation=True)  # endless pages
    client = scripted.client(max_rows_per_call=7)
    with pytest.raises(CallTooLarge, match=r"more than 7 rows \(iothub.max_rows_per_call = 7\)"):
        await client.list_jobs()
    assert scripted.hits["GET /jobs/v2/query"] == 3  # 9 rows read: stopped, not read to the end
    assert client.load.too_large == 1
    # max_jobs below the bound: the call is small, nothing is refused.
    assert len(await client.list_jobs(max_jobs=1)) == 1
    await client.close()


async def test_job_listing_is_stopped_past_max_bytes(scripted: Scripted) -> None:
    big = {**JOB, "queryCondition": "deviceId = '" + "x" * 40_000 + "'"}
    scripted.answers["GET /jobs/v2/query"] = [
        web.json_response([big], headers={"x-ms-continuation": "more"}) for _ in range(10)
    ]
    client = scripted.client(max_bytes_per_call=65_536)
    with pytest.raises(CallTooLarge, match=r"iothub.max_bytes_per_call = 65536"):
        await client.list_jobs()
    assert scripted.hits["GET /jobs/v2/query"] == 2
    await client.close()


def test_lane_counts_and_refuses_without_a_loop() -> None:
    lane = Lane("hub", 1, 0, lambda busy: f"{busy} busy")
    release = threading.Event()
    first = lane.submit(release.wait)
    with pytest.raises(LaneFull, match="1 busy"):
        lane.submit(lambda: None)
    release.set()
    first.result(timeout=5)
    assert lane.busy == 0 and lane.refused == 1
    assert lane.submit(lambda: 42).result(timeout=5) == 42
    lane.shutdown()


def test_call_budget_counts_pages() -> None:
    budget = CallBudget("list jobs", max_rows=10, max_bytes=1000)
    budget.add(10, 1000)
    with pytest.raises(CallTooLarge, match="list jobs: more than 10 rows"):
        budget.add(1, 1)
