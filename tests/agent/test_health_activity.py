"""/healthz counts the agent's own IoT Hub calls beside the probe, and shows the channel's last
error: the IoT Hub client's outcome record (against the real emulator), the merge rule, the
``health.probe_interval`` setting, and the server turning 503 and back on real calls alone."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr, ValidationError

from agent.channel import ChannelState, ChannelStats
from agent.health import HealthServer, HubHealth, HubProbe, health_report, merge_activity
from agent.iothub import HubRequestError, HubUnreachable, IotHubClient
from agent.settings import HealthSettings, IotHubSettings, JobSettings
from emulator.iothub import IoTHubEmulator
from tests.support.network import fresh_loopback


@dataclass
class Calls:
    """The outcome of real calls, as an IotHubClient reports it."""

    last_success: float | None = None
    last_error: str | None = None
    last_error_time: float | None = None


class ReadyChannel:
    """A channel view that is READY (the hub side is what these tests are about)."""

    state = ChannelState.READY
    bound_things = ["AzureIotHub"]
    last_error: str | None = None
    role = "active"
    holder: str | None = None
    stats = ChannelStats()


def _client(connection_string: str, ca_file: str = "") -> IotHubClient:
    return IotHubClient(
        IotHubSettings(
            connection_string=SecretStr(connection_string),
            ca_file=ca_file,
            read_retries=0,
            request_timeout=5.0,
        ),
        JobSettings(),
    )


# --- the merge rule --------------------------------------------------------------------------


def test_a_call_newer_than_the_last_probe_decides_reachability() -> None:
    probed_ok = HubHealth("h", True, 100.0, None, None, 3, 0)
    failed_after = merge_activity(probed_ok, Calls(90.0, "IoT Hub unreachable for x", 110.0))
    assert failed_after.reachable is False
    assert (failed_after.last_error, failed_after.last_error_time) == (
        "IoT Hub unreachable for x",
        110.0,
    )
    assert failed_after.last_success == 100.0
    assert (failed_after.probes, failed_after.probe_errors) == (3, 0)  # the probes' own counts
    probed_bad = HubHealth("h", False, 50.0, "probe: timeout", 100.0, 4, 1)
    answered_after = merge_activity(probed_bad, Calls(120.0, None, None))
    assert answered_after.reachable is True
    assert answered_after.last_success == 120.0
    assert answered_after.last_error == "probe: timeout"  # the last error stays visible


def test_calls_older_than_the_last_probe_do_not_override_it() -> None:
    probed = HubHealth("h", True, 200.0, None, None, 1, 0)
    merged = merge_activity(probed, Calls(150.0, "old failure", 180.0))
    assert merged.reachable is True
    assert merged.last_error == "old failure"  # still the newest error known
    assert merge_activity(probed, Calls()) == probed


def test_before_any_probe_a_call_counts_and_an_error_wins_a_tie() -> None:
    assert merge_activity(HubHealth("h"), Calls(5.0)).reachable is True
    assert merge_activity(HubHealth("h"), Calls(5.0, "e", 5.0)).reachable is False
    assert merge_activity(HubHealth("h"), Calls(6.0, "e", 5.0)).reachable is True
    assert merge_activity(HubHealth("h"), Calls()).reachable is None


async def test_probe_health_merges_its_activity() -> None:
    calls = Calls()
    now = iter([100.0])

    async def read() -> object:
        return []

    probe = HubProbe("h", read, clock=lambda: next(now), activity=calls)
    await probe.probe_once()
    assert probe.health.reachable is True
    calls.last_error, calls.last_error_time = "IoT Hub unreachable for get job 'j'", 101.0
    assert probe.health.reachable is False
    assert probe.health.last_error == "IoT Hub unreachable for get job 'j'"


# --- the channel's last error in /healthz ------------------------------------------------------


def test_channel_last_error_is_shown_and_repeated_in_problems_when_not_ready() -> None:
    hub = HubHealth("h", True, 1.0)
    status, doc = health_report(
        ChannelState.CONNECTING, [], "ws://x", hub, channel_error="authentication refused: no"
    )
    assert status == 503
    assert doc["thingworx"]["lastError"] == "authentication refused: no"
    assert any("authentication refused: no" in p for p in doc["problems"])
    status, doc = health_report(
        ChannelState.READY, ["A"], "ws://x", hub, channel_error="link lost: pong timeout"
    )
    assert status == 200 and doc["problems"] == []
    assert doc["thingworx"]["lastError"] == "link lost: pong timeout"
    _, doc = health_report(ChannelState.READY, ["A"], "ws://x", hub)
    assert "lastError" not in doc["thingworx"]


# --- health.probe_interval -------------------------------------------------------------------


def test_probe_interval_setting_default_and_bounds() -> None:
    assert HealthSettings().probe_interval == 15.0
    with pytest.raises(ValidationError, match="probe_interval"):
        HealthSettings(probe_interval=0)

    async def read() -> object:
        return []

    assert HubProbe("h", read).interval == 15.0
    with pytest.raises(ValueError, match="> 0"):
        HubProbe("h", read, interval=-1.0)


# --- the IoT Hub client's record, and /healthz, against the emulator -------------------------


async def test_client_records_answers_and_failures(tmp_path: Path) -> None:
    async with IoTHubEmulator(tmp_path, host=fresh_loopback(), rest_port=0, mqtt_port=0) as hub:
        good = _client(hub.owner_connection_string, str(hub.ca_pem_path))
        wrong_key = _client(
            hub.owner_connection_string.rsplit("=", 2)[0] + "=" + "QUFB" * 11,
            str(hub.ca_pem_path),
        )
        untrusted = _client(hub.owner_connection_string)  # the emulator's CA not trusted
        try:
            assert (good.last_success, good.last_error, good.last_error_time) == (None,) * 3
            with pytest.raises(HubRequestError):  # 404 JobNotFound: the hub answered
                await good.get_job("no-such-job")
            assert good.last_success is not None and good.last_error is None
            with pytest.raises(HubRequestError) as refused:
                await wrong_key.list_jobs(max_jobs=1)
            assert refused.value.http_status == 401
            assert wrong_key.last_success is None
            assert wrong_key.last_error is not None and wrong_key.last_error_time is not None
            assert "QUFB" not in wrong_key.last_error
            with pytest.raises(HubUnreachable):
                await untrusted.list_jobs(max_jobs=1)
            assert untrusted.last_error is not None and "\n" not in untrusted.last_error
        finally:
            for client in (good, wrong_key, untrusted):
                await client.close()


async def test_healthz_follows_real_calls_between_probes(tmp_path: Path) -> None:
    host = fresh_loopback()
    hub = IoTHubEmulator(tmp_path, host=host, rest_port=0, mqtt_port=0)
    await hub.start()
    port = hub.rest_port
    client = _client(hub.owner_connection_string, str(hub.ca_pem_path))
    # One probe at start, the next an hour later: only real calls can change /healthz here.
    probe = HubProbe.for_client(client, interval=3600)
    server = HealthServer(HealthSettings(host=host, port=0), ReadyChannel(), "ws://x", probe)
    await server.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

            async def healthz() -> tuple[int, dict[str, object]]:
                async with http.get(f"{server.url}/healthz") as reply:
                    return reply.status, await reply.json()

            for _ in range(200):  # the first probe runs in the background
                if probe.health.reachable is not None:
                    break
                await asyncio.sleep(0.05)
            status, doc = await healthz()
            assert status == 200
            await hub.stop()
            with pytest.raises(HubUnreachable):
                await client.get_job("j1")
            status, doc = await healthz()
            assert status == 503
            iothub = doc["iothub"]
            assert isinstance(iothub, dict)
            assert iothub["reachable"] is False and iothub["probes"] == 1
            assert "unreachable" in str(iothub["lastError"])
            hub = IoTHubEmulator(tmp_path, host=host, rest_port=port, mqtt_port=0)
            await hub.start()
            with pytest.raises(HubRequestError):  # 404 JobNotFound: answered, so reachable
                await client.get_job("j1")
            status, doc = await healthz()
            assert status == 200
            assert probe.health.probes == 1
    finally:
        await server.stop()
        await client.close()
        await hub.stop()
