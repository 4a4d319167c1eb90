"""The operations endpoint: Prometheus rendering, the latency histogram, /healthz states, the hub
probe, and the aiohttp server on a real socket."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re

import aiohttp
import pytest
from pydantic import SecretStr

from agent.channel import AlwaysOnClient, ChannelState, StatsSnapshot
from agent.health import (
    LATENCY_BUCKETS,
    HealthServer,
    HubHealth,
    HubProbe,
    LatencyHistogram,
    health_report,
    render_metrics,
)
from agent.iothub import HubUnreachable, IotHubClient, LoadCounters
from agent.registry import ThingRegistry
from agent.settings import HealthSettings, IotHubSettings, JobSettings, ThingWorxSettings

_SAMPLE = re.compile(r'^([a-z_]+)(\{(?:[a-z]+="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')


def _snapshot(
    calls: dict[str, int] | None = None,
    errors: dict[str, int] | None = None,
    latencies: tuple[float, ...] = (),
    connects: int = 0,
) -> StatsSnapshot:
    return StatsSnapshot(
        calls=calls or {},
        errors=errors or {},
        connection_attempts=connects,
        connects=connects,
        reconnects=max(0, connects - 1),
        links_lost=0,
        abandoned_calls=0,
        latencies=latencies,
    )


def _samples(text: str) -> dict[str, float]:
    """Parse the exposition: every line is a comment or a well-formed sample."""
    out: dict[str, float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# "):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ .+$", line), line
            continue
        match = _SAMPLE.match(line)
        assert match, f"malformed sample line: {line!r}"
        out[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return out


# --- rendering -----------------------------------------------------------------------------------


def test_metrics_text_has_calls_errors_histogram_reconnects_and_state() -> None:
    snap = _snapshot(
        calls={"GetJob": 3, "Schedule": 1},
        errors={"Schedule": 1},
        latencies=(0.004, 0.02, 0.3, 7.0),
        connects=3,
    )
    histogram = LatencyHistogram()
    histogram.fold(snap)
    text = render_metrics(snap, histogram, ChannelState.READY, HubHealth("hub:443", True, 1.5))
    samples = _samples(text)
    assert samples['jobs_agent_service_calls_total{service="GetJob"}'] == 3
    assert samples['jobs_agent_service_errors_total{service="Schedule"}'] == 1
    assert samples['jobs_agent_service_errors_total{service="GetJob"}'] == 0
    assert samples['jobs_agent_call_latency_seconds_bucket{le="0.005"}'] == 1
    assert samples['jobs_agent_call_latency_seconds_bucket{le="0.025"}'] == 2
    assert samples['jobs_agent_call_latency_seconds_bucket{le="0.5"}'] == 3
    assert samples['jobs_agent_call_latency_seconds_bucket{le="5.0"}'] == 3
    assert samples['jobs_agent_call_latency_seconds_bucket{le="10.0"}'] == 4
    assert samples['jobs_agent_call_latency_seconds_bucket{le="+Inf"}'] == 4
    assert samples["jobs_agent_call_latency_seconds_count"] == 4
    assert math.isclose(samples["jobs_agent_call_latency_seconds_sum"], 7.324)
    assert samples["jobs_agent_reconnects_total"] == 2
    assert samples['jobs_agent_channel_state{state="ready"}'] == 1
    assert samples['jobs_agent_channel_state{state="connecting"}'] == 0
    assert samples["jobs_agent_channel_ready"] == 1
    assert samples['jobs_agent_hub_reachable{hub="hub:443"}'] == 1
    assert samples['jobs_agent_hub_last_success_timestamp_seconds{hub="hub:443"}'] == 1.5
    assert "# TYPE jobs_agent_call_latency_seconds histogram" in text
    assert "# TYPE jobs_agent_service_calls_total counter" in text


def test_bucket_counts_are_cumulative_and_end_with_the_count() -> None:
    histogram = LatencyHistogram()
    for seconds in (0.001, 0.001, 0.07, 0.07, 0.07, 100.0):
        histogram.observe(seconds)
    cumulative = histogram.cumulative()
    counts = [c for _, c in cumulative]
    assert counts == sorted(counts)
    assert cumulative[-1] == (math.inf, 6)
    assert dict(cumulative)[0.1] == 5
    assert len(cumulative) == len(LATENCY_BUCKETS) + 1


def test_label_values_are_escaped() -> None:
    snap = _snapshot(calls={'we"ird\\name\n': 1})
    text = render_metrics(snap, LatencyHistogram(), ChannelState.DISCONNECTED, HubHealth("h"))
    assert 'service="we\\"ird\\\\name\\n"' in text
    _samples(text)


def test_unprobed_hub_has_no_last_success_sample() -> None:
    text = render_metrics(_snapshot(), LatencyHistogram(), ChannelState.READY, HubHealth("h"))
    assert "last_success" not in text
    assert _samples(text)['jobs_agent_hub_reachable{hub="h"}'] == 0


def test_fold_takes_only_new_latencies_and_counts_what_fell_out() -> None:
    histogram = LatencyHistogram()
    histogram.fold(_snapshot(calls={"s": 2}, latencies=(0.1, 0.2)))
    histogram.fold(_snapshot(calls={"s": 2}, latencies=(0.1, 0.2)))  # nothing new
    assert histogram.observed == 2
    histogram.fold(_snapshot(calls={"s": 3}, latencies=(0.1, 0.2, 0.3)))
    assert histogram.observed == 3
    assert math.isclose(histogram.total, 0.6)
    # 10 new calls but the ring buffer kept only the last 4 latencies.
    histogram.fold(_snapshot(calls={"s": 13}, latencies=(1.0, 1.0, 1.0, 1.0)))
    assert histogram.observed == 7
    assert histogram.unsampled == 6


def test_histogram_bounds_must_increase() -> None:
    with pytest.raises(ValueError, match="increasing"):
        LatencyHistogram(bounds=(1.0, 0.5))


# --- /healthz states -----------------------------------------------------------------------------


def test_healthy_only_when_channel_ready_and_hub_reached() -> None:
    ok = HubHealth("h", True, 10.0)
    status, doc = health_report(ChannelState.READY, ["A", "B"], "ws://x", ok)
    assert status == 200
    assert doc["status"] == "ok" and doc["problems"] == []
    assert doc["thingworx"] == {"url": "ws://x", "state": "ready", "ready": True, "boundThings": 2}
    assert doc["iothub"]["reachable"] is True
    assert doc["iothub"]["lastSuccess"] == "1970-01-01T00:00:10.000Z"


@pytest.mark.parametrize(
    ("state", "hub", "problem"),
    [
        (ChannelState.CONNECTING, HubHealth("h", True, 1.0), "channel is connecting"),
        (ChannelState.READY, HubHealth("h"), "not probed yet"),
        (
            ChannelState.READY,
            HubHealth("h", False, 1.0, "IoT Hub unreachable for list jobs", 2.0),
            "IoT Hub unreachable",
        ),
        (ChannelState.DISCONNECTED, HubHealth("h", False, None, "down", 2.0), "disconnected"),
    ],
)
def test_unhealthy_states_answer_503_with_the_reason(
    state: ChannelState, hub: HubHealth, problem: str
) -> None:
    status, doc = health_report(state, [], "ws://x", hub)
    assert status == 503
    assert doc["status"] == "unavailable"
    assert any(problem in p for p in doc["problems"])


# --- the probe -----------------------------------------------------------------------------------


async def test_probe_records_success_then_error_then_success() -> None:
    outcomes: list[Exception | None] = [None, HubUnreachable("no route"), None]
    now = iter([100.0, 200.0, 300.0])

    async def read() -> object:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return []

    probe = HubProbe("h", read, clock=lambda: next(now))
    assert probe.health.reachable is None
    first = await probe.probe_once()
    assert (first.reachable, first.last_success, first.probes) == (True, 100.0, 1)
    second = await probe.probe_once()
    assert second.reachable is False
    assert (second.last_success, second.last_error, second.last_error_time) == (
        100.0,
        "no route",
        200.0,
    )
    third = await probe.probe_once()
    assert (third.reachable, third.last_success, third.probes, third.probe_errors) == (
        True,
        300.0,
        3,
        1,
    )
    assert third.last_error == "no route"  # the last error stays visible


# --- the server on a socket ----------------------------------------------------------------------


async def test_server_answers_503_for_a_disconnected_channel_and_an_unreachable_hub() -> None:
    twx = ThingWorxSettings(url="ws://127.0.0.1:9/Thingworx/WS", app_key=SecretStr("k"))
    channel = AlwaysOnClient(twx, ThingRegistry(JobSettings()))  # never run: DISCONNECTED
    hub = IotHubClient(
        IotHubSettings(
            connection_string=SecretStr(
                "HostName=127.0.0.1:9;SharedAccessKeyName=iothubowner;SharedAccessKey=AAAA"
            ),
            read_retries=0,
            request_timeout=5.0,
        ),
        JobSettings(),
    )
    server = HealthServer(
        HealthSettings(host="127.0.0.1", port=0), channel, twx.url, HubProbe.for_client(hub)
    )
    await server.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            for _ in range(100):  # the first probe runs in the background
                if server.probe.health.reachable is not None:
                    break
                await asyncio.sleep(0.05)
            async with http.get(f"{server.url}/healthz") as reply:
                assert reply.status == 503
                doc = await reply.json()
            assert doc["thingworx"]["state"] == "disconnected"
            assert doc["iothub"]["reachable"] is False
            assert "unreachable" in doc["iothub"]["lastError"]
            assert "AAAA" not in str(doc)
            async with http.get(f"{server.url}/metrics") as reply:
                assert reply.status == 200
                assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                samples = _samples(await reply.text())
            assert samples["jobs_agent_channel_ready"] == 0
            assert samples['jobs_agent_hub_probe_errors_total{hub="127.0.0.1:9"}'] >= 1
    finally:
        await server.stop()
        await hub.close()


def test_metrics_count_calls_refused_for_capacity_and_over_the_per_call_bound() -> None:
    snap = dataclasses.replace(_snapshot(), refused_busy=4)
    load = LoadCounters(hub_busy=3, device_busy=32, refused_hub=2, refused_device=7, too_large=5)
    text = render_metrics(snap, LatencyHistogram(), ChannelState.READY, HubHealth("h"), load)
    samples = _samples(text)
    assert samples['jobs_agent_calls_refused_total{reason="device_lane_full"}'] == 7
    assert samples['jobs_agent_calls_refused_total{reason="hub_lane_full"}'] == 2
    assert samples['jobs_agent_calls_refused_total{reason="channel_full"}'] == 4
    assert samples["jobs_agent_calls_too_large_total"] == 5
    assert samples['jobs_agent_lane_busy{lane="device"}'] == 32
    assert samples['jobs_agent_lane_busy{lane="hub"}'] == 3
    # Without a client (no load given) the series are there, at zero.
    bare = _samples(
        render_metrics(_snapshot(), LatencyHistogram(), ChannelState.READY, HubHealth("h"))
    )
    assert bare["jobs_agent_calls_too_large_total"] == 0


# --- the rollout leadership ---------------------------------------------------------------------


@dataclasses.dataclass
class _Leadership:
    role: str
    changes: int
    epoch: int | None = None


def test_the_rollout_role_is_shown_and_a_rollout_standby_stays_healthy() -> None:
    ok = HubHealth("h", True, 10.0)
    standby = {"role": "standby", "store": "postgresql"}
    status, doc = health_report(ChannelState.READY, ["A"], "ws://x", ok, rollouts=standby)
    assert status == 200 and doc["status"] == "ok"
    assert doc["rollouts"] == standby and doc["role"] == "active"  # binding and leadership
    _, alone = health_report(ChannelState.READY, ["A"], "ws://x", ok)
    assert "rollouts" not in alone


def test_metrics_show_the_rollout_leader_gauge_and_its_changes() -> None:
    hub = HubHealth("hub.example", True, 1.0)
    args = (_snapshot(), LatencyHistogram(), ChannelState.READY, hub)
    leader = _samples(render_metrics(*args, leadership=_Leadership("active", 3)))
    assert leader['jobs_agent_rollout_leader{hub="hub.example"}'] == 1
    assert leader['jobs_agent_rollout_leadership_changes_total{hub="hub.example"}'] == 3
    standby = _samples(render_metrics(*args, leadership=_Leadership("standby", 4)))
    assert standby['jobs_agent_rollout_leader{hub="hub.example"}'] == 0
    assert not any("rollout_leader" in k for k in _samples(render_metrics(*args)))
