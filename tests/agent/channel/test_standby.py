"""Two agents, one set of Things, ThingWorx's first-in-wins bind protection: the second agent is a
standby (it says who holds the Things, retries at a steady pace) and takes over when the first
goes; with last-in-wins the second takes the Things at once. Real channel, real stand-in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from agent.channel import AlwaysOnClient, ChannelState
from agent.health import HubHealth, health_report
from emulator.thingworx.server import ThingWorxStandIn
from tests.support.channel import GATEWAY, make_registry, running, settings

KEY = "test-key"
RETRY = 0.3


@pytest.fixture
async def standin(request: pytest.FixtureRequest) -> AsyncIterator[ThingWorxStandIn]:
    policy = getattr(request, "param", "first-in-wins")
    server = ThingWorxStandIn(KEY, port=0, call_timeout=5.0, bind_policy=policy)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _holder_conn(standin: ThingWorxStandIn) -> str | None:
    entry = standin.registry.get(GATEWAY)
    return None if entry is None or entry.owner is None else entry.owner.conn_id


async def test_second_agent_is_a_standby_and_takes_over(standin: ThingWorxStandIn) -> None:
    first = AlwaysOnClient(settings(standin.ws_url, standby_retry=RETRY), make_registry("Dev1"))
    second = AlwaysOnClient(settings(standin.ws_url, standby_retry=RETRY), make_registry("Dev1"))
    async with running(first):
        holder = _holder_conn(standin)
        assert first.role == "active"
        with capture_logs() as logs:
            async with running(second, ready=False):
                assert "standby:" in await second.wait_error(5)
                assert second.role == "standby"
                # Several retries, one log line naming the holder, no growing backoff.
                attempts = second.stats.connection_attempts
                await asyncio.sleep(4 * RETRY)
                assert second.stats.connection_attempts - attempts >= 2
                assert second.state is not ChannelState.READY
                assert second.last_failure is not None and second.last_failure.kind == "standby"
                assert second.holder is not None and holder is not None
                assert holder in second.holder and f"'{GATEWAY}'" in second.holder
                standbys = [x for x in logs if x["event"].startswith("standby:")]
                assert len(standbys) == 1 and holder in standbys[0]["holder"], standbys
                assert _holder_conn(standin) == holder  # the first agent still serves
                hub = HubHealth(host="hub", reachable=True)
                status, doc = health_report(
                    second.state, [], "ws://x", hub, role=second.role, holder=second.holder
                )
                assert (status, doc["status"], doc["role"]) == (200, "standby", "standby")
                assert holder in doc["thingworx"]["holder"] and doc["problems"] == []
                # The active agent goes: the standby takes over within about one retry.
                await first.stop()
                gone = time.monotonic()
                await second.wait_ready(5)
                took = time.monotonic() - gone
                assert second.role == "active" and second.holder is None
                assert _holder_conn(standin) not in (None, holder)
                assert set(standin.bound_things()) == {GATEWAY, "Dev1"}
                assert took < RETRY + 2.0, took
                print(f"takeover after a clean stop: {took:.3f} s (standby_retry {RETRY} s)")
        assert any(x["event"] == "active: took over the Things" for x in logs)


@pytest.mark.parametrize("standin", ["last-in-wins"], indirect=True)
async def test_last_in_wins_takes_the_things_at_once(standin: ThingWorxStandIn) -> None:
    first = AlwaysOnClient(settings(standin.ws_url), make_registry("Dev1"))
    second = AlwaysOnClient(settings(standin.ws_url), make_registry("Dev1"))
    async with running(first):
        holder = _holder_conn(standin)
        async with running(second):
            assert second.role == "active"
            assert _holder_conn(standin) not in (None, holder)
