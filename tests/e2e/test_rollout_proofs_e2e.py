"""Issue 11's proofs, end to end: REST → stand-in → AlwaysOn → agent → SDK → emulator (S1).

Retries that bring back devices that came online (and device errors retried only when asked),
admission on an S1 hub shared by two rollouts and a plain Schedule call (no rollout ever
surfaces a 429004; the plain call keeps the hub's answer), admission on a hub whose finished
jobs outnumber ``iothub.max_rows_per_call``, the maintenance window under an injected clock, and
the rollout events read back from the stand-in.

The engine's clock is injected (:class:`StepClock`) where a test needs time to move: it stands
in the past, so a hub job the engine creates "now" starts at once on the emulator.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.app import AgentApp
from agent.iothub import CallTooLarge, HubRequestError, IotHubClient, Job
from agent.settings import IotHubSettings, JobSettings
from rollouts import HubTier, RolloutEvent, RolloutPlan
from services.rollout_engine import RolloutEngine
from services.rollout_events import ROLLOUT_STATUS_CHANGED_EVENT, ROLLOUT_WAVE_ENDED_EVENT
from services.store.leadership import LocalLeadership
from services.store.postgres import PostgresRolloutStore
from services.store.rollouts import RolloutStore
from services.store.sqlite import SqliteRolloutStore
from tests.support.chain import ENDED, GATEWAY, TWIN, AgentChain

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

START = "AzureIotDeviceJobStartRollout"
RESULTS = "AzureIotDeviceJobQueryRolloutResults"
DONE = ("completed", "aborted", "cancelled", "failed")


class StepClock:
    """A UTC time that moves only when the test moves it."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def _chain(data_dir: Path, **options: Any) -> AgentChain:
    """The chain with a quick engine, its MQTT endpoint on a free port (the fleet needs no 8883)."""
    return AgentChain(data_dir, mqtt_port=0, rollouts={"poll_interval": 0.1}, **options)


def _ids(first: int, last: int) -> list[str]:
    return [f"device-{n:04d}" for n in range(first, last + 1)]


def _with_clock(clock: StepClock) -> Any:
    def prepare(app: AgentApp) -> None:
        app.rollouts.clock = clock

    return prepare


async def _results(chain: AgentChain, rollout_id: str) -> dict[str, dict[str, Any]]:
    rows = await chain.rows(GATEWAY, RESULTS, {"rolloutId": rollout_id})
    return {r["deviceId"]: r for r in rows}


async def _hub_job_exists(chain: AgentChain, job_id: str) -> bool:
    try:
        await chain.app.client.get_job(job_id)
    except HubRequestError as exc:
        assert exc.http_status == 404, exc
        return False
    return True


async def _rollout_job_running(chain: AgentChain, prefix: str, timeout: float = 30) -> str:
    """The id of a hub job of the rollout ``prefix`` that the hub reports running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in await chain.app.client.list_jobs(job_status="running"):
            if job.job_id.startswith(prefix + "-"):
                return job.job_id
        await asyncio.sleep(0.05)
    raise AssertionError(f"no hub job of {prefix} ran within {timeout:g} s")


# -- 1. retries ---------------------------------------------------------------------------------


async def test_devices_back_online_succeed_in_the_retry_round(tmp_path: Path) -> None:
    clock = StepClock(datetime.now(UTC) - timedelta(days=1))
    async with _chain(tmp_path, devices=6, offline_share=0.5, prepare=_with_clock(clock)) as chain:
        fleet = chain.fleets[0]
        offline = fleet.offline_at_start()
        assert len(offline) == 3
        devices = _ids(1, 6)
        await chain.rows(
            GATEWAY,
            START,
            {
                "rolloutId": "rt1",
                "type": "deviceMethod",
                "devices": devices,
                "methodName": "reboot",
                "connectTimeoutInSeconds": 2,
                "responseTimeoutInSeconds": 5,
                "waveSize": 6,
                "retries": 1,
                "retryDelaySeconds": 600,
            },
        )
        judged = await chain.wait_rollout("rt1", (), until=lambda r: r["succeededCount"] == 3)
        assert (judged["status"], judged["pendingCount"], judged["retriedCount"]) == (
            "queued",
            3,
            3,
        ), judged
        first = await _results(chain, "rt1")
        for device_id in offline:
            row = first[device_id]
            assert (row["status"], row["attempts"], row["lastJobId"]) == (
                "pending",
                1,
                "rt1-w1-a1-p1",
            ), row
            assert row["errorCode"], row
        # The retry round waits for retryDelaySeconds on the engine's clock, which stands still.
        await asyncio.sleep(1.0)
        assert not await _hub_job_exists(chain, "rt1-w1-a2-p1")
        for device_id in offline:
            await fleet.set_online(device_id, True)
        clock.at += timedelta(seconds=600)
        chain.app.rollouts.wake()
        done = await chain.wait_rollout("rt1", DONE)
        assert (done["status"], done["succeededCount"], done["failedCount"]) == (
            "completed",
            6,
            0,
        ), done
        assert done["retriedCount"] == 3
        after = await _results(chain, "rt1")
        for device_id in devices:
            row = after[device_id]
            again = device_id in offline
            assert row["status"] == "succeeded" and row["methodStatus"] == 200, row
            assert row["attempts"] == (2 if again else 1), row
            assert row["lastJobId"] == ("rt1-w1-a2-p1" if again else "rt1-w1-a1-p1"), row
        retry_job = await chain.app.client.get_job("rt1-w1-a2-p1")
        assert retry_job.statistics is not None and retry_job.statistics.device_count == 3
        # Each device ran the method once: the offline ones only in the retry round.
        assert fleet.methods_received == Counter(devices)


async def test_device_errors_are_retried_only_when_asked(tmp_path: Path) -> None:
    async with _chain(tmp_path, devices=3) as chain:
        devices = _ids(1, 3)
        common = {
            "type": "deviceMethod",
            "devices": devices,
            "methodName": "setTelemetryInterval",
            "payload": {"intervalSeconds": 0},  # the devices answer 400
            "connectTimeoutInSeconds": 2,
            "responseTimeoutInSeconds": 5,
            "waveSize": 3,
            "retries": 1,
            "retryDelaySeconds": 0,
        }
        await chain.rows(GATEWAY, START, {"rolloutId": "re1", **common})
        plain = await chain.wait_rollout("re1", DONE)
        await chain.rows(GATEWAY, START, {"rolloutId": "re2", "retryDeviceErrors": True, **common})
        asked = await chain.wait_rollout("re2", DONE)
        assert (plain["status"], plain["failedCount"], plain["retriedCount"]) == (
            "completed",
            3,
            0,
        ), plain
        assert (asked["status"], asked["failedCount"], asked["retriedCount"]) == (
            "completed",
            3,
            3,
        ), asked
        for rollout_id, attempts in (("re1", 1), ("re2", 2)):
            rows = await _results(chain, rollout_id)
            for row in rows.values():
                assert (row["status"], row["methodStatus"], row["attempts"]) == (
                    "failed",
                    400,
                    attempts,
                ), row
                assert row["lastJobId"] == f"{rollout_id}-w1-a{attempts}-p1", row
        assert not await _hub_job_exists(chain, "re1-w1-a2-p1")
        assert chain.fleets[0].methods_received == Counter({d: 3 for d in devices})


# -- 2. admission ---------------------------------------------------------------------------------


async def test_two_rollouts_and_a_plain_job_share_one_s1_slot(tmp_path: Path) -> None:
    async with _chain(tmp_path, devices=4, slow_devices=4, slow_delay=1.0) as chain:
        twin = {
            "rolloutId": "adm-a",
            "type": "twinUpdate",
            "devices": _ids(1, 4),
            "patch": {"properties": {"desired": {"fw": "3.0"}}},
            "waveSize": 2,
        }
        method = {
            "rolloutId": "adm-b",
            "type": "deviceMethod",
            "devices": _ids(5, 8),
            "methodName": "reboot",
            "connectTimeoutInSeconds": 5,
            "responseTimeoutInSeconds": 10,
            "waveSize": 2,
            "priority": 1,
        }
        first = {"jobId": "plain-1", "queryCondition": "deviceId = 'device-0001'",
                 "patch": {"tags": {"plain": 1}}}  # fmt: skip
        (sa, _), (sb, _), (sp, body) = await asyncio.gather(
            chain.call(GATEWAY, START, twin),
            chain.call(GATEWAY, START, method),
            chain.call(GATEWAY, TWIN, first),
        )
        assert (sa, sb) == (200, 200)
        # Parity: the plain call answers what the hub said, a job or its 429004.
        if sp == 200:
            assert await _hub_job_exists(chain, "plain-1")
        else:
            assert sp == 500 and str(body).startswith("429004 "), (sp, body)
            assert not await _hub_job_exists(chain, "plain-1")
        # While a rollout's wave holds the slot, a plain call meets the hub's 429004.
        running = await _rollout_job_running(chain, "adm-b")
        status, text = await chain.call(
            GATEWAY, TWIN, {**first, "jobId": "plain-2", "patch": {"tags": {"plain": 2}}}
        )
        assert status == 500 and str(text).startswith("429004 "), (running, status, text)
        assert f"wait for job '{running}' to end" in str(text), text
        assert not await _hub_job_exists(chain, "plain-2")
        # A plain job holds the slot now and then: the rollouts wait, queued, and complete.
        for rollout_id in ("adm-a", "adm-b"):
            done = await chain.wait_rollout(rollout_id, DONE)
            assert (done["status"], done["succeededCount"], done["reason"]) == (
                "completed",
                4,
                None,
            ), done
        fleets = chain.fleets
        assert fleets[0].patches_received == Counter(_ids(1, 4))
        assert fleets[1].methods_received == Counter(_ids(5, 8))


async def test_admission_counts_only_active_jobs_on_a_hub_with_a_long_history(
    tmp_path: Path,
) -> None:
    """More ended jobs than iothub.max_rows_per_call: the rollout is still admitted (it stayed
    queued for ever when each step listed every job), and a plain call's 429004 still names the
    job that holds the slot."""
    async with _chain(
        tmp_path, devices=1, slow_devices=2, slow_delay=1.0, iothub={"max_rows_per_call": 3}
    ) as chain:
        client = chain.app.client
        for n in range(5):
            await client.create_twin_job(
                f"old-{n}", "deviceId = 'device-0001'", {"tags": {"n": n}}, datetime.now(UTC), 60
            )
            await chain.wait_status(f"old-{n}", ENDED)
        with pytest.raises(CallTooLarge):  # the history is longer than one call may read
            await client.list_jobs()
        await chain.rows(
            GATEWAY,
            START,
            {
                "rolloutId": "hist",
                "type": "deviceMethod",
                "devices": _ids(2, 3),
                "methodName": "reboot",
                "connectTimeoutInSeconds": 5,
                "responseTimeoutInSeconds": 10,
                "waveSize": 1,
            },
        )
        running = await _rollout_job_running(chain, "hist")
        status, text = await chain.call(
            GATEWAY,
            TWIN,
            {"queryCondition": "deviceId = 'device-0001'", "patch": {"tags": {"p": 1}}},
        )
        assert status == 500 and f"wait for job '{running}' to end" in str(text), (status, text)
        done = await chain.wait_rollout("hist", DONE, timeout=30)
        assert (done["status"], done["succeededCount"]) == ("completed", 2), done


# -- 3. the maintenance window -----------------------------------------------------------------


async def test_waves_start_only_inside_the_maintenance_window(tmp_path: Path) -> None:
    evening = (datetime.now(UTC) - timedelta(days=3)).replace(
        hour=22, minute=58, second=0, microsecond=0
    )
    clock = StepClock(evening)
    async with _chain(
        tmp_path,
        devices=1,
        slow_devices=6,
        slow_delay=1.0,
        prepare=_with_clock(clock),
    ) as chain:
        engine = chain.app.rollouts

        async def move(to: datetime) -> None:
            clock.at = to
            engine.wake()
            await asyncio.sleep(0.6)  # several engine steps

        await chain.rows(
            GATEWAY,
            START,
            {
                "rolloutId": "win",
                "type": "deviceMethod",
                "devices": _ids(2, 7),
                "methodName": "reboot",
                "connectTimeoutInSeconds": 5,
                "responseTimeoutInSeconds": 10,
                "waveSize": 2,
                "windowStart": "23:00",
                "windowEnd": "00:30",
            },
        )
        await move(evening.replace(minute=59, second=59))  # 22:59:59, closed
        (row,) = await chain.rows(GATEWAY, "AzureIotDeviceJobGetRollout", {"rolloutId": "win"})
        assert (row["status"], row["wave"]) == ("queued", 0), row
        assert not await _hub_job_exists(chain, "win-w1-a1-p1")
        await move(evening.replace(hour=23, minute=0))  # 23:00, open
        assert await _rollout_job_running(chain, "win") == "win-w1-a1-p1"
        # After midnight, still inside the window: wave 2 starts when wave 1 ends.
        await move(evening + timedelta(hours=1, minutes=12))  # 00:10 the next day
        assert await _rollout_job_running(chain, "win-w2") == "win-w2-a1-p1"
        # The window closes while wave 2 runs: it runs to its end, wave 3 waits.
        await move(evening + timedelta(hours=1, minutes=33))  # 00:31
        judged = await chain.wait_rollout("win", (), until=lambda r: r["succeededCount"] == 4)
        await asyncio.sleep(0.6)
        (row,) = await chain.rows(GATEWAY, "AzureIotDeviceJobGetRollout", {"rolloutId": "win"})
        assert (row["status"], row["wave"], row["succeededCount"]) == ("queued", 2, 4), judged
        assert not await _hub_job_exists(chain, "win-w3-a1-p1")
        await move(evening + timedelta(days=1, minutes=2))  # 23:00 the next day
        done = await chain.wait_rollout("win", DONE)
        assert (done["status"], done["succeededCount"]) == ("completed", 6), done


# -- 5. events --------------------------------------------------------------------------------


async def test_rollout_events_reach_the_gateway_thing(tmp_path: Path) -> None:
    async with _chain(tmp_path, devices=4, offline_share=0.25) as chain:
        offline = chain.fleets[0].offline_at_start()
        await chain.rows(
            GATEWAY,
            START,
            {
                "rolloutId": "ev1",
                "type": "deviceMethod",
                "devices": _ids(1, 4),
                "methodName": "reboot",
                "connectTimeoutInSeconds": 2,
                "responseTimeoutInSeconds": 5,
                "waveSize": 2,
                "retries": 1,
                "retryDelaySeconds": 0,
            },
        )
        done = await chain.wait_rollout("ev1", DONE)
        assert done["status"] == "completed" and done["failedCount"] == 1, (done, offline)
        url = chain.standin.rest_url.removesuffix("/Thingworx") + "/standin/events"
        deadline = time.monotonic() + 10
        while True:
            async with chain.http.get(
                url, params={"thing": GATEWAY}, headers={"appKey": chain.app_key}
            ) as reply:
                assert reply.status == 200, await reply.text()
                fired = (await reply.json())["events"]
            mine = [e for e in fired if e["event"].startswith("AzureIotDeviceRollout")]
            statuses = [
                e["data"]["rows"][0]["status"]
                for e in mine
                if e["event"] == ROLLOUT_STATUS_CHANGED_EVENT
            ]
            if (statuses and statuses[-1] == "completed") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        # queued → running → queued ... → completed, one event per change.
        assert statuses[0] == "queued" and statuses[-1] == "completed", statuses
        assert all(a != b for a, b in itertools.pairwise(statuses)), statuses
        assert statuses.count("running") == 3, statuses  # wave 1, wave 2, wave ?'s retry
        last = next(
            e["data"]["rows"][0]
            for e in reversed(mine)
            if e["event"] == ROLLOUT_STATUS_CHANGED_EVENT
        )
        assert (last["rolloutId"], last["waveCount"], last["succeededCount"]) == ("ev1", 2, 3)
        ended = [e["data"]["rows"][0] for e in mine if e["event"] == ROLLOUT_WAVE_ENDED_EVENT]
        retried_wave = 1 if offline[0] in _ids(1, 2) else 2
        assert [(r["wave"], r["attempt"]) for r in ended] == sorted(
            [(1, 1), (2, 1), (retried_wave, 2)]
        ), ended
        first = ended[0]
        assert first["jobIds"] == ["ev1-w1-a1-p1"] and first["succeeded"] + first["failed"] == 2
        assert sum(r["failed"] for r in ended) == 2  # the offline device, in both its rounds
        # The gateway's metadata declares both events.
        thing = chain.standin.registry.get(GATEWAY)
        assert thing is not None
        declared = set(thing.metadata.events) if thing.metadata is not None else set()
        assert {ROLLOUT_STATUS_CHANGED_EVENT, ROLLOUT_WAVE_ENDED_EVENT} <= declared


# -- a request that meets a wave's create ------------------------------------------------------


class GatedClient(IotHubClient):
    """The IoT Hub client, whose twin-job creates wait for the test's go: a pause or cancel can
    land between an admission and its hub job, as it may when a call comes in at that moment."""

    def __init__(self, settings: IotHubSettings, jobs: JobSettings) -> None:
        super().__init__(settings, jobs)
        self.entered = asyncio.Event()
        self.go = asyncio.Event()

    async def create_twin_job(self, *args: Any, **kwargs: Any) -> Job:
        self.entered.set()
        await self.go.wait()
        return await super().create_twin_job(*args, **kwargs)


async def _steps(engine: RolloutEngine, rollout_id: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (record := engine.store.sync.get(rollout_id)) is not None and record.status != status:
        assert time.monotonic() < deadline, record
        await engine.step()
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("event", [RolloutEvent.PAUSE_REQUESTED, RolloutEvent.CANCEL_REQUESTED])
async def test_a_request_during_a_waves_create_is_kept(tmp_path: Path, event: RolloutEvent) -> None:
    """Paused (or cancelled) while the engine creates a wave's job: a pause lets the wave run and
    takes effect at its end (before: the rollout stayed paused with a running wave no step
    judged, and a resume left it queued for ever); a cancel cancels the new job."""
    async with _chain(tmp_path, devices=4) as chain:
        settings = chain.app.settings
        client = GatedClient(settings.iothub, settings.jobs)
        cancel = event is RolloutEvent.CANCEL_REQUESTED
        later = datetime.now(UTC) + timedelta(hours=1)  # a cancelled one's job waits (scheduled)
        engine = RolloutEngine(
            client,
            SqliteRolloutStore(tmp_path / "gated" / "rollouts.sqlite"),
            settings.jobs,
            tier=HubTier("S1"),
            hub_clock=(lambda: later) if cancel else (lambda: datetime.now(UTC)),
        )
        try:
            patch = {"patch": {"properties": {"desired": {"gate": 1}}}}
            plan = RolloutPlan(wave_size=2)
            await engine.create("rg", "twinUpdate", patch, {"waveSize": 2}, plan, _ids(1, 4))
            stepping = asyncio.create_task(engine.step())
            await client.entered.wait()
            assert (await engine.request("rg", event)).status == (
                "cancelled" if cancel else "paused"
            )
            client.go.set()
            await stepping
            record = engine.store.sync.get("rg")
            assert record is not None
            if cancel:
                job = await chain.app.client.get_job("rg-w1-a1-p1")
                assert (record.status, job.status) == ("cancelled", "cancelled"), (record, job)
                assert [p.state for p in engine.store.sync.parts("rg", 1, 1)] == ["ended"]
                return
            assert (record.status, record.requested, record.wave) == ("running", "pause", 1)
            await _steps(engine, "rg", "paused")
            assert engine.store.sync.counts("rg")["succeeded"] == 2
            await engine.request("rg", RolloutEvent.RESUME_REQUESTED)
            await _steps(engine, "rg", "completed")
            assert chain.fleets[0].patches_received == Counter(_ids(1, 4))
        finally:
            engine.store.close()
            await client.close()


# -- a request that meets a verdict ------------------------------------------------------------


class GatedLeadership(LocalLeadership):
    """Always the leader; once armed, its ``calls``-th confirmation waits for the test's go. The
    engine confirms at a step's start and again between reading a judged rollout and storing
    its verdict: the second call of the judging step opens that gap to a request."""

    def __init__(self) -> None:
        self.calls = 0
        self.entered = asyncio.Event()
        self.go = asyncio.Event()

    async def confirm(self) -> bool:
        if self.calls:
            self.calls -= 1
            if not self.calls:
                self.entered.set()
                await self.go.wait()
        return True


def _gated_engine(chain: AgentChain, store: RolloutStore, gate: GatedLeadership) -> RolloutEngine:
    """An engine on the chain's hub (S1) whose leadership checks ``gate`` holds."""
    jobs = chain.app.settings.jobs
    return RolloutEngine(chain.app.client, store, jobs, tier=HubTier("S1"), leadership=gate)


async def _judging_held(
    chain: AgentChain, engine: RolloutEngine, gate: GatedLeadership, rollout_id: str
) -> asyncio.Task[None]:
    """Start a rollout of six devices in waves of two, run its first wave, then a step that
    judges it, held by ``gate`` between its read of the rollout and its verdict's write."""
    patch = {"patch": {"properties": {"desired": {"verdict": rollout_id}}}}
    plan = RolloutPlan(wave_size=2)
    await engine.create(rollout_id, "twinUpdate", patch, {"waveSize": 2}, plan, _ids(1, 6))
    await engine.step()  # wave 1's job created
    await chain.wait_status(f"{rollout_id}-w1-a1-p1", ENDED)
    gate.calls = 2
    judging = asyncio.create_task(engine.step())
    await asyncio.wait_for(gate.entered.wait(), 30)
    return judging


async def test_a_pause_during_a_verdict_is_not_overwritten(tmp_path: Path) -> None:
    """A pause requested while the engine judges a wave (after it read the rollout, before it
    stored the verdict) holds: before, the verdict stored the status it had decided from its earlier
    read (queued for the next wave) and the pause was lost."""
    async with _chain(tmp_path, devices=6) as chain:
        store = SqliteRolloutStore(tmp_path / "gated" / "rollouts.sqlite")
        gate = GatedLeadership()
        engine = _gated_engine(chain, store, gate)
        try:
            judging = await _judging_held(chain, engine, gate, "rv")
            pausing = asyncio.create_task(engine.request("rv", RolloutEvent.PAUSE_REQUESTED))
            await asyncio.sleep(0.3)  # the request runs as far as it can while the verdict waits
            gate.go.set()
            await judging
            await pausing
            record = store.get("rv")
            assert record is not None
            # Kept: paused now, or (the next wave's job created meanwhile) running with the pause
            # waiting for that wave's end. Lost, it was `queued`/`running` with nothing requested.
            assert record.status == "paused" or record.requested == "pause", record.requested
            await _steps(engine, "rv", "paused")
            record = store.get("rv")
            assert record is not None
            assert record.wave < record.wave_count, record.wave
        finally:
            gate.go.set()
            engine.store.close()


async def test_a_pause_from_another_agent_during_a_verdict_is_not_overwritten(
    tmp_path: Path, postgres_url: str
) -> None:
    """The same gap across two agents on one shared PostgreSQL store: the pause is stored by the
    other agent's engine (its own decision lock, which cannot hold back the leader's). The
    leader's verdict expects the status and request it read (compare-and-set), finds them
    changed, and decides again from a fresh read: the pause holds. Without the check the verdict
    overwrote it."""
    async with _chain(tmp_path, devices=6) as chain:
        store = PostgresRolloutStore(postgres_url)
        gate = GatedLeadership()
        engine = _gated_engine(chain, store, gate)
        jobs = chain.app.settings.jobs
        other = RolloutEngine(chain.app.client, PostgresRolloutStore(postgres_url), jobs)
        try:
            judging = await _judging_held(chain, engine, gate, "rx")
            paused = await other.request("rx", RolloutEvent.PAUSE_REQUESTED)
            assert paused.requested == "pause"  # stored by the other agent, the verdict waiting
            gate.go.set()
            await judging
            record = store.get("rx")
            assert record is not None
            assert record.status == "paused", (record.status, record.requested)
            assert record.wave == 1 and record.wave < record.wave_count
            waves = store.waves("rx")  # wave 1 judged (its devices stored), wave 2 never began
            assert [(w.wave, w.status, w.succeeded) for w in waves[:2]] == [
                (1, "judged", 2),
                (2, "waiting", 0),
            ]
        finally:
            gate.go.set()
            engine.store.close()
            other.store.close()
