"""Device-Thing scope and honest outcomes at the rules level (issue 13): pure functions only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.iothub import Job
from agent.iothub.models import JobStatistics
from agent.registry import ServiceError
from services import rules
from services.mapping import failure_kind
from services.shapes import JOB_SHAPE, job_row

DEVICE = "device-0005"
SCOPE = "SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'device-0005'"


def test_device_query_gets_the_device_in_front_of_the_callers_condition() -> None:
    assert rules.device_results_query("SELECT * FROM devices.jobs", DEVICE) == SCOPE
    assert (
        rules.device_results_query(
            "select * from devices.jobs where devices.jobs.jobId = 'j1' OR devices.jobs.jobId "
            "= 'j2'",
            DEVICE,
        )
        == f"{SCOPE} AND (devices.jobs.jobId = 'j1' OR devices.jobs.jobId = 'j2')"
    )
    # A quote in the device id is escaped, not closed.
    assert rules.device_results_query("SELECT * FROM devices.jobs", "it's") == (
        "SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'it\\'s'"
    )


@pytest.mark.parametrize(
    ("where", "words"),
    [
        ("devices.jobs.jobId = 'j1') OR (1 = 1", "unbalanced"),
        ("devices.jobs.jobId = 'j1' OR devices.jobs.deviceId != 'x' --", "comments"),
        ("devices.jobs.jobId = 'j1' /* ) OR ( */", "comments"),
        ("devices.jobs.jobId = 'j1'; SELECT * FROM devices.jobs", "one statement"),
        ("devices.jobs.jobId = 'j1", "never closed"),
        ('devices.jobs.jobId = "j1\\"', "never closed"),
        ("(devices.jobs.jobId = 'j1'", "never closed"),
        ("devices.jobs.jobId = \uff07j1\uff07 OR 1 = 1", r"U\+FF07"),
        ("devices.jobs.jobId = 'j1' \uff2f\uff32 1 = 1", r"U\+FF2F"),
        ("devices.jobs.jobId = 'j1'\u2029) OR (true", r"U\+2029"),
    ],
)
def test_device_query_cannot_be_widened(where: str, words: str) -> None:
    with pytest.raises(ServiceError, match=words):
        rules.device_results_query(f"SELECT * FROM devices.jobs WHERE {where}", DEVICE)


def test_quotes_and_brackets_inside_strings_are_only_text() -> None:
    where = "devices.jobs.jobId = 'a) OR (b \\' -- /* \uff2f\uff32'"
    assert rules.device_results_query(f"SELECT * FROM devices.jobs WHERE {where}", DEVICE) == (
        f"{SCOPE} AND ({where})"
    )


@given(st.text(max_size=200))
def test_any_accepted_condition_is_one_group(where: str) -> None:
    """Whatever is accepted sits inside the AND's parentheses: the scope always applies."""
    try:
        query = rules.device_results_query(f"SELECT * FROM devices.jobs WHERE {where}", DEVICE)
    except ServiceError:
        return
    assert query.startswith(f"{SCOPE} AND (") or query == SCOPE


def test_star_and_empty_condition_point_to_is_defined() -> None:
    for value in ("*", " * ", "", "  ", None):
        with pytest.raises(ServiceError, match=r"IS_DEFINED\(deviceId\)"):
            rules.check_query_condition(value, required=True)
    assert rules.check_query_condition("IS_DEFINED(deviceId)", required=True)


def test_start_time_in_the_past_is_sent_as_now_with_a_warning() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert rules.check_start_time(None, now) == (now, [])
    later = now + timedelta(hours=1)
    assert rules.check_start_time(later, now) == (later, [])
    assert rules.check_start_time(now - timedelta(seconds=1), now) == (now, [])
    start, warnings = rules.check_start_time(now - timedelta(days=1), now)
    assert start == now
    assert warnings == [
        "startTime 2029-12-31T00:00:00Z was in the past; the job was scheduled to start now"
    ]


def _job(status: str, count: int, ok: int, failed: int) -> Job:
    return Job(
        "j1",
        "scheduleDeviceMethod",
        status,
        query_condition="tags.site = 'nowhere'",
        statistics=JobStatistics(count, ok, failed, 0, 0),
    )


def test_summary_tells_failed_devices_of_a_completed_job() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert "summary" in JOB_SHAPE.names
    row = job_row(_job("completed", 10, 8, 2), now, failures={"offline": 2})
    assert row["status"] == "completed"
    assert row["summary"] == "completed: 8 succeeded, 2 failed (2 offline)"
    assert row["warnings"] is None
    assert job_row(_job("completed", 3, 3, 0), now)["summary"] == "completed: 3 succeeded, 0 failed"
    assert job_row(Job("j2", status="scheduled"), now)["summary"] == "scheduled"
    assert failure_kind("DeviceNotOnline") == "offline"
    assert failure_kind("JobRunPreconditionFailed") == "offline"
    assert failure_kind("GatewayTimeout") == "no response"


def test_a_job_that_ended_with_no_device_warns() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    row = job_row(_job("completed", 0, 0, 0), now)
    assert row["summary"] == "completed: no device"
    assert "queryCondition \"tags.site = 'nowhere'\" matched no device" in row["warnings"]
    # Still running: no verdict yet.
    assert job_row(_job("running", 0, 0, 0), now)["warnings"] is None
