"""A device Thing is scoped to its own device, end to end (issue 13, a security fix).

REST convention on the stand-in → AlwaysOn → agent → azure-iot-hub SDK → IoT Hub emulator →
simulated fleet. Devices device-0001..0004 (device-0004 offline); device-0001 and device-0002 are
bound as device Things. Jobs of the gateway over other devices must stay invisible from a device
Thing however its inputs are written; and outcomes say what happened (summary, warnings).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

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

MINE = "device-0001"
OTHER = "device-0002"
THIRD = "device-0003"
OFFLINE = "device-0004"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chain(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentChain]:
    async with AgentChain(
        tmp_path_factory.mktemp("scope"),
        devices=4,
        offline_share=0.25,
        tier=None,
        bind=[MINE, OTHER],
    ) as running:
        assert running.fleets[0].offline_at_start() == [OFFLINE]
        await running.rows(
            GATEWAY,
            METHOD,
            {
                "methodName": "reboot",
                "queryCondition": f"deviceId IN ['{OTHER}', '{THIRD}', '{OFFLINE}']",
                "maxExecutionTimeInSeconds": 3,
                "jobId": "others",
            },
        )
        await running.rows(
            GATEWAY,
            TWIN,
            {
                "patch": {"tags": {"later": True}},
                "queryCondition": f"deviceId IN ['{OTHER}', '{THIRD}']",
                "startTime": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
                "jobId": "others-later",
            },
        )
        await running.wait_status("others", ENDED)
        yield running


async def test_device_schedule_has_no_query_condition(chain: AgentChain) -> None:
    status, text = await chain.call(
        MINE,
        METHOD,
        {"methodName": "reboot", "queryCondition": f"deviceId = '{OTHER}'", "jobId": "escape"},
    )
    assert status == 400 and "no input 'queryCondition'" in text, text
    status, text = await chain.call(
        MINE, TWIN, {"patch": {"tags": {"x": 1}}, "queryCondition": "IS_DEFINED(deviceId)"}
    )
    assert status == 400 and "queryCondition" in text, text
    status, text = await chain.call(GATEWAY, GET, {"jobId": "escape"})
    assert status == 404, "the refused call must not have created a job"
    (row,) = await chain.rows(MINE, METHOD, {"methodName": "reboot", "jobId": "mine"})
    assert row["queryCondition"] == f"deviceId = '{MINE}'"
    done = await chain.wait_status("mine", ENDED)
    assert (done["deviceCount"], done["succeededCount"]) == (1, 1)
    assert done["summary"] == "completed: 1 succeeded, 0 failed"


async def test_device_sees_only_its_own_jobs(chain: AgentChain) -> None:
    mine = {r["jobId"] for r in await chain.rows(MINE, FIND, {})}
    assert "mine" in mine and "others" not in mine and "others-later" not in mine
    theirs = {r["jobId"] for r in await chain.rows(OTHER, FIND, {})}
    assert {"others"} <= theirs and "mine" not in theirs
    everything = {r["jobId"] for r in await chain.rows(GATEWAY, FIND, {})}
    assert {"mine", "others", "others-later"} <= everything

    missing = await chain.call(MINE, GET, {"jobId": "no-such-job"})
    for job_id in ("others", "others-later"):
        status, text = await chain.call(MINE, GET, {"jobId": job_id})
        # The same answer as a job that does not exist: nothing tells it exists.
        assert (status, text) == (missing[0], missing[1].replace("no-such-job", job_id)), text
        assert status == 404
    status, text = await chain.call(MINE, CANCEL, {"jobId": "others-later"})
    assert status == 404 and "does not exist" in text, text
    assert (await chain.job("others-later"))["status"] == "scheduled"
    (row,) = await chain.rows(OTHER, GET, {"jobId": "others"})
    assert row["jobId"] == "others"


@pytest.mark.parametrize(
    "where",
    [
        "",
        "devices.jobs.jobId = 'others'",
        f"devices.jobs.deviceId = '{OTHER}'",
        "devices.jobs.jobId = 'others' OR devices.jobs.jobId != 'x'",
        f"devices.jobs.deviceId = '{MINE}' OR devices.jobs.deviceId = '{OTHER}'",
        f"devices.jobs.deviceId = '{MINE}\\' OR devices.jobs.deviceId != \\''",
        "NOT (devices.jobs.deviceId = 'nobody')",
    ],
)
async def test_results_query_keeps_to_the_device(chain: AgentChain, where: str) -> None:
    query = "SELECT * FROM devices.jobs" + (f" WHERE {where}" if where else "")
    status, body = await chain.call(MINE, RESULTS, {"query": query})
    assert status == 200, body
    assert {r["deviceId"] for r in body["rows"]} <= {MINE}
    assert "others" not in {r["jobId"] for r in body["rows"]}


@pytest.mark.parametrize(
    "where",
    [
        "devices.jobs.jobId = 'others') OR (devices.jobs.jobId = 'others'",
        "devices.jobs.jobId = 'mine' -- ",
        "devices.jobs.jobId = 'mine' /* ) OR ( */",
        "devices.jobs.jobId = \uff07others\uff07 OR devices.jobs.jobId = \uff07mine\uff07",
        "devices.jobs.jobId = 'mine' \uff2f\uff32 devices.jobs.jobId = 'others'",
    ],
)
async def test_results_query_escapes_are_refused(chain: AgentChain, where: str) -> None:
    status, text = await chain.call(
        MINE, RESULTS, {"query": f"SELECT * FROM devices.jobs WHERE {where}"}
    )
    assert status == 400 and text.startswith("input query:"), text
    # The gateway Thing sees every device: the same query is its to run.
    rows = await chain.rows(GATEWAY, RESULTS, {"query": "SELECT * FROM devices.jobs"})
    assert {OTHER, THIRD} <= {r["deviceId"] for r in rows}


async def test_outcomes_say_what_happened(chain: AgentChain) -> None:
    # The offline device fails when the 3 s window ends: completed, but not a success.
    (row,) = await chain.rows(GATEWAY, GET, {"jobId": "others"})
    assert row["status"] == "completed" and row["failedCount"] == 1
    assert row["summary"] == "completed: 2 succeeded, 1 failed (1 offline)", row
    # A condition matching no device: the ended job warns.
    (row,) = await chain.rows(
        GATEWAY,
        TWIN,
        {"patch": {"tags": {"x": 1}}, "queryCondition": "tags.site = 'nowhere'", "jobId": "none"},
    )
    done = await chain.wait_status("none", ENDED)
    assert done["deviceCount"] == 0 and "matched no device" in done["warnings"], done
    # A start in the past is sent as now, and said so.
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    (row,) = await chain.rows(
        MINE, TWIN, {"patch": {"tags": {"x": 2}}, "startTime": past, "jobId": "past"}
    )
    assert "was in the past" in row["warnings"], row
    assert row["startTime"] / 1000 > (datetime.now(UTC) - timedelta(minutes=1)).timestamp()
    # `*` and an empty condition point to IS_DEFINED(deviceId).
    for condition in ("*", ""):
        status, text = await chain.call(
            GATEWAY, TWIN, {"patch": {"tags": {"x": 1}}, "queryCondition": condition}
        )
        assert status == 400 and "IS_DEFINED(deviceId)" in text, text


async def test_wrong_base_type_and_misspelling_speak_thingworx(chain: AgentChain) -> None:
    status, text = await chain.call(
        GATEWAY,
        METHOD,
        {
            "methodName": "reboot",
            "queryCondition": "deviceId = 'x'",
            "connectTimeoutInSeconds": "five",
        },
    )
    assert (status, text) == (400, 'input connectTimeoutInSeconds must be an INTEGER; got "five"')
    status, text = await chain.call(
        GATEWAY, METHOD, {"methodName": "reboot", "queryCondtion": "deviceId = 'x'"}
    )
    assert status == 400 and "did you mean 'queryCondition'?" in text, text
    status, text = await chain.call(GATEWAY, "AzureIotDeviceJobFindJob", {})
    assert status == 404 and "did you mean 'AzureIotDeviceJobFindJobs'?" in text, text
