"""The agent's AlwaysOn channel to ThingWorx: the websocket client and its states.

Public names: :class:`AlwaysOnClient`, :class:`ChannelState`, :class:`ChannelStats` (and its
:class:`StatsSnapshot`), and the exception tree of :mod:`agent.channel.errors`.
"""

from __future__ import annotations

from agent.channel.backoff import Backoff
from agent.channel.client import AlwaysOnClient
from agent.channel.errors import (
    AuthRefused,
    BindRefused,
    ChannelConfigError,
    ChannelError,
    ChannelNotReady,
    IllegalTransition,
    LinkFailed,
    LinkLost,
)
from agent.channel.state import TRANSITIONS, ChannelState, StateMachine
from agent.channel.stats import ChannelStats, StatsSnapshot

__all__ = [
    "TRANSITIONS",
    "AlwaysOnClient",
    "AuthRefused",
    "Backoff",
    "BindRefused",
    "ChannelConfigError",
    "ChannelError",
    "ChannelNotReady",
    "ChannelState",
    "ChannelStats",
    "IllegalTransition",
    "LinkFailed",
    "LinkLost",
    "StateMachine",
    "StatsSnapshot",
]
