"""The job engine: IoT Hub's v2 jobs (``scheduleUpdateTwin``, ``scheduleDeviceMethod``).

A job lives through the lifecycle tables of :mod:`emulator.iothub.jobs.states`::

    create ─► scheduled ──(clock reaches startTime)──► queued ──(a tier slot is free)──► running
    running: parse queryCondition (bad → failed), fix the device set, run device jobs until done
             or until the job window (startTime + maxExecutionTimeInSeconds) ends → completed

Rules:

- Time: every job moment comes from the injected :class:`~emulator.iothub.clock.Clock`; real
  waits are only the short, bounded ones the device link performs (response/connect timeouts,
  readiness polls in slices of ``ready_poll_seconds``).
- Persistence: a job or device-row change is committed to SQLite before memory is updated, so
  nothing is reported that a SIGKILL could lose. :meth:`JobEngine.start` resumes every job that
  was scheduled, queued or running; a running job re-applies (twin) or re-invokes (method) every
  device row not yet completed or failed.
- Tasks: one owner :class:`asyncio.TaskGroup` holds one task per live job; :meth:`JobEngine.stop`
  cancels them all and leaves the database as it was (a later start resumes).
- Device jobs that fail (device offline, timeout, window over) never fail the job; only a
  job-level error (a bad queryCondition) does, or a crash of the engine's own step (a bug):
  whatever its status, the job then becomes ``failed`` with ``Internal error: ...`` and frees
  its tier slot, so one broken job can never block the hub's later jobs (429004).
- Device-row errors: ``{"code": <IoT Hub error name>, "description": "<code> <name>: <text>"}``,
  e.g. ``{"code": "DeviceNotOnline", "description": "404103 DeviceNotOnline: Timed out ..."}``;
  the window end gives ``JobRunPreconditionFailed`` with IoT Hub's own text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

import iothub_query
from emulator.iothub.clock import Clock
from emulator.iothub.database import Database
from emulator.iothub.errors import (
    JOB_RUN_PRECONDITION_FAILED,
    JOB_RUN_PRECONDITION_FAILED_TEXT,
    HubError,
)
from emulator.iothub.jobs.exceptions import EngineStateError
from emulator.iothub.jobs.pacing import Pacer
from emulator.iothub.jobs.spec import JobSpec, MethodCall, TwinPatch, check_job_id
from emulator.iothub.jobs.spec import parse_job_request as _parse_job_request
from emulator.iothub.jobs.states import (
    JOB_TRANSITIONS,
    DeviceJobStatus,
    JobStatus,
    device_transition,
    job_transition,
)
from emulator.iothub.jobs.store import JobRecord, JobStore, RowChange
from emulator.iothub.jobs.tiers import Tier
from emulator.iothub.jobs.timestamps import format_utc
from emulator.iothub.ports import DeviceLink, Predicate, TwinStore

__all__ = ["ConditionParser", "JobEngine"]

ConditionParser = Callable[[str], Predicate]
"""Compiles a queryCondition (the WHERE part) into a predicate; raises ValueError (the query
language's ``QueryError`` is one) on a bad condition."""

_log = structlog.get_logger(__name__)

_ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
_STATUS_SYNONYMS = {"enqueued": JobStatus.QUEUED}
_WINDOW_ERROR = {
    "code": JOB_RUN_PRECONDITION_FAILED,
    "description": JOB_RUN_PRECONDITION_FAILED_TEXT,
}


@dataclass(slots=True)
class _Counts:
    """Device rows of one job per status (mutable: it changes once per device operation)."""

    by_status: dict[DeviceJobStatus, int] = field(
        default_factory=lambda: dict.fromkeys(DeviceJobStatus, 0)
    )

    def move(self, old: DeviceJobStatus, new: DeviceJobStatus, count: int = 1) -> None:
        self.by_status[old] -= count
        self.by_status[new] += count

    def statistics(self) -> dict[str, int]:
        counts = self.by_status
        return {
            "deviceCount": sum(counts.values()),
            "failedCount": counts[DeviceJobStatus.FAILED] + counts[DeviceJobStatus.CANCELED],
            "succeededCount": counts[DeviceJobStatus.COMPLETED],
            "runningCount": counts[DeviceJobStatus.RUNNING],
            "pendingCount": counts[DeviceJobStatus.PENDING],
        }


class JobEngine:
    """Runs IoT Hub v2 jobs against a :class:`TwinStore` and a :class:`DeviceLink`.

    Implements :class:`emulator.iothub.ports.JobService`.
    """

    def __init__(
        self,
        db: Database,
        twins: TwinStore,
        link: DeviceLink,
        clock: Clock,
        tier: Tier | None = None,
        *,
        parse_condition: ConditionParser | None = None,
        twin_batch_size: int = 2000,
        max_in_flight: int = 500,
        ready_poll_seconds: float = 5.0,
        stop_timeout: float = 10.0,
    ) -> None:
        """Create an engine; call :meth:`start` to load stored jobs and run them.

        Args:
            db: the emulator's database; the engine owns its ``jobs`` and ``device_jobs`` tables.
            twins: the registry (device selection and twin patches).
            link: the device endpoint (direct methods and desired-property pushes).
            clock: the source of every job time.
            tier: the hub tier's job quotas; None = unthrottled, no concurrent-job limit.
            parse_condition: the queryCondition compiler; None = the emulator's query language
                (:func:`iothub_query.parse_condition`).
            twin_batch_size: devices per twin-patch transaction.
            max_in_flight: device method calls in flight at once per job.
            ready_poll_seconds: real seconds per wait for an offline device to become
                method-ready (it is waited for again until the job window ends).
            stop_timeout: real seconds :meth:`stop` waits for the job tasks to end.
        """
        if twin_batch_size < 1 or max_in_flight < 1 or ready_poll_seconds <= 0:
            raise ValueError("batch size, in-flight limit and poll interval must be positive")
        self._store = JobStore(db)
        self._twins = twins
        self._link = link
        self._clock = clock
        self._tier = tier
        self._parse_condition: ConditionParser = parse_condition or iothub_query.parse_condition
        self._twin_batch_size = twin_batch_size
        self._max_in_flight = max_in_flight
        self._ready_poll_seconds = ready_poll_seconds
        self._stop_timeout = stop_timeout
        self._pacer = None if tier is None else Pacer(clock, tier.device_ops_per_second)
        self._jobs: dict[str, JobRecord] = {}
        self._counts: dict[str, _Counts] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running: set[str] = set()
        self._watchers: list[asyncio.Future[None]] = []
        self._group: asyncio.TaskGroup | None = None
        self._owner: asyncio.Task[None] | None = None
        self._store.create_tables()
        self._load()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start running jobs: resumes every stored job that was scheduled, queued or running.

        Raises:
            EngineStateError: when the engine is already started.
        """
        if self._owner is not None:
            raise EngineStateError("the job engine is already started")
        ready = asyncio.Event()
        self._owner = asyncio.create_task(self._own_tasks(ready), name="job-engine")
        async with asyncio.timeout(self._stop_timeout):
            await ready.wait()
        for job in sorted(self._jobs.values(), key=lambda j: j.seq):
            if not job.status.is_terminal:
                if job.status is JobStatus.RUNNING:
                    self._running.add(job.spec.job_id)
                self._launch(job.spec.job_id)
        _log.info("job engine started", jobs=len(self._jobs), tier=self._tier and self._tier.name)

    async def stop(self) -> None:
        """Cancel every job task and wait (bounded) for them to end; stored state is kept."""
        owner = self._owner
        if owner is None:
            return
        owner.cancel()
        try:
            async with asyncio.timeout(self._stop_timeout):
                with contextlib.suppress(asyncio.CancelledError):
                    await owner
        except TimeoutError:
            _log.warning("job engine stop timed out", timeout=self._stop_timeout)
        self._owner = None
        self._group = None
        self._tasks.clear()
        self._running.clear()
        self._notify()
        _log.info("job engine stopped")

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``condition()`` holds, re-checking after every job or row change.

        Raises:
            TimeoutError: when it does not hold within ``timeout`` real seconds.
        """
        async with asyncio.timeout(timeout):
            while not condition():
                await self._changed()

    async def wait_for_status(
        self, job_id: str, *statuses: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Wait until a job reaches one of ``statuses``; return the job object.

        Raises:
            TimeoutError: when it does not within ``timeout`` real seconds.
            HubError: 404002 when there is no such job.
        """
        wanted = {JobStatus(status) for status in statuses}
        self._job(job_id)
        await self.wait_for(lambda: self._jobs[job_id].status in wanted, timeout)
        return self.get_job(job_id)

    async def wait_until_idle(self, timeout: float = 10.0) -> None:
        """Wait until every job is terminal or scheduled for a time still to come.

        Raises:
            TimeoutError: when that does not happen within ``timeout`` real seconds.
        """
        await self.wait_for(self._idle, timeout)

    # --- JobService -----------------------------------------------------------------------

    async def create_job(self, job_id: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and store a job (``PUT /jobs/v2/{id}``).

        Args:
            job_id: the id from the URL.
            request: the JobRequest JSON body.

        Returns:
            The full job object (JobResponse), status ``scheduled`` when ``startTime`` is still
            to come, else ``queued``.

        Raises:
            HubError: 400004 / 400000 for a bad request, 412001 for an etag other than ``*``,
                409104 for an existing id, 429004 when the tier's active-job limit is reached.
        """
        check_job_id(job_id)
        if job_id in self._jobs:
            raise HubError.job_already_exists(job_id)
        spec = _parse_job_request(job_id, request)
        now = self._clock.now()
        if self._tier is not None and self._active_count() >= self._tier.max_active_jobs:
            raise HubError.max_active_jobs(self._tier.max_active_jobs)
        status = JobStatus.SCHEDULED if spec.start_time > now else JobStatus.QUEUED
        job = JobRecord(spec=spec, seq=self._store.next_seq(), status=status, created_time=now)
        self._store.insert_job(job)
        self._jobs[job_id] = job
        self._counts[job_id] = _Counts()
        _log.info("job created", job_id=job_id, type=spec.job_type.value, status=status.value)
        self._notify()
        if self._group is not None:
            self._launch(job_id)
        return self.get_job(job_id)

    def get_job(self, job_id: str) -> dict[str, Any]:
        """The job object (``GET /jobs/v2/{id}``).

        Raises:
            HubError: 404002 JobNotFound.
        """
        return self._job_json(self._job(job_id))

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a scheduled or queued job (``POST /jobs/v2/{id}/cancel``).

        Returns:
            The job object, status ``cancelled``.

        Raises:
            HubError: 404002 JobNotFound; 405102 OperationNotAllowedInCurrentState when the job
                is running or already terminal.
        """
        job = self._job(job_id)
        if JobStatus.CANCELLED not in JOB_TRANSITIONS[job.status]:
            raise HubError.operation_not_allowed(
                f"Job cannot be cancelled in '{job.status.wire_name}' status"
            )
        self._set_job(job_id, JobStatus.CANCELLED, end=True)
        task = self._tasks.pop(job_id, None)
        if task is not None:
            task.cancel()
        return self.get_job(job_id)

    def list_jobs(self, job_type: str | None, job_status: str | None) -> list[dict[str, Any]]:
        """Every job matching the optional type and status filters, oldest first.

        Args:
            job_type: ``scheduleDeviceMethod`` or ``scheduleUpdateTwin`` (case-insensitive);
                another value matches nothing.
            job_status: a job status (case-insensitive); ``queued`` and ``enqueued`` are
                synonyms; another value matches nothing.
        """
        type_filter = None if not job_type else job_type.lower()
        status_filter: str | None = None
        if job_status:
            lowered = job_status.lower()
            status_filter = _STATUS_SYNONYMS.get(lowered, lowered)
        return [
            self._job_json(job)
            for job in sorted(self._jobs.values(), key=lambda j: j.seq)
            if (type_filter is None or job.spec.job_type.value.lower() == type_filter)
            and (status_filter is None or job.status.value == status_filter)
        ]

    def device_job_rows(
        self,
        job_id: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int | None = None,
    ) -> Iterable[dict[str, Any]]:
        """``devices.jobs`` rows in (jobId, deviceId) order: of one job when ``job_id`` is given
        (none for an unknown job), after the key ``after`` (jobId, deviceId), at most ``limit``."""
        return self._rows(job_id, after, limit)

    def job_device_rows(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The ``devices.jobs`` rows of one job, by device id.

        Raises:
            HubError: 404002 JobNotFound.
        """
        self._job(job_id)
        return self._rows(job_id)

    # --- job tasks ------------------------------------------------------------------------

    async def _own_tasks(self, ready: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            ready.set()
            # The engine lives until stop() cancels this task, which cancels every job task.
            await asyncio.Future()

    def _launch(self, job_id: str) -> None:
        if self._group is None:
            raise EngineStateError("the job engine is not started")
        self._tasks[job_id] = self._group.create_task(self._run_job(job_id), name=f"job:{job_id}")

    async def _run_job(self, job_id: str) -> None:
        log = _log.bind(job_id=job_id)
        try:
            await self._drive(job_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in one job must not stop the engine or other jobs
            log.exception("job crashed")
            self._fail_crashed(job_id, f"Internal error: {str(exc)[:200] or type(exc).__name__}")
        finally:
            if self._tasks.get(job_id) is asyncio.current_task():
                del self._tasks[job_id]
            self._running.discard(job_id)
            self._notify()

    async def _drive(self, job_id: str) -> None:
        job = self._jobs[job_id]
        if job.status is JobStatus.SCHEDULED:
            await self._clock.sleep_until(job.spec.start_time)
            job = self._set_job(job_id, JobStatus.QUEUED)
        if job.status is JobStatus.QUEUED:
            # A queued job waits for a free slot of the tier, at most until its window ends
            # (it then starts anyway and its device jobs fail: they could not start in time).
            await self._before_window_end(self._until(lambda: self._slot_free(job_id)), job.spec)
            if self._jobs[job_id].status is not JobStatus.QUEUED:
                return
            device_ids = self._begin(job_id)
            if device_ids is None:
                return
            rows = [(device_id, DeviceJobStatus.PENDING) for device_id in device_ids]
        else:
            rows = self._store.unfinished_rows(job_id)
            _log.info("job resumed", job_id=job_id, unfinished=len(rows))
        await self._execute(job_id, rows)
        self._set_job(job_id, JobStatus.COMPLETED, end=True)
        _log.info("job completed", job_id=job_id, **self._counts[job_id].statistics())

    def _begin(self, job_id: str) -> list[str] | None:
        """queued → running: compile the query and fix the device set (None when it failed)."""
        job = self._jobs[job_id]
        self._running.add(job_id)
        try:
            predicate = self._parse_condition(job.spec.query_condition)
        except ValueError as exc:  # QueryError and its kin: the job fails, not the engine
            reason = str(exc) or type(exc).__name__
            self._set_job(job_id, JobStatus.RUNNING)
            self._set_job(job_id, JobStatus.FAILED, end=True, reason=reason)
            _log.info("job failed", job_id=job_id, reason=reason)
            return None
        device_ids = self._twins.select_device_ids(predicate)
        running = replace(job, status=job_transition(job.status, JobStatus.RUNNING))
        self._store.start_job(running, device_ids, self._clock.now())
        self._jobs[job_id] = running
        self._counts[job_id].by_status[DeviceJobStatus.PENDING] = len(device_ids)
        _log.info("job running", job_id=job_id, devices=len(device_ids))
        self._notify()
        return device_ids

    async def _execute(self, job_id: str, rows: list[tuple[str, DeviceJobStatus]]) -> None:
        """Run the device jobs until they are all done or the job window ends."""
        spec = self._jobs[job_id].spec
        if spec.twin_patch is not None:
            work = asyncio.create_task(self._run_twin(job_id, spec, spec.twin_patch, rows))
        elif spec.method is not None:
            work = asyncio.create_task(self._run_method(job_id, spec.method, rows))
        else:  # pragma: no cover - parse_job_request always sets one of them
            raise EngineStateError(f"job {job_id} has no operation")
        await self._before_window_end(work, spec)
        unfinished = self._fail_unfinished(job_id, _WINDOW_ERROR)
        if unfinished:
            _log.info("job window ended", job_id=job_id, failed_devices=unfinished)

    # --- twin jobs ------------------------------------------------------------------------

    async def _run_twin(
        self,
        job_id: str,
        spec: JobSpec,
        patch: TwinPatch,
        rows: list[tuple[str, DeviceJobStatus]],
    ) -> None:
        batch_size = self._twin_batch_size
        if self._tier is not None:
            batch_size = min(batch_size, max(1, int(self._tier.device_ops_per_second)))
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            if self._pacer is not None:
                await self._pacer.acquire(len(batch))
            if self._clock.now() >= spec.window_end:
                return
            self._twin_batch(job_id, patch, batch)
            # Let the REST API and the device endpoint breathe between batches.
            await asyncio.sleep(0)

    def _twin_batch(
        self, job_id: str, patch: TwinPatch, batch: Sequence[tuple[str, DeviceJobStatus]]
    ) -> None:
        pending = [device_id for device_id, status in batch if status is DeviceJobStatus.PENDING]
        if pending:
            device_transition(DeviceJobStatus.PENDING, DeviceJobStatus.RUNNING)
            self._store.set_rows_status(job_id, pending, DeviceJobStatus.RUNNING, self._clock.now())
            self._counts[job_id].move(
                DeviceJobStatus.PENDING, DeviceJobStatus.RUNNING, len(pending)
            )
        device_ids = [device_id for device_id, _ in batch]
        changes: list[RowChange] = []
        pushes: dict[str, dict[str, Any]] = {}
        try:
            results = self._twins.apply_job_patch(device_ids, patch.tags, patch.desired)
        except HubError as exc:
            changes = [
                RowChange(device_id, DeviceJobStatus.FAILED, {}, _row_error(exc))
                for device_id in device_ids
            ]
        else:
            for device_id in device_ids:
                pushed = results.get(device_id)
                if pushed is None:
                    error = _row_error(HubError.device_not_found(device_id))
                    changes.append(RowChange(device_id, DeviceJobStatus.FAILED, {}, error))
                else:
                    changes.append(RowChange(device_id, DeviceJobStatus.COMPLETED, {}))
                    if pushed:
                        pushes[device_id] = pushed
        self._finish_rows(job_id, changes)
        for device_id, desired in pushes.items():
            try:
                self._link.push_desired(device_id, desired)
            except Exception:  # the twin is updated; a device reconciles when it reconnects
                _log.exception("desired push failed", job_id=job_id, device_id=device_id)

    # --- method jobs ----------------------------------------------------------------------

    async def _run_method(
        self, job_id: str, call: MethodCall, rows: list[tuple[str, DeviceJobStatus]]
    ) -> None:
        todo = iter(rows)
        parked: list[tuple[str, DeviceJobStatus]] = []
        async with asyncio.TaskGroup() as group:
            for _ in range(min(self._max_in_flight, len(rows))):
                group.create_task(self._method_worker(job_id, call, todo, parked))

    async def _method_worker(
        self,
        job_id: str,
        call: MethodCall,
        todo: Iterator[tuple[str, DeviceJobStatus]],
        parked: list[tuple[str, DeviceJobStatus]],
    ) -> None:
        # First pass: every device once. With connectTimeoutInSeconds 0 a device that is not
        # method-ready is parked instead of holding a slot, so online devices are not starved.
        for device_id, status in todo:
            if call.connect_timeout == 0 and not self._link.is_method_ready(device_id):
                parked.append((device_id, status))
                continue
            await self._invoke(job_id, call, device_id, status)
        # Then wait for parked devices, in slices, until they come online or the window ends
        # (the window ending cancels this task).
        while parked:
            device_id, status = parked.pop(0)
            if await self._link.wait_method_ready(device_id, self._ready_poll_seconds):
                await self._invoke(job_id, call, device_id, status)
            else:
                parked.append((device_id, status))

    async def _invoke(
        self, job_id: str, call: MethodCall, device_id: str, status: DeviceJobStatus
    ) -> None:
        if self._pacer is not None:
            await self._pacer.acquire()
        if self._clock.now() >= self._jobs[job_id].spec.window_end:
            return  # too late: the window's end fails this device
        if status is DeviceJobStatus.PENDING:
            self._set_row_status(job_id, device_id, status, DeviceJobStatus.RUNNING)
        try:
            reply = await self._link.invoke_method(
                device_id,
                call.method_name,
                call.payload,
                response_timeout=float(call.response_timeout),
                connect_timeout=float(call.connect_timeout),
            )
        except HubError as exc:
            change = RowChange(device_id, DeviceJobStatus.FAILED, {}, _row_error(exc))
        else:
            outcome = {"deviceMethodResponse": {"status": reply.status, "payload": reply.payload}}
            change = RowChange(device_id, DeviceJobStatus.COMPLETED, outcome)
        self._finish_rows(job_id, [change])

    # --- state changes (the only places that write) ----------------------------------------

    def _set_job(
        self,
        job_id: str,
        status: JobStatus,
        *,
        end: bool = False,
        reason: str | None = None,
    ) -> JobRecord:
        job = self._jobs[job_id]
        changed = replace(
            job,
            status=job_transition(job.status, status),
            end_time=self._clock.now() if end else job.end_time,
            failure_reason=reason if reason is not None else job.failure_reason,
            status_message=reason if reason is not None else job.status_message,
        )
        self._store.update_job(changed)
        self._jobs[job_id] = changed
        self._notify()
        return changed

    def _set_row_status(
        self, job_id: str, device_id: str, old: DeviceJobStatus, new: DeviceJobStatus
    ) -> None:
        device_transition(old, new)
        self._store.set_rows_status(job_id, (device_id,), new, self._clock.now())
        self._counts[job_id].move(old, new)
        self._notify()

    def _fail_crashed(self, job_id: str, reason: str) -> None:
        """Whatever status a crashed job was in, make it ``failed`` (through the legal
        transitions: scheduled → queued → running → failed) so it never holds a tier slot."""
        try:
            job = self._jobs[job_id]
            if job.status.is_terminal:
                return
            if job.status is JobStatus.SCHEDULED:
                job = self._set_job(job_id, JobStatus.QUEUED)
            if job.status is JobStatus.QUEUED:
                self._set_job(job_id, JobStatus.RUNNING)
            self._fail_unfinished(job_id, {"code": "InternalError", "description": reason})
            self._set_job(job_id, JobStatus.FAILED, end=True, reason=reason)
            _log.info("job failed", job_id=job_id, reason=reason)
        except Exception:  # the store itself failed: nothing more can be recorded
            _log.exception("crashed job could not be marked failed", job_id=job_id)

    def _fail_unfinished(self, job_id: str, error: dict[str, str]) -> int:
        """pending | running → failed for every unfinished row of a job; return how many."""
        counts = self._counts[job_id]
        sources = (DeviceJobStatus.PENDING, DeviceJobStatus.RUNNING)
        unfinished = sum(counts.by_status[old] for old in sources)
        if unfinished:
            for old in sources:
                device_transition(old, DeviceJobStatus.FAILED)
            self._store.fail_unfinished(job_id, error, self._clock.now())
            for old in sources:
                counts.move(old, DeviceJobStatus.FAILED, counts.by_status[old])
            self._notify()
        return unfinished

    def _finish_rows(self, job_id: str, changes: Sequence[RowChange]) -> None:
        """running → completed | failed for each change, committed in one transaction."""
        for change in changes:
            device_transition(DeviceJobStatus.RUNNING, change.status)
        self._store.update_rows(job_id, changes, self._clock.now())
        counts = self._counts[job_id]
        for change in changes:
            counts.move(DeviceJobStatus.RUNNING, change.status)
        self._notify()

    # --- helpers --------------------------------------------------------------------------

    def _load(self) -> None:
        counts = self._store.count_rows()
        for job in self._store.load_jobs():
            self._jobs[job.spec.job_id] = job
            tally = _Counts()
            tally.by_status.update(counts.get(job.spec.job_id, {}))
            self._counts[job.spec.job_id] = tally

    def _job(self, job_id: str) -> JobRecord:
        job = self._jobs.get(job_id)
        if job is None:
            raise HubError.job_not_found(job_id)
        return job

    def _active_count(self) -> int:
        now = self._clock.now()
        return sum(
            1
            for job in self._jobs.values()
            if job.status in _ACTIVE
            or (job.status is JobStatus.SCHEDULED and job.spec.start_time <= now)
        )

    def _slot_free(self, job_id: str) -> bool:
        if self._jobs[job_id].status is not JobStatus.QUEUED:
            return True
        if self._tier is None:
            return True
        if len(self._running) >= self._tier.max_active_jobs:
            return False
        # First come, first served among queued jobs.
        queued = [job for job in self._jobs.values() if job.status is JobStatus.QUEUED]
        first = min(queued, key=lambda job: (job.spec.start_time, job.seq))
        return first.spec.job_id == job_id

    def _idle(self) -> bool:
        now = self._clock.now()
        return all(
            job.status.is_terminal
            or (job.status is JobStatus.SCHEDULED and job.spec.start_time > now)
            for job in self._jobs.values()
        )

    async def _before_window_end(
        self, work: Coroutine[Any, Any, None] | asyncio.Task[None], spec: JobSpec
    ) -> None:
        """Run ``work`` until it ends or the clock reaches the job window's end (it is then
        cancelled). An exception raised by ``work`` propagates."""
        task = work if isinstance(work, asyncio.Task) else asyncio.create_task(work)
        window = asyncio.create_task(self._clock.sleep_until(spec.window_end))
        try:
            await asyncio.wait({task, window}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, window):
                pending.cancel()
            await asyncio.gather(task, window, return_exceptions=True)
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error

    async def _until(self, condition: Callable[[], bool]) -> None:
        # No deadline of its own: callers bound it with _before_window_end.
        while not condition():
            await self._changed()

    def _notify(self) -> None:
        watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            if not watcher.done():
                watcher.set_result(None)

    async def _changed(self) -> None:
        watcher: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.append(watcher)
        await watcher

    def _job_json(self, job: JobRecord) -> dict[str, Any]:
        spec = job.spec
        body: dict[str, Any] = {
            "jobId": spec.job_id,
            "type": spec.job_type.value,
            "status": job.status.value,
            "queryCondition": spec.query_condition,
            "createdTime": format_utc(job.created_time),
            "startTime": format_utc(spec.start_time),
            "endTime": None if job.end_time is None else format_utc(job.end_time),
            "maxExecutionTimeInSeconds": spec.max_execution_seconds,
        }
        body.update(spec.operation_json())
        body["failureReason"] = job.failure_reason
        body["statusMessage"] = job.status_message
        body["deviceJobStatistics"] = self._counts[spec.job_id].statistics()
        return body

    def _rows(
        self,
        job_id: str | None,
        after: tuple[str, str] | None = None,
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        # A job's type and times are the same on all its rows and never change (its spec is
        # frozen once created): they are formatted once per job a call meets, not per row.
        heads: dict[str, tuple[str, str, str]] = {}
        for row_job, device_id, status, created, updated, outcome, error in self._store.read_rows(
            job_id, after, limit
        ):
            head = heads.get(row_job)
            if head is None:
                job = self._jobs.get(row_job)
                if job is None:  # pragma: no cover - rows are only written for known jobs
                    continue
                spec = job.spec
                head = heads[row_job] = (
                    spec.job_type.value,
                    format_utc(spec.start_time),
                    format_utc(spec.window_end),
                )
            item: dict[str, Any] = {
                "deviceId": device_id,
                "jobId": row_job,
                "jobType": head[0],
                "status": status,
                "startTimeUtc": head[1],
                "endTimeUtc": head[2],
                "createdDateTimeUtc": created,
                "lastUpdatedDateTimeUtc": updated,
                # Every twin row's outcome is "{}": no decoder needed for it.
                "outcome": {} if outcome == "{}" else json.loads(outcome),
            }
            if error is not None:
                item["error"] = json.loads(error)
            yield item


def _row_error(exc: HubError) -> dict[str, str]:
    return {"code": exc.name, "description": str(exc)}
