"""Text → :class:`Query` / :class:`Condition`: the lark LALR parser and the tree builder.

Rules:

- The grammar is ``grammar.lark`` beside this module, loaded with :mod:`importlib.resources`;
  the lark parser is built once per process, on first use.
- Texts longer than 8192 characters (IoT Hub's documented limit, reference/iothub.md §3.3) and
  trees deeper than :data:`MAX_DEPTH` are refused with :class:`QueryLimitExceeded` before any
  recursive work, so no input can exhaust the stack, and LALR parsing is linear: nothing hangs.
- Every lark exception is translated here into :class:`QuerySyntaxError`, with human names for
  what was expected (``a string``, ``'('``, ``AND``), never lark's terminal names.
- On ``devices.jobs`` a path written ``devices.jobs.<field>`` is read as ``<field>``.
- Results are cached by text (they are immutable), so a job's condition parsed again and again
  costs a dict lookup.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Final, cast

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from iothub_query.conditions import (
    And,
    Comparison,
    Condition,
    IsDefined,
    Membership,
    Not,
    Or,
)
from iothub_query.errors import (
    QueryError,
    QueryLimitExceeded,
    QueryNotSupported,
    QuerySyntaxError,
)
from iothub_query.queries import DEFAULT_COUNT_ALIAS, Query, Source
from iothub_query.values import KEYWORDS, Constant, Operand, Path

__all__ = ["MAX_DEPTH", "MAX_QUERY_LENGTH", "parse_condition", "parse_query"]

MAX_QUERY_LENGTH: Final = 8192
MAX_DEPTH: Final = 100
"""Deepest parse tree accepted (about 95 levels of nested AND/OR/NOT)."""

_SOURCES: Final[tuple[Source, ...]] = ("devices", "devices.modules", "devices.jobs")
_AGGREGATES: Final = frozenset({"count", "avg", "sum", "min", "max"})
_JOBS_ONLY_STAR: Final = "devices.jobs supports SELECT * only"

# Human names of terminals, in the order they are listed in messages.
_TERMINAL_NAMES: Final = {
    "STRING": "a string",
    "NUMBER": "a number",
    "TRUE": "true",
    "FALSE": "false",
    "NULL": "null",
    "IDENT": "a name",
    "KEY": "a name",
    "_NOT": "NOT",
    "_LPAR": "'('",
    "_RPAR": "')'",
    "_LSQB": "'['",
    "_RSQB": "']'",
    "COMP_OP": "a comparison operator",
    "IN": "IN",
    "NIN": "NIN",
    "_AND": "AND",
    "_OR": "OR",
    "_COMMA": "','",
    "_DOT": "'.'",
    "STAR": "'*'",
    "_SELECT": "SELECT",
    "_TOP": "TOP",
    "_FROM": "FROM",
    "_WHERE": "WHERE",
    "_AS": "AS",
    "_GROUP": "GROUP",
    "_BY": "BY",
    "$END": "end of input",
}
_TERMINAL_ORDER: Final = {name: rank for rank, name in enumerate(_TERMINAL_NAMES)}

_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_SIMPLE_ESCAPES: Final = {
    "'": "'",
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}
_MAX_DECIMAL_DIGITS: Final = 1000
_MAX_HEX_DIGITS: Final = 800


@functools.cache
def _lark() -> Lark:
    grammar = resources.files(__package__).joinpath("grammar.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer="contextual", start=["condition", "query"])


def parse_condition(text: str) -> Condition:
    """Parse a WHERE condition alone (a job's ``queryCondition``), e.g. ``tags.site = 'a'``.

    Args:
        text: the condition text, without ``WHERE``.

    Returns:
        The condition tree (cached by text; trees are immutable).

    Raises:
        QuerySyntaxError: the text is not a condition.
        QueryNotSupported: it uses a function other than ``IS_DEFINED``.
        QueryLimitExceeded: it is longer than 8192 characters or nests too deep.
    """
    _check_text(text)
    return _parse_condition_cached(text)


def parse_query(text: str) -> Query:
    """Parse ``SELECT * | SELECT COUNT() [AS alias] FROM <source> [WHERE <condition>]``.

    Args:
        text: the query; ``<source>`` is ``devices``, ``devices.modules`` or ``devices.jobs``.

    Returns:
        The query (cached by text).

    Raises:
        QuerySyntaxError: the text is not a query.
        QueryNotSupported: projections other than top-level names on ``devices``
            (``SELECT deviceId FROM devices``), aggregates other than ``COUNT()``, any
            non-``*`` select on ``devices.jobs``, ``TOP``, ``GROUP BY``, functions other than
            ``IS_DEFINED``.
        QueryLimitExceeded: it is longer than 8192 characters or nests too deep.
    """
    _check_text(text)
    return _parse_query_cached(text)


def _check_text(text: object) -> None:
    if not isinstance(text, str):
        raise QueryError(f"a query must be text, not {type(text).__name__}")
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryLimitExceeded(
            f"query is {len(text)} characters long; the limit is {MAX_QUERY_LENGTH}"
        )


@functools.lru_cache(maxsize=1024)
def _parse_condition_cached(text: str) -> Condition:
    plain = _plain_membership(text)
    if plain is not None:
        return plain
    tree = _parse_tree(text, "condition")
    return _Builder(text).condition(tree.children[0])


@functools.cache
def _membership_patterns() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """``name IN|NIN [string, ...]`` as a whole text, and one string, built from the grammar's
    own IDENT and STRING terminals (so they lex the same) and its ignored whitespace; and the
    whole text again for a text without a backslash, where STRING's ``(?:[^'\\]|\\.)*``
    can only be ``[^']*`` (the same strings, read in a fraction of the time)."""
    terminals = {t.name: t.pattern.to_regexp() for t in _lark().terminals}
    space = r"[ \t\r\n\f]*"

    def whole(string: str) -> re.Pattern[str]:
        return re.compile(
            rf"{space}({terminals['IDENT']})(?![a-z0-9_$]){space}(in|nin){space}\[{space}"
            rf"((?:{string}){space}(?:,{space}(?:{string}){space})*)\]{space}",
            re.IGNORECASE,
        )

    no_escapes = "'[^']*'|\"[^\"]*\""
    return whole(terminals["STRING"]), re.compile(terminals["STRING"]), whole(no_escapes)


_UNESCAPED_BODIES = re.compile("'([^']*)'|\"([^\"]*)\"")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _plain_membership(text: str) -> Membership | None:
    """The condition when ``text`` is a plain ``name IN [strings]`` (or ``NIN``) whose strings
    decode, else None (the grammar parses it and reports any error).

    A rollout wave's hub job is ``deviceId IN [...]`` of up to 8 KB; the LALR parser took
    about 0.2 s of the emulator per such job (the whole job's time, on a loaded machine).
    This reads the same text with the grammar's terminals in one regular-expression pass and
    builds the same tree (tested equal to the grammar's on generated texts). A text without a
    backslash (device ids need none) has no escape to decode: its strings are their bodies.
    """
    whole, string, whole_unescaped = _membership_patterns()
    if "\\" not in text:
        found = whole_unescaped.fullmatch(text)
        if found is None:
            return None
        bodies = [single or double for single, double in _UNESCAPED_BODIES.findall(found[3])]
        if _SURROGATE.search(found[3]) is not None:
            bodies = [_join_surrogates(body) for body in bodies]
        values = Constant.strings(bodies)
    else:
        found = whole.fullmatch(text)
        if found is None:
            return None
        builder = _Builder(text)
        try:
            values = tuple(
                Constant(builder.string(Token("STRING", item.group(0))))
                for item in string.finditer(found.group(3))
            )
        except QuerySyntaxError:  # a bad escape: the grammar's reading says where
            return None
    return Membership(Path((found[1],)), values, found[2].lower() == "nin")


def _join_surrogates(value: str) -> str:
    """Join UTF-16 surrogate pairs (two halves side by side) into one character; lone halves
    stay as they are."""
    return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


@functools.lru_cache(maxsize=1024)
def _parse_query_cached(text: str) -> Query:
    tree = _parse_tree(text, "query")
    return _Builder(text).query(tree)


def _parse_tree(text: str, start: str) -> Tree[Token]:
    try:
        tree = _lark().parse(text, start=start)
    except UnexpectedInput as error:
        raise _syntax_error(text, error) from None
    _check_depth(tree)
    return tree


def _check_depth(tree: Tree[Token]) -> None:
    stack: list[tuple[Tree[Token], int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise QueryLimitExceeded(f"query nests deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))


# ---- error messages ---------------------------------------------------------------------------


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of ``offset`` in ``text``."""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def _human(terminals: set[str] | frozenset[str]) -> tuple[str, ...]:
    known = sorted(
        (name for name in terminals if name in _TERMINAL_NAMES), key=_TERMINAL_ORDER.__getitem__
    )
    return tuple(dict.fromkeys(_TERMINAL_NAMES[name] for name in known))


def _format(line: int, column: int, near: str, detail: str) -> str:
    where = f"near {json.dumps(near)}" if near else "near end of input"
    return f"syntax error at line {line}, column {column} {where}: {detail}"


def _expected_detail(expected: tuple[str, ...]) -> str:
    if not expected:
        return "unexpected input"
    if len(expected) == 1:
        return f"expected {expected[0]}"
    return "expected one of: " + ", ".join(expected)


def _make_syntax_error(
    line: int, column: int, near: str, expected: tuple[str, ...], detail: str | None = None
) -> QuerySyntaxError:
    message = _format(line, column, near, detail or _expected_detail(expected))
    return QuerySyntaxError(message, line=line, column=column, near=near, expected=expected)


def _syntax_error(text: str, error: UnexpectedInput) -> QuerySyntaxError:
    if isinstance(error, UnexpectedToken):
        token = error.token
        expected = _human(set(error.accepts or error.expected))
        if token.type == "$END":
            line, column = _position(text, len(text))
            return _make_syntax_error(line, column, "", expected)
        near = _snippet(str(token.value))
        return _make_syntax_error(token.line or 1, token.column or 1, near, expected)
    if isinstance(error, UnexpectedCharacters):
        expected = _human(set(error.allowed or ()))
        near = _snippet(text[error.pos_in_stream :])
        detail = "unterminated string" if near[:1] in ("'", '"') else None
        return _make_syntax_error(error.line, error.column, near, expected, detail)
    line, column = _position(text, len(text))  # pragma: no cover - LALR raises only the above
    return _make_syntax_error(line, column, "", ())


def _snippet(rest: str) -> str:
    """The offending text: up to the next blank, at most 20 characters."""
    head = rest.split(None, 1)[0] if rest.strip() else rest
    return head[:20]


def _token_error(text: str, token: Token, detail: str, offset: int = 0) -> QuerySyntaxError:
    start = (token.start_pos or 0) + offset
    line, column = _position(text, start)
    return _make_syntax_error(line, column, _snippet(text[start:]), (), detail)


# ---- tree → AST -------------------------------------------------------------------------------


class _Builder:
    """Turns a lark parse tree into condition nodes (recursion bounded by :data:`MAX_DEPTH`).

    ``strip_jobs_prefix`` is set by :meth:`query` once it knows the source is ``devices.jobs``
    (the FROM clause is read before the WHERE condition is built).
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.strip_jobs_prefix = False

    # queries

    def query(self, tree: Tree[Token]) -> Query:
        parts = {child.data: child for child in tree.children if isinstance(child, Tree)}
        source = self.source(parts["source"])
        select = parts.get("select_star") or parts["select_items"]
        if source == "devices.jobs" and (select.data != "select_star" or "top" in parts):
            raise QueryNotSupported(_JOBS_ONLY_STAR)
        if "top" in parts:
            raise QueryNotSupported(
                "SELECT TOP is not supported; page with x-ms-max-item-count instead"
            )
        if "group_by" in parts:
            raise QueryNotSupported("GROUP BY is not supported")
        count_alias: str | None = None
        fields: tuple[str, ...] = ()
        if select.data != "select_star":
            fields = self.fields(select) if source == "devices" else ()
            if not fields:
                count_alias = self.count_alias(select)
        self.strip_jobs_prefix = source == "devices.jobs"
        where = parts.get("where")
        condition = self.condition(where.children[0]) if where is not None else None
        return Query(
            source=source, count_alias=count_alias, where=condition, text=self.text, fields=fields
        )

    def fields(self, select: Tree[Token]) -> tuple[str, ...]:
        """The names of ``SELECT name[, name...]`` (top-level names, no alias), else ()."""
        names: list[str] = []
        for item in (child for child in select.children if isinstance(child, Tree)):
            target = item.children[0]
            if len(item.children) != 1 or not isinstance(target, Tree) or target.data != "path":
                return ()
            tokens = target.children
            if len(tokens) != 1 or cast(Token, tokens[0]).type != "IDENT":
                return ()
            names.append(str(tokens[0]))
        return tuple(names)

    def source(self, tree: Tree[Token]) -> Source:
        tokens = [cast(Token, child) for child in tree.children]
        name = ".".join(str(token) for token in tokens).lower()
        for source in _SOURCES:
            if name == source:
                return source
        start = tokens[0].start_pos or 0
        line, column = _position(self.text, start)
        raise _make_syntax_error(line, column, _snippet(self.text[start:]), _SOURCES)

    def count_alias(self, select: Tree[Token]) -> str:
        items = [child for child in select.children if isinstance(child, Tree)]
        if len(items) == 1:
            target = items[0].children[0]
            alias = items[0].children[1] if len(items[0].children) > 1 else None
            if isinstance(target, Tree) and target.data == "func_call":
                name_token = cast(Token, target.children[0])
                name = str(name_token)
                if name.lower() == "count" and len(target.children) == 1:
                    return str(alias) if alias is not None else DEFAULT_COUNT_ALIAS
                if name.lower() in _AGGREGATES:
                    raise QueryNotSupported(
                        f"aggregate {name.upper()}(...) is not supported; only COUNT() is"
                    )
                raise QueryNotSupported(
                    f"function {name} is not supported in SELECT; only COUNT() is"
                )
        raise QueryNotSupported(
            "projections are not supported but of top-level names (SELECT deviceId, status "
            "FROM devices); use SELECT *, SELECT COUNT() [AS alias] or such names"
        )

    # conditions

    def condition(self, node: Tree[Token] | Token) -> Condition:
        tree = cast(Tree[Token], node)
        kind = tree.data
        if kind == "or_expr":
            return Or(tuple(self.condition(child) for child in tree.children))
        if kind == "and_expr":
            return And(tuple(self.condition(child) for child in tree.children))
        if kind == "negation":
            return Not(self.condition(tree.children[0]))
        if kind == "comparison":
            left, op, right = tree.children
            operator_text = "!=" if str(op) == "<>" else str(op)
            return Comparison(self.operand(left), operator_text, self.operand(right))
        if kind == "membership":
            operand, keyword, array = tree.children
            values = tuple(self.constant(child) for child in cast(Tree[Token], array).children)
            negated = cast(Token, keyword).type == "NIN"
            return Membership(self.operand(operand), values, negated)
        if kind == "func_call":
            return self.function(tree)
        raise AssertionError(f"unexpected parse tree node {kind!r}")  # pragma: no cover

    def function(self, tree: Tree[Token]) -> Condition:
        name_token = cast(Token, tree.children[0])
        name = str(name_token)
        arguments = tree.children[1:]
        if name.lower() != "is_defined":
            raise QueryNotSupported(
                f"function {name} is not supported in a condition; only IS_DEFINED is"
            )
        if len(arguments) != 1 or cast(Tree[Token], arguments[0]).data != "path":
            raise _token_error(self.text, name_token, "IS_DEFINED takes one property path")
        return IsDefined(self.path(cast(Tree[Token], arguments[0])))

    def operand(self, node: Tree[Token] | Token) -> Operand:
        tree = cast(Tree[Token], node)
        if tree.data == "path":
            return self.path(tree)
        return self.constant(tree)

    def path(self, tree: Tree[Token]) -> Path:
        tokens = [cast(Token, child) for child in tree.children]
        keys = [self.string(token) if token.type == "STRING" else str(token) for token in tokens]
        if (
            self.strip_jobs_prefix
            and len(keys) > 2
            and keys[0].lower() == "devices"
            and keys[1].lower() == "jobs"
        ):
            keys, tokens = keys[2:], tokens[2:]
            first = keys[0]
            if first.lower() in KEYWORDS or tokens[0].type == "STRING":
                raise _token_error(self.text, tokens[0], "expected a devices.jobs field name")
        return Path(tuple(keys))

    def constant(self, node: Tree[Token] | Token) -> Constant:
        token = cast(Token, cast(Tree[Token], node).children[0])
        kind = token.type
        if kind == "STRING":
            return Constant(self.string(token))
        if kind == "NUMBER":
            return Constant(self.number(token))
        if kind == "TRUE":
            return Constant(True)
        if kind == "FALSE":
            return Constant(False)
        return Constant(None)

    def string(self, token: Token) -> str:
        raw = str(token)
        body = raw[1:-1]

        def unescape(match: re.Match[str]) -> str:
            code = match.group(1)
            if len(code) == 5:
                return chr(int(code[1:], 16))
            try:
                return _SIMPLE_ESCAPES[code]
            except KeyError:
                raise _token_error(
                    self.text,
                    token,
                    f"invalid escape sequence \\{code} in a string",
                    offset=1 + match.start(),
                ) from None

        # Join UTF-16 surrogate pairs written as two \\u escapes; lone halves stay as they are.
        return _join_surrogates(_ESCAPE.sub(unescape, body))

    def number(self, token: Token) -> int | float:
        raw = str(token)
        digits = raw.lstrip("-")
        if digits[:2].lower() == "0x":
            if len(digits) - 2 > _MAX_HEX_DIGITS:
                raise _token_error(self.text, token, "number is too large")
            value = int(digits[2:], 16)
            return -value if raw.startswith("-") else value
        if "." in raw or "e" in raw or "E" in raw:
            return float(raw)
        if len(digits) > _MAX_DECIMAL_DIGITS:
            raise _token_error(self.text, token, "number is too large")
        return int(raw)
