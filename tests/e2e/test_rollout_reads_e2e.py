"""What judging a wave costs the hub: one ``devices.jobs`` page per hub job of the wave.

A wave's hub job holds up to about 500 devices (an 8 KB ``deviceId IN [...]``); the engine read
its rows at ``jobs.query_page_size`` (100), six requests per job and about 1,100 for a rollout
over 100,000 devices (benchmarks/bench_rollout.py). It now asks for IoT Hub's largest page.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.support.chain import GATEWAY, AgentChain

pytestmark = pytest.mark.asyncio

QUERY_ROUTE = "POST /devices/query"


async def test_a_wave_is_judged_with_one_page_per_hub_job(tmp_path: Path) -> None:
    async with AgentChain(tmp_path, devices=300, tier=None, fleet=False) as chain:
        devices = [f"device-{n:04d}" for n in range(1, 301)]
        before = chain.hub.requests(QUERY_ROUTE)  # a devices list: Start queries nothing
        await chain.rows(
            GATEWAY,
            "AzureIotDeviceJobStartRollout",
            {
                "rolloutId": "reads",
                "type": "twinUpdate",
                "devices": devices,
                "patch": {"tags": {"wave": 1}},
                "waveSize": 300,
            },
        )
        deadline = time.monotonic() + 60
        while True:
            (row,) = await chain.rows(
                GATEWAY, "AzureIotDeviceJobGetRollout", {"rolloutId": "reads"}
            )
            if row["status"] not in ("queued", "running"):
                break
            assert time.monotonic() < deadline, f"rollout still {row['status']}"
            await asyncio.sleep(0.1)
        assert row["status"] == "completed" and row["succeededCount"] == 300
        # One hub job (300 short ids fit one IN list), its 300 rows read in one page.
        assert chain.hub.requests(QUERY_ROUTE) - before == 1
