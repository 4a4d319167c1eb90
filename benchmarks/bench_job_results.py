"""Benchmark: a job's per-device results (``devices.jobs`` query) read by the agent's IotHubClient
against the SDK's own ``query_iot_hub``, on the same emulator, in the same run.

Method. The IoT Hub emulator runs in its own process (``python -m emulator.iothub``, HTTPS REST,
``--devices N``, no fleet, no tier). One twin job (a tag) over every device is created through
``IotHubClient.create_twin_job`` and left to complete (not timed). Then, ``--rounds`` times,
alternating:

- agent: ``IotHubClient.query_job_results(query, N)`` (pages of ``jobs.query_page_size``, POST
  ``/devices/query`` through the SDK's authenticated msrest client, rows read as JSON into
  ``DeviceJobResult``), as the QueryJobResults service calls it;
- sdk: ``IoTHubRegistryManager.query_iot_hub(spec, token, page)`` page by page in one thread, with
  the connection kept alive, the rows left as the SDK gives them (msrest ``Twin`` models).

Both read all N rows of ``SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'bench-results'``.
Printed: the best and median wall time of each, and rows/s.

With ``--paged``, instead: the whole chain on loopback (``tests.support.AgentChain``: stand-in,
AlwaysOn, agent, emulator in one process, no fleet, no tier), and QueryJobResults of every row
of the job read through ThingWorx's REST convention page by page (``maxRows`` = ``--page``,
following the first row's ``continuationToken``), ``--rounds`` times, each round followed by
the comparison: the SDK's ``query_iot_hub`` reading the same rows straight from the same
emulator (pages of ``jobs.query_page_size``, as the agent asks the hub). Printed per round:
rows/s of the whole read, page time p50 and max (the first page included: it must fit in the
platform's 30 s), the largest answer (JSON text of the REST reply), and the SDK's rows/s.

Run: ``python -m benchmarks.bench_job_results [--devices 10000] [--rounds 5]``, or
``python -m benchmarks.bench_job_results --paged --devices 100000 --page 5000 --rounds 2``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import QuerySpecification
from pydantic import SecretStr

from agent.iothub import IotHubClient
from agent.settings import IotHubSettings, JobSettings
from logsetup import configure_logging

JOB_ID = "bench-results"
QUERY = f"SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '{JOB_ID}'"
_ROOT = Path(__file__).resolve().parents[1]


def _sdk_rows(connection_string: str, ca_pem: str, page: int) -> int:
    manager = IoTHubRegistryManager.from_connection_string(connection_string)
    manager.protocol.config.connection.verify = ca_pem
    manager.protocol.config.keep_alive = True
    spec = QuerySpecification(query=QUERY)
    token: str | None = None
    count = 0
    while True:
        result = manager.query_iot_hub(spec, token, page)
        count += len(result.items or [])
        token = result.continuation_token
        if not token or not result.items:
            return count


async def _measure(hub: dict[str, str], devices: int, rounds: int) -> None:
    jobs = JobSettings()
    client = IotHubClient(
        IotHubSettings(
            connection_string=SecretStr(hub["ownerConnectionString"]),
            ca_file=hub["caPem"],
            request_timeout=120.0,
        ),
        jobs,
    )
    try:
        await client.create_twin_job(
            JOB_ID, "deviceId > ''", {"tags": {"bench": 1}}, datetime.now(UTC), 3600
        )
        for _ in range(600):
            if (await client.get_job(JOB_ID)).status == "completed":
                break
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError("the benchmark job did not complete")
        times: dict[str, list[float]] = {"agent": [], "sdk": []}
        for _ in range(rounds):
            started = time.perf_counter()
            rows = await client.query_job_results(QUERY, devices)
            times["agent"].append(time.perf_counter() - started)
            assert len(rows) == devices, len(rows)
            started = time.perf_counter()
            count = await asyncio.to_thread(
                _sdk_rows, hub["ownerConnectionString"], hub["caPem"], jobs.query_page_size
            )
            times["sdk"].append(time.perf_counter() - started)
            assert count == devices, count
    finally:
        await client.close()
    print(f"{devices:,} rows of {QUERY!r}, pages of {jobs.query_page_size}, {rounds} rounds:")
    for name, label in (
        ("agent", "IotHubClient.query_job_results (JSON rows)"),
        ("sdk", "SDK query_iot_hub (Twin models)"),
    ):
        best, median = min(times[name]), statistics.median(times[name])
        print(
            f"  {label:44s} best {best:6.3f} s  median {median:6.3f} s  "
            f"{devices / best:9,.0f} rows/s"
        )


async def _measure_paged(devices: int, page: int, rounds: int) -> None:
    from tests.support.chain import ENDED, GATEWAY, RESULTS, TWIN, AgentChain

    with tempfile.TemporaryDirectory() as tmp:
        async with AgentChain(
            Path(tmp),
            mqtt_port=0,
            devices=devices,
            fleet=False,
            tier=None,
            call_timeout=30.0,
        ) as chain:
            await chain.rows(
                GATEWAY,
                TWIN,
                {
                    "patch": {"tags": {"bench": 1}},
                    "queryCondition": "IS_DEFINED(deviceId)",
                    "jobId": JOB_ID,
                },
            )
            await chain.wait_status(JOB_ID, ENDED, timeout=1800)
            url = f"{chain.standin.rest_url}/Things/{GATEWAY}/Services/{RESULTS}"
            page_size = JobSettings().query_page_size
            for n in range(rounds):
                token, total, largest = "", 0, 0
                times: list[float] = []
                started = time.perf_counter()
                while True:
                    began = time.perf_counter()
                    inputs = {"query": QUERY, "maxRows": page, "continuationToken": token}
                    async with chain.http.post(
                        url, json=inputs, headers={"appKey": chain.app_key}
                    ) as reply:
                        text = await reply.text()
                        assert reply.status == 200, text[:300]
                    times.append(time.perf_counter() - began)
                    largest = max(largest, len(text))
                    rows = json.loads(text)["rows"]
                    total += len(rows)
                    token = rows[0].get("continuationToken") or "" if rows else ""
                    if not token:
                        break
                elapsed = time.perf_counter() - started
                assert total == devices, total
                began = time.perf_counter()
                count = await asyncio.to_thread(
                    _sdk_rows,
                    chain.hub.owner_connection_string,
                    str(chain.hub.ca_pem_path),
                    page_size,
                )
                sdk = time.perf_counter() - began
                assert count == devices, count
                print(
                    f"  round {n + 1}: QueryJobResults over REST: {total:,} rows in {len(times)} "
                    f"pages (maxRows {page}) {elapsed:6.2f} s  {total / elapsed:8,.0f} rows/s  "
                    f"page p50 {statistics.median(times):5.2f} s max {max(times):5.2f} s "
                    f"(first {times[0]:5.2f} s)  largest answer {largest / 1024:5.0f} KiB\n"
                    f"           SDK query_iot_hub, same rows (pages of {page_size}): "
                    f"{sdk:6.2f} s  {count / sdk:8,.0f} rows/s"
                )


def main() -> None:
    """Entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--paged", action="store_true", help="QueryJobResults over REST, paged")
    parser.add_argument("--page", type=int, default=5000, help="maxRows of each page (--paged)")
    args = parser.parse_args()
    configure_logging("WARNING", "console")  # plain tracebacks, never the locals (issue 15)
    print(__doc__.split("Run:")[0].strip())
    if args.paged:
        configure_logging("ERROR", "console")
        asyncio.run(_measure_paged(args.devices, args.page, args.rounds))
        return
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            *(sys.executable, "-m", "emulator.iothub", "--data-dir", tmp, "--rest-port", "0"),
            *("--mqtt-port", "0", "--devices", str(args.devices), "--no-fleet"),
        ]
        with subprocess.Popen(
            command, cwd=_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        ) as hub_process:
            try:
                assert hub_process.stdout is not None
                while not hub_process.stdout.readline().startswith(b"ready"):
                    if hub_process.poll() is not None:
                        raise RuntimeError("the emulator exited before it was ready")
                hub = json.loads((Path(tmp) / "hub.json").read_text())
                asyncio.run(_measure(hub, args.devices, args.rounds))
            finally:
                hub_process.terminate()
                hub_process.wait(10)


if __name__ == "__main__":
    main()
