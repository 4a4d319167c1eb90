"""The rollout engine under a shared leadership (a real PostgreSQL store, the IoT Hub emulator):
a standby engine starts no wave; when the leader goes it takes over, attaches to the wave job the
leader created just before dying (its intent not yet recorded as created), and finishes the
rollout with no device operation doubled."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from pydantic import SecretStr

from agent.iothub import IotHubClient
from agent.settings import IotHubSettings, JobSettings
from emulator.iothub import IoTHubEmulator
from rollouts import RolloutPlan
from services.rollout_engine import RolloutEngine
from services.store import PostgresRolloutStore
from services.store.admission import PostgresAdmission
from services.store.leadership import PostgresLeadership
from tests.support.network import fresh_loopback


async def test_a_standby_engine_waits_then_takes_over_without_doubling(
    tmp_path: Path, postgres_url: str
) -> None:
    async with IoTHubEmulator(
        tmp_path / "hub", host=fresh_loopback(), rest_port=0, mqtt_port=0
    ) as hub:
        ids = hub.ensure_devices(4)
        client = IotHubClient(
            IotHubSettings(
                connection_string=SecretStr(hub.owner_connection_string),
                ca_file=str(hub.ca_pem_path),
                request_timeout=10.0,
            ),
            JobSettings(),
        )
        leads = [PostgresLeadership(postgres_url, client.host, 2.0) for _ in range(2)]
        engines = [
            RolloutEngine(
                client,
                PostgresRolloutStore(postgres_url),
                JobSettings(),
                max_concurrent_jobs=2,
                leadership=lead,
                admission=PostgresAdmission(postgres_url, client.host, 2, agent=f"agent{n}"),
            )
            for n, lead in enumerate(leads)
        ]
        leader, standby = engines
        try:
            assert await leads[0].try_acquire()
            assert not await leads[1].try_acquire()
            await leader.create("ro", "twinUpdate", {"patch": {"tags": {"v": 2}}}, {"waveSize": 2},
                          RolloutPlan(wave_size=2), ids)  # fmt: skip
            await standby.step()
            assert await client.list_jobs() == []  # a standby starts nothing
            await leader.step()
            (part,) = await leader.store.parts("ro", 1, 1)
            assert part.state == "created"
            # The leader dies right after creating the job, before recording it.
            await leader.store.set_part(part.job_id, "intent")
            await leads[0].close()
            assert await leads[1].try_acquire()
            deadline = time.monotonic() + 60
            while (
                record := await standby.store.get("ro")
            ) is not None and record.status != "completed":
                assert time.monotonic() < deadline, record
                await standby.step()
                await asyncio.sleep(0.2)
            await leader.step()  # no longer the leader: it changes nothing
            rows = await client.query_job_results("SELECT * FROM devices.jobs", 100)
            assert Counter(r.device_id for r in rows) == Counter({d: 1 for d in ids})
            assert sorted(j.job_id for j in await client.list_jobs()) == [
                "ro-w1-a1-p1",
                "ro-w2-a1-p1",
            ]
        finally:
            for engine in engines:
                await engine.leadership.close()
                await engine.admission.close()
                engine.store.close()
            await client.close()
