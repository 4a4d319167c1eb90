"""IoT Hub error parsing (both body formats, header, code/name completion) and model readers."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

import agent.iothub as iothub
from agent.iothub import (
    DeviceJobResult,
    HubRequestError,
    Job,
    parse_error_response,
    parse_hub_time,
)


def test_plain_body_with_tracking_id() -> None:
    body = json.dumps(
        {
            "Message": "ErrorCode:ThrottlingMaxActiveJobCountExceeded;Maximum number of active "
            "jobs (1) exceeded",
            "ExceptionMessage": "Tracking ID:abc123-G:0-TimeStamp:11/25/2026 23:45:06",
        }
    )
    err = parse_error_response(
        429, {"iothub-errorcode": "ThrottlingMaxActiveJobCountExceeded"}, body
    )
    assert (err.http_status, err.code, err.name) == (
        429,
        429004,
        "ThrottlingMaxActiveJobCountExceeded",
    )
    assert err.message == "Maximum number of active jobs (1) exceeded"
    assert err.tracking_id == "abc123-G:0"
    assert str(err).startswith("429004 ThrottlingMaxActiveJobCountExceeded: Maximum")


def test_nested_method_body() -> None:
    inner = {
        "errorCode": 404103,
        "trackingId": "t-1",
        "message": "Timed out waiting for device to connect.",
        "info": {"timeout": "00:00:05"},
    }
    body = json.dumps({"Message": json.dumps(inner), "ExceptionMessage": ""})
    err = parse_error_response(404, {}, body)
    assert (err.code, err.name, err.tracking_id) == (404103, "DeviceNotOnline", "t-1")
    assert err.message == "Timed out waiting for device to connect."


def test_header_only_and_bare_object() -> None:
    err = parse_error_response(404, {"IotHub-ErrorCode": "JobNotFound"}, "")
    assert (err.code, err.name, err.message) == (404002, "JobNotFound", "")
    bare = parse_error_response(504, {}, json.dumps({"errorCode": 504101, "message": "late"}))
    assert (bare.code, bare.name, bare.message) == (504101, "GatewayTimeout", "late")


def test_unknown_text_body_is_the_message() -> None:
    err = parse_error_response(500, {}, b"<html>oops</html>")
    assert err.code is None and err.name == ""
    assert err.message == "<html>oops</html>"
    assert str(err) == "HTTP 500: <html>oops</html>"


@given(
    st.integers(100, 599), st.dictionaries(st.text(max_size=20), st.text(max_size=20)), st.text()
)
def test_parser_never_raises(status: int, headers: dict[str, str], body: str) -> None:
    err = parse_error_response(status, headers, body)
    assert isinstance(err, HubRequestError)
    assert "\n" not in err.message


def test_times() -> None:
    assert parse_hub_time("2024-01-01T00:00:00.1234567Z") == datetime(
        2024, 1, 1, 0, 0, 0, 123456, UTC
    )
    assert parse_hub_time("2024-01-01T02:00:00+02:00") == datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_hub_time("0001-01-01T00:00:00") is None
    assert parse_hub_time("not a time") is None
    assert parse_hub_time(None) is None


def test_job_reader_variants() -> None:
    job = Job.from_json(
        {
            "jobId": "j1",
            "jobType": "scheduleDeviceMethod",
            "status": "queued",
            "createdDateTimeUtc": "2024-01-01T00:00:00Z",
            "cloudToDeviceMethod": {
                "methodName": "reboot",
                "payload": {"a": 1},
                "responseTimeoutInSeconds": 30,
                "connectTimeoutInSeconds": 5,
            },
            "deviceJobStatistics": {"deviceCount": 3, "failedCount": 1},
        }
    )
    assert job.type == "scheduleDeviceMethod"
    assert job.created_time == datetime(2024, 1, 1, tzinfo=UTC)
    assert (job.method_name, job.payload, job.connect_timeout) == ("reboot", {"a": 1}, 5)
    assert job.statistics is not None and job.statistics.failed_count == 1
    with pytest.raises(ValueError):
        Job.from_json({"status": "queued"})


def test_device_job_row_reader() -> None:
    row = DeviceJobResult.from_json(
        {
            "deviceId": "d1",
            "jobId": "j1",
            "jobType": "scheduleDeviceMethod",
            "status": "failed",
            "outcome": {"deviceMethodResponse": {"status": 200, "payload": {"ok": True}}},
            "error": {"code": "JobRunPreconditionFailed", "description": "offline"},
        }
    )
    assert (row.method_status, row.method_payload) == (200, {"ok": True})
    assert (row.error_code, row.error_description) == ("JobRunPreconditionFailed", "offline")


def test_all_is_honest() -> None:
    for name in iothub.__all__:
        assert hasattr(iothub, name)
