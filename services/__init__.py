"""The six ``AzureIotDeviceJob*`` remote services and their DataShapes (docs/services.md).

:class:`JobServices` declares the services of one Thing (:meth:`JobServices.declare`) over the
agent's :class:`~agent.iothub.IotHubClient`; :mod:`services.rules` holds the input rules,
:mod:`services.mapping` every translation table (types, statuses, IoT Hub errors),
:mod:`services.shapes` the result DataShapes.
"""

from __future__ import annotations

from services.jobs import (
    CANCEL_JOB,
    FIND_JOBS,
    GET_JOB,
    JOB_SERVICE_NAMES,
    QUERY_JOB_RESULTS,
    SCHEDULE_METHOD_JOB,
    SCHEDULE_TWIN_JOB,
    JobServices,
    MethodJobRequest,
)
from services.shapes import JOB_RESULT_SHAPE, JOB_SHAPE, METHOD_RESULT_SHAPE

__all__ = [
    "CANCEL_JOB",
    "FIND_JOBS",
    "GET_JOB",
    "JOB_RESULT_SHAPE",
    "JOB_SERVICE_NAMES",
    "JOB_SHAPE",
    "METHOD_RESULT_SHAPE",
    "QUERY_JOB_RESULTS",
    "SCHEDULE_METHOD_JOB",
    "SCHEDULE_TWIN_JOB",
    "JobServices",
    "MethodJobRequest",
]
