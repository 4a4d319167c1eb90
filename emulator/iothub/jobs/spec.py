"""Validation of a ``PUT /jobs/v2/{id}`` body into a :class:`JobSpec`.

Rules (reference/iothub.md §3.1, §3.3, §3.7; choices where IoT Hub is silent are in
docs/job-engine.md):

- ``jobId``: 1..64 characters of ASCII letters, digits and ``-``; when the body carries one it
  must equal the id in the URL (a body without ``jobId`` takes the URL's) → 400004.
- ``type``: ``scheduleDeviceMethod`` or ``scheduleUpdateTwin``, exactly → else 400000.
- ``queryCondition``: a non-empty string of at most 8192 characters → else 400004. It is NOT
  parsed here: the service parses it when the job starts and a bad one fails the job.
- ``startTime`` (ISO-8601) and ``maxExecutionTimeInSeconds`` (integer > 0) are required → 400004;
  the window ``startTime + maxExecutionTimeInSeconds`` must end by 9999-12-31T23:59:59Z
  (:data:`LATEST_WINDOW_END`) → else 400004, so no job time can overflow.
- method jobs: ``cloudToDeviceMethod.methodName`` required; ``responseTimeoutInSeconds`` 5..300
  (default 30); ``connectTimeoutInSeconds`` 0..300 (default 0); ``payload`` ≤ 128 KB of JSON.
- twin jobs: ``updateTwin.etag`` must be ``"*"`` → else 412001; ``tags`` and/or
  ``properties.desired`` (objects, at least one); ``properties.reported`` is refused; both pass
  IoT Hub's twin limits (:mod:`emulator.iothub.twin_limits`: key rules, 10 levels deep, 4 KB
  strings, tags ≤ 8 KB, desired ≤ 32 KB) → 400004.
- the other type's section, when present and not null, is refused → 400004.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from emulator.iothub import twin_limits
from emulator.iothub.errors import HubError
from emulator.iothub.jobs.states import JobType
from emulator.iothub.jobs.timestamps import parse_utc

__all__ = [
    "LATEST_WINDOW_END",
    "MAX_QUERY_CHARS",
    "JobSpec",
    "MethodCall",
    "TwinPatch",
    "check_job_id",
    "parse_job_request",
]

MAX_QUERY_CHARS = 8192
MAX_METHOD_PAYLOAD_BYTES = 128 * 1024
MAX_TAGS_BYTES = twin_limits.MAX_TAGS_BYTES
MAX_DESIRED_BYTES = twin_limits.MAX_PROPERTIES_BYTES
LATEST_WINDOW_END = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
"""The last moment a job window may end: .NET's ``DateTime.MaxValue`` (to the second), the
service's own time type. IoT Hub documents no maximum for ``maxExecutionTimeInSeconds``; this
bound is the emulator's (unconfirmed point U-JOB-WINDOW in docs/iothub-emulator.md)."""
RESPONSE_TIMEOUT_RANGE = (5, 300)
CONNECT_TIMEOUT_RANGE = (0, 300)
DEFAULT_RESPONSE_TIMEOUT = 30
DEFAULT_CONNECT_TIMEOUT = 0

_JOB_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


@dataclass(frozen=True, slots=True)
class MethodCall:
    """The direct method a ``scheduleDeviceMethod`` job invokes."""

    method_name: str
    payload: Any
    response_timeout: int
    connect_timeout: int

    def to_json(self) -> dict[str, Any]:
        """``cloudToDeviceMethod`` as the job object shows it (defaults filled in)."""
        return {
            "methodName": self.method_name,
            "payload": self.payload,
            "responseTimeoutInSeconds": self.response_timeout,
            "connectTimeoutInSeconds": self.connect_timeout,
        }


@dataclass(frozen=True, slots=True)
class TwinPatch:
    """The twin update a ``scheduleUpdateTwin`` job applies (a forced update, etag ``*``).

    Attributes:
        tags: merge patch of the tags, or None.
        desired: merge patch of the desired properties, or None.
        as_sent: the ``updateTwin`` object as the caller sent it (shown back in the job).
    """

    tags: dict[str, Any] | None
    desired: dict[str, Any] | None
    as_sent: dict[str, Any]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A validated job request: everything that does not change while the job lives."""

    job_id: str
    job_type: JobType
    query_condition: str
    start_time: datetime
    max_execution_seconds: int
    method: MethodCall | None = None
    twin_patch: TwinPatch | None = None

    @property
    def window_end(self) -> datetime:
        """``startTime + maxExecutionTimeInSeconds``: when unfinished device jobs fail."""
        return self.start_time + timedelta(seconds=self.max_execution_seconds)

    def operation_json(self) -> dict[str, Any]:
        """The ``cloudToDeviceMethod`` or ``updateTwin`` member of the job object."""
        if self.method is not None:
            return {"cloudToDeviceMethod": self.method.to_json()}
        if self.twin_patch is not None:
            return {"updateTwin": self.twin_patch.as_sent}
        return {}


def check_job_id(job_id: str) -> None:
    """Refuse a job id that IoT Hub would refuse.

    Raises:
        HubError: 400004 ArgumentInvalid.
    """
    if not isinstance(job_id, str) or _JOB_ID.fullmatch(job_id) is None:
        raise HubError.argument_invalid(
            f"Invalid jobId '{job_id}': use 1 to 64 ASCII letters, digits or '-'."
        )


def parse_job_request(job_id: str, body: Mapping[str, Any]) -> JobSpec:
    """Validate a job request body the IoT Hub way.

    Args:
        job_id: the id from the URL (``PUT /jobs/v2/{job_id}``).
        body: the decoded JSON body (a JobRequest).

    Returns:
        The validated, normalised job.

    Raises:
        HubError: 400004 ArgumentInvalid, 400000 GenericBadRequest or 412001 PreconditionFailed.
    """
    check_job_id(job_id)
    if not isinstance(body, Mapping):
        raise HubError.argument_invalid("The job request body must be a JSON object.")
    body_id = body.get("jobId")
    if body_id is not None and body_id != job_id:
        raise HubError.argument_invalid(
            f"jobId '{body_id}' in the body does not match jobId '{job_id}' in the URL."
        )
    job_type = _job_type(body.get("type"))
    query = body.get("queryCondition")
    if not isinstance(query, str) or not query.strip():
        raise HubError.argument_invalid("queryCondition is required.")
    if len(query) > MAX_QUERY_CHARS:
        raise HubError.argument_invalid(
            f"queryCondition is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}."
        )
    start_time = _start_time(body.get("startTime"))
    max_seconds = _integer(body.get("maxExecutionTimeInSeconds"), "maxExecutionTimeInSeconds")
    if max_seconds is None or max_seconds <= 0:
        raise HubError.argument_invalid("maxExecutionTimeInSeconds is required and must be > 0.")
    longest = int((LATEST_WINDOW_END - start_time).total_seconds())
    if max_seconds > longest:
        raise HubError.argument_invalid(
            f"maxExecutionTimeInSeconds must be between 1 and {longest} for this startTime "
            f"(the job window must end by {LATEST_WINDOW_END:%Y-%m-%dT%H:%M:%SZ}); "
            f"got {max_seconds}."
        )
    if job_type is JobType.DEVICE_METHOD:
        if body.get("updateTwin") is not None:
            raise HubError.argument_invalid(
                "updateTwin is not allowed in a scheduleDeviceMethod job."
            )
        return JobSpec(
            job_id,
            job_type,
            query,
            start_time,
            max_seconds,
            method=_method_call(body.get("cloudToDeviceMethod")),
        )
    if body.get("cloudToDeviceMethod") is not None:
        raise HubError.argument_invalid(
            "cloudToDeviceMethod is not allowed in a scheduleUpdateTwin job."
        )
    return JobSpec(
        job_id,
        job_type,
        query,
        start_time,
        max_seconds,
        twin_patch=_twin_patch(body.get("updateTwin")),
    )


def _job_type(value: Any) -> JobType:
    for candidate in JobType:
        if value == candidate.value:
            return candidate
    raise HubError.generic_bad_request(
        f"Invalid job type '{value}': use scheduleDeviceMethod or scheduleUpdateTwin."
    )


def _start_time(value: Any) -> datetime:
    if not isinstance(value, str) or not value:
        raise HubError.argument_invalid("startTime is required (ISO-8601, UTC).")
    try:
        return parse_utc(value)
    except (ValueError, OverflowError):  # OverflowError: a zone shift past year 1 or 9999
        raise HubError.argument_invalid(f"startTime '{value}' is not an ISO-8601 time.") from None


def _integer(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise HubError.argument_invalid(f"{name} must be an integer.")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise HubError.argument_invalid(f"{name} must be an integer.")


def _method_call(value: Any) -> MethodCall:
    if not isinstance(value, Mapping):
        raise HubError.argument_invalid("cloudToDeviceMethod is required for scheduleDeviceMethod.")
    name = value.get("methodName")
    if not isinstance(name, str) or not name:
        raise HubError.argument_invalid("cloudToDeviceMethod.methodName is required.")
    response_timeout = _ranged(
        value.get("responseTimeoutInSeconds"),
        "responseTimeoutInSeconds",
        RESPONSE_TIMEOUT_RANGE,
        DEFAULT_RESPONSE_TIMEOUT,
    )
    connect_timeout = _ranged(
        value.get("connectTimeoutInSeconds"),
        "connectTimeoutInSeconds",
        CONNECT_TIMEOUT_RANGE,
        DEFAULT_CONNECT_TIMEOUT,
    )
    payload = value.get("payload")
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    if size > MAX_METHOD_PAYLOAD_BYTES:
        raise HubError.argument_invalid(
            f"The method payload is {size} bytes; the limit is {MAX_METHOD_PAYLOAD_BYTES}."
        )
    return MethodCall(name, payload, response_timeout, connect_timeout)


def _ranged(value: Any, name: str, bounds: tuple[int, int], default: int) -> int:
    number = _integer(value, name)
    if number is None:
        return default
    low, high = bounds
    if not low <= number <= high:
        raise HubError.argument_invalid(f"{name} must be between {low} and {high}; got {number}.")
    return number


def _twin_patch(value: Any) -> TwinPatch:
    if not isinstance(value, Mapping):
        raise HubError.argument_invalid("updateTwin is required for scheduleUpdateTwin.")
    if value.get("etag") != "*":
        raise HubError.precondition_failed(
            "A twin update job is a forced update: set updateTwin.etag to '*'."
        )
    tags = value.get("tags")
    properties = value.get("properties")
    if properties is not None and not isinstance(properties, Mapping):
        raise HubError.argument_invalid("updateTwin.properties must be an object.")
    if properties is not None and properties.get("reported") is not None:
        raise HubError.argument_invalid(
            "updateTwin.properties.reported cannot be set by a job: only devices write it."
        )
    desired = properties.get("desired") if properties is not None else None
    for section, limit, label in (
        (tags, MAX_TAGS_BYTES, "tags"),
        (desired, MAX_DESIRED_BYTES, "properties.desired"),
    ):
        if section is None:
            continue
        if not isinstance(section, Mapping):
            raise HubError.argument_invalid(f"updateTwin.{label} must be an object.")
        twin_limits.check_section(section, f"updateTwin.{label}", system_members=False)
        twin_limits.check_growth(None, section, f"updateTwin.{label}", limit)
    if not tags and not desired:
        raise HubError.argument_invalid(
            "updateTwin needs tags and/or properties.desired with at least one member."
        )
    return TwinPatch(
        dict(tags) if tags else None,
        dict(desired) if desired else None,
        json.loads(json.dumps(dict(value))),
    )
