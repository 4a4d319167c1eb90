"""kill -9 of a real ``jobs-agent run`` process mid-wave and mid-pause, then a restart on the same
data directory (issue 11, "Durable, and never twice").

The IoT Hub emulator (S1: one job slot), its simulated fleet and the ThingWorx stand-in run in
this process (:class:`~agent.embedded.EmbeddedEnds`, as the standby process test has them); the
agent runs alone in a subprocess. Two rollouts over the same nine devices (a device method and a
desired-properties patch, waves of 3, a pause between waves) share the slot. The agent is killed
with SIGKILL three times: just after a wave's hub job appeared on the hub, while a wave's job
runs, and during the pause between two waves. After the last restart both rollouts complete,
and the devices themselves say that each got the method once and the patch once: none twice,
none missed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.embedded import EmbeddedEnds
from agent.settings import EmbeddedSettings
from tests.support.network import fresh_loopback
from tests.support.settings import CATALOGUE

APP_KEY = "kill-key"
GATEWAY = "AzureIotHub"
DEVICES = [f"device-{n:04d}" for n in range(1, 10)]
DONE = ("completed", "aborted", "cancelled", "failed")

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


class Agent:
    """``jobs-agent run`` in a subprocess, and REST calls to its gateway Thing."""

    def __init__(self, ends: EmbeddedEnds, data_dir: Path, http: aiohttp.ClientSession) -> None:
        info = ends.info
        assert ends.hub is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBS_AGENT_", "THING"))}
        env.update(
            JOBS_AGENT_THINGWORX__URL=info.ws_url,
            JOBS_AGENT_THINGWORX__APP_KEY=APP_KEY,
            JOBS_AGENT_IOTHUB__CONNECTION_STRING=ends.hub.owner_connection_string,
            JOBS_AGENT_IOTHUB__CA_FILE=str(info.ca_pem),
            JOBS_AGENT_IOTHUB__TIER="S1",
            JOBS_AGENT_JOBS__WRAPPERS_DIR=str(CATALOGUE),
            JOBS_AGENT_HEALTH__ENABLED="false",
            JOBS_AGENT_ROLLOUTS__DATA_DIR=str(data_dir),
            JOBS_AGENT_ROLLOUTS__POLL_INTERVAL="0.1",
        )
        self._env = env
        self._cwd = data_dir.parent
        self._rest = info.rest_url
        self._http = http
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        with (self._cwd / f"agent-{self.starts}.log").open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agent.cli", "run", cwd=self._cwd, env=self._env,
                stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip

    async def kill(self) -> None:
        process = self.process
        assert process is not None and process.returncode is None, "the agent is not running"
        process.send_signal(signal.SIGKILL)
        await process.wait()

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()

    async def call(self, service: str, inputs: dict[str, Any]) -> tuple[int, Any]:
        url = f"{self._rest}/Things/{GATEWAY}/Services/{service}"
        async with self._http.post(url, json=inputs, headers={"appKey": APP_KEY}) as reply:
            body = await reply.json() if reply.content_type == "application/json" else None
            return reply.status, body if body is not None else await reply.text()

    async def rollout(self, rollout_id: str, timeout: float = 30) -> dict[str, Any]:
        """GetRollout's row, once the agent answers (it may be starting)."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = await self.call("AzureIotDeviceJobGetRollout", {"rolloutId": rollout_id})
            if status == 200:
                return dict(body["rows"][0])
            assert self.process is not None and self.process.returncode is None, "agent died"
            assert time.monotonic() < deadline, f"GetRollout: {status} {body}"
            await asyncio.sleep(0.05)


async def _until(check: Callable[[], Any], what: str, timeout: float = 30) -> None:
    # The agent is another process: polling what it shows is the only way to watch it.
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not seen within {timeout:g} s: {what}"
        await asyncio.sleep(0.02)


async def test_kill_9_mid_wave_and_mid_pause_then_restart_no_device_twice_or_never(
    tmp_path: Path,
) -> None:
    embedded = EmbeddedSettings(
        host=fresh_loopback(), thingworx_port=0, iothub_rest_port=0, devices=len(DEVICES),
        offline_share=0.0, answer_delay=0.5, tier="S1", data_dir=str(tmp_path / "ends"),
    )  # fmt: skip
    started = time.monotonic()
    async with EmbeddedEnds(embedded, APP_KEY) as ends, aiohttp.ClientSession() as http:
        hub, fleet = ends.hub, ends.fleet
        assert hub is not None and fleet is not None
        agent = Agent(ends, tmp_path / "agent-data", http)

        def hub_job(job_id: str) -> str | None:
            jobs = {j["jobId"]: j["status"] for j in hub.jobs.list_jobs(None, None)}
            return jobs.get(job_id)

        try:
            await agent.start()
            plan = {"devices": DEVICES, "waveSize": 3, "pauseBetweenWavesSeconds": 2}
            method = {"rolloutId": "km", "type": "deviceMethod", "methodName": "reboot",
                      "connectTimeoutInSeconds": 5, "responseTimeoutInSeconds": 10,
                      "priority": 1, **plan}  # fmt: skip
            twin = {"rolloutId": "kt", "type": "twinUpdate",
                    "patch": {"properties": {"desired": {"fw": "4.2"}}}, **plan}  # fmt: skip
            for inputs in (method, twin):
                deadline = time.monotonic() + 30
                while (answer := await agent.call("AzureIotDeviceJobStartRollout", inputs))[
                    0
                ] != 200:
                    assert time.monotonic() < deadline, answer
                    await asyncio.sleep(0.05)

            # 1. Just after wave 1's hub job appeared on the hub.
            await _until(lambda: _true(hub_job("km-w1-a1-p1")), "wave 1's job on the hub")
            await agent.kill()
            await agent.start()
            # 2. While wave 2's job runs (the devices answer after 0.5 s).
            await _until(lambda: _true(hub_job("km-w2-a1-p1") == "running"), "wave 2 running")
            await agent.kill()
            await agent.start()

            # 3. During the pause after wave 2 (judged: 6 devices done, wave 3 not created).
            async def pausing() -> bool:
                row = await agent.rollout("km")
                return bool(row["succeededCount"] == 6 and row["status"] == "queued")

            await _until(pausing, "the pause after wave 2")
            assert hub_job("km-w3-a1-p1") is None
            await agent.kill()
            await agent.start()

            rows: dict[str, dict[str, Any]] = {}

            async def both_done() -> bool:
                for rollout_id in ("km", "kt"):
                    rows[rollout_id] = await agent.rollout(rollout_id)
                return all(row["status"] in DONE for row in rows.values())

            await _until(both_done, "both rollouts ended", 60)
        finally:
            await agent.stop()
        for row in rows.values():
            assert (row["status"], row["succeededCount"], row["failedCount"]) == (
                "completed",
                9,
                0,
            ), row
        # Counted on the devices: each answered the method once and received the patch once.
        assert fleet.methods_received == Counter(DEVICES)
        assert fleet.patches_received == Counter(DEVICES)
        # One hub job per wave and rollout, none created twice under another id.
        ids = sorted(j["jobId"] for j in hub.jobs.list_jobs(None, None))
        assert ids == sorted(f"{r}-w{w}-a1-p1" for r in ("km", "kt") for w in (1, 2, 3)), ids
        print(f"kill -9 x3 and restarts: {agent.starts} agent starts, "
              f"{time.monotonic() - started:.1f} s in all")  # fmt: skip


async def _true(value: Any) -> bool:
    return bool(value)
