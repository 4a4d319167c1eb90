"""The channel's pure parts: the state table, the backoff, the stats, the public names."""

from __future__ import annotations

import random

import pytest

import agent.channel
from agent.channel import (
    TRANSITIONS,
    AlwaysOnClient,
    Backoff,
    ChannelConfigError,
    ChannelState,
    ChannelStats,
    IllegalTransition,
    StateMachine,
)
from agent.registry import ThingRegistry
from agent.settings import JobSettings, ThingWorxSettings

S = ChannelState


def test_state_table_allows_the_lifecycle_and_refuses_shortcuts() -> None:
    seen: list[tuple[ChannelState, ChannelState]] = []
    machine = StateMachine(lambda old, new: seen.append((old, new)))
    assert machine.state is S.DISCONNECTED
    for state in (S.CONNECTING, S.AUTHENTICATING, S.BINDING, S.READY, S.CLOSING, S.DISCONNECTED):
        machine.transition(state)
    assert [new for _, new in seen][-1] is S.DISCONNECTED and len(seen) == 6
    with pytest.raises(IllegalTransition, match="disconnected to ready"):
        machine.transition(S.READY)
    machine.transition(S.CONNECTING)
    with pytest.raises(IllegalTransition):
        machine.transition(S.BINDING)
    # As a tuple: mypy keeps `machine.state` narrowed to the first assert's state across calls.
    assert (machine.state, len(seen)) == (S.CONNECTING, 7)


def test_every_state_can_reach_disconnected_and_closing_only_leads_there() -> None:
    for state, targets in TRANSITIONS.items():
        assert state not in targets
        if state is not S.DISCONNECTED:
            assert S.DISCONNECTED in targets
    assert TRANSITIONS[S.CLOSING] == {S.DISCONNECTED}
    assert set(TRANSITIONS) == set(ChannelState)


def test_backoff_full_jitter_grows_to_the_ceiling_and_resets() -> None:
    backoff = Backoff(1.0, 8.0, random.Random(1))
    ceilings = []
    for _ in range(6):
        ceiling = backoff.ceiling()
        delay = backoff.next_delay()
        assert 0.0 <= delay <= ceiling
        ceilings.append(ceiling)
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.failures == 6
    backoff.reset()
    assert backoff.ceiling() == 1.0
    for _ in range(200):  # never overflows however long the outage
        backoff.next_delay()
    assert backoff.ceiling() == 8.0


def test_backoff_delays_are_spread() -> None:
    backoff = Backoff(10.0, 10.0, random.Random(3))
    delays = [backoff.next_delay() for _ in range(200)]
    assert min(delays) < 2.0 and max(delays) > 8.0


def test_stats_snapshot() -> None:
    stats = ChannelStats()
    stats.record_call("A", 0.5, ok=True)
    stats.record_call("A", 1.5, ok=False)
    stats.connects = 3
    snap = stats.snapshot()
    assert snap.calls == {"A": 2} and snap.errors == {"A": 1}
    assert snap.latencies == (0.5, 1.5) and snap.reconnects == 2
    stats.record_call("A", 1.0, ok=True)
    assert snap.calls == {"A": 2}  # a copy


def test_bad_url_is_a_config_error() -> None:
    registry = ThingRegistry(JobSettings())
    for url in ("", "http://host/Thingworx/WS", "host:80"):
        with pytest.raises(ChannelConfigError, match="ws:// or wss://"):
            AlwaysOnClient(ThingWorxSettings(url=url), registry)


async def test_empty_app_key_is_a_config_error() -> None:
    client = AlwaysOnClient(
        ThingWorxSettings(url="ws://127.0.0.1:9/"), ThingRegistry(JobSettings())
    )
    with pytest.raises(ChannelConfigError, match="app_key"):
        await client.run()


def test_public_names_exist() -> None:
    for name in agent.channel.__all__:
        assert hasattr(agent.channel, name), name
