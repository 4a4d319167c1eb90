"""What the IoT Hub client returns: frozen dataclasses read from IoT Hub's JSON.

Rules:
- Values keep IoT Hub's own words (job types ``scheduleUpdateTwin``/``scheduleDeviceMethod``,
  statuses ``queued``, ``canceled``...); translating them into the product's words is the
  services' business.
- Readers are lenient about the field-name variants the service is known to use
  (reference/iothub.md §1.4: ``type``/``jobType``, ``createdTime``/``createdDateTimeUtc``,
  ``startTime``/``startTimeUtc``, ``endTime``/``endTimeUtc``) and about missing fields (a create
  answer may be minimal). Times are timezone-aware UTC; the service's "unset" time
  (``0001-01-01T00:00:00``) reads as None.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

__all__ = [
    "DeviceJobResult",
    "Job",
    "JobStatistics",
    "MethodResult",
    "parse_hub_time",
]

_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*(Z|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE,
)


def parse_hub_time(value: Any) -> datetime | None:
    """Read an IoT Hub time (ISO-8601, up to 7 fraction digits, ``Z`` or an offset) as UTC.

    Args:
        value: a string, a datetime, or None.

    Returns:
        A timezone-aware UTC datetime, or None for a missing, unreadable or unset (year 1) time.
    """
    if isinstance(value, datetime):
        parsed = value if value.tzinfo else value.replace(tzinfo=UTC)
        return None if parsed.year <= 1 else parsed.astimezone(UTC)
    if not isinstance(value, str):
        return None
    return _parse_hub_text(value)


@lru_cache(maxsize=4096)
def _parse_hub_text(value: str) -> datetime | None:
    """:func:`parse_hub_time` of a string, cached: the rows of one job's results repeat the same
    times (its start and end on every row), and a datetime is immutable."""
    match = _ISO.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if int(year) <= 1:
        return None
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        parsed = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, UTC
        )
    except ValueError:
        return None
    if zone and zone.upper() != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
        parsed = datetime.fromtimestamp(parsed.timestamp() - offset, UTC)
    return parsed


def _pick(doc: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in doc and doc[key] is not None:
            return doc[key]
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class JobStatistics:
    """IoT Hub's ``deviceJobStatistics`` of a job."""

    device_count: int | None = None
    succeeded_count: int | None = None
    failed_count: int | None = None
    running_count: int | None = None
    pending_count: int | None = None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> JobStatistics:
        """Read a ``deviceJobStatistics`` object."""
        return cls(
            device_count=_int(doc.get("deviceCount")),
            succeeded_count=_int(doc.get("succeededCount")),
            failed_count=_int(doc.get("failedCount")),
            running_count=_int(doc.get("runningCount")),
            pending_count=_int(doc.get("pendingCount")),
        )


@dataclass(frozen=True)
class Job:
    """A v2 (scheduled) job as IoT Hub reports it (reference §1.7 JobResponse)."""

    job_id: str
    type: str = ""
    status: str = ""
    query_condition: str | None = None
    created_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    max_execution_time: int | None = None
    method_name: str | None = None
    payload: Any = None
    response_timeout: int | None = None
    connect_timeout: int | None = None
    update_twin: Mapping[str, Any] | None = None
    failure_reason: str | None = None
    status_message: str | None = None
    statistics: JobStatistics | None = None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Job:
        """Read a job object of ``/jobs/v2`` (create, get, cancel or query answers).

        Raises:
            ValueError: when ``doc`` is not an object with a ``jobId``.
        """
        if not isinstance(doc, Mapping) or not isinstance(doc.get("jobId"), str):
            raise ValueError("a job object must carry a string jobId")
        method = doc.get("cloudToDeviceMethod")
        method = method if isinstance(method, Mapping) else {}
        twin = doc.get("updateTwin")
        stats = doc.get("deviceJobStatistics")
        return cls(
            job_id=doc["jobId"],
            type=_str(_pick(doc, "type", "jobType")) or "",
            status=_str(doc.get("status")) or "",
            query_condition=_str(doc.get("queryCondition")),
            created_time=parse_hub_time(_pick(doc, "createdTime", "createdDateTimeUtc")),
            start_time=parse_hub_time(_pick(doc, "startTime", "startTimeUtc")),
            end_time=parse_hub_time(_pick(doc, "endTime", "endTimeUtc")),
            max_execution_time=_int(doc.get("maxExecutionTimeInSeconds")),
            method_name=_str(method.get("methodName")),
            payload=method.get("payload"),
            response_timeout=_int(method.get("responseTimeoutInSeconds")),
            connect_timeout=_int(method.get("connectTimeoutInSeconds")),
            update_twin=dict(twin) if isinstance(twin, Mapping) else None,
            failure_reason=_str(doc.get("failureReason")),
            status_message=_str(doc.get("statusMessage")),
            statistics=JobStatistics.from_json(stats) if isinstance(stats, Mapping) else None,
        )


@dataclass(frozen=True)
class DeviceJobResult:
    """One ``devices.jobs`` row: a job's outcome on one device (reference §3.5)."""

    device_id: str
    job_id: str = ""
    job_type: str = ""
    status: str = ""
    created_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    last_updated_time: datetime | None = None
    method_status: int | None = None
    method_payload: Any = None
    error_code: str | None = None
    error_description: str | None = None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DeviceJobResult:
        """Read a ``devices.jobs`` row (``deviceId``, ``jobId``, ``outcome``, ``error``...)."""
        outcome = doc.get("outcome")
        response = outcome.get("deviceMethodResponse") if isinstance(outcome, Mapping) else None
        response = response if isinstance(response, Mapping) else {}
        error = doc.get("error")
        error = error if isinstance(error, Mapping) else {}
        code = error.get("code")
        return cls(
            device_id=_str(doc.get("deviceId")) or "",
            job_id=_str(doc.get("jobId")) or "",
            job_type=_str(_pick(doc, "jobType", "type")) or "",
            status=_str(doc.get("status")) or "",
            created_time=parse_hub_time(
                _pick(doc, "createdDateTimeUtc", "createdTimeUtc", "createdTime")
            ),
            start_time=parse_hub_time(_pick(doc, "startTimeUtc", "startTime")),
            end_time=parse_hub_time(_pick(doc, "endTimeUtc", "endTime")),
            last_updated_time=parse_hub_time(doc.get("lastUpdatedDateTimeUtc")),
            method_status=_int(response.get("status")),
            method_payload=response.get("payload"),
            error_code=None if code is None else str(code),
            error_description=_str(error.get("description")),
        )


@dataclass(frozen=True)
class MethodResult:
    """A device's answer to a direct method: its status code and JSON payload."""

    status: int
    payload: Any = None
