"""What a store may skip, and that skipping it changes nothing.

:func:`top_level_names`: a document cut down to the top-level members a query reads evaluates
as the whole document does (the registry builds only those members of a twin).
:func:`exact_members`: when the whole condition is ``key IN [...]`` / ``key = c``, a document
with a string ``key`` matches exactly when the string is a member (the registry then selects a
rollout wave's devices by lookup, with no twin built).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iothub_query import (
    Comparison,
    Condition,
    Constant,
    Membership,
    Path,
    Query,
    exact_members,
    parse_condition,
    parse_query,
    run_query,
    top_level_names,
)
from tests.iothub_query.strategies import conditions, constants, documents, json_values


def _cut(document: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key.lower() in names}


# Documents may also hold one name in several cases (a twin never does): the cut keeps them all.
_ANY_DOCUMENTS = st.one_of(
    documents,
    st.dictionaries(
        st.sampled_from(["deviceId", "DEVICEID", "deviceid", "createdTimeUtc", "TAGS", "tags"]),
        json_values,
        max_size=5,
    ),
)


@settings(max_examples=200, deadline=None)
@given(conditions, _ANY_DOCUMENTS)
def test_a_document_cut_to_the_names_read_evaluates_the_same(
    condition: Condition, document: dict[str, Any]
) -> None:
    names = top_level_names(condition)
    assert condition.evaluate(_cut(document, names)) == condition.evaluate(document)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(["deviceId", "DeviceId", "tags", "status", "x", "nope"]), min_size=1),
    st.one_of(st.none(), conditions),
    st.lists(_ANY_DOCUMENTS, max_size=5),
)
def test_projections_and_counts_over_cut_documents_are_the_same(
    fields: list[str], where: Condition | None, docs: list[dict[str, Any]]
) -> None:
    for query in (
        Query("devices", None, where, "", tuple(fields)),
        Query("devices", "n", where, ""),
    ):
        names = top_level_names(query)
        assert run_query(query, [_cut(d, names) for d in docs]) == run_query(query, docs)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("SELECT deviceId FROM devices WHERE IS_DEFINED(deviceId)", {"deviceid"}),
        ("SELECT COUNT() FROM devices", set()),
        (
            "SELECT Status, x FROM devices WHERE NOT (tags.a.b = 1 OR Y IN [2])",
            {"status", "x", "tags", "y"},
        ),
        (
            "SELECT * FROM devices.jobs WHERE devices.jobs.createdTimeUtc > '2024'",
            {"createdtimeutc", "createddatetimeutc"},
        ),
    ],
)
def test_top_level_names(text: str, names: set[str]) -> None:
    assert top_level_names(parse_query(text)) == names


@pytest.mark.parametrize(
    ("text", "members"),
    [
        ("deviceId IN ['a', 'b']", {"a", "b"}),
        ("DEVICEID in ['a', 1, null]", {"a", 1, None}),
        ("deviceId = 'a'", {"a"}),
        ("'a' = deviceid", {"a"}),
        ("deviceId NIN ['a']", None),
        ("deviceId != 'a'", None),
        ("deviceId IN ['a'] AND tags.t = 1", None),
        ("deviceId IN ['a'] OR deviceId IN ['b']", None),
        ("NOT (deviceId IN ['a'])", None),
        ("tags.deviceId IN ['a']", None),
        ("status IN ['cancelled']", None),
    ],
)
def test_exact_members(text: str, members: set[Any] | None) -> None:
    found = exact_members(parse_condition(text), "deviceId" if "status" not in text else "status")
    assert found == (None if members is None else frozenset(members))


_KEYS = st.sampled_from(["deviceId", "DEVICEID", "deviceid"])


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.builds(
            Membership,
            st.builds(lambda k: Path((k,)), _KEYS),
            st.lists(constants, max_size=4).map(tuple),
        ),
        st.builds(
            lambda k, c, flip: (
                Comparison(Constant(c.value), "=", Path((k,)))
                if flip
                else Comparison(Path((k,)), "=", c)
            ),
            _KEYS,
            constants,
            st.booleans(),
        ),
    ),
    st.one_of(st.sampled_from(["a", "", "1", "cancelled"]), st.text(max_size=3)),
    documents,
)
def test_an_exact_condition_matches_by_membership(
    condition: Condition, device_id: str, rest: dict[str, Any]
) -> None:
    members = exact_members(condition, "deviceId")
    assert members is not None
    document = {**{k: v for k, v in rest.items() if k.lower() != "deviceid"}, "deviceId": device_id}
    assert condition.matches(document) is (device_id in members)
