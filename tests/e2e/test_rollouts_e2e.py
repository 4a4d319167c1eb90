"""Rollouts end to end: REST → stand-in → AlwaysOn → agent → SDK → IoT Hub emulator (S1).

Waves as separate hub jobs of the right sizes (read back from the emulator), abort at the
threshold with offline devices, pause/resume and cancel at wave boundaries, and a crash between
waves recovered by a new engine over the same store with no device operation doubled.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from services.rollout_engine import RolloutEngine
from services.store import SqliteRolloutStore
from tests.support.chain import GATEWAY, AgentChain
from tests.support.network import fresh_loopback

pytestmark = pytest.mark.asyncio

START = "AzureIotDeviceJobStartRollout"
GET = "AzureIotDeviceJobGetRollout"
RESULTS = "AzureIotDeviceJobQueryRolloutResults"


async def _device_rows(chain: AgentChain, prefix: str) -> Counter[str]:
    """How many times each device got a hub job of the rollout (its devices.jobs rows)."""
    rows = await chain.app.client.query_job_results("SELECT * FROM devices.jobs", 10_000)
    return Counter(r.device_id for r in rows if r.job_id.startswith(prefix + "-"))


async def test_waves_run_as_separate_hub_jobs_of_the_planned_sizes(tmp_path: Path) -> None:
    async with AgentChain(tmp_path, mqtt_host=fresh_loopback(), devices=10) as chain:
        devices = [f"device-{n:04d}" for n in range(1, 11)]
        (row,) = await chain.rows(
            GATEWAY,
            START,
            {
                "rolloutId": "ro1",
                "type": "twinUpdate",
                "devices": devices,
                "patch": {"properties": {"desired": {"fw": "2.0"}}},
                "waveSize": 4,
                "growthFactor": 1,
            },
        )
        assert row["waveCount"] == 3 and row["status"] == "queued"
        done = await chain.wait_rollout("ro1", ("completed", "aborted", "failed"))
        assert done["status"] == "completed", done
        assert done["succeededCount"] == 10 and done["pendingCount"] == 0
        jobs = {j.job_id: j for j in await chain.app.client.list_jobs()}
        stats = {i: jobs[i].statistics for i in jobs if i.startswith("ro1-")}
        sizes = {i: s.device_count if s is not None else None for i, s in stats.items()}
        assert sizes == {"ro1-w1-a1-p1": 4, "ro1-w2-a1-p1": 4, "ro1-w3-a1-p1": 2}
        assert await _device_rows(chain, "ro1") == Counter({d: 1 for d in devices})
        results = await chain.rows(GATEWAY, RESULTS, {"rolloutId": "ro1"})
        assert [r["wave"] for r in results] == [1] * 4 + [2] * 4 + [3] * 2
        assert all(r["attempts"] == 1 and r["status"] == "succeeded" for r in results)


async def test_offline_devices_abort_the_rollout_at_the_threshold(tmp_path: Path) -> None:
    async with AgentChain(
        tmp_path, mqtt_host=fresh_loopback(), devices=10, offline_share=0.5
    ) as chain:
        await chain.rows(
            GATEWAY,
            START,
            {
                "rolloutId": "ro2",
                "type": "deviceMethod",
                "queryCondition": "IS_DEFINED(deviceId)",
                "methodName": "reboot",
                "connectTimeoutInSeconds": 2,  # 0 waits for the job's whole window on IoT Hub
                "responseTimeoutInSeconds": 5,
                "waveSize": 10,
                "maxFailurePercent": 20,
            },
        )
        done = await chain.wait_rollout("ro2", ("completed", "aborted", "failed"))
        assert done["status"] == "aborted", done
        assert "wave 1: 5 of 10 devices failed" in done["reason"]
        assert done["failedCount"] == 5 and done["succeededCount"] == 5


async def test_pause_and_cancel_take_effect_at_wave_boundaries(tmp_path: Path) -> None:
    async with AgentChain(tmp_path, mqtt_host=fresh_loopback(), devices=6) as chain:
        inputs = {
            "type": "twinUpdate",
            "queryCondition": "IS_DEFINED(deviceId)",
            "patch": {"tags": {"ring": 1}},
            "waveSize": 2,
            "pauseBetweenWavesSeconds": 1,
        }
        await chain.rows(GATEWAY, START, {"rolloutId": "ro3", **inputs})
        # Paused once wave 1 is admitted (a pause before it would pause at wave 0).
        await chain.wait_rollout("ro3", (), until=lambda row: row["wave"] == 1)
        await chain.rows(GATEWAY, "AzureIotDeviceJobPauseRollout", {"rolloutId": "ro3"})
        paused = await chain.wait_rollout("ro3", ("paused",))
        assert paused["wave"] == 1 and paused["succeededCount"] in (0, 2)
        await asyncio.sleep(1.5)
        (still,) = await chain.rows(GATEWAY, GET, {"rolloutId": "ro3"})
        assert still["wave"] == 1 and still["status"] == "paused"
        await chain.rows(GATEWAY, "AzureIotDeviceJobResumeRollout", {"rolloutId": "ro3"})
        await chain.rows(GATEWAY, "AzureIotDeviceJobCancelRollout", {"rolloutId": "ro3"})
        cancelled = await chain.wait_rollout("ro3", ("cancelled", "completed"))
        assert cancelled["status"] == "cancelled", cancelled
        assert cancelled["pendingCount"] >= 2
        status, body = await chain.call(
            GATEWAY, "AzureIotDeviceJobResumeRollout", {"rolloutId": "ro3"}
        )
        assert status != 200 and "cancelled" in str(body)


async def test_a_new_engine_over_the_same_store_resumes_without_doubling(tmp_path: Path) -> None:
    async with AgentChain(tmp_path, mqtt_host=fresh_loopback(), devices=6) as chain:
        path = tmp_path / "crash" / "rollouts.sqlite"
        client = chain.app.client
        first = RolloutEngine(client, SqliteRolloutStore(path), chain.app.settings.jobs)
        from rollouts import RolloutPlan

        plan = RolloutPlan(wave_size=2)
        ids = [f"device-{n:04d}" for n in range(1, 7)]
        await first.create(
            "ro4", "twinUpdate", {"patch": {"tags": {"x": 1}}}, {"waveSize": 2}, plan, ids
        )
        await first.step()  # wave 1's job created; then the "process" dies
        part = (await first.store.parts("ro4", 1, 1))[0]
        assert part.state == "created"
        await first.store.set_part(part.job_id, "intent")  # as if it died before recording it
        first.store.close()
        second = RolloutEngine(client, SqliteRolloutStore(path), chain.app.settings.jobs)
        deadline = time.monotonic() + 60
        while (
            record := await second.store.get("ro4")
        ) is not None and record.status != "completed":
            assert time.monotonic() < deadline, record
            await second.step()
            await asyncio.sleep(0.2)
        assert await _device_rows(chain, "ro4") == Counter({d: 1 for d in ids})
        assert (await second.store.counts("ro4"))["succeeded"] == 6
