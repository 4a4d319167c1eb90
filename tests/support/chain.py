"""The whole chain on loopback: :class:`AgentChain`, for the end-to-end tests, the console test and
the benchmarks that build it.

REST call → ThingWorx stand-in → AlwaysOn → agent (:class:`~agent.app.AgentApp`: registry,
services, wrappers) → IotHubClient → azure-iot-hub SDK → IoT Hub emulator (HTTPS) → simulated
fleet (MQTT/TLS on its own 127.0.0.x address, port 8883, or a free port).

Rules: every server listens on a free loopback port (the MQTT port is 8883 on ``mqtt_host``
unless ``mqtt_port`` is given, as the SDK's device side needs); everything started is stopped on
exit, in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from agent.app import AgentApp
from emulator.iothub import IoTHubEmulator
from emulator.iothub.fleet import Fleet
from emulator.thingworx.server import ThingWorxStandIn
from services import (
    CANCEL_JOB,
    FIND_JOBS,
    GET_JOB,
    QUERY_JOB_RESULTS,
    SCHEDULE_METHOD_JOB,
    SCHEDULE_TWIN_JOB,
)
from services.mapping import TERMINAL_STATUSES
from tests.support.network import fresh_loopback
from tests.support.settings import CATALOGUE, chain_settings

__all__ = [
    "APP_KEY",
    "CANCEL",
    "CATALOGUE",
    "ENDED",
    "FIND",
    "GATEWAY",
    "GET",
    "METHOD",
    "RESULTS",
    "TWIN",
    "AgentChain",
]

APP_KEY = "e2e-app-key"
GATEWAY = "AzureIotHub"
# The job services' names and the ended statuses, as the end-to-end tests call and wait for them.
TWIN = SCHEDULE_TWIN_JOB
METHOD = SCHEDULE_METHOD_JOB
GET = GET_JOB
FIND = FIND_JOBS
CANCEL = CANCEL_JOB
RESULTS = QUERY_JOB_RESULTS
ENDED = tuple(sorted(TERMINAL_STATUSES))


class AgentChain:
    """Start the emulator (REST port 0), the fleet(s), the stand-in (port 0) and the agent; stop
    them all on exit. ``async with AgentChain(...) as chain`` gives the running chain.

    Args:
        data_dir: the emulator's state directory.
        mqtt_host: the emulator's address (MQTT on 8883 there unless ``mqtt_port``); None: a
            fresh 127.x.y.z where nothing listens on 8883 (so chains of tests running side by
            side, in one process or in two pytest-xdist workers, never take the same one).
        devices: the main fleet's devices (``offline_share`` of them offline).
        offline_share: share of the main fleet left offline.
        slow_devices: more devices, answering methods after ``slow_delay`` seconds.
        slow_delay: seconds.
        tier: the emulator's job quotas (None: none).
        bind: device Things the agent binds besides the gateway Thing.
        page_size: the agent's ``jobs.query_page_size``.
        iothub: overrides of the agent's ``[iothub]`` settings (lanes, bounds).
        jobs: overrides of the agent's ``[jobs]`` settings (``watch_interval``).
        mqtt_port: the MQTT port (0 for a free one); None for 8883.
        fleet: False to register the devices without connecting a fleet.
        wrappers_dir: the agent's wrapper declarations.
        call_timeout: the stand-in's wait for the agent's answers, s.
        prepare: called with the app before it starts (to add a service).
        app_key: the stand-in's application key.
        rollouts: overrides of the agent's ``[rollouts]`` (its data dir is ``data_dir/agent``).
        store: the agent's ``[store]`` (a PostgreSQL ``url``); None: SQLite in its data dir.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        mqtt_host: str | None = None,
        devices: int,
        offline_share: float = 0.0,
        slow_devices: int = 0,
        slow_delay: float = 0.0,
        tier: str | None = "S1",
        bind: Sequence[str] = (),
        page_size: int = 100,
        iothub: Mapping[str, Any] | None = None,
        jobs: Mapping[str, Any] | None = None,
        mqtt_port: int | None = None,
        fleet: bool = True,
        wrappers_dir: Path = CATALOGUE,
        call_timeout: float = 60.0,
        prepare: Callable[[AgentApp], None] | None = None,
        app_key: str = APP_KEY,
        rollouts: Mapping[str, Any] | None = None,
        store: Mapping[str, Any] | None = None,
    ) -> None:
        self.app_key = app_key
        self._rollouts = dict(rollouts or {})
        self._store = dict(store or {})
        self._data_dir = data_dir
        self._mqtt_host = mqtt_host or fresh_loopback()
        self._mqtt_port = mqtt_port
        self._devices = devices
        self._offline_share = offline_share
        self._slow_devices = slow_devices
        self._slow_delay = slow_delay
        self._tier = tier
        self.bind = tuple(bind)
        self._page_size = page_size
        self._iothub = dict(iothub or {})
        self._jobs = dict(jobs or {})
        self._fleet = fleet
        self._wrappers_dir = wrappers_dir
        self._call_timeout = call_timeout
        self._prepare = prepare
        self._stack = contextlib.AsyncExitStack()
        self.fleets: list[Fleet] = []
        self.calls = 0
        self._hub: IoTHubEmulator | None = None
        self._standin: ThingWorxStandIn | None = None
        self._app: AgentApp | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def hub(self) -> IoTHubEmulator:
        """The IoT Hub emulator."""
        assert self._hub is not None, "the chain is not started"
        return self._hub

    @property
    def standin(self) -> ThingWorxStandIn:
        """The ThingWorx stand-in."""
        assert self._standin is not None, "the chain is not started"
        return self._standin

    @property
    def app(self) -> AgentApp:
        """The agent."""
        assert self._app is not None, "the chain is not started"
        return self._app

    @property
    def http(self) -> aiohttp.ClientSession:
        """An HTTP session for REST calls (90 s per call)."""
        assert self._http is not None, "the chain is not started"
        return self._http

    async def __aenter__(self) -> AgentChain:
        stack = self._stack
        await stack.__aenter__()
        try:
            await self._start(stack)
        except BaseException as exc:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        make = functools.partial(
            IoTHubEmulator,
            self._data_dir / "hub",
            host=self._mqtt_host,
            rest_port=0,
            tier=self._tier,
        )
        hub = make() if self._mqtt_port is None else make(mqtt_port=self._mqtt_port)
        await hub.start()
        stack.push_async_callback(hub.stop)
        self._hub = hub
        ids = hub.ensure_devices(self._devices + self._slow_devices)
        if self._fleet:
            self.fleets = [hub.fleet(ids[: self._devices], offline_share=self._offline_share)]
            if self._slow_devices:
                self.fleets.append(hub.fleet(ids[self._devices :], answer_delay=self._slow_delay))
        for fleet in self.fleets:
            await fleet.start()
            stack.push_async_callback(fleet.stop)
        standin = ThingWorxStandIn(
            self.app_key, host="127.0.0.1", port=0, call_timeout=self._call_timeout
        )
        await standin.start()
        stack.push_async_callback(standin.stop)
        self._standin = standin
        settings = chain_settings(
            standin.ws_url,
            self.app_key,
            hub.owner_connection_string,
            str(hub.ca_pem_path),
            gateway=GATEWAY,
            bind=self.bind,
            page_size=self._page_size,
            wrappers_dir=self._wrappers_dir,
            iothub=self._iothub,
            jobs=self._jobs,
            rollouts={"data_dir": str(self._data_dir / "agent"), **self._rollouts},
            store=self._store,
        )
        app = AgentApp(settings)
        if self._prepare is not None:
            self._prepare(app)
        await stack.enter_async_context(app)
        self._app = app
        await app.wait_ready(10)
        for thing in (GATEWAY, *self.bind):
            await standin.wait_metadata(thing, 10)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=90))
        stack.push_async_callback(self._http.close)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.__aexit__(exc_type, exc, tb)

    async def call(
        self, thing: str, service: str, inputs: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """POST /Thingworx/Things/{thing}/Services/{service}: (HTTP status, JSON or text)."""
        self.calls += 1
        url = f"{self.standin.rest_url}/Things/{thing}/Services/{service}"
        async with self.http.post(
            url, json=inputs or {}, headers={"appKey": self.app_key}
        ) as reply:
            text = await reply.text()
            if reply.content_type == "application/json":
                return reply.status, json.loads(text)
            return reply.status, text.strip()

    async def rows(self, thing: str, service: str, inputs: dict[str, Any] | None = None) -> Any:
        """The result rows of a call that must succeed."""
        status, body = await self.call(thing, service, inputs)
        assert status == 200, f"{service} on {thing}: {status} {body}"
        return body["rows"]

    async def wait_rollout(
        self,
        rollout_id: str,
        statuses: Sequence[str],
        *,
        until: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Poll GetRollout until the rollout's status is one of ``statuses`` (or ``until`` says
        yes to its row); the row."""
        deadline = time.monotonic() + timeout
        while True:
            (row,) = await self.rows(
                GATEWAY, "AzureIotDeviceJobGetRollout", {"rolloutId": rollout_id}
            )
            if row["status"] in statuses or (until is not None and until(row)):
                return dict(row)
            if time.monotonic() > deadline:
                raise AssertionError(f"rollout {rollout_id} still {row['status']}: {row}")
            await asyncio.sleep(0.1)

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
