"""The PostgreSQL store restarted under a running agent: REST → stand-in → AlwaysOn → agent →
SDK → IoT Hub emulator, with the agent's ``store.url`` on a PostgreSQL server of the test's own
(killed with SIGKILL mid-rollout, then started again on the same port and data)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.chain import GATEWAY, AgentChain
from tests.support.network import fresh_loopback
from tests.support.postgres import PostgresCluster, running_cluster

pytestmark = pytest.mark.asyncio

START = "AzureIotDeviceJobStartRollout"
GET = "AzureIotDeviceJobGetRollout"


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL server for this test alone (it is killed)."""
    with running_cluster() as cluster:
        yield cluster


async def _row(chain: AgentChain, rollout_id: str) -> dict[str, Any]:
    (row,) = await chain.rows(GATEWAY, GET, {"rolloutId": rollout_id})
    return dict(row)


async def _device_rows(chain: AgentChain, prefix: str) -> Counter[str]:
    """Each device's hub jobs of the rollout (its devices.jobs rows)."""
    rows = await chain.app.client.query_job_results("SELECT * FROM devices.jobs", 10_000)
    return Counter(r.device_id for r in rows if r.job_id.startswith(prefix + "-"))


async def test_the_database_restarted_under_a_running_agent_loses_nothing(
    tmp_path: Path, own_cluster: PostgresCluster
) -> None:
    url = own_cluster.new_database()
    devices = [f"device-{n:04d}" for n in range(1, 9)]
    async with AgentChain(
        tmp_path, mqtt_host=fresh_loopback(), devices=8, store={"url": url}
    ) as chain:
        await chain.rows(
            GATEWAY,
            START,
            {
                "rolloutId": "db1",
                "type": "twinUpdate",
                "devices": devices,
                "patch": {"properties": {"desired": {"fw": "3.0"}}},
                "waveSize": 2,
                "pauseBetweenWavesSeconds": 1,
            },
        )
        deadline = time.monotonic() + 60
        while (row := await _row(chain, "db1"))["wave"] < 2:  # in flight: wave 2 started
            assert time.monotonic() < deadline, row
            await asyncio.sleep(0.05)

        own_cluster.kill()
        status, body = await chain.call(GATEWAY, GET, {"rolloutId": "db1"})
        message = body if isinstance(body, str) else str(body)
        assert status != 200
        assert f"rollout store (PostgreSQL at 127.0.0.1:{own_cluster.port}/" in message
        assert "unavailable" in message and "Traceback" not in message and url not in message
        await asyncio.sleep(2.0)  # ten engine steps meet no database meanwhile
        await chain.app.channel.wait_ready(1)  # the agent stays up and bound (or ChannelNotReady)

        own_cluster.start()
        deadline = time.monotonic() + 90
        while (row := await _row(chain, "db1"))["status"] != "completed":
            assert row["status"] in ("queued", "running"), row
            assert time.monotonic() < deadline, row
            await asyncio.sleep(0.2)
        assert row["succeededCount"] == 8 and row["failedCount"] == 0
        assert row["waveCount"] == 4
        # No device patched twice, none left out: on the devices and in the hub's job rows.
        (fleet,) = chain.fleets
        assert fleet.patches_received == Counter({d: 1 for d in devices})
        assert await _device_rows(chain, "db1") == Counter({d: 1 for d in devices})
