"""The job engine against in-memory fakes of the twin store and the device link, on a ManualClock.

The query conditions are compiled by the real query language (imported lazily by the engine).

Job windows of an hour pass by advancing the clock; nothing here sleeps for a job window.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from emulator.iothub.clock import ManualClock
from emulator.iothub.database import Database
from emulator.iothub.errors import JOB_RUN_PRECONDITION_FAILED, HubError
from emulator.iothub.jobs import TIERS, JobEngine, Tier
from emulator.iothub.ports import MethodReply
from tests.support.fakes import FakeLink, FakeTwins

T0 = datetime(2030, 1, 1, tzinfo=UTC)
ISO_T0 = "2030-01-01T00:00:00.000Z"


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


class Hub:
    """One engine with its fakes, database file and clock."""

    def __init__(self, path: Path, devices: Sequence[str], tier: Tier | None = None) -> None:
        self.path = path
        self.clock = ManualClock(T0)
        self.twins = FakeTwins(
            devices, tags={d: {"site": "a" if i % 2 == 0 else "b"} for i, d in enumerate(devices)}
        )
        self.link = FakeLink()
        self.tier = tier
        self.db = Database(path)
        self.engine = self._engine()

    def _engine(self, **options: Any) -> JobEngine:
        return JobEngine(
            self.db,
            self.twins,
            self.link,
            self.clock,
            self.tier,
            ready_poll_seconds=0.02,
            **options,
        )

    async def __aenter__(self) -> Hub:
        await self.engine.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the engine and close the database."""
        await self.engine.stop()
        self.db.close()

    async def restart(self, **options: Any) -> None:
        """A new engine on the same database file (as after a process restart)."""
        await self.close()
        self.db = Database(self.path)
        self.engine = self._engine(**options)
        await self.engine.start()

    def stats(self, job_id: str) -> dict[str, int]:
        stats: dict[str, int] = self.engine.get_job(job_id)["deviceJobStatistics"]
        return stats

    def rows(self, job_id: str) -> dict[str, dict[str, Any]]:
        return {row["deviceId"]: row for row in self.engine.job_device_rows(job_id)}

    def assert_consistent(self, job_id: str) -> None:
        """Statistics agree with the rows, and the rows with the lifecycle."""
        stats = self.stats(job_id)
        rows = list(self.engine.job_device_rows(job_id))
        by_status = Counter(row["status"] for row in rows)
        assert stats == {
            "deviceCount": len(rows),
            "failedCount": by_status["failed"] + by_status["canceled"],
            "succeededCount": by_status["completed"],
            "runningCount": by_status["running"],
            "pendingCount": by_status["pending"],
        }
        for row in rows:
            assert ("error" in row) == (row["status"] == "failed")
            if row["status"] != "completed" or row["jobType"] == "scheduleUpdateTwin":
                assert row["outcome"] == {}


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    async with Hub(tmp_path / "hub.db", [f"d{i}" for i in range(1, 7)]) as hub:
        yield hub


def twin_job(start: float = 0, query: str = "tags.site = 'a'", **extra: Any) -> dict[str, Any]:
    body = {
        "type": "scheduleUpdateTwin",
        "updateTwin": {"tags": {"fw": "2"}, "properties": {"desired": {"x": 1}}, "etag": "*"},
        "queryCondition": query,
        "startTime": at(start),
        "maxExecutionTimeInSeconds": 3600,
    }
    body.update(extra)
    return body


def method_job(
    start: float = 0,
    query: str = "deviceId IN ['d1']",
    *,
    connect: int | None = None,
    window: int = 3600,
) -> dict[str, Any]:
    call: dict[str, Any] = {"methodName": "reboot", "payload": {"delay": 5}}
    if connect is not None:
        call["connectTimeoutInSeconds"] = connect
    return {
        "type": "scheduleDeviceMethod",
        "cloudToDeviceMethod": call,
        "queryCondition": query,
        "startTime": at(start),
        "maxExecutionTimeInSeconds": window,
    }


async def hub_error(coro: Any) -> HubError:
    with pytest.raises(HubError) as caught:
        await coro
    return caught.value


# --- lifecycle ------------------------------------------------------------------------------


async def test_create_answers_the_full_job_object(hub: Hub) -> None:
    job = await hub.engine.create_job("j1", method_job(start=60))
    assert job == {
        "jobId": "j1",
        "type": "scheduleDeviceMethod",
        "status": "scheduled",
        "queryCondition": "deviceId IN ['d1']",
        "createdTime": ISO_T0,
        "startTime": "2030-01-01T00:01:00.000Z",
        "endTime": None,
        "maxExecutionTimeInSeconds": 3600,
        "cloudToDeviceMethod": {
            "methodName": "reboot",
            "payload": {"delay": 5},
            "responseTimeoutInSeconds": 30,
            "connectTimeoutInSeconds": 0,
        },
        "failureReason": None,
        "statusMessage": None,
        "deviceJobStatistics": {
            "deviceCount": 0,
            "failedCount": 0,
            "succeededCount": 0,
            "runningCount": 0,
            "pendingCount": 0,
        },
    }
    assert hub.engine.get_job("j1") == job


async def test_job_whose_start_has_come_is_queued_at_once(hub: Hub) -> None:
    job = await hub.engine.create_job("j1", twin_job(start=-10))
    assert job["status"] == "queued"
    done = await hub.engine.wait_for_status("j1", "completed")
    assert done["endTime"] == ISO_T0


async def test_scheduled_job_waits_for_its_start_time(hub: Hub) -> None:
    await hub.engine.create_job("j1", twin_job(start=60))
    hub.clock.advance(59.9)
    await asyncio.sleep(0.01)
    assert hub.engine.get_job("j1")["status"] == "scheduled"
    assert hub.twins.patch_calls == []
    hub.clock.advance(0.1)
    job = await hub.engine.wait_for_status("j1", "completed")
    assert job["endTime"] == "2030-01-01T00:01:00.000Z"


async def test_queued_job_waits_for_the_tier_slot_then_runs(tmp_path: Path) -> None:
    async with Hub(tmp_path / "hub.db", ["d1", "d2"], TIERS["S1"]) as hub:
        hub.link.set_ready("d1")
        hub.link.gates["d1"] = asyncio.Event()
        # Both scheduled in the future: neither counts against S1's single slot yet.
        await hub.engine.create_job("a", method_job(start=10))
        await hub.engine.create_job("b", twin_job(start=10, query="deviceId = 'd2'"))
        hub.clock.advance(10)
        await hub.engine.wait_for(lambda: hub.stats("a")["runningCount"] == 1)
        b = await hub.engine.wait_for_status("b", "queued")
        assert b["deviceJobStatistics"]["deviceCount"] == 0
        hub.link.gates["d1"].set()
        await hub.engine.wait_for_status("a", "completed")
        hub.clock.advance(1)  # the pacer's next slot
        assert (await hub.engine.wait_for_status("b", "completed"))["status"] == "completed"


async def test_cancel_scheduled_job(hub: Hub) -> None:
    await hub.engine.create_job("j1", twin_job(start=60))
    hub.clock.advance(5)
    job = await hub.engine.cancel_job("j1")
    assert job["status"] == "cancelled"
    assert job["endTime"] == "2030-01-01T00:00:05.000Z"
    hub.clock.advance(3600)
    await asyncio.sleep(0.01)
    assert hub.engine.get_job("j1")["status"] == "cancelled"
    assert hub.twins.patch_calls == []
    assert list(hub.engine.job_device_rows("j1")) == []


async def test_cancel_queued_job(tmp_path: Path) -> None:
    async with Hub(tmp_path / "hub.db", ["d1", "d2"], TIERS["S1"]) as hub:
        hub.link.set_ready("d1")
        hub.link.gates["d1"] = asyncio.Event()
        await hub.engine.create_job("a", method_job(start=10))
        await hub.engine.create_job("b", twin_job(start=10, query="deviceId = 'd2'"))
        hub.clock.advance(10)
        await hub.engine.wait_for_status("a", "running")
        await hub.engine.wait_for_status("b", "queued")
        job = await hub.engine.cancel_job("b")
        assert job["status"] == "cancelled"
        assert job["endTime"] == "2030-01-01T00:00:10.000Z"
        hub.link.gates["d1"].set()
        await hub.engine.wait_for_status("a", "completed")
        hub.clock.advance(5)
        await hub.engine.wait_until_idle()
        assert hub.engine.get_job("b")["status"] == "cancelled"
        assert hub.twins.patch_calls == []


async def test_cancel_running_terminal_and_unknown_jobs_are_refused(hub: Hub) -> None:
    hub.link.set_ready("d1")
    hub.link.gates["d1"] = asyncio.Event()
    await hub.engine.create_job("run", method_job())
    await hub.engine.wait_for_status("run", "running")
    err = await hub_error(hub.engine.cancel_job("run"))
    assert (err.status, err.code, err.name) == (405, 405102, "OperationNotAllowedInCurrentState")
    assert err.message == "Job cannot be cancelled in 'Running' status"
    hub.link.gates["d1"].set()
    await hub.engine.wait_for_status("run", "completed")
    err = await hub_error(hub.engine.cancel_job("run"))
    assert err.message == "Job cannot be cancelled in 'Completed' status"
    err = await hub_error(hub.engine.cancel_job("nope"))
    assert (err.status, err.code) == (404, 404002)
    with pytest.raises(HubError) as caught:
        hub.engine.get_job("nope")
    assert caught.value.code == 404002


async def test_duplicate_job_id_is_409104(hub: Hub) -> None:
    await hub.engine.create_job("j1", twin_job(start=60))
    err = await hub_error(hub.engine.create_job("j1", twin_job(start=60)))
    assert (err.status, err.code) == (409, 409104)


async def test_invalid_request_is_refused_and_not_stored(hub: Hub) -> None:
    err = await hub_error(hub.engine.create_job("j1", twin_job(type="scheduleTwinUpdate")))
    assert err.code == 400000
    err = await hub_error(hub.engine.create_job("bad id", twin_job()))
    assert err.code == 400004
    assert hub.engine.list_jobs(None, None) == []


async def test_s1_allows_one_active_job(tmp_path: Path) -> None:
    async with Hub(tmp_path / "hub.db", ["d1"], TIERS["S1"]) as hub:
        hub.link.set_ready("d1")
        hub.link.gates["d1"] = asyncio.Event()
        await hub.engine.create_job("a", method_job())
        err = await hub_error(hub.engine.create_job("b", method_job()))
        assert (err.status, err.code, err.name) == (
            429,
            429004,
            "ThrottlingMaxActiveJobCountExceeded",
        )
        hub.link.gates["d1"].set()
        await hub.engine.wait_for_status("a", "completed")
        # A job scheduled for later does not count until its start time has come...
        await hub.engine.create_job("later", method_job(start=600))
        await hub.engine.create_job("c", twin_job(query="deviceId = 'd1'"))
        hub.clock.advance(1)  # S1's pacer: the next device operation slot
        await hub.engine.wait_for_status("c", "completed")
        # ...and then it does.
        hub.clock.advance(600)
        err = await hub_error(hub.engine.create_job("d", method_job(start=600)))
        assert err.code == 429004


async def test_s2_allows_five_active_jobs(tmp_path: Path) -> None:
    async with Hub(tmp_path / "hub.db", ["d1"], TIERS["S2"]) as hub:
        for i in range(5):
            await hub.engine.create_job(f"j{i}", method_job(start=0 if i % 2 else -5))
        err = await hub_error(hub.engine.create_job("j5", method_job()))
        assert err.code == 429004


async def test_bad_query_condition_fails_the_job_when_it_starts(hub: Hub) -> None:
    created = await hub.engine.create_job("j1", twin_job(start=30, query="SELECT * FROM devices"))
    assert created["status"] == "scheduled"
    hub.clock.advance(30)
    job = await hub.engine.wait_for_status("j1", "failed")
    assert job["failureReason"].startswith("syntax error at line 1, column 1")
    assert job["statusMessage"] == job["failureReason"]
    assert job["endTime"] == "2030-01-01T00:00:30.000Z"
    assert job["deviceJobStatistics"]["deviceCount"] == 0
    assert hub.twins.patch_calls == []


# --- twin jobs ------------------------------------------------------------------------------


async def test_twin_job_patches_matching_devices_and_pushes_desired(hub: Hub) -> None:
    await hub.engine.create_job("j1", twin_job())
    job = await hub.engine.wait_for_status("j1", "completed")
    assert job["deviceJobStatistics"] == {
        "deviceCount": 3,
        "failedCount": 0,
        "succeededCount": 3,
        "runningCount": 0,
        "pendingCount": 0,
    }
    matching = ["d1", "d3", "d5"]
    assert hub.twins.patch_calls == [matching]
    for device_id in matching:
        assert hub.twins.docs[device_id]["tags"]["fw"] == "2"
        assert hub.twins.docs[device_id]["properties"]["desired"] == {"x": 1, "$version": 2}
    assert hub.twins.docs["d2"]["tags"] == {"site": "b"}
    assert hub.link.pushes == [(d, {"x": 1, "$version": 2}) for d in matching]
    rows = hub.rows("j1")
    assert sorted(rows) == matching
    assert rows["d1"] == {
        "deviceId": "d1",
        "jobId": "j1",
        "jobType": "scheduleUpdateTwin",
        "status": "completed",
        "startTimeUtc": ISO_T0,
        "endTimeUtc": "2030-01-01T01:00:00.000Z",
        "createdDateTimeUtc": ISO_T0,
        "lastUpdatedDateTimeUtc": ISO_T0,
        "outcome": {},
    }
    hub.assert_consistent("j1")


async def test_tags_only_twin_job_pushes_nothing(hub: Hub) -> None:
    await hub.engine.create_job(
        "j1", twin_job(updateTwin={"tags": {"fw": "3"}, "etag": "*"}, query="IS_DEFINED(deviceId)")
    )
    await hub.engine.wait_for_status("j1", "completed")
    assert hub.stats("j1")["succeededCount"] == 6
    assert hub.link.pushes == []


async def test_twin_job_runs_in_batches_and_fails_vanished_devices(tmp_path: Path) -> None:
    hub = Hub(tmp_path / "hub.db", [f"d{i}" for i in range(1, 6)])
    hub.engine = hub._engine(twin_batch_size=2)
    hub.twins.ghosts.add("d9")
    async with hub:
        await hub.engine.create_job("j1", twin_job(query="IS_DEFINED(deviceId)"))
        await hub.engine.wait_for_status("j1", "completed")
        assert hub.twins.patch_calls == [["d1", "d2"], ["d3", "d4"], ["d5", "d9"]]
        row = hub.rows("j1")["d9"]
        assert row["status"] == "failed"
        assert row["error"]["code"] == "DeviceNotFound"
        assert hub.stats("j1")["failedCount"] == 1
        hub.assert_consistent("j1")


# --- method jobs ----------------------------------------------------------------------------


async def test_method_job_outcomes_per_device(hub: Hub) -> None:
    hub.link.set_ready("d1")  # answers
    hub.link.set_ready("d3")  # too slow
    hub.link.answers["d1"] = MethodReply(201, {"rebooted": True})
    hub.link.answers["d3"] = HubError.gateway_timeout(30)
    await hub.engine.create_job("j1", method_job(query="deviceId IN ['d1','d2','d3']", connect=5))
    job = await hub.engine.wait_for_status("j1", "completed")
    assert job["deviceJobStatistics"]["succeededCount"] == 1
    assert job["deviceJobStatistics"]["failedCount"] == 2
    rows = hub.rows("j1")
    assert rows["d1"]["status"] == "completed"
    assert rows["d1"]["outcome"] == {
        "deviceMethodResponse": {"status": 201, "payload": {"rebooted": True}}
    }
    assert rows["d2"]["status"] == "failed"
    assert rows["d2"]["error"]["code"] == "DeviceNotOnline"
    assert rows["d2"]["error"]["description"].startswith("404103 DeviceNotOnline")
    assert rows["d3"]["error"]["code"] == "GatewayTimeout"
    assert "504101" in rows["d3"]["error"]["description"]
    assert {(i[0], i[1], i[3], i[4]) for i in hub.link.invocations} == {
        ("d1", "reboot", 30.0, 5.0),
        ("d2", "reboot", 30.0, 5.0),
        ("d3", "reboot", 30.0, 5.0),
    }
    hub.assert_consistent("j1")


async def test_offline_device_with_connect_timeout_zero_waits_until_window_end(hub: Hub) -> None:
    hub.link.set_ready("d1")
    await hub.engine.create_job("j1", method_job(query="deviceId IN ['d1','d2']", window=600))
    await hub.engine.wait_for(lambda: hub.stats("j1")["succeededCount"] == 1)
    await asyncio.sleep(0.05)  # a few readiness polls go by
    assert hub.engine.get_job("j1")["status"] == "running"
    assert hub.rows("j1")["d2"]["status"] == "pending"
    assert [i[0] for i in hub.link.invocations] == ["d1"]
    hub.assert_consistent("j1")
    hub.clock.advance(599)
    await asyncio.sleep(0.03)
    assert hub.engine.get_job("j1")["status"] == "running"
    hub.clock.advance(1)
    job = await hub.engine.wait_for_status("j1", "completed")
    assert job["endTime"] == "2030-01-01T00:10:00.000Z"
    row = hub.rows("j1")["d2"]
    assert row["status"] == "failed"
    assert row["error"]["code"] == JOB_RUN_PRECONDITION_FAILED
    assert row["outcome"] == {}
    assert row["lastUpdatedDateTimeUtc"] == "2030-01-01T00:10:00.000Z"
    hub.assert_consistent("j1")


async def test_device_coming_online_within_the_window_is_invoked(hub: Hub) -> None:
    await hub.engine.create_job("j1", method_job(query="deviceId IN ['d2']"))
    await hub.engine.wait_for_status("j1", "running")
    hub.clock.advance(120)
    hub.link.set_ready("d2")
    job = await hub.engine.wait_for_status("j1", "completed")
    assert job["deviceJobStatistics"]["succeededCount"] == 1
    assert hub.rows("j1")["d2"]["lastUpdatedDateTimeUtc"] == "2030-01-01T00:02:00.000Z"


async def test_window_end_fails_running_devices_and_completes_job(hub: Hub) -> None:
    for device_id in ("d1", "d2", "d3"):
        hub.link.set_ready(device_id)
        hub.link.gates[device_id] = asyncio.Event()
    await hub.engine.create_job("j1", method_job(query="deviceId IN ['d1','d2','d3']", window=60))
    await hub.engine.wait_for(lambda: hub.stats("j1")["runningCount"] == 3)
    hub.assert_consistent("j1")
    hub.link.gates["d2"].set()
    await hub.engine.wait_for(lambda: hub.stats("j1")["succeededCount"] == 1)
    hub.assert_consistent("j1")
    hub.clock.advance(60)
    job = await hub.engine.wait_for_status("j1", "completed")
    assert job["deviceJobStatistics"] == {
        "deviceCount": 3,
        "failedCount": 2,
        "succeededCount": 1,
        "runningCount": 0,
        "pendingCount": 0,
    }
    assert {d: r["status"] for d, r in hub.rows("j1").items()} == {
        "d1": "failed",
        "d2": "completed",
        "d3": "failed",
    }
    hub.assert_consistent("j1")


async def test_job_started_after_its_window_fails_every_device(hub: Hub) -> None:
    hub.link.set_ready("d1")
    await hub.engine.create_job("j1", method_job(start=-7200, window=3600))
    job = await hub.engine.wait_for_status("j1", "completed")
    assert job["deviceJobStatistics"]["failedCount"] == 1
    assert hub.rows("j1")["d1"]["error"]["code"] == JOB_RUN_PRECONDITION_FAILED


async def test_method_calls_are_paced_at_the_tier_rate(tmp_path: Path) -> None:
    async with Hub(tmp_path / "hub.db", ["d1", "d2", "d3"], TIERS["S1"]) as hub:
        for device_id in ("d1", "d2", "d3"):
            hub.link.set_ready(device_id)
        await hub.engine.create_job("j1", method_job(query="deviceId IN ['d1','d2','d3']"))
        await hub.engine.wait_for(lambda: hub.stats("j1")["succeededCount"] == 1)
        await asyncio.sleep(0.02)
        assert len(hub.link.invocations) == 1
        hub.assert_consistent("j1")
        hub.clock.advance(0.1)
        await hub.engine.wait_for(lambda: hub.stats("j1")["succeededCount"] == 2)
        hub.clock.advance(0.1)
        await hub.engine.wait_for_status("j1", "completed")
        assert len(hub.link.invocations) == 3


async def test_an_s3_hub_of_two_units_paces_twice_as_fast(tmp_path: Path) -> None:
    """IoT Hub's job device operations scale with S3 units (50/s each): with two units, 100
    operations take 1 s of the hub's clock where one unit takes 2 s."""
    tier = TIERS["S3"].with_units(2)
    assert (tier.device_ops_per_second, tier.max_active_jobs) == (100.0, 10)
    ids = [f"d{n}" for n in range(1, 101)]
    async with Hub(tmp_path / "hub.db", ids, tier) as hub:
        for device_id in ids:
            hub.link.set_ready(device_id)
        await hub.engine.create_job("j1", method_job(query="IS_DEFINED(deviceId)"))
        await hub.engine.wait_for(lambda: hub.stats("j1")["succeededCount"] == 1)
        hub.clock.advance(0.5)  # half of the 100 operations' second
        await hub.engine.wait_for(lambda: hub.stats("j1")["succeededCount"] == 51)
        await asyncio.sleep(0.02)
        assert hub.stats("j1")["succeededCount"] == 51
        hub.clock.advance(0.5)
        await hub.engine.wait_for_status("j1", "completed")


def test_units_scale_the_pace_as_the_quotas_page_says() -> None:
    assert TIERS["S1"].with_units(5).device_ops_per_second == 10.0  # S1: 10/s whatever
    assert TIERS["S2"].with_units(4).device_ops_per_second == 10.0  # max(10/s, 1/s/unit)
    assert TIERS["S2"].with_units(40).device_ops_per_second == 40.0
    assert TIERS["S3"].with_units(10).device_ops_per_second == 500.0
    with pytest.raises(ValueError, match="1 to 10 units"):
        TIERS["S3"].with_units(11)
    with pytest.raises(ValueError, match="1 to 200 units"):
        TIERS["S1"].with_units(0)


# --- queries --------------------------------------------------------------------------------


async def test_list_jobs_filters_by_type_and_status(hub: Hub) -> None:
    await hub.engine.create_job("t1", twin_job())
    await hub.engine.wait_for_status("t1", "completed")
    await hub.engine.create_job("m1", method_job(start=60))
    await hub.engine.create_job("m2", method_job(start=-1, query="deviceId = 'd6'", connect=5))
    await hub.engine.wait_for_status("m2", "completed")
    engine = hub.engine

    def ids(job_type: str | None, status: str | None) -> list[str]:
        return [job["jobId"] for job in engine.list_jobs(job_type, status)]

    assert ids(None, None) == ["t1", "m1", "m2"]
    assert ids("scheduleDeviceMethod", None) == ["m1", "m2"]
    assert ids("scheduleupdatetwin", "completed") == ["t1"]
    assert ids(None, "scheduled") == ["m1"]
    assert ids(None, "queued") == ids(None, "enqueued") == []
    assert ids("export", None) == []
    rows = list(engine.device_job_rows())
    assert [(r["jobId"], r["deviceId"]) for r in rows] == sorted(
        (r["jobId"], r["deviceId"]) for r in rows
    )


async def test_device_job_rows_page_by_key(hub: Hub) -> None:
    # The REST layer's devices.jobs pages read the rows after a (jobId, deviceId) key (issue 12).
    for job_id in ("a", "b"):
        await hub.engine.create_job(job_id, twin_job(query="IS_DEFINED(deviceId)"))
        await hub.engine.wait_for_status(job_id, "completed")
    engine = hub.engine

    def keys(job_id: str | None, after: tuple[str, str] | None, limit: int | None) -> list[str]:
        return [
            f"{r['jobId']}/{r['deviceId']}" for r in engine.device_job_rows(job_id, after, limit)
        ]

    assert keys("b", None, 2) == ["b/d1", "b/d2"]
    assert keys("b", ("b", "d2"), 3) == ["b/d3", "b/d4", "b/d5"]
    assert keys("b", ("b", "d6"), 3) == []
    assert keys("b", ("a", "d9"), 1) == ["b/d1"]
    assert keys("a", ("b", "d1"), None) == []
    assert keys(None, ("a", "d5"), 3) == ["a/d6", "b/d1", "b/d2"]
    assert keys("zz", None, None) == []


async def test_queued_and_enqueued_are_synonyms(tmp_path: Path) -> None:
    async with Hub(tmp_path / "hub.db", ["d1"], TIERS["S2"]) as hub:
        hub.link.set_ready("d1")
        hub.link.gates["d1"] = asyncio.Event()
        await hub.engine.create_job("a", method_job())
        await hub.engine.wait_for_status("a", "running")
        assert hub.engine.list_jobs(None, "running")[0]["jobId"] == "a"
        await hub.engine.create_job("b", method_job(start=60))
        hub.clock.advance(60)
        await hub.engine.wait_for_status("b", "running")
        assert [j["jobId"] for j in hub.engine.list_jobs(None, "Running")] == ["a", "b"]


# --- persistence and recovery ---------------------------------------------------------------


async def test_scheduled_job_survives_a_restart(hub: Hub) -> None:
    await hub.engine.create_job("j1", twin_job(start=60))
    await hub.restart()
    assert hub.engine.get_job("j1")["status"] == "scheduled"
    hub.clock.advance(60)
    await hub.engine.wait_for_status("j1", "completed")
    assert hub.stats("j1")["succeededCount"] == 3


async def test_running_twin_job_resumes_where_it_stopped(tmp_path: Path) -> None:
    devices = [f"d{i:02d}" for i in range(25)]
    async with Hub(tmp_path / "hub.db", devices, TIERS["S1"]) as hub:  # S1: 10 devices per second
        await hub.engine.create_job("j1", twin_job(query="IS_DEFINED(deviceId)"))
        await hub.engine.wait_for(lambda: hub.stats("j1")["succeededCount"] == 10)
        await asyncio.sleep(0.01)
        assert hub.stats("j1")["pendingCount"] == 15
        await hub.restart()  # the first engine dies between two batches
        assert hub.engine.get_job("j1")["status"] == "running"
        hub.assert_consistent("j1")
        hub.twins.patch_calls.clear()
        hub.clock.advance(1)
        await hub.engine.wait_for(lambda: hub.stats("j1")["succeededCount"] == 20)
        hub.clock.advance(1)
        await hub.engine.wait_for_status("j1", "completed")
        assert hub.twins.patch_calls == [devices[10:20], devices[20:]]
        hub.assert_consistent("j1")


async def test_running_method_job_reinvokes_unfinished_devices_after_restart(hub: Hub) -> None:
    for device_id in ("d1", "d2"):
        hub.link.set_ready(device_id)
    hub.link.gates["d2"] = asyncio.Event()  # d2 is mid-call when the engine dies
    await hub.engine.create_job("j1", method_job(query="deviceId IN ['d1','d2','d3']"))
    await hub.engine.wait_for(
        lambda: hub.stats("j1")["succeededCount"] == 1 and hub.stats("j1")["runningCount"] == 1
    )
    await hub.restart()
    assert hub.rows("j1")["d2"]["status"] == "running"
    assert hub.rows("j1")["d3"]["status"] == "pending"
    hub.link.invocations.clear()
    hub.link.gates["d2"].set()
    hub.link.set_ready("d3")
    job = await hub.engine.wait_for_status("j1", "completed")
    assert job["deviceJobStatistics"]["succeededCount"] == 3
    assert sorted(i[0] for i in hub.link.invocations) == ["d2", "d3"]
    hub.assert_consistent("j1")


async def test_stop_leaves_no_task_behind(hub: Hub) -> None:
    await hub.engine.create_job("j1", method_job(query="deviceId IN ['d4']"))
    await hub.engine.create_job("j2", twin_job(start=600))
    await hub.engine.wait_for_status("j1", "running")
    await hub.engine.stop()
    await asyncio.sleep(0)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    await hub.engine.start()  # the fixture stops it again


async def test_internal_error_fails_the_job_and_its_unfinished_rows(hub: Hub) -> None:
    class BrokenTwins(FakeTwins):
        def apply_job_patch(self, *args: Any, **kwargs: Any) -> dict[str, dict[str, Any]]:
            raise RuntimeError("disk on fire")

    hub.twins = BrokenTwins(["d1", "d2"])
    await hub.restart()
    await hub.engine.create_job("j1", twin_job(query="IS_DEFINED(deviceId)"))
    job = await hub.engine.wait_for_status("j1", "failed")
    assert job["failureReason"] == "Internal error: disk on fire"
    assert {row["error"]["code"] for row in hub.rows("j1").values()} == {"InternalError"}
    hub.assert_consistent("j1")
    await hub.engine.create_job("j2", twin_job(start=60))  # the engine itself goes on
    assert hub.engine.get_job("j2")["status"] == "scheduled"


async def test_a_crash_of_a_queued_jobs_engine_step_fails_it_and_frees_the_s1_slot(
    tmp_path: Path,
) -> None:
    def crashing_parser(text: str) -> Any:
        if "crash" in text:
            raise RuntimeError("engine bug")  # not a ValueError: not a bad query, a crash
        from iothub_query import parse_condition

        return parse_condition(text)

    async with Hub(tmp_path / "hub.db", ["d1"], TIERS["S1"]) as hub:
        await hub.restart(parse_condition=crashing_parser)
        await hub.engine.create_job("broken", twin_job(query="deviceId = 'crash'"))
        failed = await hub.engine.wait_for_status("broken", "failed")
        assert failed["failureReason"] == "Internal error: engine bug"
        assert failed["endTime"] is not None
        # The S1 slot is free again: the next job is accepted (not 429004) and runs.
        await hub.engine.create_job("next", twin_job(query="deviceId = 'd1'"))
        assert (await hub.engine.wait_for_status("next", "completed"))["status"] == "completed"
