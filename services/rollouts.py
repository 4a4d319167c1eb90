"""The rollout services on the gateway Thing (docs/services.md, docs/rollouts.md).

``AzureIotDeviceJobPlanRollout``, ``AzureIotDeviceJobStartRollout``,
``AzureIotDeviceJobGetRollout``,
``AzureIotDeviceJobFindRollouts``, ``AzureIotDeviceJobPauseRollout``,
``AzureIotDeviceJobResumeRollout``, ``AzureIotDeviceJobCancelRollout``,
``AzureIotDeviceJobQueryRolloutResults`` and ``AzureIotDeviceJobGetRolloutWaves``, with the
``AzureIotDeviceRollout``, ``AzureIotDeviceRolloutResult`` and ``AzureIotDeviceRolloutWave``
shapes. :meth:`RolloutServices.start_operation` is the seam the ``<Name>Rollout`` wrapper
services start through (their typed inputs checked by the wrapper, the rest here).

Rules:
- Every input is checked before anything is sent: the operation's inputs by the Schedule
  services' rules (:mod:`services.rules`), the plan's by :class:`rollouts.RolloutPlan`; a bad one
  is a BAD_REQUEST naming it. A malformed ``queryCondition`` is refused by the query grammar with
  its position, before the device query.
- Plan creates nothing; Start resolves the target once (the device query, or ``devices``) and
  stores the rollout; the engine (:mod:`services.rollout_engine`) runs it.
- The store is read and written off the event loop (the engine's
  :class:`~services.store.rollouts.AsyncRolloutStore`); a store that cannot answer makes the
  call a SERVICE_UNAVAILABLE naming the store (never its URL), not an internal error.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from agent.alwayson import BaseType, DataShape, FieldDefinition, InfoTable, Status
from agent.iothub import CallTooLarge, IotHubError
from agent.registry import RemoteService, ServiceCall, ServiceError
from agent.settings import JobSettings
from rollouts import (
    IllegalTransitionError,
    PlanError,
    RolloutEvent,
    RolloutPlan,
    check_device_ids,
    check_rollout_id,
    dry_run,
)
from rollouts.plan import MAX_DEVICES
from services import rules
from services.jobs import field
from services.mapping import ErrorContext, hub_failure
from services.rollout_engine import METHOD_ROLLOUT, TWIN_ROLLOUT, RolloutEngine
from services.shapes import column
from services.store.errors import RolloutExistsError, StaleRolloutError, StoreUnavailable
from services.store.rollouts import RolloutRecord

__all__ = [
    "CANCEL_ROLLOUT",
    "FIND_ROLLOUTS",
    "GET_ROLLOUT",
    "GET_ROLLOUT_WAVES",
    "PAUSE_ROLLOUT",
    "PLAN_ROLLOUT",
    "QUERY_ROLLOUT_RESULTS",
    "RESUME_ROLLOUT",
    "ROLLOUT_ONLY_INPUTS",
    "ROLLOUT_RESULT_SHAPE",
    "ROLLOUT_SERVICE_NAMES",
    "ROLLOUT_SHAPE",
    "ROLLOUT_STATUSES",
    "START_ROLLOUT",
    "WAVE_SHAPE",
    "RolloutServices",
]

PLAN_ROLLOUT = "AzureIotDeviceJobPlanRollout"
START_ROLLOUT = "AzureIotDeviceJobStartRollout"
GET_ROLLOUT = "AzureIotDeviceJobGetRollout"
FIND_ROLLOUTS = "AzureIotDeviceJobFindRollouts"
PAUSE_ROLLOUT = "AzureIotDeviceJobPauseRollout"
RESUME_ROLLOUT = "AzureIotDeviceJobResumeRollout"
CANCEL_ROLLOUT = "AzureIotDeviceJobCancelRollout"
QUERY_ROLLOUT_RESULTS = "AzureIotDeviceJobQueryRolloutResults"
GET_ROLLOUT_WAVES = "AzureIotDeviceJobGetRolloutWaves"
ROLLOUT_SERVICE_NAMES = (
    PLAN_ROLLOUT,
    START_ROLLOUT,
    GET_ROLLOUT,
    FIND_ROLLOUTS,
    PAUSE_ROLLOUT,
    RESUME_ROLLOUT,
    CANCEL_ROLLOUT,
    QUERY_ROLLOUT_RESULTS,
    GET_ROLLOUT_WAVES,
)
ROLLOUT_STATUSES = ("queued", "running", "paused", "completed", "aborted", "cancelled", "failed")
_DEVICE_STATUSES = ("pending", "succeeded", "failed")


ROLLOUT_SHAPE = DataShape.of(
    column("rolloutId", BaseType.STRING, "the rollout's id", key=True),
    column("status", BaseType.STRING, ", ".join(ROLLOUT_STATUSES)),
    column("type", BaseType.STRING, "twinUpdate or deviceMethod"),
    column("deviceCount", BaseType.INTEGER, "devices targeted"),
    column("succeededCount", BaseType.INTEGER, "devices that succeeded"),
    column("failedCount", BaseType.INTEGER, "devices failed for good"),
    column("pendingCount", BaseType.INTEGER, "devices not done yet"),
    column("retriedCount", BaseType.INTEGER, "devices retried at least once"),
    column("wave", BaseType.INTEGER, "the last wave started (0 before the first)"),
    column("waveCount", BaseType.INTEGER, "waves planned"),
    column("currentJobId", BaseType.STRING, "the hub job in flight"),
    column("reason", BaseType.STRING, "why it aborted or failed"),
    column("createdTime", BaseType.DATETIME, "when it was started (UTC)"),
    column("startTime", BaseType.DATETIME, "when its first hub job was created (UTC)"),
    column("endTime", BaseType.DATETIME, "when it ended (UTC)"),
    name="AzureIotDeviceRollout",
)
ROLLOUT_RESULT_SHAPE = DataShape.of(
    column("deviceId", BaseType.STRING, "the device", key=True),
    column("status", BaseType.STRING, "pending, succeeded or failed"),
    column("attempts", BaseType.INTEGER, "times the operation reached the device"),
    column("wave", BaseType.INTEGER, "the device's wave"),
    column("lastJobId", BaseType.STRING, "the last hub job that ran it"),
    column("errorCode", BaseType.STRING, "the hub's error code, if it failed"),
    column("errorDescription", BaseType.STRING, "the hub's error description"),
    column("methodStatus", BaseType.INTEGER, "the device's method answer status"),
    column("methodPayload", BaseType.JSON, "the device's method answer"),
    column("endTime", BaseType.DATETIME, "when the device was done (UTC)"),
    name="AzureIotDeviceRolloutResult",
)
WAVE_SHAPE = DataShape.of(
    column("wave", BaseType.INTEGER, "the wave", key=True),
    column("attempt", BaseType.INTEGER, "1 for the wave, 2.. for its retry rounds", key=True),
    column("deviceCount", BaseType.INTEGER, "devices in this round"),
    column("succeeded", BaseType.INTEGER, "devices that succeeded in this round"),
    column("failed", BaseType.INTEGER, "devices that failed in it (retried later or for good)"),
    column("pending", BaseType.INTEGER, "devices whose outcome in it is not known yet"),
    column("jobIds", BaseType.JSON, "the round's hub jobs (JSON array)"),
    column("status", BaseType.STRING, "waiting, planned, running, judged or dropped"),
    name="AzureIotDeviceRolloutWave",
)
PLAN_SHAPE = DataShape.of(
    column("valid", BaseType.BOOLEAN, "true when starting it would do something"),
    column("deviceCount", BaseType.INTEGER, "devices targeted"),
    column("sample", BaseType.JSON, "up to 20 device ids"),
    column("waveCount", BaseType.INTEGER, "waves"),
    column("waveSizes", BaseType.JSON, "devices per wave"),
    column("estimatedDurationSeconds", BaseType.LONG, "first wave to last, without retries"),
    column("warnings", BaseType.JSON, "one line each"),
    name="AzureIotDeviceRolloutPlan",
)
_PLAN_INPUTS = (
    "waveSize",
    "growthFactor",
    "maxWaveSize",
    "maxFailurePercent",
    "retries",
    "retryDelaySeconds",
    "retryDeviceErrors",
    "pauseBetweenWavesSeconds",
    "priority",
    "startTime",
    "windowStart",
    "windowEnd",
)
ROLLOUT_ONLY_INPUTS = frozenset({"rolloutId", "devices", *_PLAN_INPUTS} - {"startTime"})
"""Inputs a ``<Name>Rollout`` wrapper service adds that its Schedule form does not have."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


_Handler = Callable[["RolloutServices", ServiceCall], Awaitable[InfoTable]]


def _answers_store_errors(handler: _Handler) -> _Handler:
    """A service whose store fails answers SERVICE_UNAVAILABLE, one line naming the store; a
    request whose rollout kept changing under it (other agents' writes) answers the same, one
    line saying to try again."""

    @functools.wraps(handler)
    async def answer(self: RolloutServices, call: ServiceCall) -> InfoTable:
        try:
            return await handler(self, call)
        except (StoreUnavailable, StaleRolloutError) as exc:
            raise ServiceError(str(exc), Status.SERVICE_UNAVAILABLE) from None

    return answer


def rollout_row(record: RolloutRecord, counts: dict[str, int]) -> dict[str, Any]:
    """One ``AzureIotDeviceRollout`` row."""
    return {
        "rolloutId": record.rollout_id,
        "status": record.status,
        "type": record.type,
        "deviceCount": record.device_count,
        "succeededCount": counts.get("succeeded", 0),
        "failedCount": counts.get("failed", 0),
        "pendingCount": counts.get("pending", 0),
        "retriedCount": counts.get("retried", 0),
        "wave": record.wave,
        "waveCount": record.wave_count,
        "currentJobId": record.current_job_id,
        "reason": record.reason,
        "createdTime": record.created_time,
        "startTime": record.start_time,
        "endTime": record.end_time,
    }


class RolloutServices:
    """The nine rollout services over one :class:`RolloutEngine`.

    Args:
        engine: the running engine (its store and IoT Hub client).
        settings: the ``[jobs]`` settings (defaults of the method timeouts).
        clock: the current UTC time.
        new_id: makes a ``rolloutId`` when none is given.
    """

    def __init__(
        self,
        engine: RolloutEngine,
        settings: JobSettings,
        *,
        clock: Callable[[], datetime] = _utcnow,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.engine = engine
        self._settings = settings
        self._clock = clock
        self._new_id = new_id

    # -- inputs ----------------------------------------------------------------------------

    def target_inputs(self) -> list[FieldDefinition]:
        """``rolloutId``, ``queryCondition`` and ``devices``: the inputs naming a rollout and its
        target (Start's, and every ``<Name>Rollout`` wrapper's)."""
        return [
            field("rolloutId", BaseType.STRING, "1..36 letters, digits and '-' (default: new)"),
            field("queryCondition", BaseType.STRING, "WHERE part of a twin query (or devices)"),
            field("devices", BaseType.JSON, "JSON array of device ids (or queryCondition)"),
        ]

    def plan_inputs(self) -> list[FieldDefinition]:
        """The plan's inputs, ``waveSize`` .. ``windowEnd`` (Start's, and every wrapper's)."""
        return [
            field("waveSize", BaseType.INTEGER, "devices in the first wave (default 100)"),
            field("growthFactor", BaseType.NUMBER, "each wave's size over the last (1..10)"),
            field("maxWaveSize", BaseType.INTEGER, "the cap on any wave"),
            field("maxFailurePercent", BaseType.NUMBER, "abort above this failed share (0..100)"),
            field("retries", BaseType.INTEGER, "retries of retryable failures (0..10)"),
            field("retryDelaySeconds", BaseType.INTEGER, "least delay before a retry round"),
            field("retryDeviceErrors", BaseType.BOOLEAN, "also retry device error statuses"),
            field("pauseBetweenWavesSeconds", BaseType.INTEGER, "pause between waves, s"),
            field("priority", BaseType.INTEGER, "1 (first) .. 1000 (last), default 500"),
            field("startTime", BaseType.DATETIME, "when the first wave may start"),
            field("windowStart", BaseType.STRING, "daily window start, HH:MM UTC"),
            field("windowEnd", BaseType.STRING, "daily window end, HH:MM UTC"),
        ]

    def _inputs(self) -> list[FieldDefinition]:
        s = self._settings
        rollout_id, condition, devices = self.target_inputs()
        return [
            rollout_id,
            field("type", BaseType.STRING, "twinUpdate or deviceMethod", required=True),
            condition,
            devices,
            field("patch", BaseType.JSON, "twin patch of a twinUpdate rollout"),
            field("methodName", BaseType.STRING, "direct method of a deviceMethod rollout"),
            field("payload", BaseType.JSON, "the method's JSON payload"),
            field(
                "responseTimeoutInSeconds",
                BaseType.INTEGER,
                "seconds to wait for each device's answer (5..300)",
                default=s.default_response_timeout,
            ),
            field(
                "connectTimeoutInSeconds",
                BaseType.INTEGER,
                "seconds to wait for an offline device to connect (0..300)",
                default=s.default_connect_timeout,
            ),
            *self.plan_inputs(),
        ]

    def _operation(self, call: ServiceCall) -> tuple[str, dict[str, Any]]:
        """The checked type and operation of Plan and Start."""
        inputs = call.inputs
        rollout_type = (inputs.get("type") or "").strip()
        operation: dict[str, Any]
        if rollout_type == TWIN_ROLLOUT:
            if inputs.get("patch") is None:
                raise ServiceError("input patch is required for a twinUpdate rollout")
            patch, _ = rules.check_patch(inputs["patch"])
            operation = {"patch": patch}
        elif rollout_type == METHOD_ROLLOUT:
            if not inputs.get("methodName"):
                raise ServiceError("input methodName is required for a deviceMethod rollout")
            operation = {
                "methodName": rules.check_method_name(inputs["methodName"]),
                "payload": rules.check_payload("payload", inputs.get("payload")),
                "responseTimeoutInSeconds": rules.check_response_timeout(
                    inputs["responseTimeoutInSeconds"]
                ),
                "connectTimeoutInSeconds": rules.check_connect_timeout(
                    inputs["connectTimeoutInSeconds"]
                ),
            }
        else:
            raise ServiceError(
                f"input type {rollout_type!r} is not a rollout type: use twinUpdate or deviceMethod"
            )
        return rollout_type, operation

    @staticmethod
    def _plan(call: ServiceCall) -> tuple[dict[str, Any], RolloutPlan]:
        """The checked plan inputs (JSON-ready) and plan."""
        inputs = call.inputs
        plan_inputs = {k: inputs[k] for k in _PLAN_INPUTS if inputs.get(k) is not None}
        try:
            plan = RolloutPlan.from_inputs(plan_inputs)
        except PlanError as exc:
            raise ServiceError(str(exc)) from None
        if isinstance(plan_inputs.get("startTime"), datetime):
            plan_inputs["startTime"] = plan_inputs["startTime"].isoformat()
        return plan_inputs, plan

    async def _target(self, call: ServiceCall) -> tuple[list[str], list[str]]:
        """The target's device ids (resolved once) and the warnings."""
        condition, devices = call.inputs.get("queryCondition"), call.inputs.get("devices")
        if (condition is None) == (devices is None):
            raise ServiceError("give exactly one of the inputs queryCondition and devices")
        if devices is not None:
            if isinstance(devices, str):
                try:
                    devices = json.loads(devices)
                except ValueError:
                    raise ServiceError("input devices must be a JSON array of device ids") from None
            if not isinstance(devices, list):
                raise ServiceError("input devices must be a JSON array of device ids")
            try:
                return check_device_ids(devices)
            except PlanError as exc:
                raise ServiceError(str(exc)) from None
        checked = rules.check_query_condition(condition, required=True)
        try:
            ids = await self.engine.client.query_device_ids(
                checked, MAX_DEVICES, deadline=call.deadline
            )
        except CallTooLarge:
            raise ServiceError(
                f"queryCondition selects more than {MAX_DEVICES:,} devices: split the rollout"
            ) from None
        except IotHubError as exc:
            raise hub_failure(exc, ErrorContext()) from None
        return list(dict.fromkeys(ids)), []

    async def _record(self, call: ServiceCall) -> RolloutRecord:
        rollout_id = check_rollout_id_input(call.inputs.get("rolloutId"))
        record = await self.engine.store.get(rollout_id)
        if record is None:
            raise ServiceError(f"rollout '{rollout_id}' does not exist", Status.NOT_FOUND)
        return record

    async def _table(self, records: list[RolloutRecord]) -> InfoTable:
        store = self.engine.store
        return InfoTable(
            ROLLOUT_SHAPE, [rollout_row(r, await store.counts(r.rollout_id)) for r in records]
        )

    # -- the services ------------------------------------------------------------------------

    @_answers_store_errors
    async def plan(self, call: ServiceCall) -> InfoTable:
        """AzureIotDeviceJobPlanRollout: the dry run; creates nothing."""
        rollout_type, operation = self._operation(call)
        _, plan = self._plan(call)
        ids, warnings = await self._target(call)
        timeout = 0
        if rollout_type == METHOD_ROLLOUT:
            timeout = operation["responseTimeoutInSeconds"] + operation["connectTimeoutInSeconds"]
        try:
            answer = dry_run(
                plan,
                ids,
                now=self._clock(),
                tier=self.engine.tier,
                method_timeout_seconds=timeout,
                warnings=warnings,
            )
        except PlanError as exc:
            raise ServiceError(str(exc)) from None
        row = {
            "valid": answer.valid,
            "deviceCount": answer.device_count,
            "sample": list(answer.sample),
            "waveCount": answer.wave_count,
            "waveSizes": list(answer.wave_sizes),
            "estimatedDurationSeconds": answer.estimated_duration_seconds,
            "warnings": list(answer.warnings),
        }
        return InfoTable(PLAN_SHAPE, [row])

    @_answers_store_errors
    async def start(self, call: ServiceCall) -> InfoTable:
        """AzureIotDeviceJobStartRollout: store the rollout; the engine runs it."""
        return await self.start_operation(call, *self._operation(call))

    async def start_operation(
        self, call: ServiceCall, rollout_type: str, operation: dict[str, Any]
    ) -> InfoTable:
        """Start a rollout of an operation the caller has checked already: the seam of Start
        and of the ``<Name>Rollout`` wrapper services (:mod:`wrappers.services`).

        ``call`` carries the target and plan inputs (:meth:`target_inputs`,
        :meth:`plan_inputs`), checked here as Start checks them.

        Args:
            call: the service call.
            rollout_type: ``twinUpdate`` or ``deviceMethod``.
            operation: ``{"patch": ...}``, or ``methodName``, ``payload``,
                ``responseTimeoutInSeconds`` and ``connectTimeoutInSeconds``, all checked.

        Returns:
            One ``AzureIotDeviceRollout`` row.

        Raises:
            ServiceError: a bad input (BAD_REQUEST naming it), a rollout of that id exists, or
                the device query failed.
        """
        given = call.inputs.get("rolloutId")
        rollout_id = check_rollout_id_input(given) if given is not None else self._new_id()
        plan_inputs, plan = self._plan(call)
        if await self.engine.store.get(rollout_id) is not None:
            raise ServiceError(
                f"rollout '{rollout_id}' exists already: give another rolloutId or leave it out"
            )
        ids, warnings = await self._target(call)
        for warning in warnings:
            call.log.warning("rollout request changed", rollout_id=rollout_id, warning=warning)
        try:
            plan.wave_sizes(len(ids))
        except PlanError as exc:
            raise ServiceError(str(exc)) from None
        try:
            record = await self.engine.create(
                rollout_id, rollout_type, operation, plan_inputs, plan, ids
            )
        except RolloutExistsError:  # started by another call (or agent) since the check above
            raise ServiceError(
                f"rollout '{rollout_id}' exists already: give another rolloutId or leave it out"
            ) from None
        return await self._table([record])

    @_answers_store_errors
    async def get(self, call: ServiceCall) -> InfoTable:
        """AzureIotDeviceJobGetRollout."""
        return await self._table([await self._record(call)])

    @_answers_store_errors
    async def find(self, call: ServiceCall) -> InfoTable:
        """AzureIotDeviceJobFindRollouts: newest first, by status when given."""
        status = (call.inputs.get("status") or "").strip()
        if status and status not in ROLLOUT_STATUSES:
            raise ServiceError(
                f"input status {status!r} is not a rollout status: use one of "
                f"{', '.join(ROLLOUT_STATUSES)}"
            )
        max_rows = rules.check_max_rows(call.inputs["maxRows"])
        records = await self.engine.store.find([status] if status else None)
        records.reverse()
        return await self._table(records[:max_rows])

    async def _event(self, call: ServiceCall, event: RolloutEvent) -> InfoTable:
        record = await self._record(call)
        try:
            updated = await self.engine.request(record.rollout_id, event)
        except IllegalTransitionError as exc:
            raise ServiceError(f"rollout '{record.rollout_id}': {exc}") from None
        return await self._table([updated])

    @_answers_store_errors
    async def pause(self, call: ServiceCall) -> InfoTable:
        """AzureIotDeviceJobPauseRollout: at the next wave boundary."""
        return await self._event(call, RolloutEvent.PAUSE_REQUESTED)

    @_answers_store_errors
    async def resume(self, call: ServiceCall) -> InfoTable:
        """AzureIotDeviceJobResumeRollout."""
        return await self._event(call, RolloutEvent.RESUME_REQUESTED)

    @_answers_store_errors
    async def cancel(self, call: ServiceCall) -> InfoTable:
        """AzureIotDeviceJobCancelRollout: at the next wave boundary; the current wave's hub
        job is cancelled too if it has not started running."""
        return await self._event(call, RolloutEvent.CANCEL_REQUESTED)

    @_answers_store_errors
    async def results(self, call: ServiceCall) -> InfoTable:
        """AzureIotDeviceJobQueryRolloutResults: a row per device, in plan order."""
        record = await self._record(call)
        status = (call.inputs.get("status") or "").strip() or None
        if status is not None and status not in _DEVICE_STATUSES:
            raise ServiceError(
                f"input status {status!r} is not a device status: use one of "
                f"{', '.join(_DEVICE_STATUSES)}"
            )
        max_rows = rules.check_max_rows(call.inputs["maxRows"])
        devices = await self.engine.store.devices(record.rollout_id, status=status, limit=max_rows)
        rows = [
            {
                "deviceId": d.device_id,
                "status": d.status,
                "attempts": d.attempts,
                "wave": d.wave,
                "lastJobId": d.last_job_id,
                "errorCode": d.error_code,
                "errorDescription": d.error_description,
                "methodStatus": d.method_status,
                "methodPayload": d.method_payload,
                "endTime": d.end_time,
            }
            for d in devices
        ]
        return InfoTable(ROLLOUT_RESULT_SHAPE, rows)

    @_answers_store_errors
    async def waves(self, call: ServiceCall) -> InfoTable:
        """AzureIotDeviceJobGetRolloutWaves: one row per wave and attempt (the store's
        :meth:`~services.store.rollouts.RolloutStore.waves`)."""
        record = await self._record(call)
        max_rows = rules.check_max_rows(call.inputs["maxRows"])
        rows = [
            {
                "wave": w.wave,
                "attempt": w.attempt,
                "deviceCount": w.device_count,
                "succeeded": w.succeeded,
                "failed": w.failed,
                "pending": w.pending,
                "jobIds": list(w.job_ids),
                "status": w.status,
            }
            for w in await self.engine.store.waves(record.rollout_id, limit=max_rows)
        ]
        return InfoTable(WAVE_SHAPE, rows)

    # -- declaration -------------------------------------------------------------------------

    def declare(self) -> list[RemoteService]:
        """The nine services of the gateway Thing."""
        start_inputs = DataShape.of(*self._inputs())
        rollout_id = DataShape.of(
            field("rolloutId", BaseType.STRING, "the rollout's id", required=True)
        )
        max_rows = field(
            "maxRows", BaseType.INTEGER, "the most rows", default=self._settings.default_max_rows
        )

        def service(
            name: str,
            text: str,
            inputs: DataShape,
            shape: DataShape,
            handler: Any,
            action: str | None = None,
        ) -> RemoteService:
            return RemoteService(
                name, text, inputs, BaseType.INFOTABLE, shape, handler, audit_action=action
            )

        return [
            service(
                PLAN_ROLLOUT,
                "Dry run of a rollout: creates nothing",
                start_inputs,
                PLAN_SHAPE,
                self.plan,
            ),
            service(
                START_ROLLOUT,
                "Start a rollout: waves of IoT Hub jobs",
                start_inputs,
                ROLLOUT_SHAPE,
                self.start,
                "startRollout",
            ),
            service(GET_ROLLOUT, "Get a rollout's status", rollout_id, ROLLOUT_SHAPE, self.get),
            service(
                FIND_ROLLOUTS,
                "Find rollouts, newest first",
                DataShape.of(
                    field("status", BaseType.STRING, f"one of {', '.join(ROLLOUT_STATUSES)}"),
                    max_rows,
                ),
                ROLLOUT_SHAPE,
                self.find,
            ),
            service(
                PAUSE_ROLLOUT,
                "Pause a rollout at the next wave boundary",
                rollout_id,
                ROLLOUT_SHAPE,
                self.pause,
                "pauseRollout",
            ),
            service(
                RESUME_ROLLOUT,
                "Resume a paused rollout",
                rollout_id,
                ROLLOUT_SHAPE,
                self.resume,
                "resumeRollout",
            ),
            service(
                CANCEL_ROLLOUT,
                "Cancel a rollout at the next wave boundary",
                rollout_id,
                ROLLOUT_SHAPE,
                self.cancel,
                "cancelRollout",
            ),
            service(
                QUERY_ROLLOUT_RESULTS,
                "A rollout's per-device results",
                DataShape.of(
                    field("rolloutId", BaseType.STRING, "the rollout's id", required=True),
                    field("status", BaseType.STRING, "pending, succeeded or failed"),
                    max_rows,
                ),
                ROLLOUT_RESULT_SHAPE,
                self.results,
            ),
            service(
                GET_ROLLOUT_WAVES,
                "A rollout's progress per wave and attempt",
                DataShape.of(
                    field("rolloutId", BaseType.STRING, "the rollout's id", required=True),
                    max_rows,
                ),
                WAVE_SHAPE,
                self.waves,
            ),
        ]


def check_rollout_id_input(value: Any) -> str:
    """``rolloutId`` as a service input (BAD_REQUEST when it breaks the rule)."""
    try:
        return check_rollout_id(value)
    except PlanError as exc:
        raise ServiceError(str(exc)) from None
