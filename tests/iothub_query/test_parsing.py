"""Parsing: every operator, constant form, escape, path form and case rule, into the AST."""

from __future__ import annotations

import math

import pytest

from iothub_query import (
    And,
    Comparison,
    Constant,
    IsDefined,
    Membership,
    Not,
    Or,
    Path,
    parse_condition,
)

X = Path(("x",))


def cmp(op: str, value: object) -> Comparison:
    return Comparison(X, op, Constant(value))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "op"),
    [
        ("x = 1", "="),
        ("x != 1", "!="),
        ("x <> 1", "!="),
        ("x < 1", "<"),
        ("x > 1", ">"),
        ("x <= 1", "<="),
        ("x >= 1", ">="),
        ("x>=1", ">="),
        ("x<>1", "!="),
    ],
)
def test_comparison_operators(text: str, op: str) -> None:
    assert parse_condition(text) == cmp(op, 1)


def test_constant_on_the_left_and_path_on_both_sides() -> None:
    assert parse_condition("1 < x") == Comparison(Constant(1), "<", X)
    assert parse_condition("x = tags.y") == Comparison(X, "=", Path(("tags", "y")))


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("0", 0),
        ("42", 42),
        ("-7", -7),
        ("3.25", 3.25),
        ("-0.5", -0.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("1E-2", 0.01),
        ("-2.5e+2", -250.0),
        ("0x1F", 31),
        ("-0xff", -255),
        ("123456789012345678901234567890", 123456789012345678901234567890),
    ],
)
def test_number_constants(literal: str, value: float) -> None:
    parsed = parse_condition(f"x = {literal}")
    assert isinstance(parsed, Comparison)
    assert isinstance(parsed.right, Constant)
    assert parsed.right.value == value
    assert type(parsed.right.value) is type(value)


def test_huge_exponent_is_infinity_and_renders_back() -> None:
    parsed = parse_condition("x < 1e400")
    assert parsed == cmp("<", math.inf)
    assert parsed.to_text() == "x < 1e999"
    assert parse_condition("x > -1e400").to_text() == "x > -1e999"


@pytest.mark.parametrize(
    ("literal", "value"),
    [("true", True), ("TRUE", True), ("False", False), ("null", None), ("NULL", None)],
)
def test_keyword_constants(literal: str, value: object) -> None:
    assert parse_condition(f"x = {literal}") == cmp("=", value)


def test_true_is_not_one() -> None:
    assert parse_condition("x = true") != parse_condition("x = 1")
    assert Constant(True) != Constant(1)


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("'abc'", "abc"),
        ('"abc"', "abc"),
        ("''", ""),
        ("'it\\'s'", "it's"),
        ('"say \\"hi\\""', 'say "hi"'),
        ("'a\\\\b'", "a\\b"),
        ("'\\u0041\\u00e9'", "Aé"),
        ("'\\ud83d\\ude00'", "\U0001f600"),
        ("'\"'", '"'),
        ('"\'"', "'"),
        ("'a\\nb\\tc\\/'", "a\nb\tc/"),
        ("'2016-09-01T00:00:00Z'", "2016-09-01T00:00:00Z"),
        ("'AND'", "AND"),
    ],
)
def test_string_constants_and_escapes(literal: str, value: str) -> None:
    assert parse_condition(f"x = {literal}") == cmp("=", value)


def test_in_and_nin_lists() -> None:
    assert parse_condition("x IN ['a', 1, true, null]") == Membership(
        X, (Constant("a"), Constant(1), Constant(True), Constant(None))
    )
    assert parse_condition("x nin []") == Membership(X, (), negated=True)
    assert parse_condition("deviceId In ['d1','d2']") == Membership(
        Path(("deviceId",)), (Constant("d1"), Constant("d2"))
    )


def test_and_or_not_precedence() -> None:
    a, b, c = cmp("=", 1), cmp("=", 2), cmp("=", 3)
    assert parse_condition("x = 1 OR x = 2 AND x = 3") == Or((a, And((b, c))))
    assert parse_condition("(x = 1 OR x = 2) AND x = 3") == And((Or((a, b)), c))
    assert parse_condition("NOT x = 1 AND x = 2") == And((Not(a), b))
    assert parse_condition("NOT (x = 1 AND x = 2)") == Not(And((a, b)))
    assert parse_condition("not not x = 1") == Not(Not(a))
    assert parse_condition("x = 1 and x = 2 AND x = 3") == And((a, b, c))
    assert parse_condition("x = 1 AND (x = 2 AND x = 3)") == And((a, And((b, c))))
    assert parse_condition("((x = 1))") == a


def test_is_defined_any_case() -> None:
    expected = IsDefined(Path(("tags", "x")))
    assert parse_condition("IS_DEFINED(tags.x)") == expected
    assert parse_condition("is_defined( tags.x )") == expected
    assert parse_condition("NOT Is_Defined(tags.x)") == Not(expected)


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("deviceId", ("deviceId",)),
        ("DeviceId", ("DeviceId",)),
        ("tags.a.b", ("tags", "a", "b")),
        ("properties.desired.x", ("properties", "desired", "x")),
        ("properties.reported.$version", ("properties", "reported", "$version")),
        ("properties.reported.$metadata.fw.$lastUpdated", None),
        ("tags['a b'].c", ("tags", "a b", "c")),
        ('tags["x.y"]', ("tags", "x.y")),
        ("tags.group", ("tags", "group")),
        ("tags.from.in", ("tags", "from", "in")),
        ("tags._x1", ("tags", "_x1")),
    ],
)
def test_path_forms(text: str, keys: tuple[str, ...] | None) -> None:
    parsed = parse_condition(f"{text} = 1")
    assert isinstance(parsed, Comparison)
    expected = keys or tuple(text.split("."))
    assert parsed.left == Path(expected)


@pytest.mark.parametrize(
    "text",
    [
        "x = 1",
        "x != 'a' AND (y < 2 OR NOT IS_DEFINED(tags.z))",
        "deviceId IN ['a', 'b'] OR tags['a b'] NIN [1, 2.5, true, null]",
        "NOT NOT x = 'it\\'s'",
    ],
)
def test_to_text_is_canonical_and_parses_back(text: str) -> None:
    parsed = parse_condition(text)
    canonical = parsed.to_text()
    assert parse_condition(canonical) == parsed
    assert parse_condition(canonical).to_text() == canonical
    assert str(parsed) == canonical


def test_canonical_forms() -> None:
    assert parse_condition("x<>1 and y in ['a',\"b\"]").to_text() == "x != 1 AND y IN ['a', 'b']"
    assert parse_condition("a = 1 AND (b = 2 OR c = 3)").to_text() == ("a = 1 AND (b = 2 OR c = 3)")
    assert parse_condition("x = '\\u0001'").to_text() == "x = '\\u0001'"


def test_whitespace_and_newlines() -> None:
    assert parse_condition("\n  x\t=\r\n1  ") == cmp("=", 1)


def test_parse_is_cached() -> None:
    assert parse_condition("tags.site = 'cache'") is parse_condition("tags.site = 'cache'")


def test_nodes_validate_themselves() -> None:
    with pytest.raises(ValueError):
        Comparison(X, "==", Constant(1))
    with pytest.raises(ValueError):
        And((cmp("=", 1),))
    with pytest.raises(ValueError):
        Or(())
    with pytest.raises(ValueError):
        Path(())
    with pytest.raises(ValueError):
        Path(("not",))
    with pytest.raises(ValueError):
        Path(("a b",))
    with pytest.raises(ValueError):
        Constant(math.nan)
    with pytest.raises(ValueError):
        Constant([1])  # type: ignore[arg-type]
