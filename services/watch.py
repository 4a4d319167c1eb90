"""One watcher for every active job: the hub reads of GetJob shared, and progress pushed.

:class:`JobWatch` keeps the last read of each job the agent created or was asked about and reads
it again, at most once per ``jobs.watch_interval`` (5 s by default, backing off for long jobs up
to ``jobs.watch_max_interval``), until the job ends. GetJob is answered from that read when it
is fresher than ``watch_interval``; concurrent callers of a stale job share one read. So the hub
sees one read per interval per job, however many callers follow it.

Each read that changes a job's status or counters is pushed to ThingWorx (docs/services.md,
"Properties and events"):

- gateway Thing: properties ``activeJobCount`` (INTEGER) and ``lastJob`` (JSON, the status row),
  event ``AzureIotDeviceJobStatusChanged`` (one ``AzureIotDeviceJob`` row) on each change, and
  ``AzureIotDeviceJobEnded`` (one ``AzureIotDeviceJobEndedSummary`` row) when the job ends; its
  ``failedDevices`` and ``summary`` say plainly when devices failed in a job IoT Hub calls
  ``completed``;
- device Things bound to this agent: property ``lastJobResult`` (JSON, the device's row of its
  last job) and event ``AzureIotDeviceJobDeviceResult`` (one ``AzureIotDeviceJobResult`` row),
  read once when a job ends (one query of the job's device rows, bounded by ``_RESULT_ROWS``).

Rules:
- :meth:`JobWatch.run` is one task, owned by :class:`~agent.app.AgentApp`'s TaskGroup; the
  reads of GetJob callers and of the loop go through one single-flight method
  (:meth:`JobWatch.read`), so a job is never read twice at once.
- A read that fails keeps the job watched (the next interval retries); a job not found (404)
  stops being watched. Time is injected (``monotonic``, ``clock``).
- Pushes go to a :class:`Publisher` (the channel), which queues them while the link is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from agent.alwayson import (
    BaseType,
    DataShape,
    EventMetadata,
    FieldDefinition,
    InfoTable,
    PropertyMetadata,
    PropertyValue,
)
from agent.iothub import HubRequestError, IotHubClient, IotHubError, Job
from agent.settings import JobSettings
from services.mapping import TERMINAL_STATUSES, job_status
from services.shapes import JOB_RESULT_SHAPE, JOB_SHAPE, job_row, result_row

__all__ = [
    "ACTIVE_JOB_COUNT",
    "DEVICE_RESULT_EVENT",
    "ENDED_SHAPE",
    "JOB_ENDED_EVENT",
    "LAST_JOB",
    "LAST_JOB_RESULT",
    "STATUS_CHANGED_EVENT",
    "JobWatch",
    "Publisher",
    "device_events",
    "device_properties",
    "gateway_events",
    "gateway_properties",
]

ACTIVE_JOB_COUNT = "activeJobCount"
LAST_JOB = "lastJob"
LAST_JOB_RESULT = "lastJobResult"
STATUS_CHANGED_EVENT = "AzureIotDeviceJobStatusChanged"
JOB_ENDED_EVENT = "AzureIotDeviceJobEnded"
DEVICE_RESULT_EVENT = "AzureIotDeviceJobDeviceResult"

ENDED_SHAPE = DataShape.of(
    FieldDefinition("jobId", BaseType.STRING, "the job", {"isPrimaryKey": True}),
    FieldDefinition("status", BaseType.STRING, "completed, failed or cancelled"),
    FieldDefinition("hubStatus", BaseType.STRING, "the status exactly as IoT Hub reported it"),
    FieldDefinition("deviceCount", BaseType.INTEGER, "devices the job targeted"),
    FieldDefinition("succeededCount", BaseType.INTEGER, "devices that succeeded"),
    FieldDefinition("failedCount", BaseType.INTEGER, "devices that failed"),
    FieldDefinition(
        "failedDevices", BaseType.BOOLEAN, "true when any device failed, whatever the status"
    ),
    FieldDefinition("summary", BaseType.STRING, "the outcome in words"),
    name="AzureIotDeviceJobEndedSummary",
)

_PUSHED = {"pushType": "VALUE", "pushThreshold": 0.0}
_RESULT_ROWS = 1000  # device rows read when a job ends (devices bound here are usually fewer)
_LONG_JOB = 300.0  # s: a job older than this is read less often (interval grows with its age)
_CHANGE_KEYS = ("status", "hubStatus", "succeededCount", "failedCount", "runningCount",
                "pendingCount", "deviceCount")  # fmt: skip


def gateway_properties() -> list[PropertyMetadata]:
    """The gateway Thing's pushed properties."""
    return [
        PropertyMetadata(ACTIVE_JOB_COUNT, BaseType.INTEGER, "jobs being watched now", _PUSHED),
        PropertyMetadata(LAST_JOB, BaseType.JSON, "the last status row of a job", _PUSHED),
    ]


def gateway_events() -> list[EventMetadata]:
    """The gateway Thing's events."""
    return [
        EventMetadata(STATUS_CHANGED_EVENT, JOB_SHAPE, "a job's status or counters changed"),
        EventMetadata(JOB_ENDED_EVENT, ENDED_SHAPE, "a job ended; says when devices failed"),
    ]


def device_properties() -> list[PropertyMetadata]:
    """A device Thing's pushed properties."""
    return [
        PropertyMetadata(
            LAST_JOB_RESULT, BaseType.JSON, "the device's row of its last job", _PUSHED
        )
    ]


def device_events() -> list[EventMetadata]:
    """A device Thing's events."""
    return [EventMetadata(DEVICE_RESULT_EVENT, JOB_RESULT_SHAPE, "the device's result of a job")]


class Publisher(Protocol):
    """Where pushes go (the AlwaysOn channel)."""

    def push_properties(self, thing: str, values: list[PropertyValue]) -> None:
        """Queue property values of ``thing``."""

    def fire_event(self, thing: str, event: str, data: InfoTable) -> None:
        """Queue an event of ``thing``."""


@dataclass
class _Watched:
    job_id: str
    since: float
    job: Job | None = None
    read_at: float = float("-inf")
    key: tuple[Any, ...] | None = None
    reading: asyncio.Task[Job] | None = field(default=None, repr=False)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(row, default=_json_default))  # type: ignore[no-any-return]


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


class JobWatch:
    """The watchers of the active jobs (see the module docstring).

    Args:
        client: the IoT Hub client.
        settings: the ``[jobs]`` settings (``watch_interval``, ``watch_max_interval``).
        publisher: where pushes go.
        gateway: the gateway Thing's name.
        device_things: the device Things bound to this agent (their names are device ids).
        clock: the current UTC time.
        monotonic: seconds on a monotonic clock (default: the event loop's).
    """

    def __init__(
        self,
        client: IotHubClient,
        settings: JobSettings,
        publisher: Publisher,
        gateway: str,
        device_things: Callable[[], set[str]],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self._client = client
        self._interval = settings.watch_interval
        self._max_interval = max(settings.watch_max_interval, settings.watch_interval)
        self._deadline = settings.call_deadline
        self._publisher = publisher
        self._gateway = gateway
        self._device_things = device_things
        self._clock = clock
        self._monotonic = monotonic
        self._jobs: dict[str, _Watched] = {}
        self._results: set[asyncio.Task[None]] = set()
        """The device-result reads of ended jobs still running (held: see ``_record``)."""
        self._wake = asyncio.Event()
        self._log = structlog.get_logger("services.watch")

    def _now(self) -> float:
        return self._monotonic() if self._monotonic else asyncio.get_running_loop().time()

    @property
    def watched(self) -> list[str]:
        """The ids of the jobs watched now."""
        return list(self._jobs)

    def interval(self, job_id: str) -> float:
        """Seconds between two reads of ``job_id``: ``watch_interval``, growing with the job's
        age past 5 minutes, at most ``watch_max_interval``."""
        watched = self._jobs.get(job_id)
        age = 0.0 if watched is None else self._now() - watched.since
        return min(self._max_interval, self._interval * max(1.0, age / _LONG_JOB))

    def watch(self, job: Job) -> None:
        """Start watching a job the agent just created. Its create answer is pushed but is not
        a fresh read (a new job's status moves within its first second): the next GetJob and
        the loop read the hub."""
        watched = self._watched(job.job_id)
        if watched.job is None:
            self._record(watched, job, float("-inf"))
        self._wake.set()

    def observe(self, job: Job) -> None:
        """Take a job as the hub just answered it (e.g. CancelJob's answer) as a fresh read, so
        GetJob never answers an older status after it."""
        watched = self._jobs.get(job.job_id)
        if watched is not None:
            self._record(watched, job, self._now())

    def _watched(self, job_id: str) -> _Watched:
        watched = self._jobs.get(job_id)
        if watched is None:
            watched = self._jobs[job_id] = _Watched(job_id, self._now())
            self._push_count()
        return watched

    async def read(self, job_id: str, deadline: float | None = None) -> Job:
        """The job, from the last read when fresher than ``watch_interval``, else read now
        (one read shared by every concurrent caller). An active job stays watched.

        Raises:
            agent.iothub.IotHubError: the hub read failed (a 404 also stops the watch).
        """
        known = self._jobs.get(job_id)
        if (
            known is not None
            and known.job is not None
            and self._now() - known.read_at < self._interval
        ):
            return known.job
        return await self._read(self._watched(job_id), deadline)

    async def _read(self, watched: _Watched, deadline: float | None) -> Job:
        task = watched.reading
        if task is None or task.done():
            until = self._now() + self._deadline if deadline is None else deadline
            task = watched.reading = asyncio.ensure_future(self._fetch(watched, until))
        return await asyncio.shield(task)

    async def _fetch(self, watched: _Watched, deadline: float) -> Job:
        try:
            job = await self._client.get_job(watched.job_id, deadline=deadline)
        except HubRequestError as exc:
            if exc.http_status == 404:
                self._forget(watched.job_id)
            raise
        self._record(watched, job, self._now())
        return job

    def _record(self, watched: _Watched, job: Job, now: float) -> None:
        watched.job, watched.read_at = job, now
        at = self._clock()
        row = job_row(job, at)
        key = tuple(row.get(k) for k in _CHANGE_KEYS)
        ended = job_status(job.status, job.start_time, at) in TERMINAL_STATUSES
        if key != watched.key:
            watched.key = key
            self._publisher.push_properties(
                self._gateway, [PropertyValue(LAST_JOB, BaseType.JSON, _jsonable(row), at)]
            )
            self._publisher.fire_event(
                self._gateway, STATUS_CHANGED_EVENT, InfoTable(JOB_SHAPE, [row])
            )
        if ended and watched.job_id in self._jobs:
            self._forget(watched.job_id)
            self._publisher.fire_event(self._gateway, JOB_ENDED_EVENT, _ended(row))
            if self._device_things():
                with contextlib.suppress(RuntimeError):  # no running loop: nothing to read
                    task = asyncio.get_running_loop().create_task(self._device_results(job))
                    # The loop keeps only a weak reference to a task: held until it ends.
                    self._results.add(task)
                    task.add_done_callback(self._results.discard)

    def _forget(self, job_id: str) -> None:
        if self._jobs.pop(job_id, None) is not None:
            self._push_count()

    def _push_count(self) -> None:
        self._publisher.push_properties(
            self._gateway,
            [PropertyValue(ACTIVE_JOB_COUNT, BaseType.INTEGER, len(self._jobs), self._clock())],
        )

    async def _device_results(self, job: Job) -> None:
        """Push each bound device's row of an ended job to its own Thing."""
        devices = self._device_things()
        literal = "'" + job.job_id.replace("'", "''") + "'"
        try:
            rows = await self._client.query_job_results(
                f"SELECT * FROM devices.jobs WHERE devices.jobs.jobId = {literal}",
                _RESULT_ROWS,
                deadline=self._now() + self._deadline,
            )
        except IotHubError as exc:
            self._log.warning("device results unread", job_id=job.job_id, error=str(exc))
            return
        at = self._clock()
        for result in rows:
            if result.device_id not in devices:
                continue
            row = result_row(result)
            self._publisher.push_properties(
                result.device_id,
                [PropertyValue(LAST_JOB_RESULT, BaseType.JSON, _jsonable(row), at)],
            )
            self._publisher.fire_event(
                result.device_id, DEVICE_RESULT_EVENT, InfoTable(JOB_RESULT_SHAPE, [row])
            )

    async def run(self) -> None:
        """Read every watched job when its interval is due, until cancelled."""
        while True:
            now = self._now()
            due = [w for w in self._jobs.values() if now - w.read_at >= self.interval(w.job_id)]
            for watched in due:
                try:
                    await self._read(watched, None)
                except IotHubError as exc:
                    self._log.info("watch read failed", job_id=watched.job_id, error=str(exc))
            now = self._now()
            waits = [w.read_at + self.interval(w.job_id) - now for w in self._jobs.values()]
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, min(waits, default=self._interval))):
                    await self._wake.wait()


def _ended(row: dict[str, Any]) -> InfoTable:
    failed = int(row.get("failedCount") or 0)
    return InfoTable(
        ENDED_SHAPE,
        [
            {
                "jobId": row.get("jobId"),
                "status": row.get("status"),
                "hubStatus": row.get("hubStatus"),
                "deviceCount": row.get("deviceCount"),
                "succeededCount": row.get("succeededCount"),
                "failedCount": failed,
                "failedDevices": failed > 0,
                "summary": row.get("summary"),
            }
        ],
    )
