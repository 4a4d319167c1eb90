"""Fencing tokens on a real PostgreSQL server (services/store/fencing.py): every takeover moves
the hub's epoch on; an old leader's write after a takeover is refused inside its transaction and
leaves nothing, the new leader's goes through; an old leader's write in flight at the takeover is
rolled back; a leader silent behind a cut relay is ended by the standby; and an engine step that
outlived its leadership (held in a hub call while another agent took over) writes nothing."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import structlog
from pydantic import SecretStr

from agent.iothub import IotHubClient
from agent.settings import IotHubSettings, JobSettings
from emulator.iothub import IoTHubEmulator
from rollouts import RolloutPlan
from services.rollout_engine import RolloutEngine
from services.store import FencedError, PostgresRolloutStore, SqliteRolloutStore
from services.store.admission import PostgresAdmission
from services.store.fencing import Fence, check_fence
from services.store.leadership import PostgresLeadership
from services.store.rollouts import RolloutRecord
from tests.support.network import fresh_loopback
from tests.support.partition import Partition

HUB = "contoso-hub.azure-devices.net"
T = 2.0  # takeover_seconds
TABLES = ("rollouts", "devices", "rounds", "parts")


def _record(rollout_id: str = "ro") -> RolloutRecord:
    return RolloutRecord(
        rollout_id=rollout_id, type="twinUpdate", operation={"patch": {}}, inputs={},
        status="queued", requested=None, reason=None, priority=100, device_count=2, wave=0,
        wave_count=1, current_job_id=None, created_time=datetime(2026, 1, 1, tzinfo=UTC),
        start_time=None, end_time=None, last_wave_end=None,
    )  # fmt: skip


@pytest.fixture
async def pair(postgres_url: str) -> AsyncIterator[tuple[PostgresLeadership, PostgresLeadership]]:
    """Two agents' leadership of one hub (closed after the test)."""
    leaderships = (
        PostgresLeadership(postgres_url, HUB, T),
        PostgresLeadership(postgres_url, HUB, T),
    )
    yield leaderships
    for leadership in leaderships:
        await leadership.close()


def _rows(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the rollout tables, in a stable order."""
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in TABLES}


def _end_leadership_sessions(url: str) -> None:
    """The old leader's lock session dies (as when its connection is lost)."""
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'jobs-agent leadership' AND pid <> pg_backend_pid()"
        )


async def test_every_takeover_moves_the_epoch_on(
    pair: tuple[PostgresLeadership, PostgresLeadership],
) -> None:
    first, second = pair
    assert first.fence is None  # a standby carries no token
    assert await first.try_acquire()
    assert first.fence == Fence(HUB, 1)
    assert not await second.try_acquire()
    await first.close()
    assert first.fence is None
    assert await second.try_acquire() and second.epoch == 2
    await second.close()
    assert await first.try_acquire() and first.epoch == 3
    assert await first.confirm()  # the renewal checks the epoch is still its own


async def test_an_old_leaders_write_after_a_takeover_is_refused_and_leaves_nothing(
    postgres_url: str, pair: tuple[PostgresLeadership, PostgresLeadership]
) -> None:
    old, new = pair
    store_old, store_new = PostgresRolloutStore(postgres_url), PostgresRolloutStore(postgres_url)
    try:
        assert await old.try_acquire()
        stale = old.fence
        store_old.create(_record(), [("d1", 1), ("d2", 1)])  # a service's write: never fenced
        with store_old.fenced(stale):
            store_old.update("ro", status="running")  # still the leader: written
        _end_leadership_sessions(postgres_url)
        assert await new.try_acquire() and new.epoch == 2
        before = _rows(postgres_url)
        refused = pytest.raises(FencedError, match=r"epoch 1, .* at epoch 2 now")
        with refused, store_old.fenced(stale):
            store_old.update("ro", status="paused", reason="late")
        with pytest.raises(FencedError), store_old.fenced(stale):
            store_old.create(_record("ro2"), [("d3", 1)])
        assert _rows(postgres_url) == before  # nothing written, not even the first statement
        with store_new.fenced(new.fence):
            store_new.update("ro", status="paused")
        record = store_new.get("ro")
        assert record is not None and (record.status, record.reason) == ("paused", None)
        store_old.update("ro", requested="cancel")  # unfenced (a service's call): accepted
    finally:
        store_old.close()
        store_new.close()


async def test_an_old_leaders_write_in_flight_at_the_takeover_is_rolled_back(
    postgres_url: str, pair: tuple[PostgresLeadership, PostgresLeadership]
) -> None:
    old, new = pair
    store = PostgresRolloutStore(postgres_url)
    try:
        assert await old.try_acquire()
        store.create(_record(), [("d1", 1)])
        stale = old.fence
        assert stale is not None
        with psycopg.connect(postgres_url, autocommit=True) as writer:
            writer.execute("BEGIN")  # a fenced write under way: checked, one row changed
            with writer.cursor() as cursor:
                check_fence(cursor, stale)
                cursor.execute("UPDATE rollouts SET status = 'failed' WHERE rollout_id = 'ro'")
            _end_leadership_sessions(postgres_url)
            started = time.monotonic()
            assert await new.try_acquire()  # ends the writer's session, then moves the epoch on
            assert time.monotonic() - started < T
            with pytest.raises(psycopg.OperationalError):
                writer.execute("COMMIT")
        record = store.get("ro")
        assert record is not None and record.status == "queued"
    finally:
        store.close()


async def test_a_leader_silent_behind_a_cut_relay_is_ended_by_the_standby(
    postgres_url: str,
) -> None:
    host, port = "127.0.0.1", int(postgres_url.rsplit(":", 1)[1].split("/")[0])
    async with Partition(host, port) as link:
        leader = PostgresLeadership(link.replace_port(postgres_url), HUB, T)
        standby = PostgresLeadership(postgres_url, HUB, T)
        try:
            assert await leader.try_acquire()
            link.cut()  # the server still sees a live session: the relay answers TCP for it
            cut = time.monotonic()
            tasks = [asyncio.create_task(lead.run()) for lead in (leader, standby)]
            while standby.role != "active":
                assert time.monotonic() - cut < T + 1.0, "the standby did not take over"
                await asyncio.sleep(0.02)
            assert leader.role == "standby"  # it gave up first (its renewal got no answer)
            assert standby.epoch == 2
            link.heal()
            await asyncio.sleep(T / 2)  # the old leader tries again through the healed relay
            assert (leader.role, standby.role) == ("standby", "active")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            link.heal()
            await leader.close()
            await standby.close()


def test_sqlite_writes_are_never_fenced(tmp_path: Path) -> None:
    store = SqliteRolloutStore(tmp_path / "rollouts.sqlite")
    try:
        store.create(_record(), [("d1", 1)])
        with store.fenced(Fence(HUB, 7)):  # one agent: always the leader
            store.update("ro", status="running")
        record = store.get("ro")
        assert record is not None and record.status == "running"
    finally:
        store.close()


async def test_an_engine_step_that_outlived_its_leadership_writes_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    host = fresh_loopback()
    async with (
        IoTHubEmulator(tmp_path / "hub", host=host, rest_port=0, mqtt_port=0) as hub,
        Partition(host, hub.rest_port) as hub_link,
    ):
        ids = hub.ensure_devices(4)

        def client(connection_string: str) -> IotHubClient:
            settings = IotHubSettings(
                connection_string=SecretStr(connection_string),
                ca_file=str(hub.ca_pem_path),
                request_timeout=30.0,
            )
            return IotHubClient(settings, JobSettings())

        # The old leader reaches the hub through a link the test holds; the new one directly.
        clients = [client(hub_link.replace_port(hub.owner_connection_string)),
                   client(hub.owner_connection_string)]  # fmt: skip
        leads = [PostgresLeadership(postgres_url, HUB, T) for _ in clients]
        old, new = engines = [
            RolloutEngine(
                c,
                PostgresRolloutStore(postgres_url),
                JobSettings(),
                max_concurrent_jobs=2,
                leadership=lead,
                admission=PostgresAdmission(postgres_url, HUB, 2, agent=f"agent{n}"),
            )
            for n, (c, lead) in enumerate(zip(clients, leads, strict=True))
        ]
        try:
            assert await leads[0].try_acquire()
            await old.create("ro", "twinUpdate", {"patch": {"tags": {"v": 3}}}, {"waveSize": 2},
                             RolloutPlan(wave_size=2), ids)  # fmt: skip
            await old.step()  # wave 1's job created
            (part,) = await old.store.parts("ro", 1, 1)
            assert part.state == "created"
            deadline = time.monotonic() + 30
            while (await clients[1].get_job(part.job_id)).status.lower() != "completed":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            hub_link.cut()
            with structlog.testing.capture_logs() as logs:
                stepping = asyncio.create_task(old.step())  # leadership confirmed, then ...
                while not hub_link.held:  # ... held in its hub call (polling wave 1's job)
                    assert not stepping.done() and time.monotonic() < deadline
                    await asyncio.sleep(0.01)
                _end_leadership_sessions(postgres_url)
                assert await leads[1].try_acquire()  # another agent leads: epoch 2
                before = _rows(postgres_url)
                hub_link.heal()  # the old step goes on: the job ended, it marks the part ...
                await asyncio.wait_for(stepping, 30)
            assert _rows(postgres_url) == before  # ... and is refused: nothing written
            (part,) = await old.store.parts("ro", 1, 1)
            assert part.state == "created"
            fenced = [e for e in logs if e["event"].startswith("rollout step stopped")]
            assert len(fenced) == 1 and "epoch 1" in fenced[0]["error"], logs
            while (
                record := await new.store.get("ro")
            ) is not None and record.status != "completed":
                assert time.monotonic() < deadline + 30, record
                await new.step()  # the new leader's writes go through
                await asyncio.sleep(0.2)
            rows = await clients[1].query_job_results("SELECT * FROM devices.jobs", 100)
            assert Counter(r.device_id for r in rows) == Counter({d: 1 for d in ids})
        finally:
            hub_link.heal()
            for engine in engines:
                await engine.leadership.close()
                await engine.admission.close()
                engine.store.close()
            for c in clients:
                await c.close()
