"""parse_query and run_query: sources, SELECT * and COUNT(), the public API list."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import iothub_query as query_package
from iothub_query import Query, parse_condition, parse_query, run_query

TWINS: list[dict[str, Any]] = [
    {
        "deviceId": f"d{i}",
        "status": "enabled",
        "tags": {"site": "a" if i % 3 == 0 else "b"},
        "properties": {"desired": {}, "reported": {"fw": i % 5}},
    }
    for i in range(30)
]


@pytest.mark.parametrize(
    ("text", "source", "alias", "where"),
    [
        ("SELECT * FROM devices", "devices", None, None),
        ("select * from DEVICES", "devices", None, None),
        (
            "SELECT * FROM devices.modules WHERE moduleId = 'm'",
            "devices.modules",
            None,
            "moduleId = 'm'",
        ),
        (
            "SELECT * FROM Devices.Jobs WHERE devices.jobs.jobId = 'j'",
            "devices.jobs",
            None,
            "jobId = 'j'",
        ),
        ("SELECT COUNT() FROM devices", "devices", "$1", None),
        (
            "SELECT COUNT() AS numberOfDevices FROM devices WHERE tags.site = 'a'",
            "devices",
            "numberOfDevices",
            "tags.site = 'a'",
        ),
        ("Select Count() As n From devices.modules", "devices.modules", "n", None),
        ("SELECT * FROM devices WHERE tags.group = 'g'", "devices", None, "tags.group = 'g'"),
    ],
)
def test_parse_query(text: str, source: str, alias: str | None, where: str | None) -> None:
    query = parse_query(text)
    assert query == Query(
        source=source,  # type: ignore[arg-type]
        count_alias=alias,
        where=None if where is None else parse_condition(where),
        text=text,
    )
    assert query.is_count is (alias is not None)
    again = parse_query(query.to_text())
    assert (again.source, again.count_alias, again.where) == (source, alias, query.where)


def test_select_star_returns_the_documents_in_order() -> None:
    result = run_query(parse_query("SELECT * FROM devices WHERE tags.site = 'a'"), TWINS)
    assert [doc["deviceId"] for doc in result] == [f"d{i}" for i in range(0, 30, 3)]
    assert result[0] is TWINS[0]


def test_select_star_without_where_returns_everything() -> None:
    assert run_query(parse_query("SELECT * FROM devices"), iter(TWINS)) == TWINS


def test_count() -> None:
    assert run_query(parse_query("SELECT COUNT() FROM devices"), TWINS) == [{"$1": 30}]
    counted = run_query(
        parse_query(
            "SELECT COUNT() AS n FROM devices WHERE tags.site = 'a' AND properties.reported.fw < 3"
        ),
        TWINS,
    )
    expected = sum(1 for i in range(0, 30, 3) if i % 5 < 3)
    assert counted == [{"n": expected}]
    assert run_query(parse_query("SELECT COUNT() AS n FROM devices"), []) == [{"n": 0}]


def test_query_is_frozen() -> None:
    query = parse_query("SELECT * FROM devices")
    with pytest.raises(AttributeError):
        query.source = "devices.jobs"  # type: ignore[misc]


def test_all_is_honest() -> None:
    for name in query_package.__all__:
        assert hasattr(query_package, name), name
    public = {name for name in vars(query_package) if not name.startswith("_")}
    modules = {"conditions", "errors", "evaluation", "parsing", "queries", "values", "annotations"}
    assert public - modules == set(query_package.__all__)


def test_grammar_ships_as_package_data() -> None:
    from importlib import resources

    text = resources.files("iothub_query").joinpath("grammar.lark").read_text()
    assert "COMP_OP" in text


@pytest.mark.parametrize(
    ("text", "pinned"),
    [
        ("deviceId IN ['a', 'b']", {"a", "b"}),
        ("DeviceId = 'a'", {"a"}),
        ("'a' = deviceId", {"a"}),
        ("tags.x = 1 AND deviceId IN ['a', 'b', 'c'] AND deviceId = 'c'", {"c"}),
        ("deviceId IN ['a', 1]", {"a", 1}),
        ("deviceId NIN ['a']", None),
        ("deviceId IN ['a'] OR deviceId = 'b'", None),
        ("NOT (deviceId = 'a')", None),
        ("tags.deviceId = 'a'", None),
        ("deviceId != 'a'", None),
        ("tags.x = 1", None),
    ],
)
def test_pinned_members(text: str, pinned: set[Any] | None) -> None:
    found = query_package.pinned_members(parse_condition(text), "deviceId")
    assert found == (None if pinned is None else frozenset(pinned))


def test_projection_of_top_level_names() -> None:
    query = parse_query("select deviceId, STATUS, nothing from devices where tags.a = 1")
    assert query.fields == ("deviceId", "STATUS", "nothing")
    assert parse_query(query.to_text()) == dataclasses.replace(query, text=query.to_text())
    twins = [
        {"deviceId": "d1", "status": "enabled", "tags": {"a": 1}},
        {"deviceId": "d2", "status": "disabled", "tags": {"a": 2}},
        {"deviceId": "d3", "tags": {"a": 1}},
    ]
    assert run_query(query, twins) == [
        {"deviceId": "d1", "STATUS": "enabled"},
        {"deviceId": "d3"},
    ]
    assert parse_query("SELECT * FROM devices").fields == ()
    assert parse_query("SELECT COUNT() FROM devices").fields == ()
