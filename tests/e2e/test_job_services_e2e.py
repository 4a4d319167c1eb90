"""The services end to end: ThingWorx REST convention on the stand-in → AlwaysOn → agent →
azure-iot-hub SDK → IoT Hub emulator (tier S1) → simulated fleet.

One chain serves the whole module (tests run in file order). The hub allows one active job at a
time, so each test that creates jobs waits for them to end. Devices: device-0001..0010 (0010
offline), device-0011 answers methods after 8 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from azure.iot.hub import IoTHubRegistryManager

from agent.channel import ChannelState
from tests.support.chain import (
    CANCEL,
    ENDED,
    FIND,
    GATEWAY,
    GET,
    METHOD,
    RESULTS,
    TWIN,
    AgentChain,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

ONLINE = "device-0001"
ONLINE2 = "device-0002"
OFFLINE = "device-0010"
SLOW = "device-0011"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chain(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentChain]:
    async with AgentChain(
        tmp_path_factory.mktemp("e2e"),
        devices=10,
        offline_share=0.1,
        slow_devices=1,
        slow_delay=8.0,
        bind=[ONLINE, ONLINE2, OFFLINE, SLOW],
        page_size=4,
    ) as running:
        assert running.fleets[0].offline_at_start() == [OFFLINE]
        yield running


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


async def _twin(chain: AgentChain, device_id: str) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        manager = IoTHubRegistryManager.from_connection_string(chain.hub.owner_connection_string)
        manager.protocol.config.connection.verify = str(chain.hub.ca_pem_path)
        twin = manager.get_twin(device_id)
        return {"desired": twin.properties.desired, "reported": twin.properties.reported}

    return await asyncio.to_thread(read)


async def test_twin_job_reaches_desired_properties_and_drops_reported(chain: AgentChain) -> None:
    patch = {
        "properties": {"desired": {"interval": 42}, "reported": {"forged": True}},
        "tags": {"site": "north"},
    }
    (row,) = await chain.rows(
        GATEWAY,
        TWIN,
        {"patch": patch, "queryCondition": f"deviceId IN ['{ONLINE}', '{ONLINE2}']", "jobId": "t1"},
    )
    assert row["type"] == "twinUpdate" and row["jobId"] == "t1"
    assert "reported was dropped" in row["warnings"]
    assert row["patch"] == {"properties": {"desired": {"interval": 42}}, "tags": {"site": "north"}}
    done = await chain.wait_status("t1", ENDED)
    assert (done["status"], done["deviceCount"], done["succeededCount"]) == ("completed", 2, 2)
    for device_id in (ONLINE, ONLINE2):
        deadline = time.monotonic() + 5
        while True:
            twin = await _twin(chain, device_id)
            # The simulated device reports back what it received: it got the desired patch.
            if twin["reported"].get("interval") == 42:
                break
            assert time.monotonic() < deadline, twin
            await asyncio.sleep(0.1)
        assert twin["desired"]["interval"] == 42
        assert "forged" not in twin["reported"]


async def test_method_job_payload_reaches_devices_exactly(chain: AgentChain) -> None:
    payload = {"list": [1, 2.5, "x"], "nested": {"on": True, "none": None}, "text": "héllo"}
    # On a device Thing, queryCondition defaults to that device.
    (row,) = await chain.rows(
        ONLINE2, METHOD, {"methodName": "echoTest", "payload": payload, "jobId": "m1"}
    )
    assert row["queryCondition"] == f"deviceId = '{ONLINE2}'"
    assert (row["methodName"], row["payload"]) == ("echoTest", payload)
    assert (row["connectTimeoutInSeconds"], row["responseTimeoutInSeconds"]) == (30, 30)
    await chain.wait_status("m1", ENDED)
    (result,) = await chain.rows(
        GATEWAY, RESULTS, {"query": "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'm1'"}
    )
    assert (result["deviceId"], result["status"]) == (ONLINE2, "completed")
    assert (result["methodStatus"], result["methodPayload"]) == (200, payload)


async def test_a_json_string_is_a_payload_too(chain: AgentChain) -> None:
    """IoT Hub takes any JSON value as a method payload: a JSON string, in the job form and in
    the direct call form (the agent's IoT Hub client, as the wrappers' device form uses it)."""
    for job_id, given in (("s1", '"hello"'), ("s2", "hello")):  # JSON text, or the string itself
        (row,) = await chain.rows(
            ONLINE2, METHOD, {"methodName": "echoTest", "payload": given, "jobId": job_id}
        )
        assert row["payload"] == "hello"
        await chain.wait_status(job_id, ENDED)
        (result,) = await chain.rows(
            GATEWAY,
            RESULTS,
            {"query": f"SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{job_id}'"},
        )
        assert (result["status"], result["methodStatus"], result["methodPayload"]) == (
            "completed",
            200,
            "hello",
        )
    direct = await chain.app.client.invoke_method(ONLINE, "echoTest", "hello", 30, 0)
    assert (direct.status, direct.payload) == (200, "hello")


async def test_lifecycle_quota_and_running_cancel(chain: AgentChain) -> None:
    start = datetime.now(UTC) + timedelta(seconds=1.5)
    (later,) = await chain.rows(
        GATEWAY,
        METHOD,
        {
            "methodName": "reboot",
            "queryCondition": f"deviceId IN ['{ONLINE}', '{OFFLINE}']",
            "startTime": _iso(start),
            "maxExecutionTimeInSeconds": 3,
            "jobId": "b-later",
        },
    )
    assert later["status"] == "scheduled"
    # A method job waiting for an offline device runs until its window ends (3 s).
    await chain.rows(
        GATEWAY,
        METHOD,
        {
            "methodName": "reboot",
            "queryCondition": f"deviceId = '{OFFLINE}'",
            "maxExecutionTimeInSeconds": 3,
            "jobId": "a-running",
        },
    )
    await chain.wait_status("a-running", ["running"], timeout=5)
    status, text = await chain.call(
        GATEWAY, TWIN, {"patch": {"tags": {"a": 1}}, "queryCondition": "deviceId = 'x'"}
    )
    assert status == 500  # SERVICE_UNAVAILABLE travels as a 500 through the stand-in
    assert text.startswith(
        "429004 ThrottlingMaxActiveJobCountExceeded: only 1 job may run at a time on this hub "
        "tier; wait for job 'a-running' to end"
    ), text
    status, text = await chain.call(GATEWAY, CANCEL, {"jobId": "a-running"})
    assert status == 400 and "job 'a-running' is running" in text, text
    pending = await chain.wait_status("b-later", ["pending"], timeout=5)
    assert pending["hubStatus"] in ("queued", "enqueued")
    await chain.wait_status("b-later", ["running"], timeout=10)
    done = await chain.wait_status("b-later", ENDED, timeout=10)
    assert done["status"] == "completed" and done["failedCount"] == 1
    rows = await chain.rows(
        GATEWAY,
        RESULTS,
        {"query": "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'b-later'"},
    )
    by_device = {r["deviceId"]: r for r in rows}
    assert by_device[ONLINE]["status"] == "completed"
    assert by_device[ONLINE]["methodPayload"] == {"rebooting": True, "delaySeconds": 0}
    assert by_device[OFFLINE]["status"] == "failed"
    assert by_device[OFFLINE]["errorCode"] == "JobRunPreconditionFailed"
    await chain.wait_status("a-running", ENDED)
    status, text = await chain.call(GATEWAY, CANCEL, {"jobId": "a-running"})
    assert status == 400 and "already ended (status completed)" in text, text


async def test_failed_job_status(chain: AgentChain) -> None:
    status, body = await chain.call(
        GATEWAY,
        TWIN,
        {
            "patch": {"tags": {"a": 1}},
            "queryCondition": "STARTS_WITH(deviceId, 'd')",
            "jobId": "f1",
        },
    )
    # IoT Hub accepts the job and fails it when the query does not run (reference §3.2); a
    # malformed condition never gets this far (test_malformed_conditions_are_refused_at_once), but
    # a function twin queries lack (reference §3.6) is the hub's to judge.
    assert status == 200, body
    failed = await chain.wait_status("f1", ENDED)
    assert failed["status"] == "failed" and failed["failureReason"], failed


MALFORMED_CONDITIONS = [
    ("deviceId = = 'x'", 'line 1, column 12 near "="'),
    ("deviceId = 'x", 'line 1, column 12 near "\'x": unterminated string'),
    ("deviceId = 'x' AND", "line 1, column 19 near end of input"),
]


async def test_malformed_conditions_are_refused_at_once(chain: AgentChain) -> None:
    for condition, words in MALFORMED_CONDITIONS:
        for service, inputs in (
            (TWIN, {"patch": {"tags": {"a": 1}}}),
            (METHOD, {"methodName": "reboot"}),
            ("Reboot", {}),  # a wrapper job service
        ):
            status, text = await chain.call(
                GATEWAY, service, {**inputs, "queryCondition": condition, "jobId": "malformed"}
            )
            assert status == 400 and text.startswith("input queryCondition: syntax error"), text
            assert words in text, (service, text)
    status, text = await chain.call(
        GATEWAY, RESULTS, {"query": "SELECT * FROM devices.jobs WHERE devices.jobs.jobId ="}
    )
    assert status == 400 and text.startswith("input query: syntax error at line 1, column 54")
    # `*` keeps its hint; and no job was created by any of the refused calls.
    status, text = await chain.call(
        GATEWAY, TWIN, {"patch": {"tags": {"a": 1}}, "queryCondition": "*", "jobId": "malformed"}
    )
    assert status == 400 and "IS_DEFINED(deviceId)" in text, text
    status, text = await chain.call(GATEWAY, GET, {"jobId": "malformed"})
    assert status == 404 and "404002 JobNotFound" in text, text


async def test_cancel_scheduled_job(chain: AgentChain) -> None:
    start = datetime.now(UTC) + timedelta(hours=1)
    await chain.rows(
        GATEWAY,
        TWIN,
        {
            "patch": {"tags": {"later": True}},
            "queryCondition": f"deviceId = '{ONLINE}'",
            "startTime": _iso(start),
            "jobId": "c1",
        },
    )
    assert (await chain.job("c1"))["status"] == "scheduled"
    (row,) = await chain.rows(GATEWAY, CANCEL, {"jobId": "c1"})
    assert (row["jobId"], row["status"], row["hubStatus"]) == ("c1", "cancelled", "cancelled")
    assert (await chain.job("c1"))["status"] == "cancelled"


async def test_find_jobs_by_type_and_status(chain: AgentChain) -> None:
    everything = {r["jobId"]: r for r in await chain.rows(GATEWAY, FIND, {})}
    assert {"t1", "m1", "a-running", "b-later", "c1"} <= set(everything)
    twins = await chain.rows(GATEWAY, FIND, {"type": "twinUpdate"})
    assert twins and {r["type"] for r in twins} == {"twinUpdate"}
    assert "t1" in {r["jobId"] for r in twins} and "m1" not in {r["jobId"] for r in twins}
    methods = await chain.rows(ONLINE, FIND, {"type": "scheduleDeviceMethod"})
    assert {r["type"] for r in methods} == {"deviceMethod"}
    cancelled = await chain.rows(GATEWAY, FIND, {"status": "cancelled"})
    assert [r["jobId"] for r in cancelled] == ["c1"]
    completed = await chain.rows(GATEWAY, FIND, {"type": "deviceMethod", "status": "completed"})
    assert {"m1", "a-running", "b-later"} <= {r["jobId"] for r in completed}
    assert {r["status"] for r in completed} == {"completed"}


async def test_query_job_results_pages_and_refuses_projection(chain: AgentChain) -> None:
    await chain.rows(
        GATEWAY, TWIN, {"patch": {"tags": {"wave": 2}}, "queryCondition": "IS_DEFINED(deviceId)",
                        "jobId": "all"},
    )  # fmt: skip
    done = await chain.wait_status("all", ENDED)
    assert done["deviceCount"] == 11
    query = "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'all'"
    rows = await chain.rows(GATEWAY, RESULTS, {"query": query})
    assert len(rows) == 11  # pages of 4: three pages followed
    assert len({r["deviceId"] for r in rows}) == 11
    assert len(await chain.rows(GATEWAY, RESULTS, {"query": query, "maxRows": 6})) == 6
    status, text = await chain.call(
        GATEWAY, RESULTS, {"query": "SELECT deviceId FROM devices.jobs"}
    )
    assert status == 400 and "no projection" in text, text


async def test_offline_and_slow_devices_fail_fast_with_hub_codes(chain: AgentChain) -> None:
    async def timed(thing: str, inputs: dict[str, Any]) -> tuple[int, str, float]:
        started = time.monotonic()
        status, text = await chain.call(thing, "Reboot", inputs)
        return status, text, time.monotonic() - started

    offline, slow = await asyncio.gather(
        timed(OFFLINE, {"connectTimeoutInSeconds": 5}),
        timed(SLOW, {"responseTimeoutInSeconds": 5}),
    )
    status, text, took = offline
    assert status == 404 and text.startswith(
        f"404103 DeviceNotOnline: device '{OFFLINE}' is offline"
    ), text
    assert 4.5 <= took <= 8, took
    status, text, took = slow
    assert status == 500 and text.startswith(
        f"504101 GatewayTimeout: device '{SLOW}' did not respond within 5 s"
    ), text
    assert 4.5 <= took <= 8, took


async def test_wrapper_typed_inputs_become_the_payload(chain: AgentChain) -> None:
    (direct,) = await chain.rows(ONLINE, "SetTelemetryInterval", {"intervalSeconds": 15})
    assert direct == {"deviceId": ONLINE, "status": 200, "payload": {"intervalSeconds": 15}}
    (reboot,) = await chain.rows(ONLINE, "Reboot", {"delaySeconds": 7})
    assert reboot["payload"] == {"rebooting": True, "delaySeconds": 7}
    (job,) = await chain.rows(
        GATEWAY,
        "SetTelemetryInterval",
        {"intervalSeconds": 9, "queryCondition": f"deviceId = '{ONLINE2}'", "jobId": "w1"},
    )
    assert (job["methodName"], job["payload"]) == ("setTelemetryInterval", {"intervalSeconds": 9})
    await chain.wait_status("w1", ENDED)
    (result,) = await chain.rows(
        GATEWAY, RESULTS, {"query": "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'w1'"}
    )
    assert result["methodPayload"] == {"intervalSeconds": 9}


def _deep_list(levels: int) -> list[Any]:
    inner: list[Any] = []
    for _ in range(levels - 1):
        inner = [inner]
    return inner


BAD_INPUTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    (GATEWAY, TWIN, {"queryCondition": "deviceId = 'a'"}, 400, "missing required input patch"),
    (GATEWAY, TWIN, {"patch": {"tags": {"a": 1}}}, 400, "queryCondition"),
    (GATEWAY, TWIN, {"patch": [1], "queryCondition": "x = 1"}, 400, "patch must be a JSON object"),
    (GATEWAY, TWIN, {"patch": {"desired": {"a": 1}}, "queryCondition": "x = 1"}, 400, "top level"),
    (ONLINE, TWIN, {"patch": {"properties": {"reported": {"a": 1}}}}, 400, "properties.desired"),
    (ONLINE, TWIN, {"patch": {}}, 400, "must contain properties.desired and/or tags"),
    (ONLINE, TWIN, {"patch": {"tags": [1]}}, 400, "tags must be a JSON object"),
    (ONLINE, TWIN, {"patch": {"properties": {"desired": {"fw.version": "2"}}}}, 400,
     "key 'fw.version' in properties.desired is not allowed"),
    (ONLINE, TWIN, {"patch": {"tags": {f"k{i}": "x" * 4000 for i in range(3)}}}, 400,
     "at most 8 KB"),
    (GATEWAY, TWIN, {"patch": {"tags": {"a": 1}}, "queryCondition": "SELECT * FROM devices"},
     400, "only the WHERE part"),
    (GATEWAY, TWIN, {"patch": {"tags": {"a": 1}}, "queryCondition": "x" * 8193}, 400, "8192"),
    (ONLINE, TWIN, {"patch": {"tags": {"a": 1}}, "queryCondition": "deviceId = 'x'"}, 400,
     "no input 'queryCondition'"),
    (ONLINE, TWIN, {"patch": {"tags": {"a": 1}}, "jobId": "bad id"}, 400, "input jobId"),
    (ONLINE, TWIN, {"patch": {"tags": {"a": 1}}, "jobId": "a" * 65}, 400, "at most 64"),
    (ONLINE, TWIN, {"patch": {"tags": {"a": 1}}, "maxExecutionTimeInSeconds": 0}, 400,
     "at least 1 second"),
    # Issue 15 §5, each with its exact message.
    (ONLINE, TWIN, {"patch": {"tags": {"a": 1}}, "maxExecutionTimeInSeconds": 2**62}, 400,
     "input maxExecutionTimeInSeconds is 4611686018427387904; the job window may be at most "
     "2592000 seconds (30 days, as long as IoT Hub keeps a job): choose a shorter window"),
    (ONLINE, TWIN, {"patch": {"properties": {"desired": {"a": _deep_list(20)}}}}, 400,
     "input patch: properties.desired.a[0][0][0][0][0][0][0][0][0][0] nests objects and lists "
     "more than 10 deep, which IoT Hub refuses"),
    (ONLINE, TWIN, {"patch": {"properties": {"desired": {"a": _deep_list(300)}}}}, 400,
     "the body nests arrays and objects more than 256 deep; the stand-in reads at most 256 "
     "levels (send a JSON object of inputs)"),
    (ONLINE, METHOD, {"methodName": "reboot\n"}, 400,
     "input methodName 'reboot\\n' must be 1..100 characters without spaces, '$', '/', '?' "
     "or '#'"),
    (GATEWAY, GET, {"jobId": "known-1\n"}, 400,
     "input jobId 'known-1\\n' may only hold ASCII letters, digits and '-'"),
    (ONLINE, METHOD, {}, 400, "missing required input methodName"),
    (ONLINE, METHOD, {"methodName": "has space"}, 400, "input methodName"),
    (ONLINE, METHOD, {"methodName": "m", "responseTimeoutInSeconds": 4}, 400, "between 5 and 300"),
    (ONLINE, METHOD, {"methodName": "m", "responseTimeoutInSeconds": 301}, 400,
     "between 5 and 300"),
    (ONLINE, METHOD, {"methodName": "m", "connectTimeoutInSeconds": -1}, 400, "between 0 and 300"),
    (ONLINE, METHOD, {"methodName": "m", "connectTimeoutInSeconds": 301}, 400,
     "between 0 and 300"),
    (ONLINE, METHOD, {"methodName": "m", "colour": "red"}, 400, "colour"),
    (ONLINE, METHOD, {"methodName": "m", "responseTimeoutInSeconds": "soon"}, 400,
     "responseTimeoutInSeconds"),
    (GATEWAY, METHOD, {"methodName": "m"}, 400, "queryCondition"),
    (GATEWAY, GET, {}, 400, "missing required input jobId"),
    (GATEWAY, GET, {"jobId": "x_y"}, 400, "input jobId"),
    (GATEWAY, GET, {"jobId": "no-such-job"}, 404, "404002 JobNotFound: job 'no-such-job'"),
    (GATEWAY, FIND, {"type": "firmware"}, 400, "not a job type"),
    (GATEWAY, FIND, {"status": "done"}, 400, "not a job status"),
    (GATEWAY, CANCEL, {}, 400, "missing required input jobId"),
    (GATEWAY, CANCEL, {"jobId": "no-such-job"}, 404, "404002 JobNotFound"),
    (GATEWAY, RESULTS, {}, 400, "missing required input query"),
    (GATEWAY, RESULTS, {"query": "SELECT deviceId FROM devices.jobs"}, 400, "no projection"),
    (GATEWAY, RESULTS, {"query": "SELECT * FROM devices"}, 400, "no projection"),
    (GATEWAY, RESULTS, {"query": "SELECT * FROM devices.jobs GROUP BY status"}, 400,
     "only add a WHERE"),
    (GATEWAY, RESULTS, {"query": "SELECT * FROM devices.jobs", "maxRows": 0}, 400, "maxRows"),
    (ONLINE, "SetTelemetryInterval", {}, 400, "missing required input intervalSeconds"),
    (ONLINE, "Reboot", {"delaySeconds": "soon"}, 400, "delaySeconds"),
    (ONLINE, "Reboot", {"responseTimeoutInSeconds": 1}, 400, "between 5 and 300"),
    (GATEWAY, "Reboot", {}, 400, "queryCondition"),
    (ONLINE, "NoSuchService", {}, 404, "NoSuchService"),
]  # fmt: skip


async def test_bad_inputs_each_answered_clearly_and_the_link_stays_up(chain: AgentChain) -> None:
    assert len(BAD_INPUTS) >= 30
    reconnects = chain.app.channel.stats.reconnects
    seen: set[str] = set()
    for thing, service, inputs, want_status, words in BAD_INPUTS:
        status, text = await chain.call(thing, service, inputs)
        assert (status, isinstance(text, str)) == (want_status, True), (service, inputs, text)
        assert words in text, (service, inputs, text)
        if len(words) > 80:  # the cases: the whole message, exactly
            assert text == words, (service, inputs, text)
        assert "\n" not in text and "Traceback" not in text
        seen.add(text)
    assert len(seen) >= 25  # each mistake has its own message, not one generic text
    assert chain.app.channel.state is ChannelState.READY
    assert chain.app.channel.stats.reconnects == reconnects
    (row,) = await chain.rows(GATEWAY, GET, {"jobId": "t1"})
    assert row["status"] == "completed"
