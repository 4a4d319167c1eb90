"""A device-method job over 1,000 MQTT-connected simulated devices, end to end in the emulator.

Method: an in-process IoT Hub emulator (REST over TLS on a free port, MQTT over TLS on a free port
of 127.0.0.1, no tier so no pacing) with N devices (default 1,000), all connected as the simulated
fleet (real TLS, real MQTT, one asyncio client each, answer delay 0). The unmodified azure-iot-hub
SDK creates a ``scheduleDeviceMethod`` job (``reboot``, payload ``{"delaySeconds": 0}``) over
``IS_DEFINED(deviceId)`` starting now, then polls ``get_scheduled_job`` every 20 ms until the job
is ``completed``. Reported: wall time from the create call to the first poll that sees
``completed`` (so it includes up to one poll interval), devices/s, and the job's own
``deviceJobStatistics``. Goal (issue #4): ≤ 5 s for 1,000 devices. Runs ``--runs`` jobs on the
same fleet and reports each.

Run: ``python -m benchmarks.bench_method_job [--devices N] [--runs R]``
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
import time
from pathlib import Path
from typing import Any

from azure.iot.hub import IoTHubJobManager
from azure.iot.hub.models import CloudToDeviceMethod, JobRequest

from emulator.iothub import IoTHubEmulator
from emulator.iothub.fleet import Fleet
from logsetup import configure_logging


def _run_job(jm: IoTHubJobManager, job_id: str) -> tuple[float, Any]:
    request = JobRequest(
        job_id=job_id,
        type="scheduleDeviceMethod",
        cloud_to_device_method=CloudToDeviceMethod(
            method_name="reboot",
            payload={"delaySeconds": 0},
            response_timeout_in_seconds=30,
            connect_timeout_in_seconds=5,
        ),
        query_condition="IS_DEFINED(deviceId)",
        start_time=dt.datetime.now(dt.UTC),
        max_execution_time_in_seconds=600,
    )
    started = time.perf_counter()
    jm.create_scheduled_job(job_id, request)
    while True:
        job = jm.get_scheduled_job(job_id)
        if job.status in ("completed", "failed", "cancelled"):
            return time.perf_counter() - started, job
        time.sleep(0.02)


async def main(devices: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with IoTHubEmulator(Path(tmp), rest_port=0, mqtt_port=0) as hub:
            ids = hub.ensure_devices(devices)
            fleet = Fleet(
                hub.host,
                hub.mqtt_port,
                hub.ca_pem_path.read_text(),
                hub.host,
                hub.device_primary_keys(ids),
            )
            started = time.perf_counter()
            await fleet.start()
            connected = time.perf_counter() - started
            try:
                jm = IoTHubJobManager.from_connection_string(hub.owner_connection_string)
                jm.protocol.config.connection.verify = str(hub.ca_pem_path)
                print(f"method: in-process emulator + fleet of {devices} MQTT/TLS devices,")
                print("        SDK create_scheduled_job (reboot), get_scheduled_job every 20 ms")
                print(f"fleet : {len(fleet.online_ids())} devices connected in {connected:.2f} s")
                for run in range(runs):
                    took, job = await asyncio.to_thread(_run_job, jm, f"bench-method-{run}")
                    stats = job.device_job_statistics
                    print(
                        f"run {run + 1}: {job.status} in {took:.2f} s "
                        f"({devices / took:,.0f} devices/s); succeeded {stats.succeeded_count}, "
                        f"failed {stats.failed_count} of {stats.device_count}"
                    )
            finally:
                await fleet.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    configure_logging("WARNING", "console")
    asyncio.run(main(args.devices, args.runs))
