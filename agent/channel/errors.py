"""The channel's exceptions, in one tree, and the typed record of a failed link.

::

    agent.errors.AgentError
    └── ChannelError              base of everything agent.channel raises
        ├── ChannelConfigError    the settings cannot make a connection (bad URL scheme, no key)
        ├── IllegalTransition     a state change the table in :mod:`agent.channel.state` forbids
        ├── ChannelNotReady       wait_ready() timed out (also a TimeoutError)
        └── LinkFailed            one connection attempt failed; the client backs off and retries
            ├── AuthRefused       the server answered AUTH with a non-SUCCESS status (or HTTP 401)
            ├── BindRefused       the server answered BIND with a non-SUCCESS status
            └── LinkLost          the websocket closed, or an answer did not come in time

Lower-layer exceptions (``websockets``, ``OSError``, ``ssl``, the codec's ``AlwaysOnError``) are
translated into these where they arise; none escapes :meth:`AlwaysOnClient.run`. Each
:class:`LinkFailed` carries a ``kind`` (see :class:`LinkFailure`); the client keeps the last one
as :attr:`AlwaysOnClient.last_failure`, so that ``jobs-agent check`` reads what failed and what
to do without matching text.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.errors import AgentError

__all__ = [
    "FAILURE_HINTS",
    "AuthRefused",
    "BindRefused",
    "ChannelConfigError",
    "ChannelError",
    "ChannelNotReady",
    "IllegalTransition",
    "LinkFailed",
    "LinkFailure",
    "LinkLost",
]

_UNREACHABLE = "cannot reach ThingWorx: check thingworx.url and that the server is up and reachable"

FAILURE_HINTS: dict[str, str] = {
    "auth_refused": "ThingWorx refused the application key: check thingworx.app_key",
    "bind_refused": _UNREACHABLE,
    "standby": (
        "another agent holds the Things (bind protection first-in-wins): this one waits as a "
        "standby and takes over when that one disconnects; stop one if this is not meant"
    ),
    "tls": (
        "the server's TLS certificate is not trusted: set thingworx.ca_file to its CA "
        "(or thingworx.verify_tls = false for a test server)"
    ),
    "endpoint": "no AlwaysOn endpoint there: thingworx.url should end with /Thingworx/WS",
    "refused": _UNREACHABLE,
    "dns": _UNREACHABLE,
    "unreachable": _UNREACHABLE,
    "timeout": _UNREACHABLE,
    "closed": _UNREACHABLE,
    "protocol": _UNREACHABLE,
    "config": "fix the [thingworx] settings named in the message",
}
"""What to do about each kind of link failure, in one line."""


@dataclass(frozen=True)
class LinkFailure:
    """Why the last connection attempt or link failed, as a value.

    Attributes:
        kind: one of

            - ``"auth_refused"``: the server refused the application key (AUTH answered
              non-SUCCESS, or the upgrade refused with HTTP 401/403);
            - ``"bind_refused"``: the server answered a BIND non-SUCCESS;
            - ``"standby"``: the server refused a BIND because another connection holds one of
              its Things (``BIND_REFUSED_STATUS``, first-in-wins): the agent is a standby and
              retries every ``thingworx.standby_retry`` seconds;
            - ``"tls"``: the TLS handshake failed (certificate not trusted, ...);
            - ``"endpoint"``: the upgrade was answered HTTP 404 (no AlwaysOn endpoint at the URL);
            - ``"refused"``: the TCP connection was refused;
            - ``"dns"``: the host name did not resolve;
            - ``"unreachable"``: another network error before the upgrade (unreachable, reset);
            - ``"timeout"``: no connection, or no answer to AUTH/BIND, in time; a pong timeout;
            - ``"closed"``: an established link was closed (by the server, or dropped);
            - ``"protocol"``: the server's upgrade answer or URL was not a websocket's (another
              HTTP status, a bad handshake);
            - ``"config"``: the settings cannot make a connection (kept for callers that
              report a :class:`ChannelConfigError` the same way).
        detail: the failure in one line (the text of ``AlwaysOnClient.last_error``).
        hint: what to do about it, in one line (:data:`FAILURE_HINTS`).
    """

    kind: str
    detail: str
    hint: str

    @classmethod
    def of(cls, kind: str, detail: str) -> LinkFailure:
        """The failure of ``kind`` with its hint."""
        return cls(kind, detail, FAILURE_HINTS[kind])


class ChannelError(AgentError):
    """Base class of the channel's exceptions."""


class ChannelConfigError(ChannelError):
    """The ThingWorx settings cannot make a connection."""


class IllegalTransition(ChannelError):
    """A state change that the transition table forbids (a bug in the client)."""


class ChannelNotReady(ChannelError, TimeoutError):
    """The channel did not become ready in time."""


class LinkFailed(ChannelError):
    """One connection attempt (or an established link) failed.

    Args:
        message: the failure in one line.
        kind: the :class:`LinkFailure` kind (default: the class's).
    """

    kind = "closed"

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class AuthRefused(LinkFailed):
    """The server refused the application key."""

    kind = "auth_refused"


class BindRefused(LinkFailed):
    """The server refused to bind the Things."""

    kind = "bind_refused"


class LinkLost(LinkFailed):
    """The websocket closed, or the server did not answer in time."""
