"""What to fix, for ``jobs-agent check``'s failures: one line per failure of either end.

Rules: a hint names the setting to change (``thingworx.app_key``, ``iothub.ca_file``...) and is
one line. ThingWorx's hint is the channel's typed
``LinkFailure`` (``kind``, ``hint``), never read from its ``last_error`` text.
"""

from __future__ import annotations

from agent.channel import LinkFailure
from agent.channel.errors import FAILURE_HINTS
from agent.iothub import HubRequestError, HubTimeout, HubUnreachable, IotHubError

__all__ = ["hint_for", "hub_hint"]


def hint_for(failure: LinkFailure | None) -> str:
    """What to fix for the channel's failure: the typed failure's own hint (no text matching).

    Args:
        failure: the channel's ``last_failure``; None (a failure the channel did not type) gets
            the generic "cannot reach ThingWorx" hint.
    """
    if failure is not None and failure.hint:
        return failure.hint
    return FAILURE_HINTS["unreachable"]


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
