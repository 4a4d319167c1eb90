"""Validation of job requests the IoT Hub way (reference/iothub.md §3.3, §3.7)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.iothub.errors import HubError
from emulator.iothub.jobs import JobType, parse_job_request
from emulator.iothub.jobs.timestamps import format_utc, parse_utc


def method_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "jobId": "j1",
        "type": "scheduleDeviceMethod",
        "cloudToDeviceMethod": {"methodName": "reboot", "payload": {"a": 1}},
        "queryCondition": "deviceId IN ['d1']",
        "startTime": "2024-01-01T00:00:00.000Z",
        "maxExecutionTimeInSeconds": 3600,
    }
    body.update(overrides)
    return body


def twin_body(update: Any = None, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "jobId": "j1",
        "type": "scheduleUpdateTwin",
        "updateTwin": update
        if update is not None
        else {"tags": {"t": "v"}, "properties": {"desired": {"x": 1}}, "etag": "*"},
        "queryCondition": "tags.site = 'a'",
        "startTime": "2024-01-01T00:00:00Z",
        "maxExecutionTimeInSeconds": 60,
    }
    body.update(overrides)
    return body


def code_of(job_id: str, body: dict[str, Any]) -> int:
    with pytest.raises(HubError) as caught:
        parse_job_request(job_id, body)
    return caught.value.code


def test_method_job_gets_iot_hub_defaults() -> None:
    spec = parse_job_request("j1", method_body())
    assert spec.job_type is JobType.DEVICE_METHOD
    assert spec.start_time == datetime(2024, 1, 1, tzinfo=UTC)
    assert spec.method is not None
    assert spec.method.response_timeout == 30
    assert spec.method.connect_timeout == 0
    assert spec.operation_json()["cloudToDeviceMethod"]["responseTimeoutInSeconds"] == 30
    assert (spec.window_end - spec.start_time).total_seconds() == 3600


def test_twin_job_keeps_the_patch_as_sent() -> None:
    spec = parse_job_request("j1", twin_body())
    assert spec.twin_patch is not None
    assert spec.twin_patch.tags == {"t": "v"}
    assert spec.twin_patch.desired == {"x": 1}
    assert spec.operation_json()["updateTwin"]["etag"] == "*"


@pytest.mark.parametrize("job_id", ["", "a" * 65, "has space", "under_score", "é", "a/b"])
def test_bad_job_ids_are_refused(job_id: str) -> None:
    assert code_of(job_id, method_body(jobId=job_id)) == 400004


def test_job_id_may_be_64_letters_digits_and_dashes() -> None:
    job_id = "A-9" + "x" * 61
    assert parse_job_request(job_id, method_body(jobId=job_id)).job_id == job_id


def test_body_id_must_match_url_id() -> None:
    assert code_of("j2", method_body(jobId="j1")) == 400004
    assert parse_job_request("j2", method_body(jobId=None)).job_id == "j2"


@pytest.mark.parametrize("job_type", ["scheduleTwinUpdate", "scheduleDirectMethod", "export", None])
def test_wrong_type_names_are_generic_bad_requests(job_type: Any) -> None:
    assert code_of("j1", method_body(type=job_type)) == 400000


@pytest.mark.parametrize(
    "overrides",
    [
        {"queryCondition": None},
        {"queryCondition": "  "},
        {"queryCondition": "deviceId = 'x'" + " " * 8192},
        {"startTime": None},
        {"startTime": "yesterday"},
        {"maxExecutionTimeInSeconds": None},
        {"maxExecutionTimeInSeconds": 0},
        {"maxExecutionTimeInSeconds": "60"},
        {"maxExecutionTimeInSeconds": True},
        {"cloudToDeviceMethod": None},
        {"cloudToDeviceMethod": {"payload": 1}},
        {"cloudToDeviceMethod": {"methodName": "m", "responseTimeoutInSeconds": 4}},
        {"cloudToDeviceMethod": {"methodName": "m", "responseTimeoutInSeconds": 301}},
        {"cloudToDeviceMethod": {"methodName": "m", "connectTimeoutInSeconds": -1}},
        {"cloudToDeviceMethod": {"methodName": "m", "connectTimeoutInSeconds": 301}},
        {"cloudToDeviceMethod": {"methodName": "m", "payload": "x" * (128 * 1024)}},
        {"updateTwin": {"tags": {"a": 1}, "etag": "*"}},
    ],
)
def test_bad_method_job_fields_are_argument_invalid(overrides: dict[str, Any]) -> None:
    assert code_of("j1", method_body(**overrides)) == 400004


def test_query_condition_of_exactly_8192_chars_is_accepted() -> None:
    query = "deviceId = 'x'".ljust(8192)
    assert parse_job_request("j1", method_body(queryCondition=query)).query_condition == query


@pytest.mark.parametrize("etag", [None, "abc", '"*"', "W/1"])
def test_twin_job_etag_must_be_star(etag: Any) -> None:
    update = {"tags": {"t": "v"}, "etag": etag}
    assert code_of("j1", twin_body(update)) == 412001


@pytest.mark.parametrize(
    "update",
    [
        {"etag": "*"},
        {"etag": "*", "tags": {}},
        {"etag": "*", "properties": {"reported": {"x": 1}, "desired": {"y": 1}}},
        {"etag": "*", "tags": {"bad.key": 1}},
        {"etag": "*", "properties": {"desired": {"$version": 3}}},
        {"etag": "*", "properties": {"desired": {"a": {"b c": 1}}}},
        {"etag": "*", "tags": {"big": "x" * 9000}},
        {"etag": "*", "tags": "nope"},
    ],
)
def test_bad_twin_patches_are_argument_invalid(update: dict[str, Any]) -> None:
    assert code_of("j1", twin_body(update)) == 400004


def test_tags_only_and_desired_only_patches_are_accepted() -> None:
    tags_only = parse_job_request("j1", twin_body({"tags": {"a": 1}, "etag": "*"}))
    assert tags_only.twin_patch is not None and tags_only.twin_patch.desired is None
    desired_only = parse_job_request(
        "j1", twin_body({"properties": {"desired": {"a": 1}}, "etag": "*"})
    )
    assert desired_only.twin_patch is not None and desired_only.twin_patch.tags is None


def test_timestamps_read_service_forms_and_write_milliseconds() -> None:
    assert parse_utc("2024-01-01T00:00:00.1234567Z") == datetime(
        2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC
    )
    assert parse_utc("2024-01-01T01:00:00+01:00") == datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_utc("2024-01-01T00:00:00") == datetime(2024, 1, 1, tzinfo=UTC)
    assert format_utc(datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)) == (
        "2024-01-01T00:00:00.123Z"
    )


@given(st.dictionaries(st.text(max_size=12), st.none() | st.integers() | st.text(max_size=8)))
def test_arbitrary_bodies_parse_or_raise_hub_errors(body: dict[str, Any]) -> None:
    try:
        parse_job_request("j1", body)
    except HubError as exc:
        assert exc.code in {400000, 400004, 412001}
