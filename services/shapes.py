"""The DataShapes of the job services' results, and the rows built from the IoT Hub client's models.

``AzureIotDeviceJob``, ``AzureIotDeviceJobResult``, ``AzureIotDeviceMethodResult`` and
``AzureIotDeviceConnection`` exactly as docs/services.md lists them (``jobId``/``deviceId`` are
primary keys through the ``isPrimaryKey`` aspect). Composer grids and mashups bind to these
names: change them only on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from agent.alwayson import BaseType, DataShape, FieldDefinition, InfoTable
from agent.iothub import DeviceJobResult, Job, MethodResult
from services.mapping import TERMINAL_STATUSES, device_job_status, job_status, job_type

__all__ = [
    "DEVICE_CONNECTION_SHAPE",
    "JOB_RESULT_SHAPE",
    "JOB_SHAPE",
    "METHOD_RESULT_SHAPE",
    "column",
    "job_row",
    "job_summary",
    "job_table",
    "method_result_table",
    "result_row",
    "result_table",
]

_KEY = {"isPrimaryKey": True}


def column(name: str, base_type: BaseType, description: str, key: bool = False) -> FieldDefinition:
    """A result DataShape's column (``key``: the row's primary key, ``isPrimaryKey``)."""
    return FieldDefinition(name, base_type, description, _KEY if key else {})


JOB_SHAPE = DataShape.of(
    column("jobId", BaseType.STRING, "the job's id", key=True),
    column("type", BaseType.STRING, "twinUpdate or deviceMethod"),
    column("status", BaseType.STRING, "scheduled, pending, running, completed, failed, cancelled"),
    column("hubStatus", BaseType.STRING, "the status exactly as IoT Hub reported it"),
    column(
        "queryCondition", BaseType.STRING, "the devices the job targets (twin query WHERE part)"
    ),
    column("createdTime", BaseType.DATETIME, "when the job was created (UTC)"),
    column("startTime", BaseType.DATETIME, "when the job starts (UTC)"),
    column("endTime", BaseType.DATETIME, "when the job ended (UTC)"),
    column("maxExecutionTimeInSeconds", BaseType.LONG, "the job window, seconds"),
    column("methodName", BaseType.STRING, "the direct method of a deviceMethod job"),
    column("payload", BaseType.JSON, "the method payload of a deviceMethod job"),
    column("responseTimeoutInSeconds", BaseType.INTEGER, "method response timeout, seconds"),
    column("connectTimeoutInSeconds", BaseType.INTEGER, "device connect timeout, seconds"),
    column("patch", BaseType.JSON, "the twin patch of a twinUpdate job"),
    column("deviceCount", BaseType.INTEGER, "devices the job targets"),
    column("succeededCount", BaseType.INTEGER, "devices that succeeded"),
    column("failedCount", BaseType.INTEGER, "devices that failed"),
    column("runningCount", BaseType.INTEGER, "devices running the job now"),
    column("pendingCount", BaseType.INTEGER, "devices waiting to run the job"),
    column("failureReason", BaseType.STRING, "why the job failed, if it did"),
    column("statusMessage", BaseType.STRING, "IoT Hub's status message"),
    column("warnings", BaseType.STRING, "what the agent changed in the request, and why"),
    column(
        "summary",
        BaseType.STRING,
        "the outcome in words, e.g. completed: 8 succeeded, 2 failed (2 offline)",
    ),
    column(
        "continuationToken",
        BaseType.STRING,
        "FindJobs/QueryJobResults, first row only: pass it back for the next page; empty on the "
        "last page",
    ),
    name="AzureIotDeviceJob",
)

JOB_RESULT_SHAPE = DataShape.of(
    column("deviceId", BaseType.STRING, "the device", key=True),
    column("jobId", BaseType.STRING, "the job"),
    column("type", BaseType.STRING, "twinUpdate or deviceMethod"),
    column("status", BaseType.STRING, "pending, scheduled, running, completed, failed, cancelled"),
    column("createdTime", BaseType.DATETIME, "when the device job was created (UTC)"),
    column("startTime", BaseType.DATETIME, "when the job started (UTC)"),
    column("endTime", BaseType.DATETIME, "when the job's window ends or ended (UTC)"),
    column("lastUpdatedTime", BaseType.DATETIME, "last change of this row (UTC)"),
    column("methodStatus", BaseType.INTEGER, "the device's status answer to the method"),
    column("methodPayload", BaseType.JSON, "the device's payload answer to the method"),
    column("errorCode", BaseType.STRING, "IoT Hub's error code for this device, if it failed"),
    column("errorDescription", BaseType.STRING, "IoT Hub's error text for this device"),
    column(
        "continuationToken",
        BaseType.STRING,
        "FindJobs/QueryJobResults, first row only: pass it back for the next page; empty on the "
        "last page",
    ),
    name="AzureIotDeviceJobResult",
)

METHOD_RESULT_SHAPE = DataShape.of(
    column("deviceId", BaseType.STRING, "the device", key=True),
    column("status", BaseType.INTEGER, "the device's status answer"),
    column("payload", BaseType.JSON, "the device's payload answer"),
    name="AzureIotDeviceMethodResult",
)


DEVICE_CONNECTION_SHAPE = DataShape.of(
    column("deviceId", BaseType.STRING, "the device", key=True),
    column("connectionState", BaseType.STRING, "Connected or Disconnected, as the twin says"),
    column("status", BaseType.STRING, "enabled or disabled, as the twin says"),
    column("lastActivityTime", BaseType.DATETIME, "the device's last activity (UTC), if any"),
    name="AzureIotDeviceConnection",
)


def _patch_of(update_twin: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not update_twin:
        return None
    return {k: v for k, v in update_twin.items() if k in ("tags", "properties")} or None


def job_summary(
    status: str, job: Job, failures: Mapping[str, int] | None = None
) -> tuple[str, list[str]]:
    """The ``summary`` of a job row and the warnings its outcome calls for.

    Args:
        status: the product's status word.
        job: the job (its statistics give the counts).
        failures: failed devices by kind (``offline``, ``no response``, an IoT Hub error name),
            when they were read; shown in brackets after the failed count.

    Returns:
        e.g. ``("completed: 8 succeeded, 2 failed (2 offline)", [])``; a job that ended with no
        device gets the warning that its condition matched none.
    """
    stats = job.statistics
    if stats is None or stats.device_count is None:
        return status, []
    counts = [f"{stats.succeeded_count or 0} succeeded", f"{stats.failed_count or 0} failed"]
    if failures:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(failures.items()))
        counts[1] += f" ({kinds})"
    if stats.running_count:
        counts.append(f"{stats.running_count} running")
    if stats.pending_count:
        counts.append(f"{stats.pending_count} pending")
    if status in TERMINAL_STATUSES and stats.device_count == 0:
        warning = (
            f"queryCondition {job.query_condition!r} matched no device"
            if job.query_condition
            else "the job's condition matched no device"
        )
        return f"{status}: no device", [f"{warning}: check the condition with a twin query"]
    return f"{status}: {', '.join(counts)}", []


def job_row(
    job: Job,
    now: datetime,
    warnings: Sequence[str] = (),
    failures: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """One ``AzureIotDeviceJob`` row from a job.

    Args:
        job: the job as the client returned it.
        now: the current time (UTC), to tell a queued job whose start is ahead (``scheduled``).
        warnings: what the agent changed in the request, joined with ``"; "``.
        failures: failed devices by kind, for the summary (see :func:`job_summary`).
    """
    stats = job.statistics
    status = job_status(job.status, job.start_time, now)
    summary, outcome_warnings = job_summary(status, job, failures)
    warnings = [*warnings, *outcome_warnings]
    return {
        "jobId": job.job_id,
        "type": job_type(job.type),
        "status": status,
        "hubStatus": job.status,
        "queryCondition": job.query_condition,
        "createdTime": job.created_time,
        "startTime": job.start_time,
        "endTime": job.end_time,
        "maxExecutionTimeInSeconds": job.max_execution_time,
        "methodName": job.method_name,
        "payload": job.payload,
        "responseTimeoutInSeconds": job.response_timeout,
        "connectTimeoutInSeconds": job.connect_timeout,
        "patch": _patch_of(job.update_twin),
        "deviceCount": stats.device_count if stats else None,
        "succeededCount": stats.succeeded_count if stats else None,
        "failedCount": stats.failed_count if stats else None,
        "runningCount": stats.running_count if stats else None,
        "pendingCount": stats.pending_count if stats else None,
        "failureReason": job.failure_reason,
        "statusMessage": job.status_message,
        "warnings": "; ".join(warnings) if warnings else None,
        "summary": summary,
    }


def _with_token(rows: list[dict[str, Any]], continuation: str | None) -> list[dict[str, Any]]:
    """``rows`` with ``continuationToken`` set on the first row (when there is one)."""
    if continuation and rows:
        rows[0]["continuationToken"] = continuation
    return rows


def job_table(
    jobs: Sequence[Job],
    now: datetime,
    warnings: Sequence[str] = (),
    failures: Mapping[str, int] | None = None,
    *,
    continuation: str | None = None,
) -> InfoTable:
    """An ``AzureIotDeviceJob`` table, a row per job (``failures``: of a one-job table;
    ``continuation``: the next page's token, on the first row)."""
    rows = [job_row(job, now, warnings, failures) for job in jobs]
    return InfoTable(JOB_SHAPE, _with_token(rows, continuation))


def result_row(row: DeviceJobResult) -> dict[str, Any]:
    """One ``AzureIotDeviceJobResult`` row from a ``devices.jobs`` row."""
    return {
        "deviceId": row.device_id,
        "jobId": row.job_id,
        "type": job_type(row.job_type),
        "status": device_job_status(row.status),
        "createdTime": row.created_time,
        "startTime": row.start_time,
        "endTime": row.end_time,
        "lastUpdatedTime": row.last_updated_time,
        "methodStatus": row.method_status,
        "methodPayload": row.method_payload,
        "errorCode": row.error_code,
        "errorDescription": row.error_description,
    }


def result_table(rows: Sequence[DeviceJobResult], *, continuation: str | None = None) -> InfoTable:
    """An ``AzureIotDeviceJobResult`` table, a row per device (``continuation``: the next
    page's token, on the first row)."""
    return InfoTable(JOB_RESULT_SHAPE, _with_token([result_row(r) for r in rows], continuation))


def method_result_table(device_id: str, result: MethodResult) -> InfoTable:
    """An ``AzureIotDeviceMethodResult`` table of one row."""
    return InfoTable(
        METHOD_RESULT_SHAPE,
        [{"deviceId": device_id, "status": result.status, "payload": result.payload}],
    )
