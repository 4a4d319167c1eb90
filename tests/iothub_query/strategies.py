"""Hypothesis strategies: condition trees, documents, and query-shaped noise."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from iothub_query import (
    And,
    Comparison,
    Condition,
    Constant,
    IsDefined,
    Membership,
    Not,
    Or,
    Path,
)
from iothub_query.values import KEYWORDS

# A small vocabulary, so that generated paths often find generated documents' keys.
KEY_WORDS = ["a", "b", "A", "x", "tags", "Tags", "status", "$version", "group", "in", "a b", ""]
TOP_LEVEL = ["a", "b", "x", "tags", "status", "deviceId", "createdDateTimeUtc", "createdTimeUtc"]

first_keys = st.one_of(
    st.sampled_from(TOP_LEVEL),
    st.from_regex(r"[A-Za-z_$][A-Za-z0-9_$]{0,6}", fullmatch=True).filter(
        lambda key: key.lower() not in KEYWORDS
    ),
)
later_keys = st.one_of(st.sampled_from(KEY_WORDS), st.text(max_size=4))
paths = st.builds(
    lambda first, rest: Path((first, *rest)), first_keys, st.lists(later_keys, max_size=3)
)

strings = st.one_of(st.sampled_from(["", "a", "canceled", "cancelled", "2024-01-01"]), st.text())
numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=True),
)
constants = st.builds(Constant, st.one_of(strings, numbers, st.booleans(), st.none()))
operands = st.one_of(paths, constants)
operators = st.sampled_from(["=", "!=", "<", ">", "<=", ">="])

leaves: st.SearchStrategy[Condition] = st.one_of(
    st.builds(Comparison, operands, operators, operands),
    st.builds(Comparison, paths, operators, constants),
    st.builds(Membership, operands, st.lists(constants, max_size=4).map(tuple), st.booleans()),
    st.builds(IsDefined, paths),
)


def _extend(children: st.SearchStrategy[Condition]) -> st.SearchStrategy[Condition]:
    several = st.lists(children, min_size=2, max_size=3).map(tuple)
    return st.one_of(st.builds(Not, children), st.builds(And, several), st.builds(Or, several))


conditions: st.SearchStrategy[Condition] = st.recursive(leaves, _extend, max_leaves=8)

# ---- documents -------------------------------------------------------------------------------

json_primitives = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    strings,
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_primitives,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(st.sampled_from(KEY_WORDS), st.text(max_size=3)), inner, max_size=4
        ),
    ),
    max_leaves=10,
)


def _unique_by_case(document: dict[str, Any]) -> dict[str, Any]:
    seen: set[str] = set()
    kept: dict[str, Any] = {}
    for key, value in document.items():
        if key.lower() not in seen:
            seen.add(key.lower())
            kept[key] = value
    return kept


documents = st.dictionaries(
    st.one_of(st.sampled_from([*TOP_LEVEL, "DeviceId", "STATUS"]), st.text(max_size=3)),
    json_values,
    max_size=6,
).map(_unique_by_case)

# ---- query-shaped noise ----------------------------------------------------------------------

TOKENS = [
    "SELECT",
    "*",
    "COUNT()",
    "COUNT",
    "AS",
    "FROM",
    "devices",
    "devices.jobs",
    "devices.modules",
    "WHERE",
    "TOP",
    "GROUP",
    "BY",
    "AND",
    "OR",
    "NOT",
    "IN",
    "NIN",
    "(",
    ")",
    "[",
    "]",
    ",",
    ".",
    "=",
    "!=",
    "<>",
    "<",
    ">",
    "<=",
    ">=",
    "IS_DEFINED",
    "tags",
    "x",
    "tags.site",
    "'a'",
    '"b"',
    "'\\u0041'",
    "'\\q'",
    "'open",
    "1",
    "-2.5e3",
    "0x1f",
    "true",
    "null",
    "$version",
    "@",
    "\\",
    "\n",
]
token_soup = st.lists(st.sampled_from(TOKENS), max_size=25).map(" ".join)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A valid text with a few characters deleted, inserted or replaced."""
    text = draw(base)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        position = draw(st.integers(min_value=0, max_value=len(text)))
        action = draw(st.sampled_from(["delete", "insert", "replace"]))
        char = draw(st.one_of(st.sampled_from(list("'\"\\()[],.=<>!* $-_0aZ\n")), st.characters()))
        if action == "delete":
            text = text[:position] + text[position + 1 :]
        elif action == "insert":
            text = text[:position] + char + text[position:]
        else:
            text = text[:position] + char + text[position + 1 :]
    return text
