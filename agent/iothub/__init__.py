"""The agent's asynchronous IoT Hub client (over the synchronous azure-iot-hub SDK).

Public names: :class:`IotHubClient`, the models it returns (:class:`Job`,
:class:`DeviceJobResult`, :class:`MethodResult`) and the exception tree rooted at
:class:`IotHubError`.
"""

from __future__ import annotations

from agent.iothub.client import METHOD_JOB, TWIN_JOB, IotHubClient
from agent.iothub.errors import (
    HUB_ERROR_CODES,
    HubRequestError,
    HubResponseError,
    HubTimeout,
    HubUnreachable,
    IotHubError,
    parse_error_response,
)
from agent.iothub.models import DeviceJobResult, Job, JobStatistics, MethodResult, parse_hub_time

__all__ = [
    "HUB_ERROR_CODES",
    "METHOD_JOB",
    "TWIN_JOB",
    "DeviceJobResult",
    "HubRequestError",
    "HubResponseError",
    "HubTimeout",
    "HubUnreachable",
    "IotHubClient",
    "IotHubError",
    "Job",
    "JobStatistics",
    "MethodResult",
    "parse_error_response",
    "parse_hub_time",
]
