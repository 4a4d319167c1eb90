"""The lifecycle tables: every listed transition passes, every other is refused."""

from __future__ import annotations

import itertools

import pytest

from emulator.iothub.jobs import (
    DEVICE_JOB_TRANSITIONS,
    JOB_TRANSITIONS,
    DeviceJobStatus,
    IllegalTransitionError,
    JobStatus,
)
from emulator.iothub.jobs.states import device_transition, job_transition

_JOB_ALLOWED = {
    ("scheduled", "queued"),
    ("scheduled", "cancelled"),
    ("queued", "running"),
    ("queued", "cancelled"),
    ("running", "completed"),
    ("running", "failed"),
}
_DEVICE_ALLOWED = {
    ("pending", "running"),
    ("pending", "failed"),
    ("pending", "canceled"),
    ("running", "completed"),
    ("running", "failed"),
}


@pytest.mark.parametrize(("old", "new"), list(itertools.product(JobStatus, JobStatus)))
def test_job_transitions_follow_the_table(old: JobStatus, new: JobStatus) -> None:
    if (old.value, new.value) in _JOB_ALLOWED:
        assert job_transition(old, new) is new
    else:
        with pytest.raises(IllegalTransitionError):
            job_transition(old, new)


@pytest.mark.parametrize(("old", "new"), list(itertools.product(DeviceJobStatus, DeviceJobStatus)))
def test_device_job_transitions_follow_the_table(
    old: DeviceJobStatus, new: DeviceJobStatus
) -> None:
    if (old.value, new.value) in _DEVICE_ALLOWED:
        assert device_transition(old, new) is new
    else:
        with pytest.raises(IllegalTransitionError):
            device_transition(old, new)


def test_terminal_states_have_no_way_out() -> None:
    for status in JobStatus:
        assert status.is_terminal == (not JOB_TRANSITIONS[status])
    for row_status in DeviceJobStatus:
        assert row_status.is_terminal == (not DEVICE_JOB_TRANSITIONS[row_status])


def test_spellings_match_iot_hub() -> None:
    assert JobStatus.CANCELLED.value == "cancelled"
    assert DeviceJobStatus.CANCELED.value == "canceled"
    assert JobStatus.RUNNING.wire_name == "Running"
