"""Every translation table between IoT Hub's words and the product's, in one place.

- job types: ``twinUpdate`` ↔ ``scheduleUpdateTwin``, ``deviceMethod`` ↔ ``scheduleDeviceMethod``;
- job statuses (docs/services.md): ``queued``/``enqueued`` → ``pending`` (``scheduled`` while the
  start time is still ahead), ``canceled`` → ``cancelled``; the hub's word stays in ``hubStatus``;
- device-job statuses (``devices.jobs`` rows);
- IoT Hub errors → an AlwaysOn status and a one-line message naming the code, what happened and
  what to do (:func:`hub_failure`).

Rules: client mistakes (4xx) → BAD_REQUEST or NOT_FOUND; throttling (429), an unreachable hub and
a full lane of the agent's own (nothing was sent) → SERVICE_UNAVAILABLE; a call that would read
more than one call may → ENTITY_TOO_LARGE; timeouts (504101, no answer in time) →
GATEWAY_TIMEOUT; anything else the hub does wrong → BAD_GATEWAY. Messages never carry a stack
trace or a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from agent.alwayson import Status
from agent.iothub import (
    METHOD_JOB,
    TWIN_JOB,
    CallTooLarge,
    HubRequestError,
    HubTimeout,
    HubUnreachable,
    IotHubError,
    LaneFull,
)
from agent.registry import ServiceError

__all__ = [
    "DEVICE_JOB_STATUSES",
    "HUB_STATUS_FILTER",
    "JOB_STATUSES",
    "JOB_TYPE_FROM_HUB",
    "JOB_TYPE_TO_HUB",
    "TERMINAL_STATUSES",
    "ErrorContext",
    "device_job_status",
    "failure_kind",
    "hub_failure",
    "job_status",
    "job_type",
    "status_input",
]

JOB_TYPE_TO_HUB: Mapping[str, str] = MappingProxyType(
    {
        "twinUpdate": TWIN_JOB,
        "deviceMethod": METHOD_JOB,
        TWIN_JOB: TWIN_JOB,
        METHOD_JOB: METHOD_JOB,
    }
)
"""Accepted ``type`` inputs (product words and IoT Hub's) → IoT Hub's job type."""

JOB_TYPE_FROM_HUB: Mapping[str, str] = MappingProxyType(
    {TWIN_JOB: "twinUpdate", METHOD_JOB: "deviceMethod"}
)

JOB_STATUSES = ("scheduled", "pending", "running", "completed", "failed", "cancelled")
"""The product's job statuses (docs/services.md)."""

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})

_STATUS_FROM_HUB: Mapping[str, str] = MappingProxyType(
    {
        "scheduled": "scheduled",
        "queued": "pending",
        "enqueued": "pending",
        "pending": "pending",
        "running": "running",
        "completed": "completed",
        "failed": "failed",
        "cancelled": "cancelled",
        "canceled": "cancelled",
    }
)
"""IoT Hub's status words, of jobs and of ``devices.jobs`` rows alike → the product's."""

HUB_STATUS_FILTER: Mapping[str, str | None] = MappingProxyType(
    {
        "scheduled": None,  # queued jobs whose start time is ahead are "scheduled" too
        "pending": None,  # queued or enqueued
        "running": "running",
        "completed": "completed",
        "failed": "failed",
        "cancelled": "cancelled",
    }
)
"""Product status → the one IoT Hub status to filter the job query on (None: filter here)."""

_STATUS_INPUT_ALIASES: Mapping[str, str] = MappingProxyType(
    {"queued": "pending", "enqueued": "pending", "canceled": "cancelled"}
)

DEVICE_JOB_STATUSES: Mapping[str, str] = _STATUS_FROM_HUB
"""``devices.jobs`` row statuses → the product's: the same table as a job's statuses."""


def job_type(hub_type: str) -> str:
    """The product's job type for IoT Hub's (unknown types are passed through)."""
    return JOB_TYPE_FROM_HUB.get(hub_type, hub_type)


def job_status(hub_status: str, start_time: datetime | None, now: datetime) -> str:
    """The product's status word for IoT Hub's job status.

    A queued job whose start time is still ahead is ``scheduled``; an unknown word reads as
    ``unknown`` (the raw word stays in ``hubStatus``).
    """
    word = _STATUS_FROM_HUB.get(hub_status.lower(), "unknown")
    if word == "pending" and start_time is not None and start_time > now:
        return "scheduled"
    return word


def status_input(value: str) -> str | None:
    """The product status a FindJobs ``status`` input names, or None when it names none."""
    word = value.strip().lower()
    word = _STATUS_INPUT_ALIASES.get(word, word)
    return word if word in JOB_STATUSES else None


def device_job_status(hub_status: str) -> str:
    """The product's word for a ``devices.jobs`` row status."""
    return DEVICE_JOB_STATUSES.get(hub_status.lower(), hub_status.lower() or "unknown")


_FAILURE_KINDS: Mapping[str, str] = MappingProxyType(
    {
        "devicenotonline": "offline",
        "jobrunpreconditionfailed": "offline",
        "gatewaytimeout": "no response",
        "devicenotfound": "not registered",
    }
)


def failure_kind(error_code: str | None) -> str:
    """A failed device's kind in a job's summary, from its ``devices.jobs`` error code."""
    if not error_code:
        return "unknown error"
    return _FAILURE_KINDS.get(error_code.lower(), error_code)


# --- errors ---------------------------------------------------------------------------------

_STATUS_BY_CODE: Mapping[int, Status] = MappingProxyType(
    {
        404001: Status.NOT_FOUND,
        404002: Status.NOT_FOUND,
        404103: Status.NOT_FOUND,
        404104: Status.BAD_GATEWAY,
        405102: Status.BAD_REQUEST,
        409104: Status.BAD_REQUEST,
        412001: Status.PRECONDITION_FAILED,
        429001: Status.SERVICE_UNAVAILABLE,
        429004: Status.SERVICE_UNAVAILABLE,
        504101: Status.GATEWAY_TIMEOUT,
    }
)
_STATUS_BY_HTTP: Mapping[int, Status] = MappingProxyType(
    {
        400: Status.BAD_REQUEST,
        401: Status.BAD_GATEWAY,  # the agent's own credentials: the caller cannot fix it
        403: Status.FORBIDDEN,
        404: Status.NOT_FOUND,
        405: Status.BAD_REQUEST,
        409: Status.BAD_REQUEST,
        412: Status.PRECONDITION_FAILED,
        413: Status.ENTITY_TOO_LARGE,
        429: Status.SERVICE_UNAVAILABLE,
        503: Status.SERVICE_UNAVAILABLE,
        504: Status.GATEWAY_TIMEOUT,
    }
)


@dataclass(frozen=True)
class ErrorContext:
    """What a message about a failed hub call may name.

    Attributes:
        job_id: the job the call was about.
        device_id: the device the call was about.
        connect_timeout: the connect timeout sent, seconds.
        response_timeout: the response timeout sent, seconds.
        active_jobs: ids of the jobs active on the hub (for 429004).
    """

    job_id: str | None = None
    device_id: str | None = None
    connect_timeout: int | None = None
    response_timeout: int | None = None
    active_jobs: Sequence[str] = ()


def _status_for(exc: HubRequestError) -> Status:
    if exc.code is not None and exc.code in _STATUS_BY_CODE:
        return _STATUS_BY_CODE[exc.code]
    if exc.http_status in _STATUS_BY_HTTP:
        return _STATUS_BY_HTTP[exc.http_status]
    if 400 <= exc.http_status < 500:
        return Status.BAD_REQUEST
    return Status.BAD_GATEWAY


def _head(exc: HubRequestError) -> str:
    parts = [str(exc.code) if exc.code is not None else "", exc.name]
    head = " ".join(p for p in parts if p)
    return head or f"IoT Hub HTTP {exc.http_status}"


_MAX_ACTIVE = re.compile(r"\((\d+)\)")


def _quoted(ids: Sequence[str]) -> str:
    return ", ".join(f"'{i}'" for i in ids)


def _request_message(exc: HubRequestError, ctx: ErrorContext) -> str:
    head = _head(exc)
    device = f"device '{ctx.device_id}'" if ctx.device_id else "the device"
    job = f"job '{ctx.job_id}'" if ctx.job_id else "the job"
    if exc.code == 429004:
        found = _MAX_ACTIVE.search(exc.message)
        limit = int(found.group(1)) if found else None
        if limit == 1 or (limit is None and len(ctx.active_jobs) == 1):
            allowed = "only 1 job may run at a time on this hub tier"
        elif limit:
            allowed = f"only {limit} jobs may run at a time on this hub tier"
        else:
            allowed = "the hub tier's limit of active jobs is reached"
        if len(ctx.active_jobs) == 1:
            wait = f"wait for job '{ctx.active_jobs[0]}' to end"
        elif ctx.active_jobs:
            wait = f"wait for one of jobs {_quoted(ctx.active_jobs)} to end"
        else:
            wait = "wait for the active job to end"
        return f"{head}: {allowed}; {wait} (this job was not created)"
    if exc.code == 404103:
        within = f" within {ctx.connect_timeout} s" if ctx.connect_timeout is not None else ""
        return (
            f"{head}: {device} is offline (it did not connect{within}); bring it online or "
            "raise connectTimeoutInSeconds"
        )
    if exc.code == 504101:
        within = f" within {ctx.response_timeout} s" if ctx.response_timeout is not None else ""
        return (
            f"{head}: {device} did not respond{within}; check the device's method handler or "
            "raise responseTimeoutInSeconds"
        )
    if exc.code == 404002:
        return f"{head}: {job} does not exist on this hub; FindJobs lists the jobs"
    if exc.code == 404001:
        return f"{head}: {device} is not registered on this hub (or is disabled)"
    if exc.code == 409104:
        return (
            f"{head}: {job} already exists; choose another jobId or leave jobId empty for a new one"
        )
    if exc.code == 405102:
        detail = f" ({exc.message})" if exc.message else ""
        return f"{head}: {job} cannot be cancelled now{detail}; only jobs not yet running can be"
    if exc.code == 412001:
        return f"{head}: the twin changed meanwhile (etag mismatch); retry the call"
    if exc.code == 429001 or exc.http_status == 429:
        return f"{head}: IoT Hub is throttling the agent's requests; retry in a few seconds"
    if exc.http_status == 401:
        return (
            f"{head}: IoT Hub refused the agent's credentials; check iothub.connection_string "
            "on the agent"
        )
    detail = exc.message or "no details given"
    return f"{head}: {detail}"


def hub_failure(exc: IotHubError, ctx: ErrorContext | None = None) -> ServiceError:
    """The :class:`ServiceError` a caller gets for a failed IoT Hub call.

    Args:
        exc: the client's exception.
        ctx: what the message may name (job, device, timeouts, active jobs).

    Returns:
        A ServiceError with the mapped AlwaysOn status and a one-line message.
    """
    context = ctx or ErrorContext()
    if isinstance(exc, LaneFull):
        return ServiceError(str(exc), Status.SERVICE_UNAVAILABLE)
    if isinstance(exc, CallTooLarge):
        return ServiceError(
            f"{exc}; ask for less: FindJobs with type or status, QueryJobResults with a "
            "narrower query or a smaller maxRows",
            Status.ENTITY_TOO_LARGE,
        )
    if isinstance(exc, HubRequestError):
        return ServiceError(_request_message(exc, context), _status_for(exc))
    if isinstance(exc, HubTimeout) and not exc.connected:
        return ServiceError(
            f"{exc}; check the agent's network and iothub settings", Status.GATEWAY_TIMEOUT
        )
    if isinstance(exc, HubTimeout):
        return ServiceError(
            f"IoT Hub did not answer in time ({exc.timeout:g} s); the agent gave up waiting. "
            "If this was a Schedule call, check with FindJobs before retrying",
            Status.GATEWAY_TIMEOUT,
        )
    if isinstance(exc, HubUnreachable):
        return ServiceError(
            f"{exc}; check the agent's network and iothub settings", Status.SERVICE_UNAVAILABLE
        )
    return ServiceError(str(exc), Status.BAD_GATEWAY)  # HubResponseError and the rest
