"""The agent's asynchronous IoT Hub client (over the synchronous azure-iot-hub SDK).

Public names: :class:`IotHubClient`, the models it returns (:class:`Job`,
:class:`DeviceJobResult`, :class:`MethodResult`, the pages :class:`JobWindow` and
:class:`ResultPage`), its lanes' counters (:class:`LoadCounters`)
and the exception tree rooted at :class:`IotHubError` (with :class:`LaneFull` and
:class:`CallTooLarge` from :mod:`agent.iothub.lanes`).
"""

from __future__ import annotations

from agent.iothub.client import METHOD_JOB, TWIN_JOB, IotHubClient, JobWindow, ResultPage
from agent.iothub.errors import (
    HUB_ERROR_CODES,
    HubRequestError,
    HubResponseError,
    HubTimeout,
    HubUnreachable,
    IotHubError,
    parse_error_response,
)
from agent.iothub.lanes import CallTooLarge, LaneFull, LoadCounters
from agent.iothub.models import DeviceJobResult, Job, JobStatistics, MethodResult, parse_hub_time

__all__ = [
    "HUB_ERROR_CODES",
    "METHOD_JOB",
    "TWIN_JOB",
    "CallTooLarge",
    "DeviceJobResult",
    "HubRequestError",
    "HubResponseError",
    "HubTimeout",
    "HubUnreachable",
    "IotHubClient",
    "IotHubError",
    "Job",
    "JobStatistics",
    "JobWindow",
    "LaneFull",
    "LoadCounters",
    "MethodResult",
    "ResultPage",
    "parse_error_response",
    "parse_hub_time",
]
