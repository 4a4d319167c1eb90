"""Errors: where, what was expected (human names), refused forms and limits."""

from __future__ import annotations

import pytest

from iothub_query import (
    MAX_DEPTH,
    MAX_QUERY_LENGTH,
    QueryError,
    QueryLimitExceeded,
    QueryNotSupported,
    QuerySyntaxError,
    parse_condition,
    parse_query,
)

OPERAND_START = ("a string", "a number", "true", "false", "null", "a name")
CONDITION_START = (*OPERAND_START, "NOT", "'('")


def syntax_error(text: str, *, query: bool = False) -> QuerySyntaxError:
    with pytest.raises(QuerySyntaxError) as caught:
        (parse_query if query else parse_condition)(text)
    return caught.value


def test_message_names_line_column_token_and_expected() -> None:
    error = syntax_error("deviceId = 'a' AND AND")
    assert (error.line, error.column, error.near) == (1, 20, "AND")
    assert error.expected == CONDITION_START
    assert str(error) == (
        'syntax error at line 1, column 20 near "AND": expected one of: '
        "a string, a number, true, false, null, a name, NOT, '('"
    )
    assert "\n" not in str(error)


def test_end_of_input() -> None:
    error = syntax_error("x = 1 AND")
    assert (error.line, error.column, error.near) == (1, 10, "")
    assert "near end of input" in str(error)
    assert error.expected == CONDITION_START


def test_position_on_a_later_line() -> None:
    error = syntax_error("x = 1\n  AND y ==")
    assert (error.line, error.column) == (2, 10)


def test_missing_operator() -> None:
    error = syntax_error("deviceId 'a'")
    assert (error.line, error.column, error.near) == (1, 10, "'a'")
    assert "a comparison operator" in error.expected
    assert "IN" in error.expected and "NIN" in error.expected
    assert "COMP_OP" not in error.expected  # lark's own terminal names never leak


def test_unexpected_character() -> None:
    error = syntax_error("x = @1")
    assert (error.column, error.near) == (5, "@1")
    assert error.expected == OPERAND_START


def test_unterminated_string() -> None:
    error = syntax_error("x = 'abc")
    assert error.column == 5
    assert str(error).endswith("unterminated string")


def test_invalid_escape_points_at_it() -> None:
    error = syntax_error("x = 'ab\\qc'")
    assert (error.line, error.column) == (1, 8)
    assert "invalid escape sequence \\q" in str(error)
    assert error.expected == ()


def test_short_unicode_escape_is_invalid() -> None:
    assert "invalid escape sequence \\u" in str(syntax_error("x = '\\u12'"))


def test_keyword_cannot_start_a_path() -> None:
    error = syntax_error("in = 1")
    assert (error.column, error.near) == (1, "in")
    assert syntax_error("x = not").near == "not"


def test_arrays_hold_constants_only() -> None:
    error = syntax_error("x IN [y]")
    assert error.near == "y"
    assert "a name" not in error.expected


def test_is_defined_needs_one_path() -> None:
    for text in ("IS_DEFINED(1)", "IS_DEFINED()", "IS_DEFINED(a, b)"):
        error = syntax_error(text)
        assert error.column == 1
        assert str(error).endswith("IS_DEFINED takes one property path")


def test_unknown_source() -> None:
    error = syntax_error("SELECT * FROM twins", query=True)
    assert (error.column, error.near) == (15, "twins")
    assert error.expected == ("devices", "devices.modules", "devices.jobs")


def test_select_needs_from() -> None:
    error = syntax_error("SELECT * WHERE x = 1", query=True)
    assert error.expected == ("FROM",)
    assert str(error).endswith("expected FROM")


def test_full_select_is_not_a_condition() -> None:
    error = syntax_error("SELECT * FROM devices WHERE x = 1")
    assert error.near == "SELECT"


def test_lonely_values_are_not_conditions() -> None:
    syntax_error("x")
    syntax_error("true")
    syntax_error("")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SELECT deviceId FROM devices.jobs", "devices.jobs supports SELECT * only"),
        ("SELECT COUNT() FROM devices.jobs", "devices.jobs supports SELECT * only"),
        ("SELECT TOP 5 * FROM devices.jobs", "devices.jobs supports SELECT * only"),
        ("SELECT tags.site FROM devices", "projections are not supported"),
        ("SELECT deviceId AS d FROM devices", "projections are not supported"),
        ("SELECT deviceId, tags.x AS t FROM devices", "projections are not supported"),
        ("SELECT COUNT(), deviceId FROM devices", "projections are not supported"),
        ("SELECT AVG(tags.x) FROM devices", "aggregate AVG(...) is not supported"),
        ("SELECT count(x) FROM devices", "aggregate COUNT(...) is not supported"),
        ("SELECT LOWER(deviceId) FROM devices", "function LOWER is not supported in SELECT"),
        ("SELECT TOP 10 * FROM devices", "SELECT TOP is not supported"),
        (
            "SELECT COUNT() AS n FROM devices GROUP BY tags.site",
            "GROUP BY is not supported",
        ),
        (
            "SELECT * FROM devices WHERE STARTS_WITH(deviceId, 'a')",
            "function STARTS_WITH is not supported in a condition",
        ),
    ],
)
def test_refused_forms(text: str, message: str) -> None:
    with pytest.raises(QueryNotSupported) as caught:
        parse_query(text)
    assert str(caught.value).startswith(message)


def test_refused_function_in_a_job_condition() -> None:
    with pytest.raises(QueryNotSupported, match="only IS_DEFINED"):
        parse_condition("CONTAINS(deviceId, 'a')")


def test_error_tree() -> None:
    assert issubclass(QueryError, ValueError)
    for cls in (QuerySyntaxError, QueryNotSupported, QueryLimitExceeded):
        assert issubclass(cls, QueryError)


def test_length_limit() -> None:
    at_limit = "x IN [" + ",".join(["1"] * ((MAX_QUERY_LENGTH - 7) // 2)) + "]"
    assert len(at_limit) <= MAX_QUERY_LENGTH
    parse_condition(at_limit)
    with pytest.raises(QueryLimitExceeded, match="the limit is 8192"):
        parse_condition("x = '" + "a" * MAX_QUERY_LENGTH + "'")


def test_depth_limit_instead_of_recursion_error() -> None:
    parse_condition("NOT " * (MAX_DEPTH - 10) + "x = 1")
    with pytest.raises(QueryLimitExceeded, match="nests deeper"):
        parse_condition("NOT " * 2000 + "x = 1")
    with pytest.raises(QueryLimitExceeded):
        parse_condition("x = 1 AND (" * 700 + "x = 1" + ")" * 700)
    # Parentheses alone add no depth.
    parse_condition("(" * 3000 + "x = 1" + ")" * 3000)


def test_numbers_too_large() -> None:
    with pytest.raises(QuerySyntaxError, match="number is too large"):
        parse_condition("x = " + "9" * 5000)
    with pytest.raises(QuerySyntaxError, match="number is too large"):
        parse_condition("x = 0x" + "f" * 5000)


def test_non_text_is_a_query_error() -> None:
    with pytest.raises(QueryError):
        parse_condition(b"x = 1")  # type: ignore[arg-type]
