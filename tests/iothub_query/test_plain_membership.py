"""A plain ``name IN [strings]`` condition (a rollout wave's ``deviceId IN [...]``) is read
without the LALR parser; whatever it gives must be what the grammar gives.

The grammar's reading of the same text is ``parse_condition("(" + text + ")")``: parentheses add
no node to the tree and take the text off the plain path. Texts are built from the pieces that
path reads (names, both keywords in any case, both quotes, escapes, whitespace) and from noise
around them, so that texts it must refuse (and leave to the grammar) come up too.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iothub_query import Membership, Path, QueryError, parse_condition
from tests.iothub_query.strategies import first_keys

_SPACE = st.text(alphabet=" \t\r\n\f", max_size=2)
_NAMES = st.one_of(first_keys, st.sampled_from(["deviceId", "DEVICEID", "in", "nin", "x1", "$a"]))
_SURROGATES = st.sampled_from(["\ud83d\ude00", "\ud83d", "\ude00", "a\udfffb"])
_BODIES = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["a\\'b", 'q"q', "\\u0041", "\\x", "device-0001", ""]),
    _SURROGATES,
)


@st.composite
def _items(draw: st.DrawFn) -> str:
    body = draw(_BODIES)
    quote = draw(st.sampled_from(["'", '"']))
    return quote + body + quote


@st.composite
def _texts(draw: st.DrawFn) -> str:
    items = draw(st.lists(_items(), max_size=5))
    sep = draw(_SPACE) + "," + draw(_SPACE)
    keyword = draw(st.sampled_from(["IN", "in", "NIN", "Nin", "iN"]))
    parts = [
        draw(_SPACE),
        draw(_NAMES),
        draw(st.sampled_from([" ", "", "\n", "  "])),
        keyword,
        draw(_SPACE),
        "[",
        draw(_SPACE),
        sep.join(items),
        draw(_SPACE),
        "]",
        draw(_SPACE),
    ]
    if draw(st.booleans()):  # noise: drop, duplicate or insert one piece
        at = draw(st.integers(0, len(parts) - 1))
        parts.insert(at, draw(st.sampled_from(["", "'", "]", ",", "x", "AND", "(", parts[at]])))
    return "".join(parts)


def _read(text: str) -> object:
    try:
        return parse_condition(text)
    except QueryError as exc:
        return type(exc)


@settings(max_examples=400, deadline=None)
@given(_texts())
def test_the_plain_path_reads_what_the_grammar_reads(text: str) -> None:
    plain = _read(text)
    grammar = _read(f"({text})")
    if grammar is not plain and isinstance(plain, type) and isinstance(grammar, type):
        return  # both refused; the messages' positions differ by the added parenthesis
    assert plain == grammar


@pytest.mark.parametrize(
    ("text", "values", "negated"),
    [
        ("deviceId IN ['device-0001', 'o\\'brien']", ("device-0001", "o'brien"), False),
        ("DEVICEID nin[\"a\",'b\\u0041'] ", ("a", "bA"), True),
    ],
)
def test_plain_membership(text: str, values: tuple[str, ...], negated: bool) -> None:
    condition = parse_condition(text)
    assert isinstance(condition, Membership)
    assert condition.operand == Path((text.split()[0],))
    assert tuple(c.value for c in condition.values) == values
    assert condition.negated is negated


# Strings with no backslash (a rollout wave's device ids): the reader takes their bodies as they
# are; brackets, commas, the other quote and surrogate halves (joined into pairs as the escape
# reader joins them) must all come out as the grammar reads them.
_UNESCAPED = st.lists(
    st.one_of(
        st.text(alphabet=st.characters(blacklist_characters="\\"), max_size=8),
        st.sampled_from(["it's", 'say "hi"', "a,b", "[x]", "", " ", "device-000001"]),
        _SURROGATES,
    ),
    min_size=1,
    max_size=40,
)


def _literal(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return "'" + value.replace("'", "") + "'"


@settings(max_examples=300, deadline=None)
@given(_UNESCAPED, st.sampled_from([", ", ",", " ,\n "]), st.sampled_from(["IN", "nin"]))
def test_lists_without_escapes_read_as_the_grammar_reads_them(
    values: list[str], separator: str, keyword: str
) -> None:
    text = f"deviceId {keyword} [{separator.join(_literal(v) for v in values)}]"
    assert "\\" not in text
    plain = parse_condition(text)
    grammar = parse_condition(f"({text})")
    assert isinstance(plain, Membership)
    assert isinstance(grammar, Membership)
    assert plain == grammar
    assert [c.kind for c in plain.values] == [c.kind for c in grammar.values]
