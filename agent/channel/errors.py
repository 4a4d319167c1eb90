"""The channel's exceptions, in one tree.

::

    ChannelError                  base of everything agent.channel raises
    ├── ChannelConfigError        the settings cannot make a connection (bad URL scheme, no key)
    ├── IllegalTransition         a state change the table in :mod:`agent.channel.state` forbids
    ├── ChannelNotReady           wait_ready() timed out (also a TimeoutError)
    └── LinkFailed                one connection attempt failed; the client backs off and retries
        ├── AuthRefused           the server answered AUTH with a non-SUCCESS status (or HTTP 401)
        ├── BindRefused           the server answered BIND with a non-SUCCESS status
        └── LinkLost              the websocket closed, or an answer did not come in time

Lower-layer exceptions (``websockets``, ``OSError``, ``ssl``, the codec's ``AlwaysOnError``) are
translated into these where they arise; none escapes :meth:`AlwaysOnClient.run`.
"""

from __future__ import annotations

__all__ = [
    "AuthRefused",
    "BindRefused",
    "ChannelConfigError",
    "ChannelError",
    "ChannelNotReady",
    "IllegalTransition",
    "LinkFailed",
    "LinkLost",
]


class ChannelError(Exception):
    """Base class of the channel's exceptions."""


class ChannelConfigError(ChannelError):
    """The ThingWorx settings cannot make a connection."""


class IllegalTransition(ChannelError):
    """A state change that the transition table forbids (a bug in the client)."""


class ChannelNotReady(ChannelError, TimeoutError):
    """The channel did not become ready in time."""


class LinkFailed(ChannelError):
    """One connection attempt (or an established link) failed."""


class AuthRefused(LinkFailed):
    """The server refused the application key."""


class BindRefused(LinkFailed):
    """The server refused to bind the Things."""


class LinkLost(LinkFailed):
    """The websocket closed, or the server did not answer in time."""
