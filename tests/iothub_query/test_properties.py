"""Hypothesis properties: round trip, total parsing, total evaluation, compiled = interpreted."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iothub_query import (
    MISSING,
    And,
    Comparison,
    Condition,
    Constant,
    IsDefined,
    Membership,
    Not,
    Or,
    Path,
    Query,
    QueryError,
    parse_condition,
    parse_query,
)
from tests.iothub_query.strategies import (
    conditions,
    documents,
    mutated,
    token_soup,
)

pytestmark = pytest.mark.timeout(60)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID_QUERIES = st.one_of(
    conditions.map(lambda condition: f"SELECT * FROM devices WHERE {condition.to_text()}"),
    st.sampled_from(
        [
            "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j1' AND status = 'failed'",
            "SELECT COUNT() AS n FROM devices WHERE tags.site IN ['a', \"b\"] OR x <> -1.5e3",
            "SELECT * FROM devices WHERE NOT IS_DEFINED(tags.x) AND deviceId = 'it\\'s'",
        ]
    ),
)


@SETTINGS
@given(conditions)
def test_round_trip(condition: Condition) -> None:
    text = condition.to_text()
    parsed = parse_condition(text)
    assert parsed == condition
    assert parsed.to_text() == text


@SETTINGS
@given(conditions)
def test_round_trip_inside_a_query(condition: Condition) -> None:
    query = parse_query(f"select count() as c from devices where {condition.to_text()}")
    assert query.where == condition
    assert parse_query(query.to_text()).where == condition


def _parses_or_refuses(text: str) -> None:
    try:
        result: Condition | Query = parse_condition(text)
    except QueryError:
        pass
    else:
        assert isinstance(result, Condition)
    try:
        result = parse_query(text)
    except QueryError:
        pass
    else:
        assert isinstance(result, Query)


@SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text_parses_or_raises_query_error(text: str) -> None:
    _parses_or_refuses(text)


@SETTINGS
@given(token_soup)
def test_token_soup_parses_or_raises_query_error(text: str) -> None:
    _parses_or_refuses(text)
    _parses_or_refuses("SELECT * FROM devices WHERE " + text)


@SETTINGS
@given(mutated(VALID_QUERIES))
def test_mutated_queries_parse_or_raise_query_error(text: str) -> None:
    _parses_or_refuses(text)


@SETTINGS
@given(mutated(conditions.map(lambda condition: condition.to_text())))
def test_mutated_conditions_parse_or_raise_query_error(text: str) -> None:
    _parses_or_refuses(text)


# ---- evaluation -------------------------------------------------------------------------------


def _lookup(document: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    """The documented path rules, written plainly."""
    first = keys[0]
    if first in document:
        value = document[first]
    else:
        found = [key for key in document if isinstance(key, str) and key.lower() == first.lower()]
        if found:
            value = document[found[0]]
        elif first.lower() == "createdtimeutc":
            return _lookup(document, ("createdDateTimeUtc", *keys[1:]))
        else:
            return MISSING
    for key in keys[1:]:
        if not isinstance(value, Mapping) or key not in value:
            return MISSING
        value = value[key]
    return value


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return None


def _is_status(operand: Path | Constant) -> bool:
    return (
        isinstance(operand, Path) and operand.keys[0].lower() == "status" and len(operand.keys) == 1
    )


def _value(operand: Path | Constant, document: Mapping[str, Any], status: bool) -> Any:
    value = operand.value if isinstance(operand, Constant) else _lookup(document, operand.keys)
    if status and value == "cancelled":
        return "canceled"
    return value


def interpret(condition: Condition, document: Mapping[str, Any]) -> bool | None:
    """A slow tree-walking reference for the compiled closures."""
    if isinstance(condition, Comparison):
        status = _is_status(condition.left) or _is_status(condition.right)
        left = _value(condition.left, document, status)
        right = _value(condition.right, document, status)
        kind = _kind(left)
        if left is MISSING or right is MISSING or kind is None or kind != _kind(right):
            return None
        if kind == "null":
            return condition.op in ("=", "<=", ">=")
        outcomes: dict[str, bool] = {
            "=": left == right,
            "!=": left != right,
            "<": left < right,
            ">": left > right,
            "<=": left <= right,
            ">=": left >= right,
        }
        return outcomes[condition.op]
    if isinstance(condition, Membership):
        status = _is_status(condition.operand)
        value = _value(condition.operand, document, status)
        kind = _kind(value)
        if value is MISSING or kind is None:
            return None
        found = any(
            _kind(constant.value) == kind
            and (kind == "null" or _value(constant, document, status) == value)
            for constant in condition.values
        )
        return found != condition.negated
    if isinstance(condition, IsDefined):
        return _lookup(document, condition.path.keys) is not MISSING
    if isinstance(condition, Not):
        inner = interpret(condition.operand, document)
        return None if inner is None else not inner
    if isinstance(condition, And):
        results = [interpret(operand, document) for operand in condition.operands]
        if False in results:
            return False
        return None if None in results else True
    assert isinstance(condition, Or)
    results = [interpret(operand, document) for operand in condition.operands]
    if True in results:
        return True
    return None if None in results else False


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, Mapping):
        return any(_has_nan(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_nan(item) for item in value)
    return False


@SETTINGS
@given(conditions, documents)
def test_evaluation_never_raises_and_agrees_with_the_reference(
    condition: Condition, document: dict[str, Any]
) -> None:
    result = condition.evaluate(document)
    assert result in (True, False, None)
    assert condition.matches(document) is (result is True)
    assert Not(condition).evaluate(document) is (None if result is None else not result)
    if not _has_nan(document):  # NaN's set membership differs from ==; both are "not true"
        assert result is interpret(condition, document)
