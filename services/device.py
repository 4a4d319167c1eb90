"""``AzureIotDeviceGetConnectionState``: is a device Thing's device online (docs/services.md).

A Thing being *bound* says the agent serves it; it says nothing of the device itself. This
service reads the device's twin and answers its ``connectionState`` (``Connected`` or
``Disconnected``), ``status`` and ``lastActivityTime``, so a mashup (and the stand-in's console)
can tell "bound" from "device online".

Rules:
- Only on device Things, and only about that Thing's own device: it takes no input, so a caller
  allowed on ``device-0005`` learns nothing of ``device-0007``.
- One twin read (IoT Hub's ``GET /twins/{id}``); hub failures become one-line errors through
  :func:`services.mapping.hub_failure` (a device the hub does not know answers NOT_FOUND).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agent.alwayson import BaseType, DataShape, InfoTable
from agent.iothub import IotHubClient, IotHubError
from agent.registry import RemoteService, ServiceCall
from services.mapping import ErrorContext, hub_failure
from services.shapes import DEVICE_CONNECTION_SHAPE

__all__ = ["GET_CONNECTION_STATE", "connection_state_row", "connection_state_service"]

GET_CONNECTION_STATE = "AzureIotDeviceGetConnectionState"


def _twin_time(value: Any) -> datetime | None:
    """A twin's ISO-8601 time as a UTC datetime; None when absent, unreadable or IoT Hub's
    "never" (year 1)."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # IoT Hub writes up to 7 fractional digits; Python reads at most 6
        digits = len(rest) - len(rest.lstrip("0123456789"))
        rest = rest[: min(digits, 6)] + rest[digits:]
        text = f"{head}.{rest}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.year <= 1:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def connection_state_row(device_id: str, twin: dict[str, Any]) -> dict[str, Any]:
    """One ``AzureIotDeviceConnection`` row from a twin as IoT Hub returns it."""
    state = twin.get("connectionState")
    status = twin.get("status")
    return {
        "deviceId": device_id,
        "connectionState": state if isinstance(state, str) else None,
        "status": status if isinstance(status, str) else None,
        "lastActivityTime": _twin_time(twin.get("lastActivityTime")),
    }


def connection_state_service(client: IotHubClient, device_id: str) -> RemoteService:
    """The ``AzureIotDeviceGetConnectionState`` service of the device Thing ``device_id``."""

    async def handler(call: ServiceCall) -> InfoTable:
        try:
            twin = await client.get_twin(device_id, deadline=call.deadline)
        except IotHubError as exc:
            error = hub_failure(exc, ErrorContext(device_id=device_id))
            call.log.info("hub call failed", error=error.message, status=error.status.name)
            raise error from None
        return InfoTable(DEVICE_CONNECTION_SHAPE, [connection_state_row(device_id, twin)])

    return RemoteService(
        GET_CONNECTION_STATE,
        "Whether this Thing's device is online: its twin's connectionState, status and last "
        "activity",
        DataShape(()),
        BaseType.INFOTABLE,
        DEVICE_CONNECTION_SHAPE,
        handler,
    )
