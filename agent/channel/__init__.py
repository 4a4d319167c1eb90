"""The agent's AlwaysOn channel to ThingWorx: the websocket client and its states.

Public names: :class:`AlwaysOnClient`, :class:`ChannelState`, :class:`ChannelStats` (and its
:class:`StatsSnapshot`), the exception tree of :mod:`agent.channel.errors` and
:class:`LinkFailure`, the typed record of why the last link failed.
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
    LinkFailure,
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
    "LinkFailure",
    "LinkLost",
    "StateMachine",
    "StatsSnapshot",
]
