"""Job and device-job lifecycles, as explicit transition tables.

Job statuses (``JobResponse.status``, reference/iothub.md §3.2)::

    scheduled ──► queued ──► running ──► completed   (also when device jobs failed)
        │           │           └──────► failed      (job-level failure: bad queryCondition)
        └───────────┴──────────────────► cancelled   (only before running)

Device-job statuses (``devices.jobs`` rows, §3.5; note the one-l ``canceled``)::

    pending ──► running ──► completed | failed
       ├──────────────────► failed      (job window ended before the device was reached)
       └──────────────────► canceled

Rules: every status change in the engine goes through :func:`job_transition` or
:func:`device_transition`, which raise :class:`IllegalTransitionError` for anything the tables do
not list. ``running → running`` is not a transition: recovery resumes a running row as it is.
"""

from __future__ import annotations

from enum import StrEnum

from emulator.iothub.jobs.exceptions import IllegalTransitionError

__all__ = [
    "DEVICE_JOB_TRANSITIONS",
    "JOB_TRANSITIONS",
    "DeviceJobStatus",
    "JobStatus",
    "JobType",
    "device_transition",
    "job_transition",
]


class JobType(StrEnum):
    """The two job types ``/jobs/v2`` accepts, spelled as IoT Hub spells them."""

    DEVICE_METHOD = "scheduleDeviceMethod"
    UPDATE_TWIN = "scheduleUpdateTwin"


class JobStatus(StrEnum):
    """A job's status as ``JobResponse.status`` carries it."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for completed, failed and cancelled."""
        return self in _TERMINAL_JOB

    @property
    def wire_name(self) -> str:
        """The status as the 405102 message spells it (``'Running'``)."""
        return self.value.capitalize()


class DeviceJobStatus(StrEnum):
    """A device job's status as a ``devices.jobs`` row carries it."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        """True for completed, failed and canceled."""
        return self in _TERMINAL_DEVICE


_TERMINAL_JOB = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
_TERMINAL_DEVICE = frozenset(
    {DeviceJobStatus.COMPLETED, DeviceJobStatus.FAILED, DeviceJobStatus.CANCELED}
)

JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.SCHEDULED: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED}),
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset({JobStatus.COMPLETED, JobStatus.FAILED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}
"""Allowed job status changes: ``JOB_TRANSITIONS[old]`` holds every legal new status."""

DEVICE_JOB_TRANSITIONS: dict[DeviceJobStatus, frozenset[DeviceJobStatus]] = {
    DeviceJobStatus.PENDING: frozenset(
        {DeviceJobStatus.RUNNING, DeviceJobStatus.FAILED, DeviceJobStatus.CANCELED}
    ),
    DeviceJobStatus.RUNNING: frozenset({DeviceJobStatus.COMPLETED, DeviceJobStatus.FAILED}),
    DeviceJobStatus.COMPLETED: frozenset(),
    DeviceJobStatus.FAILED: frozenset(),
    DeviceJobStatus.CANCELED: frozenset(),
}
"""Allowed device-job status changes: ``DEVICE_JOB_TRANSITIONS[old]`` holds every legal new one."""


def job_transition(old: JobStatus, new: JobStatus) -> JobStatus:
    """Check a job status change against :data:`JOB_TRANSITIONS`.

    Args:
        old: the job's current status.
        new: the status it should move to.

    Returns:
        ``new``, so that callers can write ``status = job_transition(status, X)``.

    Raises:
        IllegalTransitionError: when the table does not allow ``old → new``.
    """
    if new not in JOB_TRANSITIONS[old]:
        raise IllegalTransitionError(f"job status cannot go from {old.value} to {new.value}")
    return new


def device_transition(old: DeviceJobStatus, new: DeviceJobStatus) -> DeviceJobStatus:
    """Check a device-job status change against :data:`DEVICE_JOB_TRANSITIONS`.

    Args:
        old: the row's current status.
        new: the status it should move to.

    Returns:
        ``new``.

    Raises:
        IllegalTransitionError: when the table does not allow ``old → new``.
    """
    if new not in DEVICE_JOB_TRANSITIONS[old]:
        raise IllegalTransitionError(f"device job status cannot go from {old.value} to {new.value}")
    return new
