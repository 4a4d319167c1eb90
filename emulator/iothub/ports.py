"""The seams between the emulator's parts.

The emulator is four parts in one process, each owned by its own module and tested alone:

- the hub core (``registry``/twin store, REST API, SAS checks): implements :class:`TwinStore`;
- the device endpoint (``mqtt/``, MQTT 3.1.1 over TLS): implements :class:`DeviceLink`;
- the job engine (``jobs/``): implements :class:`JobService`;
- the query language (``query/``): produces :class:`Predicate` objects.

Each part depends only on the protocols here, never on another part's classes, so that a part
can be replaced by a small in-memory fake in another part's unit tests (the real ones meet in the
integration tests, judged by Microsoft's SDKs).

Rules: twin documents are the JSON objects IoT Hub's REST API returns for ``GET /twins/{id}``
(``deviceId``, ``etag``, ``version``, ``status``, ``connectionState``, ``tags``,
``properties.desired``/``.reported`` with ``$version``...). Device-job rows are the documented
``devices.jobs`` objects (reference/iothub.md §3.5). Every method here is called on the event loop
thread; none blocks for long (bulk work is done in batches by the caller).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

__all__ = ["DeviceLink", "JobService", "MethodReply", "Predicate", "TwinStore"]


@dataclass(frozen=True, slots=True)
class MethodReply:
    """A device's answer to a direct method: its status code and JSON payload."""

    status: int
    payload: Any


class Predicate(Protocol):
    """A compiled query condition (the WHERE part of an IoT Hub query)."""

    def matches(self, document: Mapping[str, Any]) -> bool:
        """True when the condition evaluates to exactly ``true`` on ``document``."""
        ...


class DeviceLink(Protocol):
    """What the hub core and the job engine need from the device endpoint."""

    def is_connected(self, device_id: str) -> bool:
        """True while the device has an open, authenticated MQTT connection."""
        ...

    def is_method_ready(self, device_id: str) -> bool:
        """True while the device is connected and subscribed to ``$iothub/methods/POST/#``."""
        ...

    async def wait_method_ready(self, device_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for :meth:`is_method_ready`; return whether it holds."""
        ...

    async def invoke_method(
        self,
        device_id: str,
        method_name: str,
        payload: Any,
        *,
        response_timeout: float,
        connect_timeout: float,
    ) -> MethodReply:
        """Call a direct method on a device and wait for its answer.

        Raises:
            HubError: 404103 DeviceNotOnline when the device is not method-ready within
                ``connect_timeout`` seconds; 504101 GatewayTimeout when it does not answer within
                ``response_timeout`` seconds.
        """
        ...

    def push_desired(self, device_id: str, patch: Mapping[str, Any]) -> None:
        """Send a desired-properties patch (it carries ``$version``) if the device is connected
        and subscribed to desired patches; otherwise do nothing (the device reconciles with a
        twin GET when it reconnects)."""
        ...


class TwinStore(Protocol):
    """What the device endpoint and the job engine need from the hub core's registry."""

    def hub_host(self) -> str:
        """The hub's host name as devices put it in their SAS ``sr`` (no port)."""
        ...

    def device_keys(self, device_id: str) -> tuple[str, str] | None:
        """The device's (primary, secondary) base64 symmetric keys, or None when the device is
        unknown or disabled."""
        ...

    def twin_properties(self, device_id: str) -> dict[str, Any]:
        """``{"desired": {..., "$version": n}, "reported": {..., "$version": m}}`` for a device
        twin GET over MQTT."""
        ...

    def patch_reported(self, device_id: str, patch: Mapping[str, Any]) -> int:
        """Merge-patch the reported properties (``null`` deletes); return the new version."""
        ...

    def set_connection_state(self, device_id: str, connected: bool, when: datetime) -> None:
        """Record ``connectionState`` and ``lastActivityTime`` of a device."""
        ...

    def select_device_ids(self, condition: Predicate | None) -> list[str]:
        """Ids of the devices whose twin documents match ``condition`` (all when None), sorted."""
        ...

    def apply_job_patch(
        self,
        device_ids: Sequence[str],
        tags: Mapping[str, Any] | None,
        desired: Mapping[str, Any] | None,
    ) -> dict[str, dict[str, Any]]:
        """Merge ``tags`` and ``desired`` into each device's twin (a forced update, etag ``*``),
        durably, in one transaction. Returns, per device, the desired patch to push to it
        (``desired`` plus the new ``$version``), or an empty dict for a tags-only patch."""
        ...


class JobService(Protocol):
    """What the REST API needs from the job engine. Job objects are IoT Hub's JobResponse JSON."""

    async def create_job(self, job_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and store a job (``PUT /jobs/v2/{id}``); raises HubError."""
        ...

    def get_job(self, job_id: str) -> dict[str, Any]:
        """The job (``GET /jobs/v2/{id}``); raises HubError 404002."""
        ...

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a scheduled or queued job; raises HubError 404002 or 405102."""
        ...

    def list_jobs(self, job_type: str | None, job_status: str | None) -> list[dict[str, Any]]:
        """Every job matching the optional filters, oldest first (the REST layer pages)."""
        ...

    def device_job_rows(
        self,
        job_id: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int | None = None,
    ) -> Iterable[dict[str, Any]]:
        """``devices.jobs`` rows in (jobId, deviceId) order: of one job when ``job_id`` is given,
        after the key ``after`` (jobId, deviceId) when given, at most ``limit`` when given."""
        ...
