"""Evaluation: comparison kinds, three-valued logic, IN/NIN, IS_DEFINED, path lookup rules."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest

from iothub_query import parse_condition, parse_query

TWIN: dict[str, Any] = {
    "deviceId": "dev-1",
    "etag": "AAAAAAAAAAE=",
    "version": 4,
    "status": "enabled",
    "connectionState": "Connected",
    "lastActivityTime": "2024-05-01T10:00:00.0000000Z",
    "tags": {
        "site": "lyon",
        "floor": 3,
        "Site": "upper",
        "flag": True,
        "none": None,
        "list": [1, 2],
        "obj": {"a": 1},
        "a b": "spaced",
    },
    "properties": {
        "desired": {"fw": "1.2.0", "$version": 7},
        "reported": {"fw": 2.5, "$version": 9, "$metadata": {"fw": {"$lastUpdated": "2024"}}},
    },
}


def ev(text: str, document: Mapping[str, Any] = TWIN) -> bool | None:
    return parse_condition(text).evaluate(document)


def matches(text: str, document: Mapping[str, Any] = TWIN) -> bool:
    return parse_condition(text).matches(document)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tags.floor = 3", True),
        ("tags.floor = 3.0", True),
        ("tags.floor != 3", False),
        ("tags.floor <> 4", True),
        ("tags.floor < 4", True),
        ("tags.floor > 4", False),
        ("tags.floor <= 3", True),
        ("tags.floor >= 3.5", False),
        ("3 < tags.floor", False),
        ("4 > tags.floor", True),
        ("tags.site = 'lyon'", True),
        ("tags.site < 'paris'", True),
        ("tags.site >= 'lyon'", True),
        ("tags.flag = true", True),
        ("tags.flag > false", True),
        ("tags.flag != true", False),
        ("tags.none = null", True),
        ("tags.none != null", False),
        ("tags.none <= null", True),
        ("tags.none < null", False),
        ("properties.desired.fw = '1.2.0'", True),
        ("properties.reported.fw > 2", True),
        ("properties.reported.$version = 9", True),
        ("properties.desired.$version < properties.reported.$version", True),
        ("properties.reported.$metadata.fw.$lastUpdated = '2024'", True),
        ("tags['a b'] = 'spaced'", True),
        ("lastActivityTime > '2024-01-01'", True),
        ("lastActivityTime < '2024-05-01T09:59:59Z'", False),
        ("1 = 1", True),
        ("'a' = 'b'", False),
    ],
)
def test_comparisons_between_same_kinds(text: str, expected: bool) -> None:
    assert ev(text) is expected


@pytest.mark.parametrize(
    "text",
    [
        "tags.floor = '3'",
        "tags.site = 1",
        "tags.flag = 1",
        "tags.floor = true",
        "tags.none = 0",
        "tags.site != null",
        "tags.list = 1",
        "tags.obj = 1",
        "tags.obj != 1",
        "tags.missing = 1",
        "tags.missing != 1",
        "tags.missing = null",
        "tags.site.deeper = 'x'",
        "nothere.x = 1",
        "1 = 'a'",
        "tags.floor = tags.site",
        "tags.floor = tags.missing",
    ],
)
def test_other_comparisons_are_undefined(text: str) -> None:
    assert ev(text) is None
    assert not matches(text)
    assert not matches(f"NOT ({text})")


def test_not_of_a_comparison() -> None:
    condition = parse_condition("NOT (x = 1)")
    assert condition.matches({"x": 2})
    assert not condition.matches({"x": 1})
    assert not condition.matches({})
    assert not condition.matches({"x": "1"})
    assert not condition.matches({"x": None})


@pytest.mark.parametrize(
    ("left", "right", "and_", "or_"),
    [
        ("t", "t", True, True),
        ("t", "f", False, True),
        ("t", "u", None, True),
        ("f", "f", False, False),
        ("f", "u", False, None),
        ("u", "u", None, None),
        ("u", "f", False, None),
        ("u", "t", None, True),
    ],
)
def test_three_valued_and_or(left: str, right: str, and_: bool | None, or_: bool | None) -> None:
    atoms = {"t": "x = 1", "f": "x = 2", "u": "y = 1"}
    document = {"x": 1}
    assert ev(f"{atoms[left]} AND {atoms[right]}", document) is and_
    assert ev(f"{atoms[left]} OR {atoms[right]}", document) is or_
    assert ev(f"{atoms[left]} AND {atoms[right]} AND x = 1", document) is and_
    assert ev(f"{atoms[left]} OR {atoms[right]} OR x = 2", document) is or_
    expected_not = None if and_ is None else not and_
    assert ev(f"NOT ({atoms[left]} AND {atoms[right]})", document) is expected_not


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("deviceId IN ['dev-0', 'dev-1']", True),
        ("deviceId IN ['dev-0']", False),
        ("deviceId NIN ['dev-0']", True),
        ("deviceId NIN ['dev-1']", False),
        ("tags.floor IN [1, 3.0]", True),
        ("tags.floor IN ['3', true]", False),
        ("tags.flag IN [1]", False),
        ("tags.flag IN [true]", True),
        ("tags.none IN [null]", True),
        ("tags.none NIN [null]", False),
        ("tags.none IN [0, '']", False),
        ("tags.floor IN []", False),
        ("tags.floor NIN []", True),
        ("3 IN [3]", True),
    ],
)
def test_membership(text: str, expected: bool) -> None:
    assert ev(text) is expected


@pytest.mark.parametrize(
    "text", ["tags.missing IN [1]", "tags.missing NIN [1]", "tags.obj IN [1]", "tags.list NIN [1]"]
)
def test_membership_undefined(text: str) -> None:
    assert ev(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IS_DEFINED(tags.site)", True),
        ("IS_DEFINED(tags.none)", True),
        ("IS_DEFINED(tags.obj)", True),
        ("IS_DEFINED(tags.missing)", False),
        ("IS_DEFINED(tags.site.x)", False),
        ("NOT IS_DEFINED(tags.missing)", True),
        ("IS_DEFINED(deviceId)", True),
        ("IS_DEFINED(DEVICEID)", True),
    ],
)
def test_is_defined(text: str, expected: bool) -> None:
    assert ev(text) is expected


@pytest.mark.parametrize(
    "text",
    [
        "deviceId = 'dev-1'",
        "DeviceId = 'dev-1'",
        "DEVICEID = 'dev-1'",
        "STATUS = 'enabled'",
        "connectionstate = 'Connected'",
        "ETag = 'AAAAAAAAAAE='",
        "Version = 4",
        "TAGS.site = 'lyon'",
        "Properties.reported.fw = 2.5",
    ],
)
def test_top_level_names_are_case_insensitive(text: str) -> None:
    assert matches(text)


def test_keys_below_the_top_level_are_case_sensitive() -> None:
    assert matches("tags.site = 'lyon'")
    assert matches("tags.Site = 'upper'")
    assert not matches("tags.SITE = 'lyon'")
    assert not matches("properties.Reported.fw = 2.5")


def test_exact_top_level_name_wins() -> None:
    document = {"deviceid": "lower", "deviceId": "exact"}
    assert matches("deviceId = 'exact'", document)
    assert matches("deviceid = 'lower'", document)


def test_any_mapping_works_and_odd_keys_do_not_break_lookup() -> None:
    document = MappingProxyType({1: "int key", "tags": MappingProxyType({"site": "a"})})
    assert matches("Tags.site = 'a'", document)  # type: ignore[arg-type]
    assert not matches("other = 1", document)  # type: ignore[arg-type]


def test_primitive_subclasses_keep_their_kind() -> None:
    class Name(str):
        pass

    class Count(int):
        pass

    assert matches("x = 'a'", {"x": Name("a")})
    assert matches("x = 2", {"x": Count(2)})
    assert matches("x IN [2]", {"x": Count(2)})
    assert not matches("x = 1", {"x": True})


def test_nan_in_a_document_compares_false() -> None:
    assert ev("x = 1", {"x": float("nan")}) is False
    assert ev("x != 1", {"x": float("nan")}) is True


def test_matches_is_the_predicate_protocol() -> None:
    from emulator.iothub.ports import Predicate

    predicate: Predicate = parse_condition("deviceId = 'dev-1'")
    assert predicate.matches(TWIN)


# ---- devices.jobs ----------------------------------------------------------------------------

ROWS: list[dict[str, Any]] = [
    {
        "deviceId": "d1",
        "jobId": "j1",
        "jobType": "scheduleDeviceMethod",
        "status": "completed",
        "createdDateTimeUtc": "2016-09-02T00:00:00Z",
        "outcome": {"deviceMethodResponse": None},
    },
    {
        "deviceId": "d2",
        "jobId": "j1",
        "jobType": "scheduleDeviceMethod",
        "status": "canceled",
        "createdDateTimeUtc": "2016-08-30T00:00:00Z",
        "outcome": {},
    },
    {
        "deviceId": "d3",
        "jobId": "j2",
        "jobType": "scheduleUpdateTwin",
        "status": "cancelled",
        "createdDateTimeUtc": "2016-09-05T00:00:00Z",
        "outcome": {},
    },
    {
        "deviceId": "d4",
        "jobId": "j2",
        "jobType": "scheduleUpdateTwin",
        "status": "failed",
        "createdDateTimeUtc": "2016-09-05T00:00:00Z",
        "error": {"code": "JobRunPreconditionFailed", "description": "..."},
    },
]


def job_ids(where: str) -> list[str]:
    query = parse_query(f"SELECT * FROM devices.jobs WHERE {where}")
    return [row["deviceId"] for row in ROWS if query.where is not None and query.where.matches(row)]


def test_jobs_prefix_is_stripped_and_bare_names_work() -> None:
    assert job_ids("devices.jobs.jobId = 'j1'") == ["d1", "d2"]
    assert job_ids("jobId = 'j1'") == ["d1", "d2"]
    assert job_ids("Devices.Jobs.JobType = 'scheduleUpdateTwin'") == ["d3", "d4"]
    assert job_ids("devices.jobs.error.code = 'JobRunPreconditionFailed'") == ["d4"]
    prefixed = parse_query("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j1'")
    assert prefixed.where == parse_condition("jobId = 'j1'")


def test_jobs_prefix_is_kept_on_twin_queries() -> None:
    query = parse_query("SELECT * FROM devices WHERE devices.jobs.jobId = 'j1'")
    assert query.where is not None
    assert query.where.to_text() == "devices.jobs.jobId = 'j1'"


def test_created_time_alias() -> None:
    assert job_ids("devices.jobs.createdTimeUtc > '2016-09-01'") == ["d1", "d3", "d4"]
    assert job_ids("createdDateTimeUtc > '2016-09-01'") == ["d1", "d3", "d4"]
    assert job_ids("IS_DEFINED(devices.jobs.createdTimeUtc)") == ["d1", "d2", "d3", "d4"]
    both = {"createdTimeUtc": "2000", "createdDateTimeUtc": "2020"}
    assert parse_condition("createdTimeUtc = '2000'").matches(both)


def test_canceled_and_cancelled_are_one_word() -> None:
    assert job_ids("devices.jobs.status = 'canceled'") == ["d2", "d3"]
    assert job_ids("devices.jobs.status = 'cancelled'") == ["d2", "d3"]
    assert job_ids("'cancelled' = status") == ["d2", "d3"]
    assert job_ids("status IN ['cancelled', 'failed']") == ["d2", "d3", "d4"]
    assert job_ids("status NIN ['canceled']") == ["d1", "d4"]
    assert job_ids("status != 'cancelled'") == ["d1", "d4"]
    # Only the status field: other fields keep their exact words.
    assert not parse_condition("tags.status = 'cancelled'").matches(
        {"tags": {"status": "canceled"}}
    )


def test_jobs_keyword_field_after_prefix_is_an_error() -> None:
    from iothub_query import QuerySyntaxError

    with pytest.raises(QuerySyntaxError, match=r"devices\.jobs field name"):
        parse_query("SELECT * FROM devices.jobs WHERE devices.jobs.in = 1")
