"""``<Name>Rollout`` wrapper services and ``AzureIotDeviceJobGetRolloutWaves`` end to end:
REST → stand-in → AlwaysOn → agent → SDK → IoT Hub emulator (S1) → simulated fleet.

A typed wrapper rolled out in waves reaches every device with the typed payload (the device's
answer echoes it), one hub job per wave; a wrong-typed, missing or badly planned input is refused
with the wrapper's own words before anything is created (no rollout, no hub job).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from services.rollouts import FIND_ROLLOUTS, GET_ROLLOUT, GET_ROLLOUT_WAVES, QUERY_ROLLOUT_RESULTS
from tests.support.chain import GATEWAY, AgentChain
from tests.support.network import fresh_loopback

pytestmark = pytest.mark.asyncio

ROLLOUT = "SetTelemetryIntervalRollout"  # config/wrappers/fleet.toml's SetTelemetryInterval
ENDED = {"completed", "aborted", "failed", "cancelled"}


async def _wait(chain: AgentChain, rollout_id: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        (row,) = await chain.rows(GATEWAY, GET_ROLLOUT, {"rolloutId": rollout_id})
        if row["status"] in ENDED:
            return row
        assert time.monotonic() < deadline, f"rollout still {row['status']}: {row}"
        await asyncio.sleep(0.2)


async def test_a_typed_wrapper_rolls_out_in_waves_with_its_typed_payload(tmp_path: Path) -> None:
    async with AgentChain(tmp_path, devices=5, mqtt_host=fresh_loopback()) as chain:
        (row,) = await chain.rows(
            GATEWAY,
            ROLLOUT,
            {
                "rolloutId": "tele",
                "intervalSeconds": 42,
                "queryCondition": "IS_DEFINED(deviceId)",
                "waveSize": 2,
                "responseTimeoutInSeconds": 10,
            },
        )
        assert row["rolloutId"] == "tele" and row["type"] == "deviceMethod"
        assert row["deviceCount"] == 5 and row["waveCount"] == 3
        done = await _wait(chain, "tele")
        assert done["status"] == "completed" and done["succeededCount"] == 5, done

        jobs = {j.job_id: j for j in await chain.app.client.list_jobs()}
        ours = sorted(i for i in jobs if i.startswith("tele-"))
        assert ours == ["tele-w1-a1-p1", "tele-w2-a1-p1", "tele-w3-a1-p1"]
        stats = [jobs[i].statistics for i in ours]
        assert [s.device_count if s is not None else None for s in stats] == [2, 2, 1]
        assert {jobs[i].method_name for i in ours} == {"setTelemetryInterval"}
        assert all(jobs[i].payload == {"intervalSeconds": 42} for i in ours)

        results = await chain.rows(GATEWAY, QUERY_ROLLOUT_RESULTS, {"rolloutId": "tele"})
        assert len(results) == 5
        # The simulated device answers 200 with the interval it was given: the payload arrived.
        assert {r["methodStatus"] for r in results} == {200}
        assert all(r["methodPayload"] == {"intervalSeconds": 42} for r in results)

        waves = await chain.rows(GATEWAY, GET_ROLLOUT_WAVES, {"rolloutId": "tele"})
        assert [(w["wave"], w["attempt"], w["deviceCount"]) for w in waves] == [
            (1, 1, 2),
            (2, 1, 2),
            (3, 1, 1),
        ]
        assert [w["jobIds"] for w in waves] == [[i] for i in ours]
        assert all(w["status"] == "judged" and w["failed"] == w["pending"] == 0 for w in waves)
        assert [w["succeeded"] for w in waves] == [2, 2, 1]

        # Audited as a rollout start, like AzureIotDeviceJobStartRollout.
        audit = await chain.rows(GATEWAY, "AzureIotDeviceJobQueryAudit", {})
        (entry,) = [r for r in audit if r["service"] == ROLLOUT]
        assert (entry["action"], entry["rolloutId"], entry["outcome"]) == (
            "startRollout",
            "tele",
            "ok",
        )
        assert entry["inputs"]["intervalSeconds"] == 42


async def test_bad_inputs_are_refused_before_anything_is_created(tmp_path: Path) -> None:
    async with AgentChain(tmp_path, devices=2, mqtt_host=fresh_loopback()) as chain:
        target = {"devices": ["device-0001", "device-0002"]}
        # A wrong-typed typed input: the same words as the wrapper's Schedule form says them.
        status, body = await chain.call(
            GATEWAY, ROLLOUT, {"intervalSeconds": "soon", **target, "rolloutId": "bad1"}
        )
        same_status, same_body = await chain.call(
            GATEWAY,
            "SetTelemetryInterval",
            {"intervalSeconds": "soon", "queryCondition": "IS_DEFINED(deviceId)"},
        )
        assert status == same_status == 400, body
        assert "intervalSeconds" in body and body == same_body
        # A missing required typed input, and a bad plan input: refused the same way.
        status, body = await chain.call(GATEWAY, ROLLOUT, {**target, "rolloutId": "bad2"})
        assert status == 400 and "intervalSeconds" in body, body
        status, body = await chain.call(
            GATEWAY, ROLLOUT, {"intervalSeconds": 5, **target, "rolloutId": "bad3", "waveSize": 0}
        )
        assert status == 400 and "waveSize" in body, body
        # Both targets, or a Schedule-only input: refused too.
        status, body = await chain.call(
            GATEWAY,
            ROLLOUT,
            {"intervalSeconds": 5, **target, "queryCondition": "IS_DEFINED(deviceId)"},
        )
        assert status == 400 and "exactly one of" in body, body
        status, body = await chain.call(
            GATEWAY, ROLLOUT, {"intervalSeconds": 5, **target, "jobId": "j1"}
        )
        assert status == 400 and "jobId" in body, body

        assert await chain.rows(GATEWAY, FIND_ROLLOUTS, {}) == []
        assert await chain.app.client.list_jobs() == []
