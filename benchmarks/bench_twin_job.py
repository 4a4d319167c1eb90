"""Benchmark: a twin job (tags + desired properties) over 100,000 devices, no tier.

Method: a fresh SQLite database file (WAL, synchronous=NORMAL) in a temporary directory; the
real hub registry (``emulator.iothub.registry.Registry``, SQLite write-through) holding N devices
created up front (not timed); the real query language; a device link with no device connected
(``push_desired`` is then a no-op on the real endpoint, so here it only counts calls). The timed
span runs from ``create_job`` (startTime = now) to the job's ``completed`` status: query
evaluation over every twin, N pending device rows inserted, then batches of 2,000 devices, each
(rows → running, one transaction; registry twin patch, one transaction; rows → completed, one
transaction; desired pushes). The figure printed is the median of ``--runs`` runs.

Run: ``python -m benchmarks.bench_twin_job [--devices 100000] [--runs 3] [--batch 2000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emulator.iothub.clock import SystemClock
from emulator.iothub.database import Database
from emulator.iothub.jobs import JobEngine
from emulator.iothub.ports import MethodReply
from emulator.iothub.registry import Registry


class NoDevicesOnline:
    """A DeviceLink with no connected device; counts desired pushes."""

    def __init__(self) -> None:
        self.pushes = 0

    def is_connected(self, device_id: str) -> bool:
        return False

    def is_method_ready(self, device_id: str) -> bool:
        return False

    async def wait_method_ready(self, device_id: str, timeout: float) -> bool:
        return False

    async def invoke_method(
        self,
        device_id: str,
        method_name: str,
        payload: Any,
        *,
        response_timeout: float,
        connect_timeout: float,
    ) -> MethodReply:
        raise NotImplementedError("this benchmark runs twin jobs only")

    def push_desired(self, device_id: str, patch: Mapping[str, Any]) -> None:
        self.pushes += 1


async def one_run(directory: Path, devices: int, batch: int, run: int) -> tuple[float, int]:
    db = Database(directory / f"bench-{run}.db")
    clock = SystemClock()
    registry = Registry(db, clock, "bench.local")
    registry.create_devices([f"dev-{i:06d}" for i in range(devices)])
    link = NoDevicesOnline()
    engine = JobEngine(db, registry, link, clock, None, twin_batch_size=batch)
    await engine.start()
    try:
        request = {
            "type": "scheduleUpdateTwin",
            "updateTwin": {
                "tags": {"site": "bench"},
                "properties": {"desired": {"firmware": "2.0.1", "interval": 30}},
                "etag": "*",
            },
            "queryCondition": "IS_DEFINED(deviceId)",
            "startTime": clock.now().isoformat(),
            "maxExecutionTimeInSeconds": 3600,
        }
        began = time.perf_counter()
        await engine.create_job("bench", request)
        job = await engine.wait_for_status("bench", "completed", "failed", timeout=600)
        elapsed = time.perf_counter() - began
    finally:
        await engine.stop()
        db.close()
    stats = job["deviceJobStatistics"]
    if stats["succeededCount"] != devices or link.pushes != devices:
        raise SystemExit(f"unexpected result: {stats}, pushes={link.pushes}")
    return elapsed, stats["succeededCount"]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2000)
    args = parser.parse_args()
    print(__doc__)
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            elapsed, done = await one_run(Path(tmp), args.devices, args.batch, run)
            times.append(elapsed)
            print(
                f"run {run + 1}: {done} devices in {elapsed:.2f} s "
                f"({done / elapsed:,.0f} devices/s)"
            )
    median = statistics.median(times)
    print(
        f"median: {args.devices} devices in {median:.2f} s "
        f"({args.devices / median:,.0f} devices/s), batch {args.batch}, no tier"
    )


if __name__ == "__main__":
    asyncio.run(main())
