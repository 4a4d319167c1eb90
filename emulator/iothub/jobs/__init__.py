"""The IoT Hub emulator's job engine: v2 jobs (``scheduleUpdateTwin``, ``scheduleDeviceMethod``).

:class:`JobEngine` implements :class:`emulator.iothub.ports.JobService` on top of a
:class:`~emulator.iothub.ports.TwinStore` and a :class:`~emulator.iothub.ports.DeviceLink`, with
its state in the emulator's SQLite database. See docs/job-engine.md for the lifecycle tables,
timing rules and the choices made where IoT Hub's documentation is silent.
"""

from __future__ import annotations

from emulator.iothub.jobs.engine import ConditionParser, JobEngine
from emulator.iothub.jobs.exceptions import (
    EngineStateError,
    IllegalTransitionError,
    JobEngineError,
)
from emulator.iothub.jobs.spec import JobSpec, MethodCall, TwinPatch, parse_job_request
from emulator.iothub.jobs.states import (
    DEVICE_JOB_TRANSITIONS,
    JOB_TRANSITIONS,
    DeviceJobStatus,
    JobStatus,
    JobType,
)
from emulator.iothub.jobs.tiers import TIERS, Tier

__all__ = [
    "DEVICE_JOB_TRANSITIONS",
    "JOB_TRANSITIONS",
    "TIERS",
    "ConditionParser",
    "DeviceJobStatus",
    "EngineStateError",
    "IllegalTransitionError",
    "JobEngine",
    "JobEngineError",
    "JobSpec",
    "JobStatus",
    "JobType",
    "MethodCall",
    "Tier",
    "TwinPatch",
    "parse_job_request",
]
