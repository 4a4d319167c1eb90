"""Shared admission slots on a real PostgreSQL server (services/store/admission.py): two agents
never take one slot, a slot is freed by the hub's job list (only by a listing begun after its job
was created), a reservation left by a dead agent is taken again by the same job id; and two
rollout engines racing for the hub's one free slot against the IoT Hub emulator start one wave,
not two."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

from agent.iothub import IotHubClient
from agent.settings import JobSettings
from emulator.iothub import IoTHubEmulator
from rollouts import RolloutPlan
from services.rollout_engine import RolloutEngine
from services.store import SqliteRolloutStore
from services.store.admission import LocalAdmission, PostgresAdmission
from services.store.schema import schema_version
from tests.support.network import fresh_loopback
from tests.support.settings import hub_client

HUB = "contoso-hub.azure-devices.net"


async def _open(url: str, agent: str, slots: int = 1, **kw: float) -> PostgresAdmission:
    return await PostgresAdmission(url, HUB, slots, agent=agent, **kw).prepare()


async def test_two_agents_never_take_one_slot(postgres_url: str) -> None:
    a, b = await _open(postgres_url, "a"), await _open(postgres_url, "b")
    try:
        for round_ in range(20):
            got = await asyncio.gather(
                a.take(f"a-{round_}", (), None), b.take(f"b-{round_}", (), None)
            )
            assert sorted(got) == [False, True], got
            winner = f"a-{round_}" if got[0] else f"b-{round_}"
            assert await a.held() == {1: ("reserved", winner)}
            await (a if got[0] else b).release(winner)
        assert await a.held() == {1: ("free", None)}
    finally:
        await a.close()
        await b.close()


async def test_a_locked_slot_is_skipped_not_waited_for(postgres_url: str) -> None:
    a = await _open(postgres_url, "a", slots=2)
    try:
        with psycopg.connect(postgres_url) as other:  # a transaction holding slot 1's row
            other.execute(
                "SELECT slot FROM admission_slots WHERE hub = %s AND slot = 1 FOR UPDATE", (HUB,)
            )
            assert await asyncio.wait_for(a.take("j1", (), None), 2) is True
            assert (await a.held())[2] == ("reserved", "j1")  # slot 2: slot 1 was skipped
            other.rollback()
        assert schema_version(psycopg.connect(postgres_url), "admission") == 1
    finally:
        await a.close()


async def test_the_hub_job_list_frees_a_slot_whose_job_ended(postgres_url: str) -> None:
    a, b = await _open(postgres_url, "a"), await _open(postgres_url, "b")
    try:
        early = await b.listing_started()  # a listing begun before j1 existed
        assert await a.take("j1", (), None)
        await a.created("j1")
        assert not await b.take("j2", (), early)  # j1 may exist after that listing began
        assert not await b.take("j2", ("j1",), await b.listing_started())  # j1 still running
        assert not await b.take("j2", (), None)  # no listing: nothing is freed
        assert await b.take("j2", (), await b.listing_started())  # j1 ended
        assert await a.held() == {1: ("reserved", "j2")}
    finally:
        await a.close()
        await b.close()


async def test_a_reservation_of_a_dead_agent_is_retaken_by_its_job_or_expires(
    postgres_url: str,
) -> None:
    dead = await _open(postgres_url, "dead", slots=2)
    heir = await _open(postgres_url, "heir", slots=2, reservation_seconds=0.5)
    try:
        assert await dead.take("ro-w1-a1-p1", (), None)
        assert await dead.take("ro-w2-a1-p1", (), None)
        await dead.close()  # died between its reservations and its creates
        assert await heir.take("ro-w1-a1-p1", (), None)  # the same part: its own slot
        await heir.created("ro-w1-a1-p1")
        assert not await heir.take("other", (), None)
        await asyncio.sleep(0.6)
        assert await heir.take("other", (), None)  # the abandoned reservation expired
        jobs = [j for _, j in (await heir.held()).values()]
        assert sorted(str(j) for j in jobs) == ["other", "ro-w1-a1-p1"], jobs
    finally:
        await heir.close()


async def test_an_unreachable_store_refuses_the_slot() -> None:
    from tests.support.network import free_port

    down = PostgresAdmission(
        f"postgresql://u:pw@127.0.0.1:{free_port()}/db", HUB, 1, agent="a", timeout=2
    )
    assert await down.listing_started() is None
    assert await down.take("j", (), None) is False
    await down.close()
    assert await LocalAdmission().take("j", (), None) is True


# --- two engines, one free slot, the real hub (emulator) -----------------------------------------


def _client(hub: IoTHubEmulator) -> IotHubClient:
    return hub_client(hub.owner_connection_string, hub.ca_pem_path)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-slots", "hub-list-only"])
async def test_two_engines_racing_for_one_free_slot_start_one_wave(
    tmp_path: Path, postgres_url: str, shared: bool
) -> None:
    """Both engines believe they lead (the moment a silent leader has not noticed yet): with the
    shared slots one wave starts; with the hub's job list alone, both do (the bug it prevents)."""
    async with IoTHubEmulator(
        tmp_path / "hub", host=fresh_loopback(), rest_port=0, mqtt_port=0
    ) as hub:
        ids = hub.ensure_devices(2)
        client = _client(hub)
        engines = []
        for name in ("a", "b"):
            admission = await _open(postgres_url, name) if shared else LocalAdmission()
            engine = RolloutEngine(
                client,
                SqliteRolloutStore(tmp_path / name / "rollouts.sqlite"),
                JobSettings(),
                max_concurrent_jobs=1,
                admission=admission,
            )
            await engine.create(f"ro-{name}", "twinUpdate", {"patch": {"tags": {"x": 1}}}, {},
                          RolloutPlan(wave_size=2), ids)  # fmt: skip
            engines.append(engine)
        try:
            await asyncio.gather(*(e.step() for e in engines))
            created = [j.job_id for j in await client.list_jobs() if j.job_id.startswith("ro-")]
            statuses = sorted([(await e.store.find())[0].status for e in engines])
            if shared:
                assert len(created) == 1, created
                assert statuses == ["queued", "running"]  # the other waits for the next step
            else:
                assert len(created) == 2, created
                assert statuses == ["running", "running"]
        finally:
            for engine in engines:
                await engine.admission.close()
                engine.store.close()
            await client.close()
