"""The embedded ends with the real agent on a fresh loopback address: ``check`` against them (all
good, wrong app key, unreachable hub, untrusted TLS), /healthz turning 200, /metrics counting a
call, and ``call --wait`` following a method job to its per-device results."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr
from rich.console import Console

from agent import cli
from agent.app import AgentApp
from agent.embedded import EmbeddedEnds, EmbeddedError, EmbeddedInfo, EmbeddedRun
from agent.health import HealthServer
from agent.settings import (
    EmbeddedSettings,
    HealthSettings,
    JobSettings,
    Settings,
    ThingWorxSettings,
)
from logsetup import configure_logging
from tests.support.network import fresh_loopback
from tests.support.settings import CATALOGUE, EMBEDDED_APP_KEY

APP_KEY = EMBEDDED_APP_KEY


pytestmark = pytest.mark.usefixtures("restore_logging")


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200), out


def _base_settings(tmp_path: Path, host: str, devices: int = 5) -> Settings:
    return Settings(
        thingworx=ThingWorxSettings(
            connect_timeout=5.0,
            auth_timeout=5.0,
            reconnect_initial_delay=0.1,
            reconnect_max_delay=0.5,
        ),
        jobs=JobSettings(wrappers_dir=str(CATALOGUE)),
        health=HealthSettings(host=host, port=0),
        embedded=EmbeddedSettings(
            host=host,
            thingworx_port=0,
            iothub_rest_port=0,
            devices=devices,
            offline_share=0.2,
            data_dir=str(tmp_path / "data"),
        ),
    )


@dataclass
class Running:
    ends: EmbeddedEnds
    info: EmbeddedInfo
    settings: Settings  # the agent's, pointed at the ends
    app: AgentApp
    health: HealthServer


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, devices: int = 5, *, bind_policy: str = "first-in-wins"
) -> AsyncIterator[Running]:
    """The embedded run's root (the ends, then the agent with its health server), as `jobs-agent
    run` has them; ``bind_policy`` the stand-in's (``last-in-wins`` for the tests of check's
    BIND next to a running agent, written for it)."""
    base = _base_settings(tmp_path, fresh_loopback(), devices)
    base = _with(base, "health", probe_interval=0.2)
    embedded = EmbeddedRun(base, APP_KEY)
    async with embedded as app:
        await app.wait_ready(10)
        assert app.health is not None
        ends = embedded.ends
        assert ends.standin is not None
        ends.standin.registry.bind_policy = bind_policy
        yield Running(ends, ends.info, app.settings, app, app.health)


def _with(settings: Settings, section: str, **changes: object) -> Settings:
    part = getattr(settings, section).model_copy(update=changes)
    return settings.model_copy(update={section: part})


async def test_agent_settings_point_at_the_ends_and_bind_every_device(tmp_path: Path) -> None:
    async with running(tmp_path) as run:
        s = run.settings
        assert s.thingworx.url == run.info.ws_url
        assert s.thingworx.app_key.get_secret_value() == APP_KEY
        assert s.iothub.ca_file == str(run.info.ca_pem)
        assert s.iothub.connection_string.get_secret_value().startswith(
            f"HostName={run.info.hub_rest_url.removeprefix('https://')};"
        )
        assert s.thingworx.auto_bind == [f"device-{i:04d}" for i in range(1, 6)]
        assert run.info.offline == ("device-0005",)
        standin = run.ends.standin
        assert standin is not None
        assert set(standin.bound_things()) == {"AzureIotHub", *s.thingworx.auto_bind}
        assert not s.embedded_mode


async def test_healthz_turns_200_and_metrics_count_a_call(tmp_path: Path) -> None:
    async with (
        running(tmp_path) as run,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http,
    ):
        for _ in range(100):
            async with http.get(f"{run.health.url}/healthz") as reply:
                if reply.status == 200:
                    doc = await reply.json()
                    break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("/healthz never answered 200")
        assert doc["thingworx"]["state"] == "ready"
        assert doc["thingworx"]["boundThings"] == 6
        assert doc["iothub"]["reachable"] is True
        url = f"{run.info.rest_url}/Things/AzureIotHub/Services/AzureIotDeviceJobFindJobs"
        async with http.post(url, json={}, headers={"appKey": APP_KEY}) as reply:
            assert reply.status == 200
        async with http.get(f"{run.health.url}/metrics") as reply:
            text = await reply.text()
        assert 'jobs_agent_service_calls_total{service="AzureIotDeviceJobFindJobs"} 1' in text
        assert "jobs_agent_channel_ready 1" in text


async def _gateway_answers(run: Running) -> int:
    url = f"{run.info.rest_url}/Things/AzureIotHub/Services/AzureIotDeviceJobFindJobs"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http,
        http.post(url, json={}, headers={"appKey": APP_KEY}) as reply,
    ):
        return reply.status


async def test_check_next_to_the_running_agent_leaves_its_things_bound(tmp_path: Path) -> None:
    """check finds the agent running here through its /healthz (same ThingWorx URL): it
    authenticates but does not BIND, which would take the gateway Thing from that agent
    (ThingWorx keeps the last bind) and leave it unbound after check's UNBIND."""
    async with running(tmp_path, bind_policy="last-in-wins") as run:
        port = int(run.health.url.rsplit(":", 1)[1])
        settings = _with(run.settings, "health", port=port)
        console, out = _console()
        assert await cli.check(settings, console) == 0
        text = out.getvalue()
        assert "✓ ThingWorx" in text and "authenticated; BIND not tried" in text, text
        assert f"{run.health.url}/healthz" in text and "is ready with 6 Things bound" in text
        assert "✓ IoT Hub" in text and "all checks passed" in text
        assert run.app.channel.state.value == "ready"
        assert await _gateway_answers(run) == 200  # still the running agent's

        # A wrong app key is still caught: check authenticates with its own configuration.
        console, out = _console()
        wrong = _with(settings, "thingworx", app_key=SecretStr("wrong-key"))
        assert await cli.check(wrong, console) == 1
        assert "authentication refused" in out.getvalue()

        # --bind (force_bind) binds and unbinds as asked, and so takes the Thing from the agent.
        console, out = _console()
        assert await cli.check(settings, console, force_bind=True) == 0
        assert "authenticated, bound and unbound AzureIotHub" in out.getvalue()
        assert await _gateway_answers(run) != 200


async def test_check_passes_when_another_agent_holds_the_things(tmp_path: Path) -> None:
    """First-in-wins (the stand-in's default, as a real server's): with the agent that holds
    the Things not found through a /healthz here (another machine: health port 0), check's BIND
    is refused; ThingWorx is reachable and the key accepted, so check passes and says that an
    agent started here would be a standby."""
    async with running(tmp_path) as run:
        console, out = _console()
        assert await cli.check(run.settings, console) == 0
        text = out.getvalue()
        assert "✓ ThingWorx" in text and "BIND of AzureIotHub refused" in text, text
        assert "another agent holds it" in text and "would wait as its standby" in text
        assert "✓ IoT Hub" in text and "all checks passed" in text
        assert await _gateway_answers(run) == 200  # still the running agent's


async def test_check_binds_when_no_agent_runs_here(tmp_path: Path) -> None:
    async with running(tmp_path, bind_policy="last-in-wins") as run:
        console, out = _console()
        # health port 0: no agent of this configuration to find, so the BIND is tried.
        assert await cli.check(run.settings, console) == 0
        text = out.getvalue()
        assert "✓ ThingWorx" in text and "authenticated, bound and unbound AzureIotHub" in text
        assert "✓ IoT Hub" in text and "all checks passed" in text


async def test_check_names_each_failure_and_what_to_fix(tmp_path: Path) -> None:
    async with running(tmp_path, devices=1, bind_policy="last-in-wins") as run:
        cases = [
            (
                _with(run.settings, "thingworx", app_key=SecretStr("wrong-key")),
                ["✗ ThingWorx", "authentication refused", "check thingworx.app_key"],
            ),
            (
                _with(run.settings, "thingworx", url="ws://127.0.0.1:9/Thingworx/WS"),
                ["✗ ThingWorx", "cannot reach ThingWorx"],
            ),
            (
                _with(
                    run.settings,
                    "iothub",
                    connection_string=SecretStr(
                        "HostName=127.0.0.1:9;SharedAccessKeyName=iothubowner;"
                        "SharedAccessKey=QUFBQQ=="
                    ),
                ),
                ["✓ ThingWorx", "✗ IoT Hub 127.0.0.1:9", "cannot reach the hub"],
            ),
            (
                _with(run.settings, "iothub", ca_file=""),
                ["✗ IoT Hub", "TLS certificate is not trusted", "iothub.ca_file"],
            ),
            (
                _with(
                    run.settings,
                    "iothub",
                    connection_string=SecretStr(
                        run.settings.iothub.connection_string.get_secret_value().rsplit("=", 2)[0]
                        + "=QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="
                    ),
                ),
                ["✗ IoT Hub", "refused the credentials"],
            ),
        ]
        for settings, expected in cases:
            console, out = _console()
            status = await cli.check(settings, console)
            text = out.getvalue()
            assert status == 1, text
            for fragment in expected:
                assert fragment in text, text
            assert "all checks passed" not in text
            assert "wrong-key" not in text and "QUFBQ" not in text  # secrets never printed


async def test_call_wait_follows_a_method_job_to_its_per_device_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running(tmp_path) as run:
        argv = [
            "call",
            "AzureIotDeviceJobScheduleDeviceMethodJob",
            "methodName=reboot",
            "queryCondition=deviceId IN ['device-0001', 'device-0005']",
            "connectTimeoutInSeconds=1",
            "responseTimeoutInSeconds=5",
            "--url",
            run.info.thingworx_url,
            "--app-key",
            APP_KEY,
            "--wait",
            "--poll-interval",
            "0.2",
            "--timeout",
            "30",
        ]
        capsys.readouterr()
        status = await asyncio.to_thread(cli.main, argv)
        out = capsys.readouterr().out
        # Completed, but the offline device failed: not a success (exit 3, documented).
        assert status == cli.EXIT_DEVICES_FAILED == 3, out
        assert "per-device results" in out
        assert "device-0001" in out and "200" in out and '"rebooting":true' in out
        assert "device-0005" in out and "DeviceNotOnline" in out  # the offline device
        # The job table is the refreshed one, after the end, with its summary.
        assert "│ summary " in out and "│ hubStatus                 │ completed" in out, out
        assert "completed: 1 succeeded, 1 failed (1 offline)" in out.splitlines(), out

        capsys.readouterr()
        status = await asyncio.to_thread(
            cli.main, [*argv[:2], "methodName=reboot", "queryCondition=deviceId = 'device-0001'",
                       *argv[6:], "--output", "json"]
        )  # fmt: skip
        out = capsys.readouterr().out
        assert status == cli.EXIT_OK, out
        (line,) = [x for x in out.splitlines() if x.startswith("{")]
        doc = json.loads(line)  # one JSON document, no progress bar, for jq
        (job,) = doc["job"]["rows"]
        assert job["status"] == "completed" and job["summary"] == "completed: 1 succeeded, 0 failed"
        assert [r["deviceId"] for r in doc["results"]["rows"]] == ["device-0001"]


async def test_ctrl_c_during_wait_stops_watching_in_one_line(tmp_path: Path) -> None:
    async with running(tmp_path) as run:
        argv = [
            sys.executable, "-m", "agent.cli", "call",
            "AzureIotDeviceJobScheduleDeviceMethodJob", "methodName=reboot",
            "queryCondition=deviceId = 'device-0005'", "jobId=watched",
            "maxExecutionTimeInSeconds=60", "connectTimeoutInSeconds=60",
            "--url", run.info.thingworx_url, "--app-key", APP_KEY, "--wait",
            "--poll-interval", "0.2",
        ]  # fmt: skip
        env = {**os.environ, "COLUMNS": "100"}
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
        assert proc.stdout is not None
        seen = b""
        async with asyncio.timeout(30):
            while b"watched" not in seen:  # the job's first table: it watches from now on
                seen += await proc.stdout.read(64)
        await asyncio.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(15):
            out, err = await proc.communicate()
        text = err.decode()
        assert proc.returncode == cli.EXIT_INTERRUPTED == 130, (seen + out, text)
        assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines == [
            "stopped watching job watched; it keeps running on the hub. Follow it again with: "
            "jobs-agent call AzureIotDeviceJobGetJob jobId=watched --thing AzureIotHub --wait"
        ], text
        async with aiohttp.ClientSession() as http:
            doc = await cli.call_service(
                http,
                cli.rest_root(run.info.thingworx_url),
                APP_KEY,
                "AzureIotHub",
                "AzureIotDeviceJobGetJob",
                {"jobId": "watched"},
            )
        assert doc["rows"][0]["status"] == "running"  # the job itself goes on


async def test_a_taken_port_is_a_clear_error_and_nothing_is_left(tmp_path: Path) -> None:
    host = fresh_loopback()
    with socket.socket() as blocker:
        blocker.bind((host, 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        settings = _base_settings(tmp_path, host).embedded.model_copy(
            update={"thingworx_port": port}
        )
        ends = EmbeddedEnds(settings, APP_KEY)
        with pytest.raises(EmbeddedError, match="THINGWORX_PORT"):
            await ends.start()
    assert ends.hub is None and ends.fleet is None and ends.standin is None
    with socket.socket() as probe:  # the emulator's device endpoint was closed again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, 8883))
        probe.listen()


async def _read_line(stream: asyncio.StreamReader, prefix: str, timeout: float) -> str:
    async with asyncio.timeout(timeout):
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"output ended before a line starting {prefix!r}")
            line = raw.decode().strip()
            if line.startswith(prefix):
                return line


async def start_run(cwd: Path, env: dict[str, str], stderr: int) -> asyncio.subprocess.Process:
    """``jobs-agent run`` (as ``python -m agent.cli run``) with stdout piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent.cli",
        "run",
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_run_with_real_ends_configured_runs_the_agent_alone(
    tmp_path: Path, sig: signal.Signals
) -> None:
    base = _base_settings(tmp_path, fresh_loopback(), devices=2)
    async with EmbeddedEnds(base.embedded, APP_KEY) as ends:
        ends_settings = ends.agent_settings(base)
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("JOBS_AGENT_", "THINGWORX_"))
        }
        env.update(
            JOBS_AGENT_THINGWORX__URL=ends.info.ws_url,
            JOBS_AGENT_THINGWORX__APP_KEY=APP_KEY,
            JOBS_AGENT_THINGWORX__AUTO_BIND='["device-0002"]',
            JOBS_AGENT_IOTHUB__CONNECTION_STRING=(
                ends_settings.iothub.connection_string.get_secret_value()
            ),
            JOBS_AGENT_IOTHUB__CA_FILE=str(ends.info.ca_pem),
            JOBS_AGENT_JOBS__WRAPPERS_DIR=str(CATALOGUE),
            JOBS_AGENT_HEALTH__HOST=base.embedded.host,
            JOBS_AGENT_HEALTH__PORT="0",
        )
        process = await start_run(tmp_path, env, asyncio.subprocess.DEVNULL)
        try:
            assert process.stdout is not None
            line = await _read_line(process.stdout, "ready", 30)
            assert f"connected to {ends.info.ws_url}" in line and "/healthz" in line
            standin = ends.standin
            assert standin is not None
            assert set(standin.bound_things()) == {"AzureIotHub", "device-0002"}
            process.send_signal(sig)
            async with asyncio.timeout(15):
                assert await process.wait() == 0
            assert standin.bound_things() == []  # UNBIND on the way out
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_start_up_logs_are_one_line_per_part_at_info(tmp_path: Path) -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", out)
    async with running(tmp_path, devices=8):
        await asyncio.sleep(0.5)  # the stand-in learns every Thing's metadata meanwhile
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    per_thing = [x for x in lines if str(x.get("thing", "")).startswith("device-")]
    per_device = [x for x in lines if str(x.get("device_id", "")).startswith("device-")]
    assert per_thing == [] and per_device == [], (per_thing + per_device)[:3]
    assert len(lines) < 40, [x["event"] for x in lines]
    assert all(x.get("logger") for x in lines)  # the agent's lines told from the emulators'


async def test_banner_comes_after_the_start_up_logging(tmp_path: Path) -> None:
    # As a terminal shows `make run`: stdout and stderr in one stream. At DEBUG the stand-in
    # logs one line per Thing whose services it learned, the last start-up step; the banner
    # (app key, URLs, curl lines) and the "ready" line follow all of them, in one piece.
    host = fresh_loopback()
    devices = 20
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBS_AGENT_", "THINGWORX_"))}
    env.update(
        JOBS_AGENT_EMBEDDED__HOST=host,
        JOBS_AGENT_EMBEDDED__THINGWORX_PORT="0",
        JOBS_AGENT_EMBEDDED__IOTHUB_REST_PORT="0",
        JOBS_AGENT_EMBEDDED__DEVICES=str(devices),
        JOBS_AGENT_EMBEDDED__DATA_DIR=str(tmp_path / "data"),
        JOBS_AGENT_JOBS__WRAPPERS_DIR=str(CATALOGUE),
        JOBS_AGENT_HEALTH__HOST=host,
        JOBS_AGENT_HEALTH__PORT="0",
        JOBS_AGENT_LOG__LEVEL="DEBUG",
        JOBS_AGENT_LOG__FORMAT="json",
    )
    process = await start_run(tmp_path, env, asyncio.subprocess.STDOUT)
    lines: list[str] = []
    try:
        assert process.stdout is not None
        async with asyncio.timeout(60):
            while not (lines and lines[-1].startswith("ready:")):
                raw = await process.stdout.readline()
                assert raw, f"the run ended early: {lines[-20:]}"
                lines.append(raw.decode().rstrip("\n"))
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    first = next(i for i, line in enumerate(lines) if line.startswith("jobs-agent: embedded run"))
    banner = lines[first:]
    assert not [line for line in banner if line.startswith("{")], "log lines inside the banner"
    assert any("app key" in line for line in banner) and any("curl -s" in line for line in banner)
    learned = {
        doc["thing"]
        for doc in (json.loads(line) for line in lines[:first] if line.startswith("{"))
        if doc.get("event") == "metadata learned"
    }
    assert len(learned) == devices + 1, f"only {sorted(learned)} before the banner"
