"""The job services' input rules and translation tables, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import services
from agent.alwayson import Status
from agent.iothub import HubRequestError, HubResponseError, HubTimeout, HubUnreachable
from agent.registry import ServiceError
from services import rules
from services.mapping import (
    ErrorContext,
    device_job_status,
    hub_failure,
    job_status,
    job_type,
    status_input,
)
from services.shapes import JOB_RESULT_SHAPE, JOB_SHAPE, METHOD_RESULT_SHAPE

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_patch_rules() -> None:
    patch, warnings = rules.check_patch(
        {"properties": {"desired": {"x": 1}, "reported": {"y": 2}}, "tags": {"t": "a"}}
    )
    assert patch == {"properties": {"desired": {"x": 1}}, "tags": {"t": "a"}}
    assert warnings and "reported" in warnings[0]
    assert rules.check_patch('{"tags": {"a": 1}}') == ({"tags": {"a": 1}}, [])


@pytest.mark.parametrize(
    ("patch", "words"),
    [
        ([1], "JSON object"),
        ({"desired": {"x": 1}}, "top level"),
        ({"properties": {"reported": {"x": 1}}}, "properties.desired and/or tags"),
        ({"properties": {"desired": 3}}, "desired must be a JSON object"),
        ({"properties": {"other": {}}}, "only hold desired"),
        ({"tags": []}, "tags must be a JSON object"),
        ({}, "properties.desired and/or tags"),
        ("{not json", "not valid JSON"),
    ],
)
def test_patch_refusals(patch: Any, words: str) -> None:
    with pytest.raises(ServiceError, match="patch") as caught:
        rules.check_patch(patch)
    assert words in caught.value.message and caught.value.status is Status.BAD_REQUEST


def _nested(levels: int) -> dict[str, Any]:
    """``levels`` objects nested under the section root, the innermost holding one value."""
    inner: dict[str, Any] = {"property": "value"}
    for level in range(levels - 1, 0, -1):
        inner = {f"l{level}": inner}
    return inner


def test_twin_limits_accept_what_iot_hub_accepts() -> None:
    # IoT Hub's own example: ten levels of objects under tags.
    tags = {"one": _nested(10)}
    assert rules.check_patch({"tags": tags})[0] == {"tags": tags}
    # Exactly at the size limits, counted as IoT Hub counts (key characters + value size).
    at_limit = {"k": "v" * (4096 - 1), "k2": "w" * (8192 - 4096 - 2 - 1)}
    assert rules._twin_size("tags", at_limit, 1) == 8192 - 1
    rules.check_patch({"tags": at_limit})
    desired = {f"p{i:02d}": "x" * 4000 for i in range(8)}  # 8 x 4,003 = 32,024
    rules.check_patch({"properties": {"desired": desired}})
    # Nulls delete properties and count for nothing; non-ASCII keys and values are allowed.
    rules.check_patch({"properties": {"desired": {"gone": None, "température": "élevée"}}})


@pytest.mark.parametrize(
    ("patch", "words"),
    [
        ({"tags": {"a.b": 1}}, "key 'a.b' in tags is not allowed"),
        ({"tags": {"$version": 1}}, "not allowed in a twin"),
        ({"properties": {"desired": {"x": {"with space": 1}}}}, "properties.desired.x"),
        ({"tags": {"ctl\u0001": 1}}, "not allowed in a twin"),
        ({"tags": {"": 1}}, "not allowed in a twin"),
        ({"tags": {"k" * 1025: 1}}, "1..1024 bytes"),
        ({"tags": {"one": _nested(11)}}, "more than 10 deep"),
        ({"tags": {"s": "x" * 4097}}, "over 4 KB"),
        ({"tags": {f"k{i}": "x" * 4000 for i in range(3)}}, "at most 8 KB (8,192)"),
        ({"properties": {"desired": {f"k{i}": "x" * 4000 for i in range(9)}}}, "at most 32 KB"),
    ],
)
def test_twin_limit_refusals(patch: Any, words: str) -> None:
    with pytest.raises(ServiceError, match="input patch") as caught:
        rules.check_patch(patch)
    assert words in caught.value.message, caught.value.message
    assert caught.value.status is Status.BAD_REQUEST


def _deep_list(levels: int) -> list[Any]:
    inner: list[Any] = []
    for _ in range(levels - 1):
        inner = [inner]
    return inner


def test_lists_count_in_the_twin_depth() -> None:
    # Ten levels of containers under the section pass, whether objects or lists.
    rules.check_patch({"tags": {"a": _deep_list(10)}})
    rules.check_patch({"properties": {"desired": {"a": [{"b": _deep_list(8)}]}}})
    for levels in (11, 950, 100_000):  # 950: the case; 100,000: far past the stack
        with pytest.raises(ServiceError) as caught:
            rules.check_patch({"properties": {"desired": {"a": _deep_list(levels)}}})
        assert caught.value.status is Status.BAD_REQUEST
        assert caught.value.message == (
            "input patch: properties.desired.a[0][0][0][0][0][0][0][0][0][0] nests objects and "
            "lists more than 10 deep, which IoT Hub refuses"
        )


def test_job_id_rules() -> None:
    assert rules.check_job_id("job-1") == "job-1"
    for bad in ("", "a" * 65, "job_1", "jöb", "a b", "known-1\n", "\nknown-1"):
        with pytest.raises(ServiceError, match="jobId"):
            rules.check_job_id(bad)


@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (
            rules.check_job_id,
            "known-1\n",
            "input jobId 'known-1\\n' may only hold ASCII letters, digits and '-'",
        ),
        (
            rules.check_method_name,
            "reboot\n",
            "input methodName 'reboot\\n' must be 1..100 characters without spaces, '$', '/', "
            "'?' or '#'",
        ),
        (
            rules.check_max_execution_time,
            2**62,
            "input maxExecutionTimeInSeconds is 4611686018427387904; the job window may be at "
            "most 2592000 seconds (30 days, as long as IoT Hub keeps a job): choose a shorter "
            "window",
        ),
        (
            rules.check_max_execution_time,
            0,
            "input maxExecutionTimeInSeconds is 0; the job window must be at least 1 second",
        ),
    ],
)
def test_whole_string_and_bounded_inputs(check: Any, value: Any, message: str) -> None:
    with pytest.raises(ServiceError) as caught:
        check(value)
    assert caught.value.message == message and caught.value.status is Status.BAD_REQUEST


def test_method_name_and_window_accepted_at_their_bounds() -> None:
    assert rules.check_method_name("m" * 100) == "m" * 100
    assert rules.check_max_execution_time(1) == 1
    assert rules.check_max_execution_time(30 * 24 * 3600) == 2_592_000
    with pytest.raises(ServiceError, match="at most 2592000 seconds"):
        rules.check_max_execution_time(2_592_001)


@pytest.mark.parametrize(
    "payload", ["hello", '"hello"', "", 42, 2.5, True, None, [1, "x"], {"a": {"b": [None]}}]
)
def test_any_json_value_is_a_payload(payload: Any) -> None:
    # A string is a JSON string as given, never parsed again as JSON text.
    assert rules.check_payload("payload", payload) == payload


def test_payload_refusals() -> None:
    with pytest.raises(ServiceError, match="131073 bytes of JSON; IoT Hub carries at most"):
        rules.check_payload("payload", "x" * (128 * 1024 - 1))
    with pytest.raises(ServiceError, match="input payload cannot be sent as JSON"):
        rules.check_payload("payload", float("nan"))
    with pytest.raises(ServiceError, match="input payload cannot be sent as JSON"):
        rules.check_payload("payload", _deep_list(100_000))


def test_query_condition_rules() -> None:
    assert rules.check_query_condition(" deviceId = 'a' ", required=True) == "deviceId = 'a'"
    with pytest.raises(ServiceError, match="required on the gateway"):
        rules.check_query_condition(None, required=True)
    with pytest.raises(ServiceError, match="8192"):
        rules.check_query_condition("x" * 8193, required=True)
    with pytest.raises(ServiceError, match="WHERE part"):
        rules.check_query_condition("SELECT * FROM devices", required=False)
    assert rules.device_condition("it's") == "deviceId = 'it\\'s'"


@pytest.mark.parametrize(
    "query",
    [
        "SELECT deviceId FROM devices.jobs",
        "SELECT * FROM devices",
        "SELECT COUNT() FROM devices.jobs",
        "SELECT * FROM devices.jobs GROUP BY status",
        "DELETE FROM devices.jobs",
    ],
)
def test_results_query_refusals(query: str) -> None:
    with pytest.raises(ServiceError, match="input query"):
        rules.check_results_query(query)


def test_results_query_accepted() -> None:
    q = "select * from devices.jobs where devices.jobs.jobId = 'j'"
    assert rules.check_results_query(q) == q
    assert rules.check_results_query("SELECT * FROM devices.jobs") == "SELECT * FROM devices.jobs"


@given(st.integers(-1000, 1000))
def test_timeouts_refused_not_clamped(value: int) -> None:
    for check, (low, high) in (
        (rules.check_response_timeout, rules.RESPONSE_TIMEOUT_RANGE),
        (rules.check_connect_timeout, rules.CONNECT_TIMEOUT_RANGE),
    ):
        if low <= value <= high:
            assert check(value) == value
        else:
            with pytest.raises(ServiceError, match="between"):
                check(value)


def test_statuses_and_types() -> None:
    later = NOW + timedelta(hours=1)
    assert job_status("queued", NOW, NOW) == "pending"
    assert job_status("enqueued", None, NOW) == "pending"
    assert job_status("queued", later, NOW) == "scheduled"
    assert job_status("canceled", None, NOW) == "cancelled"
    assert job_status("weird", None, NOW) == "unknown"
    assert device_job_status("canceled") == "cancelled"
    assert job_type("scheduleUpdateTwin") == "twinUpdate"
    assert job_type("scheduleDeviceMethod") == "deviceMethod"
    assert status_input("Queued") == "pending"
    assert status_input("nope") is None


def _err(status: int, code: int, name: str, message: str = "") -> HubRequestError:
    return HubRequestError(status, code=code, name=name, message=message)


def test_hub_failure_messages() -> None:
    busy = hub_failure(
        _err(
            429, 429004, "ThrottlingMaxActiveJobCountExceeded", "Maximum number of active jobs (1)"
        ),
        ErrorContext(job_id="new", active_jobs=["x"]),
    )
    assert busy.status is Status.SERVICE_UNAVAILABLE
    assert busy.message.startswith(
        "429004 ThrottlingMaxActiveJobCountExceeded: only 1 job may run at a time on this hub "
        "tier; wait for job 'x' to end"
    )
    offline = hub_failure(
        _err(404, 404103, "DeviceNotOnline"), ErrorContext(device_id="d", connect_timeout=5)
    )
    assert offline.message.startswith("404103 DeviceNotOnline: device 'd' is offline")
    assert offline.status is Status.NOT_FOUND
    late = hub_failure(
        _err(504, 504101, "GatewayTimeout"), ErrorContext(device_id="d", response_timeout=30)
    )
    assert late.message.startswith("504101 GatewayTimeout: device 'd' did not respond within 30 s")
    assert late.status is Status.GATEWAY_TIMEOUT
    assert hub_failure(_err(404, 404002, "JobNotFound"), ErrorContext(job_id="j")).status is (
        Status.NOT_FOUND
    )
    assert hub_failure(HubTimeout("t", 3.0)).status is Status.GATEWAY_TIMEOUT
    assert hub_failure(HubUnreachable("down")).status is Status.SERVICE_UNAVAILABLE
    assert hub_failure(HubResponseError("bad")).status is Status.BAD_GATEWAY
    assert hub_failure(HubRequestError(418)).status is Status.BAD_REQUEST
    assert hub_failure(HubRequestError(502)).status is Status.BAD_GATEWAY


def test_shapes_as_listed() -> None:
    assert JOB_SHAPE.name == "AzureIotDeviceJob"
    assert JOB_SHAPE.names == (
        "jobId", "type", "status", "hubStatus", "queryCondition", "createdTime", "startTime",
        "endTime", "maxExecutionTimeInSeconds", "methodName", "payload",
        "responseTimeoutInSeconds", "connectTimeoutInSeconds", "patch", "deviceCount",
        "succeededCount", "failedCount", "runningCount", "pendingCount", "failureReason",
        "statusMessage", "warnings", "summary", "continuationToken",
    )  # fmt: skip
    assert JOB_SHAPE.field("jobId").is_primary_key
    assert JOB_RESULT_SHAPE.field("deviceId").is_primary_key
    assert JOB_RESULT_SHAPE.name == "AzureIotDeviceJobResult"
    assert METHOD_RESULT_SHAPE.names == ("deviceId", "status", "payload")


def test_all_is_honest() -> None:
    for name in services.__all__:
        assert hasattr(services, name)


def test_the_default_job_window_setting_is_bounded_like_the_input() -> None:
    from pydantic import ValidationError

    from agent.settings import JobSettings

    low, high = rules.MAX_EXECUTION_TIME_RANGE
    assert JobSettings(default_max_execution_time=high).default_max_execution_time == high
    for bad in (low - 1, high + 1):
        with pytest.raises(ValidationError):
            JobSettings(default_max_execution_time=bad)
