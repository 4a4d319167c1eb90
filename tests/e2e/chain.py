"""The whole chain on loopback, for the end-to-end tests.

REST call → ThingWorx stand-in → AlwaysOn → agent (registry, services, wrappers) → IotHubClient →
azure-iot-hub SDK → IoT Hub emulator (HTTPS) → simulated fleet (MQTT/TLS on 8883 of its own
127.0.0.x address).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

from agent.app import AgentApp
from agent.settings import IotHubSettings, JobSettings, Settings, ThingWorxSettings
from emulator.iothub import IoTHubEmulator
from emulator.iothub.fleet import Fleet
from emulator.thingworx.server import ThingWorxStandIn

APP_KEY = "e2e-app-key"
GATEWAY = "AzureIotHub"
# The job services' names and the ended statuses, as the end-to-end tests call and wait for them.
TWIN = "AzureIotDeviceJobScheduleTwinUpdateJob"
METHOD = "AzureIotDeviceJobScheduleDeviceMethodJob"
GET = "AzureIotDeviceJobGetJob"
FIND = "AzureIotDeviceJobFindJobs"
CANCEL = "AzureIotDeviceJobCancelJob"
RESULTS = "AzureIotDeviceJobQueryJobResults"
ENDED = ("completed", "failed", "cancelled")
CATALOGUE = Path(__file__).resolve().parents[2] / "config" / "wrappers"


@dataclass
class Chain:
    """Everything running, and the ways a test reaches it."""

    hub: IoTHubEmulator
    standin: ThingWorxStandIn
    app: AgentApp
    fleets: list[Fleet]
    http: aiohttp.ClientSession
    calls: int = field(default=0)

    async def call(
        self, thing: str, service: str, inputs: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """POST /Thingworx/Things/{thing}/Services/{service}: (HTTP status, JSON or text)."""
        self.calls += 1
        url = f"{self.standin.rest_url}/Things/{thing}/Services/{service}"
        async with self.http.post(url, json=inputs or {}, headers={"appKey": APP_KEY}) as reply:
            text = await reply.text()
            if reply.content_type == "application/json":
                return reply.status, json.loads(text)
            return reply.status, text.strip()

    async def rows(self, thing: str, service: str, inputs: dict[str, Any] | None = None) -> Any:
        """The result rows of a call that must succeed."""
        status, body = await self.call(thing, service, inputs)
        assert status == 200, f"{service} on {thing}: {status} {body}"
        return body["rows"]

    async def job(self, job_id: str) -> dict[str, Any]:
        """GetJob's one row."""
        (row,) = await self.rows(GATEWAY, "AzureIotDeviceJobGetJob", {"jobId": job_id})
        return dict(row)

    async def wait_status(
        self, job_id: str, statuses: Sequence[str], timeout: float = 20.0
    ) -> dict[str, Any]:
        """Poll GetJob until the job's status is one of ``statuses``."""
        deadline = time.monotonic() + timeout
        while True:
            row = await self.job(job_id)
            if row["status"] in statuses:
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {row['status']} after {timeout} s")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_chain(
    data_dir: Path,
    *,
    mqtt_host: str,
    devices: int,
    offline_share: float = 0.0,
    slow_devices: int = 0,
    slow_delay: float = 0.0,
    tier: str | None = "S1",
    bind: Sequence[str] = (),
    page_size: int = 100,
    iothub: Mapping[str, Any] | None = None,
) -> AsyncIterator[Chain]:
    """Start the emulator (REST port 0, MQTT 8883 on ``mqtt_host``), the fleet(s), the stand-in
    (port 0) and the agent; stop them all on exit.

    The first ``devices`` devices form the main fleet (``offline_share`` of them offline); the
    next ``slow_devices`` answer methods after ``slow_delay`` seconds. ``iothub`` overrides the
    agent's ``[iothub]`` settings (lanes, bounds).
    """
    hub = IoTHubEmulator(data_dir / "hub", host=mqtt_host, rest_port=0, tier=tier)
    await hub.start()
    stack = contextlib.AsyncExitStack()
    stack.push_async_callback(hub.stop)
    async with stack:
        ids = hub.ensure_devices(devices + slow_devices)
        fleets = [hub.fleet(ids[:devices], offline_share=offline_share)]
        if slow_devices:
            fleets.append(hub.fleet(ids[devices:], answer_delay=slow_delay))
        for fleet in fleets:
            await fleet.start()
            stack.push_async_callback(fleet.stop)
        standin = ThingWorxStandIn(APP_KEY, host="127.0.0.1", port=0, call_timeout=60.0)
        await standin.start()
        stack.push_async_callback(standin.stop)
        settings = Settings(
            thingworx=ThingWorxSettings(
                url=standin.ws_url,
                app_key=SecretStr(APP_KEY),
                gateway_thing=GATEWAY,
                auto_bind=list(bind),
                connect_timeout=5.0,
                auth_timeout=5.0,
                reconnect_initial_delay=0.1,
                reconnect_max_delay=0.5,
            ),
            iothub=IotHubSettings(
                **{
                    "connection_string": SecretStr(hub.owner_connection_string),
                    "ca_file": str(hub.ca_pem_path),
                    "request_timeout": 15.0,
                    "workers": 16,
                    **(iothub or {}),
                }
            ),
            jobs=JobSettings(query_page_size=page_size, wrappers_dir=str(CATALOGUE)),
        )
        app = AgentApp(settings)
        task = asyncio.create_task(app.run())

        async def stop_app() -> None:
            await app.stop()
            async with asyncio.timeout(10):
                await task

        stack.push_async_callback(stop_app)
        await app.wait_ready(10)
        for thing in (GATEWAY, *bind):
            await standin.wait_metadata(thing, 10)
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=90))
        stack.push_async_callback(http.close)
        yield Chain(hub, standin, app, fleets, http)
