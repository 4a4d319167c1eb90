"""The six ``AzureIotDeviceJob*`` remote services (docs/services.md), on every bound Thing.

On the gateway Thing ``queryCondition`` is required. A device Thing is scoped to its own device
(ThingWorx grants permissions per Thing): its Schedule services have no ``queryCondition`` and
target ``deviceId = '<thing>'``; its FindJobs lists only the jobs that target the device (by that
condition or by a ``devices.jobs`` row of the device); its GetJob and CancelJob answer any other
job exactly as a job that does not exist (404002, NOT_FOUND); its QueryJobResults gets the device
ANDed into the query and keeps only the device's rows. Defaults (job window, response and
connect timeouts, maxRows) come from ``[jobs]`` settings and are declared as ``defaultValue``
aspects, so Composer shows them and the connect timeout is never sent unset. Inputs are checked
by :mod:`services.rules` before anything is sent; hub failures become one-line errors through
:func:`services.mapping.hub_failure`.

:class:`JobServices` also offers the two operations the wrapper services reuse:
:meth:`JobServices.schedule_method_job` and :meth:`JobServices.call_method`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from agent.alwayson import BaseType, DataShape, FieldDefinition, InfoTable
from agent.iothub import (
    METHOD_JOB,
    TWIN_JOB,
    DeviceJobResult,
    HubRequestError,
    IotHubClient,
    IotHubError,
    Job,
)
from agent.registry import (
    DEFAULT_VALUE_ASPECT,
    IS_REQUIRED_ASPECT,
    RemoteService,
    ServiceCall,
    ServiceError,
)
from agent.settings import JobSettings
from services import rules
from services.mapping import (
    HUB_STATUS_FILTER,
    JOB_STATUSES,
    JOB_TYPE_TO_HUB,
    TERMINAL_STATUSES,
    ErrorContext,
    failure_kind,
    hub_failure,
    job_status,
    status_input,
)
from services.paging import PageToken, decode_token, encode_token, scope_digest
from services.shapes import (
    JOB_RESULT_SHAPE,
    JOB_SHAPE,
    job_table,
    method_result_table,
    result_table,
)
from services.watch import JobWatch

__all__ = [
    "CANCEL_JOB",
    "FIND_JOBS",
    "GET_JOB",
    "JOB_SERVICE_NAMES",
    "QUERY_JOB_RESULTS",
    "SCHEDULE_METHOD_JOB",
    "SCHEDULE_TWIN_JOB",
    "JobServices",
    "MethodJobRequest",
]

SCHEDULE_TWIN_JOB = "AzureIotDeviceJobScheduleTwinUpdateJob"
SCHEDULE_METHOD_JOB = "AzureIotDeviceJobScheduleDeviceMethodJob"
GET_JOB = "AzureIotDeviceJobGetJob"
FIND_JOBS = "AzureIotDeviceJobFindJobs"
CANCEL_JOB = "AzureIotDeviceJobCancelJob"
QUERY_JOB_RESULTS = "AzureIotDeviceJobQueryJobResults"
JOB_SERVICE_NAMES = (
    SCHEDULE_TWIN_JOB,
    SCHEDULE_METHOD_JOB,
    GET_JOB,
    FIND_JOBS,
    CANCEL_JOB,
    QUERY_JOB_RESULTS,
)

# How long a 429004 answer may spend finding the active job to name it (and GetJob the kinds of
# an ended job's failures).
_ACTIVE_LOOKUP_SECONDS = 5.0
_ACTIVE_LISTED = 10  # jobs of each active status named in a 429004 (S3 runs 10 at once)
# The most failed devices GetJob reads to tell their kinds in the summary.
_FAILURE_ROWS = 1000


def _utcnow() -> datetime:
    return datetime.now(UTC)


def field(
    name: str,
    base_type: BaseType,
    description: str,
    *,
    required: bool = False,
    default: Any = None,
) -> FieldDefinition:
    """An input definition with the registry's ``isRequired``/``defaultValue`` aspects."""
    aspects: dict[str, Any] = {}
    if required:
        aspects[IS_REQUIRED_ASPECT] = True
    if default is not None:
        aspects[DEFAULT_VALUE_ASPECT] = default
    return FieldDefinition(name, base_type, description, aspects)


def page_inputs(max_rows: str, settings: JobSettings) -> list[FieldDefinition]:
    """The paging inputs of a listing service (:mod:`services.paging`): ``maxRows`` (described
    as ``max_rows``; default ``jobs.default_max_rows``) and ``continuationToken``."""
    return [
        field("maxRows", BaseType.INTEGER, max_rows, default=settings.default_max_rows),
        field(
            "continuationToken",
            BaseType.STRING,
            "the previous page's continuationToken (first row); empty: first page",
        ),
    ]


@dataclasses.dataclass(frozen=True)
class MethodJobRequest:
    """A device-method job as the caller asked for it, checked."""

    job_id: str
    query_condition: str
    method_name: str
    payload: Any
    response_timeout: int
    connect_timeout: int
    start_time: datetime
    max_execution_time: int
    warnings: tuple[str, ...] = ()


def _merge(answer: Job, requested: Job) -> Job:
    """The hub's answer, completed with what was requested where the answer is minimal."""
    changes = {
        f.name: getattr(requested, f.name)
        for f in dataclasses.fields(Job)
        if getattr(answer, f.name) in (None, "") and getattr(requested, f.name) not in (None, "")
    }
    return dataclasses.replace(answer, **changes) if changes else answer


class JobServices:
    """The six job services over one IoT Hub client.

    Args:
        client: the agent's IoT Hub client.
        settings: the ``[jobs]`` settings (defaults and limits).
        clock: the current UTC time (tests inject one).
        new_job_id: makes the id of a job created without ``jobId``.
        page_bytes: the most bytes of hub answers one FindJobs or QueryJobResults page reads
            (plus one hub page), so its answer fits one AlwaysOn message; None: only the
            ``[iothub]`` per-call bound.
        request_timeout: ``thingworx.request_timeout``: how long the platform waits for a call's
            answer; a direct call that cannot end within it is refused.
        gateway_thing: the gateway Thing's name (where the job form of a direct call is).
    """

    def __init__(
        self,
        client: IotHubClient,
        settings: JobSettings,
        *,
        clock: Callable[[], datetime] = _utcnow,
        new_job_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        page_bytes: int | None = None,
        request_timeout: float = 30.0,
        gateway_thing: str = "AzureIotHub",
    ) -> None:
        self._client = client
        self._settings = settings
        self._page_bytes = page_bytes
        self.request_timeout = request_timeout
        self.gateway_thing = gateway_thing
        self._clock = clock
        self._new_job_id = new_job_id
        self.watch: JobWatch | None = None
        """The watchers of active jobs: GetJob reads through them and new jobs are watched;
        None reads the hub on every call."""

    # -- declarations ----------------------------------------------------------------------

    def common_inputs(self, thing: str, *, gateway: bool) -> list[FieldDefinition]:
        """``queryCondition`` (gateway Thing only), ``startTime``, ``maxExecutionTimeInSeconds``
        and ``jobId``."""
        condition = [
            field(
                "queryCondition",
                BaseType.STRING,
                "WHERE part of a twin query selecting the devices, e.g. deviceId IN ['d1','d2'], "
                "IS_DEFINED(deviceId) for all (required here; at most 8192 characters)",
                required=True,
            )
        ]
        return [
            *(condition if gateway else []),
            field("startTime", BaseType.DATETIME, "when the job starts (default: now)"),
            field(
                "maxExecutionTimeInSeconds",
                BaseType.LONG,
                "the job window in seconds; unfinished devices fail after it",
                default=self._settings.default_max_execution_time,
            ),
            field(
                "jobId",
                BaseType.STRING,
                "the new job's id: at most 64 letters, digits and '-' (default: a new UUID)",
            ),
        ]

    def timeout_inputs(self, *, direct: bool = False) -> list[FieldDefinition]:
        """``responseTimeoutInSeconds`` (5..300) and ``connectTimeoutInSeconds`` (0..300).

        Args:
            direct: a direct call's (defaults ``jobs.direct_*_timeout``, which fit in
                ``thingworx.request_timeout``), not a job's.
        """
        s = self._settings
        fits = (
            f"; connect + response + {s.direct_call_margin:g} must fit in the platform's "
            f"{self.request_timeout:g} s"
            if direct
            else ""
        )
        return [
            field(
                "responseTimeoutInSeconds",
                BaseType.INTEGER,
                f"seconds to wait for each device's answer (5..300{fits})",
                default=s.direct_response_timeout if direct else s.default_response_timeout,
            ),
            field(
                "connectTimeoutInSeconds",
                BaseType.INTEGER,
                "seconds to wait for an offline device to connect (0..300; 0 = must be online)",
                default=s.direct_connect_timeout if direct else s.default_connect_timeout,
            ),
        ]

    def declare(self, thing: str, *, gateway: bool) -> list[RemoteService]:
        """The six services of one Thing.

        Args:
            thing: the Thing's name (a device Thing's name is its IoT Hub device id).
            gateway: True for the gateway Thing (``queryCondition`` required).
        """
        common = self.common_inputs(thing, gateway=gateway)
        device = None if gateway else thing

        async def schedule_twin(call: ServiceCall) -> InfoTable:
            return await self.schedule_twin_job(call, gateway=gateway)

        async def get_job(call: ServiceCall) -> InfoTable:
            return await self.get_job(call, device=device)

        async def find_jobs(call: ServiceCall) -> InfoTable:
            return await self.find_jobs(call, device=device)

        async def cancel_job(call: ServiceCall) -> InfoTable:
            return await self.cancel_job(call, device=device)

        async def query_job_results(call: ServiceCall) -> InfoTable:
            return await self.query_job_results(call, device=device)

        async def schedule_method(call: ServiceCall) -> InfoTable:
            request = self.method_job_request(
                call,
                gateway=gateway,
                method_name=rules.check_method_name(call.inputs["methodName"]),
                payload=rules.check_payload("payload", call.inputs.get("payload")),
            )
            return await self.schedule_method_job(call, request)

        return [
            RemoteService(
                SCHEDULE_TWIN_JOB,
                "Schedule a job updating the twins (desired properties and/or tags) of the "
                "selected devices",
                DataShape.of(
                    field(
                        "patch",
                        BaseType.JSON,
                        'twin patch: {"properties": {"desired": {...}}, "tags": {...}}',
                        required=True,
                    ),
                    *common,
                ),
                BaseType.INFOTABLE,
                JOB_SHAPE,
                schedule_twin,
                audit_action="scheduleTwinJob",
            ),
            RemoteService(
                SCHEDULE_METHOD_JOB,
                "Schedule a job calling a direct method on the selected devices",
                DataShape.of(
                    field("methodName", BaseType.STRING, "the direct method", required=True),
                    *common,
                    field("payload", BaseType.JSON, "the method's JSON payload (optional)"),
                    *self.timeout_inputs(),
                ),
                BaseType.INFOTABLE,
                JOB_SHAPE,
                schedule_method,
                audit_action="scheduleMethodJob",
            ),
            RemoteService(
                GET_JOB,
                "Get a job's status and statistics",
                DataShape.of(field("jobId", BaseType.STRING, "the job's id", required=True)),
                BaseType.INFOTABLE,
                JOB_SHAPE,
                get_job,
            ),
            RemoteService(
                FIND_JOBS,
                "Find jobs by type and/or status (the only way to find jobs not yet run)",
                DataShape.of(
                    field("type", BaseType.STRING, "twinUpdate or deviceMethod (default: any)"),
                    field("status", BaseType.STRING, f"one of {', '.join(JOB_STATUSES)}"),
                    *page_inputs("the most jobs to return, newest first", self._settings),
                ),
                BaseType.INFOTABLE,
                JOB_SHAPE,
                find_jobs,
            ),
            RemoteService(
                CANCEL_JOB,
                "Cancel a job that has not started running",
                DataShape.of(field("jobId", BaseType.STRING, "the job's id", required=True)),
                BaseType.INFOTABLE,
                JOB_SHAPE,
                cancel_job,
                audit_action="cancelJob",
            ),
            RemoteService(
                QUERY_JOB_RESULTS,
                "Per-device results of jobs: SELECT * FROM devices.jobs [WHERE ...]",
                DataShape.of(
                    field(
                        "query",
                        BaseType.STRING,
                        "e.g. SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j1'",
                        required=True,
                    ),
                    *page_inputs("the most rows to return", self._settings),
                ),
                BaseType.INFOTABLE,
                JOB_RESULT_SHAPE,
                query_job_results,
            ),
        ]

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _condition(call: ServiceCall, *, gateway: bool) -> str:
        """The job's target: the caller's condition on the gateway, the device on a device."""
        if gateway:
            return rules.check_query_condition(call.inputs.get("queryCondition"), required=True)
        return rules.device_condition(call.thing)

    async def _out_of_scope(self, call: ServiceCall, job: Job, device: str) -> bool:
        """True when ``job`` targets neither ``device`` alone nor has a row of it."""
        if job.query_condition == rules.device_condition(device):
            return False
        rows = await self._device_rows(call, device, job.job_id, 1)
        return not rows

    async def _device_rows(
        self, call: ServiceCall, device: str, job_id: str | None, max_rows: int
    ) -> list[DeviceJobResult]:
        where = f"devices.jobs.deviceId = {rules.query_literal(device)}"
        if job_id is not None:
            where += f" AND devices.jobs.jobId = {rules.query_literal(job_id)}"
        rows = await self._client.query_job_results(
            f"SELECT * FROM devices.jobs WHERE {where}", max_rows, deadline=call.deadline
        )
        return [r for r in rows if r.device_id == device]

    @staticmethod
    def _not_found(call: ServiceCall, job_id: str) -> ServiceError:
        """Exactly what the hub's 404002 gives: a device Thing never learns other jobs exist."""
        call.log.info("job outside the device thing's scope", job_id=job_id)
        exc = HubRequestError(404, code=404002, name="JobNotFound")
        return hub_failure(exc, ErrorContext(job_id=job_id))

    def _job_id(self, call: ServiceCall) -> str:
        given = call.inputs.get("jobId")
        return rules.check_job_id(given) if given is not None else self._new_job_id()

    @contextlib.asynccontextmanager
    async def _hub_call(
        self, call: ServiceCall, ctx: ErrorContext | None = None
    ) -> AsyncIterator[None]:
        """Turns an :class:`~agent.iothub.IotHubError` raised in the block into the caller's
        :class:`~agent.registry.ServiceError` (:meth:`_failure`), its cause dropped; any other
        exception passes through unchanged.

        Args:
            call: the service call the hub calls serve.
            ctx: what the message names (job, device, timeouts); none by default.
        """
        try:
            yield
        except IotHubError as exc:
            raise await self._failure(call, exc, ctx or ErrorContext()) from None

    async def _failure(
        self, call: ServiceCall, exc: IotHubError, ctx: ErrorContext
    ) -> ServiceError:
        """The caller's error for a hub failure; names the active job(s) on a 429004."""
        if isinstance(exc, HubRequestError) and exc.code == 429004:
            ctx = dataclasses.replace(ctx, active_jobs=await self._active_jobs(call, ctx.job_id))
        error = hub_failure(exc, ctx)
        call.log.info("hub call failed", error=error.message, status=error.status.name)
        return error

    async def _active_jobs(self, call: ServiceCall, excluding: str | None) -> list[str]:
        loop_deadline = min(call.deadline, _loop_time() + _ACTIVE_LOOKUP_SECONDS)
        jobs: list[Job] = []
        try:  # active jobs only: a hub's history of ended ones may exceed max_rows_per_call
            for active in ("running", "queued", "scheduled"):
                jobs += await self._client.list_jobs(
                    job_status=active, max_jobs=_ACTIVE_LISTED, deadline=loop_deadline
                )
        except IotHubError:
            return []
        now = self._clock()
        by_status: dict[str, list[str]] = {}
        for job in jobs:
            if job.job_id != excluding:
                status = job_status(job.status, job.start_time, now)
                by_status.setdefault(status, []).append(job.job_id)
        for status in ("running", "pending", "scheduled"):
            if by_status.get(status):
                return by_status[status]
        return []

    # -- the services ----------------------------------------------------------------------

    async def schedule_twin_job(self, call: ServiceCall, *, gateway: bool) -> InfoTable:
        """AzureIotDeviceJobScheduleTwinUpdateJob."""
        inputs = call.inputs
        patch, warnings = rules.check_patch(inputs["patch"])
        condition = self._condition(call, gateway=gateway)
        max_time = rules.check_max_execution_time(inputs["maxExecutionTimeInSeconds"])
        job_id = self._job_id(call)
        start, late = rules.check_start_time(inputs.get("startTime"), self._clock())
        warnings += late
        for warning in warnings:
            call.log.warning("request changed", job_id=job_id, warning=warning)
        async with self._hub_call(call, ErrorContext(job_id=job_id)):
            answer = await self._client.create_twin_job(
                job_id, condition, patch, start, max_time, deadline=call.deadline
            )
        requested = Job(
            job_id,
            TWIN_JOB,
            query_condition=condition,
            start_time=start,
            max_execution_time=max_time,
            update_twin=patch,
        )
        return self._created_table(_merge(answer, requested), warnings)

    def method_job_request(
        self, call: ServiceCall, *, gateway: bool, method_name: str, payload: Any
    ) -> MethodJobRequest:
        """Check the common and timeout inputs of a method job (also used by the wrappers)."""
        inputs = call.inputs
        start, warnings = rules.check_start_time(inputs.get("startTime"), self._clock())
        return MethodJobRequest(
            job_id=self._job_id(call),
            query_condition=self._condition(call, gateway=gateway),
            method_name=method_name,
            payload=payload,
            response_timeout=rules.check_response_timeout(inputs["responseTimeoutInSeconds"]),
            connect_timeout=rules.check_connect_timeout(inputs["connectTimeoutInSeconds"]),
            start_time=start,
            max_execution_time=rules.check_max_execution_time(inputs["maxExecutionTimeInSeconds"]),
            warnings=tuple(warnings),
        )

    async def schedule_method_job(self, call: ServiceCall, request: MethodJobRequest) -> InfoTable:
        """Create a device-method job (AzureIotDeviceJobScheduleDeviceMethodJob, wrappers)."""
        async with self._hub_call(call, ErrorContext(job_id=request.job_id)):
            answer = await self._client.create_method_job(
                request.job_id,
                request.query_condition,
                request.method_name,
                request.payload,
                request.response_timeout,
                request.connect_timeout,
                request.start_time,
                request.max_execution_time,
                deadline=call.deadline,
            )
        requested = Job(
            request.job_id,
            METHOD_JOB,
            query_condition=request.query_condition,
            start_time=request.start_time,
            max_execution_time=request.max_execution_time,
            method_name=request.method_name,
            payload=request.payload,
            response_timeout=request.response_timeout,
            connect_timeout=request.connect_timeout,
        )
        return self._created_table(_merge(answer, requested), request.warnings)

    def _created_table(self, job: Job, warnings: Sequence[str]) -> InfoTable:
        if self.watch is not None:
            self.watch.watch(job)
        return job_table([job], self._clock(), warnings)

    async def call_method(
        self,
        call: ServiceCall,
        device_id: str,
        method_name: str,
        payload: Any,
        *,
        job_form: str | None = None,
    ) -> InfoTable:
        """Call a direct method on one device now (the wrappers' device-Thing form).

        Args:
            call: the service call (inputs ``responseTimeoutInSeconds``,
                ``connectTimeoutInSeconds``).
            device_id: the device.
            method_name: the method.
            payload: its JSON payload.
            job_form: the name of the service that runs the same method as a job on the gateway
                Thing (named in the refusal of timeouts that cannot fit); default the method's.

        Raises:
            ServiceError: a timeout out of range, or connect + response (+ margin) longer than
                ``thingworx.request_timeout``; nothing is sent.
        """
        response_timeout = rules.check_response_timeout(call.inputs["responseTimeoutInSeconds"])
        connect_timeout = rules.check_connect_timeout(call.inputs["connectTimeoutInSeconds"])
        rules.check_direct_call_fits(
            connect_timeout,
            response_timeout,
            margin=self._settings.direct_call_margin,
            request_timeout=self.request_timeout,
            job_form=f"{job_form or method_name} on the gateway Thing {self.gateway_thing}",
        )
        ctx = ErrorContext(
            device_id=device_id,
            connect_timeout=connect_timeout,
            response_timeout=response_timeout,
        )
        async with self._hub_call(call, ctx):
            result = await self._client.invoke_method(
                device_id,
                method_name,
                payload,
                response_timeout,
                connect_timeout,
                deadline=call.deadline,
            )
        return method_result_table(device_id, result)

    async def get_job(self, call: ServiceCall, *, device: str | None = None) -> InfoTable:
        """AzureIotDeviceJobGetJob; on a device Thing (``device``), only a job targeting it."""
        job_id = rules.check_job_id(call.inputs["jobId"])
        async with self._hub_call(call, ErrorContext(job_id=job_id)):
            if self.watch is not None:
                job = await self.watch.read(job_id, call.deadline)
            else:
                job = await self._client.get_job(job_id, deadline=call.deadline)
            if device is not None and await self._out_of_scope(call, job, device):
                raise self._not_found(call, job_id)
        now = self._clock()
        return job_table([job], now, failures=await self._failures(call, job, now, device))

    async def _failures(
        self, call: ServiceCall, job: Job, now: datetime, device: str | None
    ) -> dict[str, int] | None:
        """An ended job's failed devices by kind (offline, no response, ...), for its summary.

        None when the job has none or the rows cannot be read (the summary then gives counts).
        """
        stats = job.statistics
        if not stats or not stats.failed_count:
            return None
        if job_status(job.status, job.start_time, now) not in TERMINAL_STATUSES:
            return None
        where = (
            f"devices.jobs.jobId = {rules.query_literal(job.job_id)} "
            "AND devices.jobs.status = 'failed'"
        )
        if device is not None:
            where = f"devices.jobs.deviceId = {rules.query_literal(device)} AND {where}"
        try:
            rows = await self._client.query_job_results(
                f"SELECT * FROM devices.jobs WHERE {where}",
                _FAILURE_ROWS,
                deadline=min(call.deadline, _loop_time() + _ACTIVE_LOOKUP_SECONDS),
            )
        except IotHubError:
            return None
        kinds: dict[str, int] = {}
        for row in rows:
            kind = failure_kind(row.error_code)
            kinds[kind] = kinds.get(kind, 0) + 1
        return kinds or None

    async def find_jobs(self, call: ServiceCall, *, device: str | None = None) -> InfoTable:
        """AzureIotDeviceJobFindJobs, newest first, at most ``maxRows``; on a device Thing
        (``device``) only the jobs targeting it."""
        type_input = (call.inputs.get("type") or "").strip()
        status_text = (call.inputs.get("status") or "").strip()
        max_rows = rules.check_max_rows(call.inputs.get("maxRows", self._settings.default_max_rows))
        hub_type: str | None = None
        if type_input:
            hub_type = JOB_TYPE_TO_HUB.get(type_input)
            if hub_type is None:
                raise ServiceError(
                    f"input type {type_input!r} is not a job type: use twinUpdate or "
                    "deviceMethod (or IoT Hub's scheduleUpdateTwin / scheduleDeviceMethod)"
                )
        wanted: str | None = None
        if status_text:
            wanted = status_input(status_text)
            if wanted is None:
                raise ServiceError(
                    f"input status {status_text!r} is not a job status: use one of "
                    f"{', '.join(JOB_STATUSES)}"
                )
        hub_status = HUB_STATUS_FILTER[wanted] if wanted else None
        scope = scope_digest(FIND_JOBS, call.thing, {"type": hub_type, "status": wanted})
        token = decode_token(call.inputs.get("continuationToken"), scope) or PageToken()
        after = _key_of(token.key)
        now = self._clock()
        async with self._hub_call(call):
            touched: set[str] | None = None
            if device is not None:
                rows = await self._device_rows(call, device, None, rules.MAX_ROWS_LIMIT)
                touched = {r.job_id for r in rows}
            start = token.hub
            while True:
                window = await self._client.list_jobs_window(
                    hub_type,
                    hub_status,
                    start=start,
                    max_bytes=self._page_bytes,
                    deadline=call.deadline,
                )
                if self.watch is not None:
                    # A fresh read of these jobs: GetJob must not answer an older status after
                    # it (FindJobs said completed, then GetJob "running" from the watch's read).
                    for job in window.jobs:
                        self.watch.observe(job)
                jobs = self._matching(window.jobs, device, touched, wanted, hub_type, now)
                if after is not None:
                    jobs = [j for j in jobs if _created(j) < after]
                # A window without a match says nothing: go on to the next one in this call.
                if jobs or window.next is None:
                    break
                start, after = window.next, None
        page = jobs[:max_rows]
        following: PageToken | None = None
        if len(jobs) > max_rows:
            created, job_id = _created(page[-1])
            following = PageToken(window.start, (created.isoformat(), job_id))
        elif window.next is not None:
            following = PageToken(window.next)
        continuation = encode_token(scope, following) if following else None
        return job_table(page, now, continuation=continuation)

    @staticmethod
    def _matching(
        jobs: list[Job],
        device: str | None,
        touched: set[str] | None,
        wanted: str | None,
        hub_type: str | None,
        now: datetime,
    ) -> list[Job]:
        """FindJobs' jobs of one window that the caller's filters and scope keep, newest first."""
        if device is not None:
            own = rules.device_condition(device)
            jobs = [j for j in jobs if j.query_condition == own or j.job_id in (touched or ())]
        if wanted:
            jobs = [j for j in jobs if job_status(j.status, j.start_time, now) == wanted]
        if hub_type:
            jobs = [j for j in jobs if not j.type or j.type == hub_type]
        return sorted(jobs, key=_created, reverse=True)

    async def cancel_job(self, call: ServiceCall, *, device: str | None = None) -> InfoTable:
        """AzureIotDeviceJobCancelJob: refused, naming the status, once a job runs or ended.

        On a device Thing (``device``) only a job targeting that device alone can be cancelled;
        any other is answered as a job that does not exist.
        """
        job_id = rules.check_job_id(call.inputs["jobId"])
        ctx = ErrorContext(job_id=job_id)
        async with self._hub_call(call, ctx):
            job = await self._client.get_job(job_id, deadline=call.deadline)
            if device is not None and job.query_condition != rules.device_condition(device):
                raise self._not_found(call, job_id)
        status = job_status(job.status, job.start_time, self._clock())
        if status == "running":
            raise ServiceError(
                f"job '{job_id}' is running: a running job cannot be cancelled (IoT Hub "
                "cancels only scheduled or pending jobs); wait for it to end"
            )
        if status in TERMINAL_STATUSES:
            raise ServiceError(
                f"job '{job_id}' has already ended (status {status}): only scheduled or "
                "pending jobs can be cancelled"
            )
        async with self._hub_call(call, ctx):
            answer = await self._client.cancel_job(job_id, deadline=call.deadline)
        cancelled = _merge(answer, job)
        if self.watch is not None:
            self.watch.observe(cancelled)
        return job_table([cancelled], self._clock())

    async def query_job_results(self, call: ServiceCall, *, device: str | None = None) -> InfoTable:
        """AzureIotDeviceJobQueryJobResults; on a device Thing (``device``) its rows only."""
        query = rules.check_results_query(call.inputs["query"])
        max_rows = rules.check_max_rows(call.inputs["maxRows"])
        scope = scope_digest(QUERY_JOB_RESULTS, call.thing, {"query": query})
        token = decode_token(call.inputs.get("continuationToken"), scope)
        if device is not None:
            query = rules.device_results_query(query, device)
        hub_token = token.hub if token else None
        async with self._hub_call(call):
            while True:
                page = await self._client.query_job_results_page(
                    query,
                    max_rows,
                    continuation=hub_token,
                    max_bytes=self._page_bytes,
                    deadline=call.deadline,
                )
                rows = page.rows
                if device is not None:
                    rows = [r for r in rows if r.device_id == device]  # whatever the hub matched
                # An empty page with more to read says nothing: read on in this call.
                if rows or page.next is None:
                    break
                hub_token = page.next
        continuation = encode_token(scope, PageToken(page.next)) if page.next else None
        return result_table(rows, continuation=continuation)


_OLDEST = datetime.min.replace(tzinfo=UTC)


def _created(job: Job) -> tuple[datetime, str]:
    return (job.created_time or job.start_time or _OLDEST, job.job_id)


def _key_of(key: tuple[str, str] | None) -> tuple[datetime, str] | None:
    """A FindJobs token's sort key as :func:`_created` gives it; None for none."""
    if key is None:
        return None
    try:
        created = datetime.fromisoformat(key[0])
    except ValueError:
        raise ServiceError(
            "input continuationToken cannot be read; it is not a token this service gave: pass "
            "the continuationToken of the previous page's first row unchanged"
        ) from None
    return (created if created.tzinfo else created.replace(tzinfo=UTC), key[1])


def _loop_time() -> float:
    return asyncio.get_running_loop().time()
