"""SIGKILL mid-job, restart on the same data directory: the job finishes and nothing is lost.

The emulator runs as ``python -m emulator.iothub`` in a subprocess with its simulated fleet;
the service side is the unmodified azure-iot-hub SDK.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.iot.hub import IoTHubJobManager, IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, JobRequest, QuerySpecification, Twin

# Its own loopback address per test process: the MQTT endpoint is on 8883.
HOST = f"127.{os.getpid() % 200 + 20}.{(os.getpid() // 200) % 250 + 1}.41"
ROOT = Path(__file__).resolve().parents[3]


@contextmanager
def _emulator(data_dir: Path, *extra: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulator.iothub",
            "--data-dir",
            str(data_dir),
            "--host",
            HOST,
            "--rest-port",
            "0",
            "--devices",
            "20",
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError("emulator exited early:\n" + "".join(seen))
            seen.append(line)
            if line.startswith("ready"):
                break
        else:
            raise AssertionError("emulator not ready in time:\n" + "".join(seen))
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _managers(data_dir: Path) -> tuple[IoTHubRegistryManager, IoTHubJobManager]:
    info = json.loads((data_dir / "hub.json").read_text())
    rm = IoTHubRegistryManager.from_connection_string(info["ownerConnectionString"])
    rm.protocol.config.connection.verify = info["caPem"]
    jm = IoTHubJobManager.from_connection_string(info["ownerConnectionString"])
    jm.protocol.config.connection.verify = info["caPem"]
    return rm, jm


def _rows(rm: IoTHubRegistryManager, job_id: str) -> list[Any]:
    result = rm.query_iot_hub(
        QuerySpecification(
            query=f"SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{job_id}'"
        ),
        None,
        100,
    )
    return list(result.items)


async def test_sigkill_mid_job_then_restart_finishes_the_job(tmp_path: Path) -> None:
    with _emulator(tmp_path, "--answer-delay", "2", "--tier", "S1") as proc:
        rm, jm = _managers(tmp_path)
        await asyncio.to_thread(rm.update_twin, "device-0007", Twin(tags={"k": "v"}), "*")
        keys_before = json.loads((tmp_path / "hub.json").read_text())["devices"]
        job = JobRequest(
            job_id="kill-1",
            type="scheduleDeviceMethod",
            cloud_to_device_method=CloudToDeviceMethod(
                method_name="slow", payload={}, response_timeout_in_seconds=30
            ),
            query_condition="IS_DEFINED(deviceId)",
            start_time=datetime.now(UTC),
            max_execution_time_in_seconds=600,
        )
        await asyncio.to_thread(jm.create_scheduled_job, "kill-1", job)

        # S1 starts 10 device operations a second and each device takes 2 s to answer: the
        # job runs for about 4 s; kill it in the middle.
        started = time.monotonic()
        while time.monotonic() - started < 30:
            got = await asyncio.to_thread(jm.get_scheduled_job, "kill-1")
            if got.status == "running" and time.monotonic() - started > 2.5:
                break
            await asyncio.sleep(0.1)
        assert got.status == "running", got.status
        assert got.device_job_statistics.succeeded_count < 20
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    with _emulator(tmp_path, "--answer-delay", "0"):
        rm, jm = _managers(tmp_path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = await asyncio.to_thread(jm.get_scheduled_job, "kill-1")
            if got.status in ("completed", "failed", "cancelled"):
                break
            await asyncio.sleep(0.2)
        assert got.status == "completed"
        stats = got.device_job_statistics
        assert stats.device_count == 20 and stats.succeeded_count == 20
        rows = await asyncio.to_thread(_rows, rm, "kill-1")
        assert sorted(r.device_id for r in rows) == [f"device-{n:04d}" for n in range(1, 21)]
        assert {r.status for r in rows} == {"completed"}
        assert all(r.additional_properties["outcome"]["deviceMethodResponse"] for r in rows)
        twin = await asyncio.to_thread(rm.get_twin, "device-0007")
        assert twin.tags == {"k": "v"}
        assert json.loads((tmp_path / "hub.json").read_text())["devices"] == keys_before
