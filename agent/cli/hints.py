"""What to fix, for ``jobs-agent check``'s failures: one line per failure of either end.

Rules: a hint names the setting to change (``thingworx.app_key``, ``iothub.ca_file``...) and is
one line. ThingWorx's hint is read from the channel's failure: the typed
``LinkFailure`` (``kind``, ``hint``) when the channel gives one, else its ``last_error`` text.
"""

from __future__ import annotations

from typing import Protocol

from agent.iothub import HubRequestError, HubTimeout, HubUnreachable, IotHubError

__all__ = ["LinkFailureView", "hint_for", "hub_hint"]


class LinkFailureView(Protocol):
    """What :func:`hint_for` reads of a typed link failure (``agent.channel.LinkFailure``)."""

    @property
    def kind(self) -> str: ...

    @property
    def hint(self) -> str: ...


def hint_for(error: str, failure: LinkFailureView | None = None) -> str:
    """What to fix for the channel's failure.

    Args:
        error: the channel's ``last_error`` (one line).
        failure: the channel's typed failure, when it has one: its ``hint`` is used as is.
    """
    if failure is not None and failure.hint:
        return failure.hint
    text = error.lower()
    if text.startswith("authentication refused"):
        return "ThingWorx refused the application key: check thingworx.app_key"
    if "certificate" in text or "ssl" in text:
        return (
            "the server's TLS certificate is not trusted: set thingworx.ca_file to its CA "
            "(or thingworx.verify_tls = false for a test server)"
        )
    if "http 404" in text:
        return "no AlwaysOn endpoint there: thingworx.url should end with /Thingworx/WS"
    return "cannot reach ThingWorx: check thingworx.url and that the server is up and reachable"


def hub_hint(exc: IotHubError) -> str:
    """What to fix for a failed read on the hub."""
    text = str(exc).lower()
    if isinstance(exc, HubRequestError) and exc.http_status in (401, 403):
        return (
            "the hub refused the credentials: check iothub.connection_string (its policy needs "
            "registry read and service connect)"
        )
    if isinstance(exc, HubUnreachable) and ("tls" in text or "certificate" in text):
        return "the hub's TLS certificate is not trusted: set iothub.ca_file to its CA"
    if isinstance(exc, HubUnreachable):
        return "cannot reach the hub: check the connection string's HostName and the network"
    if isinstance(exc, HubTimeout):
        return "the hub did not answer in time: check the network (iothub.request_timeout)"
    return "the hub answered an error: see the message"
