"""Active/standby agents for free from first-in-wins (issue 12): two real ``jobs-agent run``
processes against one ThingWorx stand-in and one IoT Hub emulator; the second is a standby (its
``/healthz`` says so) until the active one is killed with SIGKILL, then it takes over. The
takeover time is printed (BENCHMARKS.md keeps the figure)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.embedded import EmbeddedEnds
from agent.settings import EmbeddedSettings, HealthSettings, JobSettings, Settings
from tests.support.network import fresh_loopback
from tests.support.settings import CATALOGUE

APP_KEY = "standby-key"
GATEWAY = "AzureIotHub"
RETRY = 1.0

pytestmark = pytest.mark.timeout(120)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def _agent(cwd: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.cli", "run", cwd=cwd, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def _health(http: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    try:
        async with http.get(url) as reply:
            doc: dict[str, Any] = await reply.json()
            return doc
    except aiohttp.ClientError:
        return None


async def _wait_role(http: aiohttp.ClientSession, url: str, role: str, timeout: float) -> None:
    # /healthz is an HTTP endpoint of another process: polling is the only way to watch it.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = await _health(http, url)
        if doc is not None and doc["role"] == role:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} did not say role {role!r} within {timeout:g} s")


async def test_kill_9_of_the_active_agent_hands_over_to_the_standby(tmp_path: Path) -> None:
    host = fresh_loopback()
    base = Settings(
        jobs=JobSettings(wrappers_dir=str(CATALOGUE)),
        health=HealthSettings(host=host, port=0),
        embedded=EmbeddedSettings(
            host=host, thingworx_port=0, iothub_rest_port=0, devices=2,
            data_dir=str(tmp_path / "data"),
        ),
    )  # fmt: skip
    async with EmbeddedEnds(base.embedded, APP_KEY) as ends, aiohttp.ClientSession() as http:
        standin = ends.standin
        assert standin is not None and standin.registry.bind_policy == "first-in-wins"
        conn = ends.agent_settings(base).iothub.connection_string.get_secret_value()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBS_AGENT_", "THING"))}
        env.update(
            JOBS_AGENT_THINGWORX__URL=ends.info.ws_url,
            JOBS_AGENT_THINGWORX__APP_KEY=APP_KEY,
            JOBS_AGENT_THINGWORX__AUTO_BIND='["device-0001"]',
            JOBS_AGENT_THINGWORX__STANDBY_RETRY=str(RETRY),
            JOBS_AGENT_IOTHUB__CONNECTION_STRING=conn,
            JOBS_AGENT_IOTHUB__CA_FILE=str(ends.info.ca_pem),
            JOBS_AGENT_JOBS__WRAPPERS_DIR=str(CATALOGUE),
            JOBS_AGENT_HEALTH__HOST=host,
        )
        ports = [_free_port(host), _free_port(host)]
        urls = [f"http://{host}:{port}/healthz" for port in ports]
        agents: list[asyncio.subprocess.Process] = []
        try:
            agents.append(await _agent(tmp_path, {**env, "JOBS_AGENT_HEALTH__PORT": str(ports[0])}))
            await _wait_role(http, urls[0], "active", 30)
            holder = standin.registry.get(GATEWAY)
            assert holder is not None and holder.owner is not None
            first_conn = holder.owner.conn_id
            agents.append(await _agent(tmp_path, {**env, "JOBS_AGENT_HEALTH__PORT": str(ports[1])}))
            await _wait_role(http, urls[1], "standby", 30)
            doc = await _health(http, urls[1])
            assert doc is not None and doc["status"] in ("standby", "unavailable")
            assert first_conn in doc["thingworx"]["holder"], doc
            # The active one dies without a word: SIGKILL.
            agents[0].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await agents[0].wait()
            await _wait_role(http, urls[1], "active", 30)
            took = time.monotonic() - killed
            entry = standin.registry.get(GATEWAY)
            assert entry is not None and entry.owner is not None
            assert entry.owner.conn_id != first_conn
            assert set(standin.bound_things()) == {GATEWAY, "device-0001"}
            print(f"takeover after kill -9 of the active agent: {took:.2f} s "
                  f"(standby_retry {RETRY:g} s, two jobs-agent processes)")  # fmt: skip
            assert took < RETRY + 10, took
        finally:
            for process in agents:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
