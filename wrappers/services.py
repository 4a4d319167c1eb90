"""Wrapper declarations turned into remote services.

From one :class:`~wrappers.declarations.WrapperDeclaration`:

- on a device Thing, ``<Name>`` calls the method on that device now and returns
  ``AzureIotDeviceMethodResult``;
- on the gateway Thing, ``<Name>`` schedules a device-method job over ``queryCondition``
  (required) and returns ``AzureIotDeviceJob``;
- on the gateway Thing, ``<Name>Rollout`` (:func:`wrapper_rollout_service`) starts a rollout of
  the method (docs/rollouts.md): the typed inputs, the target (``queryCondition`` or
  ``devices``) and the plan's inputs, and returns one ``AzureIotDeviceRollout`` row.

Both take the declared typed inputs plus ``responseTimeoutInSeconds`` and
``connectTimeoutInSeconds`` (a direct call's defaults are ``jobs.direct_*_timeout``, and its
connect + response + ``jobs.direct_call_margin`` must fit in ``thingworx.request_timeout``, or it
is refused before anything is sent: the platform would give up on it first); the typed inputs
become the method's JSON payload exactly (a member
per input given or defaulted; DATETIME as ISO-8601 UTC text). The registry has checked types,
required inputs and unknown inputs before the handler runs, so nothing is sent for a bad call.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from agent.alwayson import BaseType, DataShape, FieldDefinition, InfoTable
from agent.registry import RemoteService, ServiceCall
from agent.settings import JobSettings
from services import JOB_SHAPE, METHOD_RESULT_SHAPE, JobServices
from services.jobs import field
from services.rollout_engine import METHOD_ROLLOUT
from services.rollouts import ROLLOUT_SHAPE, RolloutServices
from services.rules import check_connect_timeout, check_response_timeout
from wrappers.declarations import ROLLOUT_SUFFIX, WrapperDeclaration

__all__ = ["build_payload", "wrapper_rollout_service", "wrapper_service"]


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


def build_payload(declaration: WrapperDeclaration, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The method payload: one member per declared input the call has (given or defaulted)."""
    return {
        item.name: _json_value(inputs[item.name])
        for item in declaration.inputs
        if inputs.get(item.name) is not None
    }


def _typed_inputs(declaration: WrapperDeclaration) -> list[FieldDefinition]:
    return [
        field(
            item.name,
            item.base_type,
            item.description,
            required=item.required,
            default=item.default,
        )
        for item in declaration.inputs
    ]


def wrapper_service(
    declaration: WrapperDeclaration,
    jobs: JobServices,
    settings: JobSettings,
    thing: str,
    *,
    gateway: bool,
) -> RemoteService:
    """The wrapper service of ``declaration`` for one Thing.

    Args:
        declaration: the checked declaration.
        jobs: the job services (method jobs and direct calls go through them).
        settings: the ``[jobs]`` settings (the direct call's deadline margin).
        thing: the Thing's name (a device Thing's name is its device id).
        gateway: True for the gateway Thing (a method job), False for a device (a direct call).
    """
    typed = _typed_inputs(declaration)
    method = declaration.method
    description = declaration.description or f"calls the device method {method}"

    if gateway:

        async def schedule(call: ServiceCall) -> InfoTable:
            payload = build_payload(declaration, call.inputs)
            request = jobs.method_job_request(
                call, gateway=True, method_name=method, payload=payload
            )
            return await jobs.schedule_method_job(call, request)

        return RemoteService(
            declaration.name,
            f"{description} (a device-method job over queryCondition)",
            DataShape.of(*typed, *jobs.common_inputs(thing, gateway=True), *jobs.timeout_inputs()),
            BaseType.INFOTABLE,
            JOB_SHAPE,
            schedule,
            audit_action="scheduleMethodJob",
        )

    async def direct(call: ServiceCall) -> InfoTable:
        payload = build_payload(declaration, call.inputs)
        return await jobs.call_method(call, thing, method, payload, job_form=declaration.name)

    # The registry's deadline must outlast the client's own (connect + response + margin), which
    # the fit rule keeps within the platform's request timeout.
    return RemoteService(
        declaration.name,
        f"{description} (a direct call on this device now; for long waits use "
        f"{declaration.name} on the gateway Thing)",
        DataShape.of(*typed, *jobs.timeout_inputs(direct=True)),
        BaseType.INFOTABLE,
        METHOD_RESULT_SHAPE,
        direct,
        timeout=jobs.request_timeout + settings.direct_call_margin,
        audit_action="callMethod",
    )


def wrapper_rollout_service(
    declaration: WrapperDeclaration, jobs: JobServices, rollouts: RolloutServices
) -> RemoteService:
    """``<Name>Rollout`` on the gateway Thing: a rollout of the wrapper's device method.

    Its inputs are the wrapper's typed inputs (checked by the registry as for ``<Name>``, with
    the same ThingWorx-worded errors), the timeouts of its method job, and the rollout's target
    and plan inputs (checked by :meth:`RolloutServices.start_operation`, as Start checks them).
    Nothing is created for a bad input.

    Args:
        declaration: the checked declaration.
        jobs: the job services (the timeout inputs, as ``<Name>`` declares them).
        rollouts: the rollout services (the start seam and the target and plan inputs).
    """
    method = declaration.method
    description = declaration.description or f"calls the device method {method}"

    async def start(call: ServiceCall) -> InfoTable:
        inputs = call.inputs
        operation = {
            "methodName": method,
            "payload": build_payload(declaration, inputs),
            "responseTimeoutInSeconds": check_response_timeout(inputs["responseTimeoutInSeconds"]),
            "connectTimeoutInSeconds": check_connect_timeout(inputs["connectTimeoutInSeconds"]),
        }
        return await rollouts.start_operation(call, METHOD_ROLLOUT, operation)

    return RemoteService(
        declaration.name + ROLLOUT_SUFFIX,
        f"{description} (a rollout: waves of device-method jobs over queryCondition or devices)",
        DataShape.of(
            *_typed_inputs(declaration),
            *rollouts.target_inputs(),
            *jobs.timeout_inputs(),
            *rollouts.plan_inputs(),
        ),
        BaseType.INFOTABLE,
        ROLLOUT_SHAPE,
        start,
        audit_action="startRollout",
    )
