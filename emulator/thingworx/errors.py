"""The ThingWorx stand-in's exceptions, in one tree.

::

    EmulatorError                  emulator.errors: the root of both emulators' errors
    └── StandInError               base of everything the stand-in raises
        ├── HandshakeRefused       a websocket upgrade that is not valid (HTTP 400)
        ├── CallError              a REST service call that cannot be answered with a result;
        │   │                      carries the HTTP status and a one-line text for the caller
        │   ├── InputError         an input the Thing's metadata cannot type (400)
        │   ├── ThingNotFound      no such Thing, or no such service on it (404)
        │   ├── ThingUnavailable   the Thing's agent is not connected (503)
        │   ├── EdgeTimeout        the edge did not answer in time (504)
        │   └── EdgeFailed         the edge answered an AlwaysOn error status (500 or mapped 4xx)
        └── LinkClosed             the websocket of a session is gone (pending calls fail with it)

Third-party and codec exceptions are translated where they arise; a REST caller only ever sees a
status and a plain-text line, never a stack trace.
"""

from __future__ import annotations

from emulator.errors import EmulatorError

__all__ = [
    "CallError",
    "EdgeFailed",
    "EdgeTimeout",
    "HandshakeRefused",
    "InputError",
    "LinkClosed",
    "StandInError",
    "ThingNotFound",
    "ThingUnavailable",
]


class StandInError(EmulatorError):
    """Base class of every exception of the ThingWorx stand-in."""


class HandshakeRefused(StandInError):
    """The websocket upgrade request is not valid; answered with HTTP 400."""


class LinkClosed(StandInError):
    """The edge's websocket closed; calls pending on it fail with this."""


class CallError(StandInError):
    """A service call that ends in an HTTP error.

    Attributes:
        http_status: the HTTP status the REST layer answers.
        text: the one-line plain-text body.
    """

    http_status = 500

    def __init__(self, text: str, *, http_status: int | None = None) -> None:
        super().__init__(text)
        self.text = text
        if http_status is not None:
            self.http_status = http_status


class InputError(CallError):
    """An input that cannot be typed from the Thing's metadata (400)."""

    http_status = 400


class ThingNotFound(CallError):
    """No such Thing, or no such service on it (404)."""

    http_status = 404


class ThingUnavailable(CallError):
    """The Thing is known but its agent is not connected (503)."""

    http_status = 503


class EdgeTimeout(CallError):
    """The edge did not answer within the call timeout (504)."""

    http_status = 504


class EdgeFailed(CallError):
    """The edge answered with an AlwaysOn error status.

    Attributes:
        status: the AlwaysOn status code byte.
    """

    def __init__(self, text: str, *, status: int, http_status: int) -> None:
        super().__init__(text, http_status=http_status)
        self.status = status
