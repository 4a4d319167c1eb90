"""A round's parts side by side (services/rollout_engine.py) against the IoT Hub emulator.

Device ids of 128 characters put 61 of them in one 8 KB ``deviceId IN [...]`` part, so a round
of a few hundred devices is cut into several hub jobs. On an S3 hub (quota 10, 50 device
operations a second across the hub) the parts run together, never more than the engine's quota at
once, each device once; on an S1 hub a part that meets ``429004`` stays an intent, is never
surfaced, and runs when the slot is free. The hub's own job records (created, ended) are the
evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from agent.iothub import IotHubClient
from agent.settings import JobSettings
from emulator.iothub import IoTHubEmulator
from rollouts import HubTier, RolloutPlan
from rollouts.plan import device_in_conditions
from services.rollout_engine import RolloutEngine
from services.store import SqliteRolloutStore
from tests.support.network import fresh_loopback
from tests.support.settings import hub_client

pytestmark = pytest.mark.asyncio

PATCH = {"properties": {"desired": {"fw": "4.0"}}}


def _long_ids(n: int) -> list[str]:
    return [f"{i:04d}-" + "x" * 123 for i in range(n)]  # 128 characters, IoT Hub's longest


@contextlib.asynccontextmanager
async def _engine(
    tmp_path: Path, ids: list[str], tier: str, quota: int
) -> AsyncIterator[RolloutEngine]:
    """An emulated hub of ``tier`` holding ``ids``, and an engine over it with ``quota``."""
    async with IoTHubEmulator(
        tmp_path / "hub", host=fresh_loopback(), rest_port=0, mqtt_port=0, tier=tier
    ) as hub:
        hub.registry.create_devices(ids)
        client = hub_client(hub.owner_connection_string, hub.ca_pem_path)
        store = SqliteRolloutStore(tmp_path / "rollouts.sqlite")
        engine = RolloutEngine(
            client, store, JobSettings(), tier=HubTier(tier), max_concurrent_jobs=quota,
            poll_interval=0.1,
        )  # fmt: skip
        try:
            yield engine
        finally:
            store.close()
            await client.close()


async def _run_to_end(engine: RolloutEngine, rollout_id: str, timeout: float = 60) -> str:
    """Run the engine until ``rollout_id`` is terminal; its final status."""
    task = asyncio.create_task(engine.run())
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = await engine.store.get(rollout_id)
            assert record is not None
            if record.status in ("completed", "aborted", "cancelled", "failed"):
                return record.status
            await asyncio.sleep(0.05)
        raise AssertionError(f"{rollout_id} did not end within {timeout:g} s")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, step in edges:  # an end before a start at the same instant
        now += step
        most = max(most, now)
    return most


async def _hub_jobs(client: IotHubClient, prefix: str) -> dict[str, tuple[datetime, datetime]]:
    spans = {}
    for job in await client.list_jobs():
        if job.job_id.startswith(prefix):
            assert job.status.lower() == "completed", job
            assert job.created_time is not None and job.end_time is not None, job
            spans[job.job_id] = (job.created_time, job.end_time)
    return spans


async def _device_rows(client: IotHubClient, prefix: str) -> Counter[str]:
    rows = await client.query_job_results("SELECT * FROM devices.jobs", 10_000, page_size=1000)
    return Counter(r.device_id for r in rows if r.job_id.startswith(prefix))


async def test_an_s3_rounds_parts_run_side_by_side_within_the_quota(tmp_path: Path) -> None:
    ids = _long_ids(290)
    assert len(device_in_conditions(ids)) == 5  # 61 + 61 + 61 + 61 + 46
    # The engine's quota less than the hub's 10: its own bound is what is tested.
    async with _engine(tmp_path, ids, "S3", 3) as engine:
        client = engine.client
        plan = RolloutPlan(wave_size=len(ids))
        await engine.create("side", "twinUpdate", {"patch": PATCH}, {}, plan, ids)
        assert await _run_to_end(engine, "side") == "completed"
        spans = await _hub_jobs(client, "side-")
        assert sorted(spans) == [f"side-w1-a1-p{n}" for n in range(1, 6)]
        # Side by side: as many at once as the quota allows, never more.
        assert _most_at_once(list(spans.values())) == 3, spans
        first_end = min(end for _, end in spans.values())
        started_together = [j for j, (created, _) in spans.items() if created < first_end]
        assert len(started_together) == 3, spans
        assert await _device_rows(client, "side-") == Counter({d: 1 for d in ids})
        counts = await engine.store.counts("side")
        assert counts.get("succeeded") == len(ids), counts


async def test_a_part_refused_with_429004_waits_as_an_intent_and_runs_later(
    tmp_path: Path,
) -> None:
    """The engine believes in two slots, the S1 hub has one: the two parts are created together,
    the one the hub takes second meets 429004, stays an intent (the rollout running, no reason,
    nothing failed) and runs after the other."""
    # Both parts last seconds on S1 (10 device operations a second): whichever the hub takes
    # first still runs when the other's create arrives, however the two requests are spaced.
    ids = _long_ids(91)
    assert [c for _, c in device_in_conditions(ids)] == [61, 30]
    async with _engine(tmp_path, ids, "S1", 2) as engine:
        client = engine.client
        plan = RolloutPlan(wave_size=len(ids))
        await engine.create("full", "twinUpdate", {"patch": PATCH}, {}, plan, ids)
        await engine.step()  # one part created, the other refused by the hub
        parts = {p.job_id: p.state for p in await engine.store.parts("full", 1, 1)}
        assert sorted(parts.values()) == ["created", "intent"], parts
        first = next(job_id for job_id, state in parts.items() if state == "created")
        later = next(job_id for job_id, state in parts.items() if state == "intent")
        record = await engine.store.get("full")
        assert record is not None
        assert (record.status, record.reason) == ("running", None)
        assert await _run_to_end(engine, "full") == "completed"
        spans = await _hub_jobs(client, "full-")
        assert _most_at_once(list(spans.values())) == 1, spans
        assert spans[later][0] >= spans[first][1], spans
        assert await _device_rows(client, "full-") == Counter({d: 1 for d in ids})
