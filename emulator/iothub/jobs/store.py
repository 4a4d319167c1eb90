"""The job engine's SQLite tables: ``jobs`` and ``device_jobs``.

Rules: this module owns these two tables and nothing reads them but the engine (through this
class). Every method that changes state commits before it returns, so whatever the engine reports
afterwards survives a SIGKILL. Bulk changes go through one ``executemany`` in one transaction.
A job row keeps its validated request as JSON (re-validated on load, so there is one parser; a
stored request that no longer validates, written by an older emulator under looser rules, loads
as a ``failed`` job whose reason says why);
a device-job row keeps only what varies per device (status, times, outcome, error): the job type
and the job's times are joined in by the engine when it builds ``devices.jobs`` rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeAlias

from emulator.iothub.database import Database
from emulator.iothub.errors import HubError
from emulator.iothub.jobs.spec import JobSpec, parse_job_request
from emulator.iothub.jobs.states import DeviceJobStatus, JobStatus, JobType
from emulator.iothub.jobs.timestamps import format_utc, parse_utc
from emulator.iothub.twin_limits import decode_json

__all__ = ["DeviceRowRecord", "JobRecord", "JobStore", "RowChange"]

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS jobs (
        job_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        status TEXT NOT NULL,
        request TEXT NOT NULL,
        created_time TEXT NOT NULL,
        end_time TEXT,
        failure_reason TEXT,
        status_message TEXT
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS device_jobs (
        job_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        status TEXT NOT NULL,
        created TEXT NOT NULL,
        updated TEXT NOT NULL,
        outcome TEXT NOT NULL,
        error TEXT,
        PRIMARY KEY (job_id, device_id)
    ) WITHOUT ROWID
    """,
)


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as the engine knows it: its validated request plus its changing state.

    Attributes:
        spec: the validated request.
        seq: creation order (list_jobs answers oldest first).
        status: the job's status.
        created_time: when the job was created.
        end_time: when it became terminal, else None.
        failure_reason: why it failed (job-level failures only), else None.
        status_message: a human-readable status detail, else None.
    """

    spec: JobSpec
    seq: int
    status: JobStatus
    created_time: datetime
    end_time: datetime | None = None
    failure_reason: str | None = None
    status_message: str | None = None


@dataclass(frozen=True, slots=True)
class RowChange:
    """One device-job row's new state.

    Attributes:
        device_id: the device.
        status: its new status.
        outcome: the ``outcome`` member (``{}`` unless a method answered).
        error: the ``error`` member (``{"code", "description"}``) when failed, else None.
    """

    device_id: str
    status: DeviceJobStatus
    outcome: dict[str, Any]
    error: dict[str, str] | None = None


DeviceRowRecord: TypeAlias = tuple[str, str, str, str, str, str, str | None]
"""A stored device-job row as SQLite returns it (a plain tuple: pages of 1,000 rows are read
often): (jobId, deviceId, status, createdDateTimeUtc, lastUpdatedDateTimeUtc, outcome JSON,
error JSON or None); the status is a :class:`DeviceJobStatus` value, as this store wrote it."""


class JobStore:
    """Reads and writes the ``jobs`` and ``device_jobs`` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def create_tables(self) -> None:
        """Create both tables if they do not exist."""
        with self._db.transaction() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)

    def next_seq(self) -> int:
        """The creation sequence number for a new job."""
        row = self._db.connection.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()
        return int(row[0])

    def insert_job(self, job: JobRecord) -> None:
        """Store a new job (committed on return)."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO jobs (job_id, seq, status, request, created_time, end_time,"
                " failure_reason, status_message) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.spec.job_id,
                    job.seq,
                    job.status.value,
                    json.dumps(_request_json(job.spec)),
                    job.created_time.isoformat(),
                    _iso_or_none(job.end_time),
                    job.failure_reason,
                    job.status_message,
                ),
            )

    def update_job(self, job: JobRecord) -> None:
        """Store a job's changed state (committed on return)."""
        with self._db.transaction() as conn:
            self._update_job(conn, job)

    def start_job(self, job: JobRecord, device_ids: Sequence[str], now: datetime) -> None:
        """Store a job that starts running together with its pending device rows, atomically.

        Args:
            job: the job, already in status running.
            device_ids: the devices the query selected.
            now: the rows' creation time.
        """
        stamp = format_utc(now)
        with self._db.transaction() as conn:
            self._update_job(conn, job)
            conn.executemany(
                "INSERT INTO device_jobs (job_id, device_id, status, created, updated, outcome,"
                " error) VALUES (?, ?, 'pending', ?, ?, '{}', NULL)",
                ((job.spec.job_id, device_id, stamp, stamp) for device_id in device_ids),
            )

    def update_rows(self, job_id: str, changes: Iterable[RowChange], now: datetime) -> None:
        """Store new states of device rows in one transaction (committed on return)."""
        stamp = format_utc(now)
        with self._db.transaction() as conn:
            conn.executemany(
                "UPDATE device_jobs SET status = ?, updated = ?, outcome = ?, error = ?"
                " WHERE job_id = ? AND device_id = ?",
                (
                    (
                        change.status.value,
                        stamp,
                        json.dumps(change.outcome),
                        None if change.error is None else json.dumps(change.error),
                        job_id,
                        change.device_id,
                    )
                    for change in changes
                ),
            )

    def set_rows_status(
        self,
        job_id: str,
        device_ids: Iterable[str],
        status: DeviceJobStatus,
        now: datetime,
    ) -> None:
        """Set the status of many rows, leaving outcome and error as they are."""
        stamp = format_utc(now)
        with self._db.transaction() as conn:
            conn.executemany(
                "UPDATE device_jobs SET status = ?, updated = ? WHERE job_id = ? AND device_id = ?",
                ((status.value, stamp, job_id, device_id) for device_id in device_ids),
            )

    def fail_unfinished(self, job_id: str, error: dict[str, str], now: datetime) -> int:
        """Fail every pending or running row of a job; return how many rows changed."""
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE device_jobs SET status = 'failed', updated = ?, outcome = '{}', error = ?"
                " WHERE job_id = ? AND status IN ('pending', 'running')",
                (format_utc(now), json.dumps(error), job_id),
            )
            return cursor.rowcount

    def load_jobs(self) -> list[JobRecord]:
        """Every stored job, oldest first."""
        rows = self._db.connection.execute(
            "SELECT job_id, seq, status, request, created_time, end_time, failure_reason,"
            " status_message FROM jobs ORDER BY seq"
        ).fetchall()
        jobs: list[JobRecord] = []
        for job_id, seq, status, request, created, end, reason, message in rows:
            job = JobRecord(
                spec=_stored_spec(job_id, request, parse_utc(created)),
                seq=seq,
                status=JobStatus(status),
                created_time=parse_utc(created),
                end_time=None if end is None else parse_utc(end),
                failure_reason=reason,
                status_message=message,
            )
            if isinstance(job.spec, _UnloadableSpec) and not job.status.is_terminal:
                # Written by an older emulator under looser rules (e.g. an unbounded window):
                # the job fails for good instead of blocking a tier slot forever.
                text = f"Internal error: the stored job request is invalid: {job.spec.error}"
                job = replace(
                    job,
                    status=JobStatus.FAILED,
                    end_time=job.created_time,
                    failure_reason=text,
                    status_message=text,
                )
                self.update_job(job)
            jobs.append(job)
        return jobs

    def count_rows(self) -> dict[str, dict[DeviceJobStatus, int]]:
        """Per job, how many device rows are in each status."""
        counts: dict[str, dict[DeviceJobStatus, int]] = {}
        for job_id, status, count in self._db.connection.execute(
            "SELECT job_id, status, COUNT(*) FROM device_jobs GROUP BY job_id, status"
        ):
            counts.setdefault(job_id, {})[DeviceJobStatus(status)] = int(count)
        return counts

    def unfinished_rows(self, job_id: str) -> list[tuple[str, DeviceJobStatus]]:
        """(deviceId, status) of every pending or running row of a job, by device id."""
        return [
            (device_id, DeviceJobStatus(status))
            for device_id, status in self._db.connection.execute(
                "SELECT device_id, status FROM device_jobs"
                " WHERE job_id = ? AND status IN ('pending', 'running') ORDER BY device_id",
                (job_id,),
            )
        ]

    def read_rows(
        self,
        job_id: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int | None = None,
    ) -> list[DeviceRowRecord]:
        """Device rows (of one job, or of all) in (jobId, deviceId) order: only those after the
        key ``after`` (jobId, deviceId) when given, at most ``limit`` when given. The key is the
        table's primary key, so a page costs what it reads, not the table."""
        sql = "SELECT job_id, device_id, status, created, updated, outcome, error FROM device_jobs"
        where: list[str] = []
        params: list[str | int] = []
        if job_id is not None:
            where.append("job_id = ?")
            params.append(job_id)
            if after is not None and after[0] > job_id:
                return []
        if after is not None and job_id is None:
            where.append("(job_id, device_id) > (?, ?)")
            params.extend(after)
        elif after is not None and after[0] == job_id:
            # Not the row value here: with job_id = ? SQLite would scan the job from its start.
            where.append("device_id > ?")
            params.append(after[1])
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY job_id, device_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        # Fetch eagerly: a lazy cursor would see (and be confused by) the engine's later writes.
        rows: list[DeviceRowRecord] = self._db.connection.execute(sql, params).fetchall()
        return rows

    @staticmethod
    def _update_job(conn: Any, job: JobRecord) -> None:
        conn.execute(
            "UPDATE jobs SET status = ?, end_time = ?, failure_reason = ?, status_message = ?"
            " WHERE job_id = ?",
            (
                job.status.value,
                _iso_or_none(job.end_time),
                job.failure_reason,
                job.status_message,
                job.spec.job_id,
            ),
        )


def _request_json(spec: JobSpec) -> dict[str, Any]:
    body: dict[str, Any] = {
        "jobId": spec.job_id,
        "type": spec.job_type.value,
        "queryCondition": spec.query_condition,
        "startTime": spec.start_time.isoformat(),
        "maxExecutionTimeInSeconds": spec.max_execution_seconds,
    }
    body.update(spec.operation_json())
    return body


def _iso_or_none(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


@dataclass(frozen=True, slots=True)
class _UnloadableSpec(JobSpec):
    """The stand-in spec of a stored job whose request no longer validates (``error`` says
    why): enough to show and list the job, never run."""

    error: str = ""


def _stored_spec(job_id: str, request: str, created: datetime) -> JobSpec:
    body: Any = None
    try:
        body = decode_json(request)
        return parse_job_request(job_id, body)
    except HubError as exc:
        error = exc.message
    except ValueError as exc:
        error = str(exc)
    kind = body.get("type") if isinstance(body, dict) else None
    job_type = JobType.UPDATE_TWIN if kind == JobType.UPDATE_TWIN else JobType.DEVICE_METHOD
    return _UnloadableSpec(job_id, job_type, "", created, 1, error=error[:200])
