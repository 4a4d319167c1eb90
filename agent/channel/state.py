"""The channel's connection states and the one table of allowed transitions.

::

    DISCONNECTED ──► CONNECTING ──► AUTHENTICATING ──► BINDING ──► READY
         ▲               │                │               │          │
         └───────────────┴────────────────┴───────────────┴──────────┘  (link failed or lost)

    any state but CLOSING ──► CLOSING ──► DISCONNECTED                  (stop())

:class:`StateMachine` is the only place that changes the state; it refuses a change the table
does not list (:class:`~agent.channel.errors.IllegalTransition`). Pure: no asyncio, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from types import MappingProxyType

from agent.channel.errors import IllegalTransition

__all__ = ["TRANSITIONS", "ChannelState", "StateMachine"]


class ChannelState(Enum):
    """Where the channel is in its connection lifecycle."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    BINDING = "binding"
    READY = "ready"
    CLOSING = "closing"


_S = ChannelState
TRANSITIONS: Mapping[ChannelState, frozenset[ChannelState]] = MappingProxyType(
    {
        _S.DISCONNECTED: frozenset({_S.CONNECTING, _S.CLOSING}),
        _S.CONNECTING: frozenset({_S.AUTHENTICATING, _S.DISCONNECTED, _S.CLOSING}),
        _S.AUTHENTICATING: frozenset({_S.BINDING, _S.DISCONNECTED, _S.CLOSING}),
        _S.BINDING: frozenset({_S.READY, _S.DISCONNECTED, _S.CLOSING}),
        _S.READY: frozenset({_S.DISCONNECTED, _S.CLOSING}),
        _S.CLOSING: frozenset({_S.DISCONNECTED}),
    }
)
"""state → the states it may move to."""


class StateMachine:
    """Holds the current state and performs every transition.

    Args:
        on_change: called with (old, new) after each transition.
    """

    def __init__(
        self, on_change: Callable[[ChannelState, ChannelState], None] | None = None
    ) -> None:
        self._state = ChannelState.DISCONNECTED
        self._on_change = on_change

    @property
    def state(self) -> ChannelState:
        """The current state."""
        return self._state

    def can(self, new: ChannelState) -> bool:
        """True when the table allows moving from the current state to ``new``."""
        return new in TRANSITIONS[self._state]

    def transition(self, new: ChannelState) -> None:
        """Move to ``new``.

        Raises:
            IllegalTransition: the table does not allow it.
        """
        old = self._state
        if new not in TRANSITIONS[old]:
            raise IllegalTransition(f"channel cannot go from {old.value} to {new.value}")
        self._state = new
        if self._on_change is not None:
            self._on_change(old, new)
