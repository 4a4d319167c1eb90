"""SIGTERM with calls in flight (issue 16): ``jobs-agent run`` stops taking calls, lets the 20 in
flight finish and answers each with its real result, then unbinds; the jobs they created exist
exactly once.

The agent runs as ``jobs-agent run`` does (:func:`agent.cli.run`, its SIGTERM handler included)
in this process, against the ThingWorx stand-in and the IoT Hub emulator on loopback; the test
sends the process a real SIGTERM. Between the agent and the emulator a slow link (a
:class:`tests.support.partition.Partition` with a delay) makes every hub call take at least 2 s,
so the 20 calls are still in flight when the signal comes. Before the drain, they were all
answered at once "the agent ... disconnected during the call; retry", and a retry without a jobId
would have made a second job.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from rich.console import Console

from agent import cli
from agent.iothub import IotHubClient
from agent.settings import (
    HealthSettings,
    IotHubSettings,
    JobSettings,
    Settings,
    ThingWorxSettings,
)
from emulator.iothub import IoTHubEmulator
from emulator.thingworx.server import ThingWorxStandIn
from tests.support.chain import APP_KEY, CATALOGUE, GATEWAY
from tests.support.network import fresh_loopback
from tests.support.partition import Partition

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

DELAY = 2.0
CALLS = 20


async def test_sigterm_answers_every_call_in_flight_and_creates_each_job_once(
    tmp_path: Path,
) -> None:
    host = fresh_loopback()  # MQTT on 8883 there: an address no other test (worker) uses
    hub = IoTHubEmulator(tmp_path / "hub", host=host, rest_port=0, tier=None)
    await hub.start()
    standin = ThingWorxStandIn(APP_KEY, host="127.0.0.1", port=0, call_timeout=60.0)
    await standin.start()
    try:
        hub.ensure_devices(4)
        async with Partition(host, hub.rest_port, delay=DELAY) as relay:
            connection = relay.replace_port(hub.owner_connection_string)
            settings = Settings(
                thingworx=ThingWorxSettings(
                    url=standin.ws_url,
                    app_key=SecretStr(APP_KEY),
                    gateway_thing=GATEWAY,
                    connect_timeout=5.0,
                    auth_timeout=5.0,
                    drain_timeout=20.0,
                ),
                iothub=IotHubSettings(
                    connection_string=SecretStr(connection),
                    ca_file=str(hub.ca_pem_path),
                    workers=CALLS,
                ),
                jobs=JobSettings(wrappers_dir=str(CATALOGUE)),
                health=HealthSettings(enabled=False),
            )
            agent = asyncio.create_task(cli.run(settings, Console(file=io.StringIO())))
            await standin.wait_metadata(GATEWAY, 20)
            answers = await _calls_through_sigterm(standin.rest_url)
            exit_code = await asyncio.wait_for(agent, 30)
        assert exit_code == 0
        for status, body in answers:
            assert status == 200, body  # each answered with its real result
        job_ids = [body["rows"][0]["jobId"] for _, body in answers]
        assert len(set(job_ids)) == CALLS

        check = IotHubClient(
            IotHubSettings(
                connection_string=SecretStr(hub.owner_connection_string),
                ca_file=str(hub.ca_pem_path),
            ),
            JobSettings(),
        )
        try:
            on_hub = [job.job_id for job in await check.list_jobs()]
        finally:
            await check.close()
        assert sorted(on_hub) == sorted(job_ids)  # every job exactly once, no other
    finally:
        await standin.stop()
        await hub.stop()


async def _calls_through_sigterm(rest_url: str) -> list[tuple[int, Any]]:
    """Start 20 Schedule calls without a jobId (half twin, half method jobs), send SIGTERM
    while all are in flight, and return their answers."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        finished: list[float] = []

        async def call(n: int) -> tuple[int, Any]:
            if n % 2:
                service = "AzureIotDeviceJobScheduleDeviceMethodJob"
                inputs: dict[str, object] = {"methodName": "reboot"}
            else:
                service = "AzureIotDeviceJobScheduleTwinUpdateJob"
                inputs = {"patch": {"tags": {"n": n}}}
            inputs["queryCondition"] = f"deviceId = 'device-000{n % 4 + 1}'"
            url = f"{rest_url}/Things/{GATEWAY}/Services/{service}"
            async with http.post(url, json=inputs, headers={"appKey": APP_KEY}) as reply:
                body = await reply.json() if reply.status == 200 else await reply.text()
                finished.append(time.monotonic())
                return reply.status, body

        calls = [asyncio.create_task(call(n)) for n in range(CALLS)]
        await asyncio.sleep(DELAY / 2)  # every call has reached the hub's slow link
        signalled = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        answers = await asyncio.gather(*calls)
        assert len(finished) == CALLS and min(finished) > signalled  # all were in flight
        return answers
