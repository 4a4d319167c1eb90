"""Compiles conditions into Python closures that evaluate a document in three-valued logic.

An :data:`Evaluator` returns ``True``, ``False`` or ``None`` (*undefined*). The rules, chosen
after the Cosmos DB SQL semantics that IoT Hub's query language derives from:

- A comparison is undefined when either side is missing, is not a primitive (an object or an
  array), or when the two sides are of different kinds (string, number, boolean, null).
  Otherwise it is the ordinary comparison: strings by code point (so ISO-8601 dates compare in
  time order), numbers by value (``1 = 1.0``), ``false < true``; ``null`` equals ``null`` and is
  neither less nor greater than it.
- ``x IN [..]`` is undefined when ``x`` is missing or not a primitive; otherwise true when a
  constant of the same kind equals it. ``x NIN [..]`` is its negation (undefined stays
  undefined).
- ``IS_DEFINED(path)`` is true when the path leads to a value, ``null`` included; never
  undefined.
- ``NOT`` flips true and false and keeps undefined; ``AND`` is false if any operand is false,
  else undefined if any is undefined; ``OR`` is true if any operand is true, else undefined if
  any is undefined.
- A document matches only when its condition is exactly true.
- Comparisons with the top-level ``status`` field treat ``cancelled`` and ``canceled`` as one
  word (device-job rows; twin statuses are ``enabled``/``disabled`` and are unaffected).

Each builder does its case analysis once, at compile time, so evaluating a document is a few
closure calls and no type dispatch on the condition tree.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from iothub_query.values import (
    BOOLEAN,
    MISSING,
    NULL,
    NUMBER,
    STRING,
    Constant,
    Getter,
    Operand,
    Path,
    kind_of,
)

__all__ = [
    "COMPARISON_OPERATORS",
    "Evaluator",
    "build_and",
    "build_comparison",
    "build_is_defined",
    "build_membership",
    "build_not",
    "build_or",
]

Evaluator = Callable[[Mapping[str, Any]], bool | None]
"""A compiled condition: True, False, or None for undefined."""

_ORDERING: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}
COMPARISON_OPERATORS: Final = frozenset(_ORDERING)
_MIRRORED: Final = {"=": "=", "!=": "!=", "<": ">", ">": "<", "<=": ">=", ">=": "<="}
_NULL_RESULT: Final = {"=": True, "!=": False, "<": False, ">": False, "<=": True, ">=": True}

_CANCELED: Final = "canceled"
_CANCELLED: Final = "cancelled"


def _normalise_status(value: Any) -> Any:
    return _CANCELED if value == _CANCELLED and isinstance(value, str) else value


def _operand_getter(operand: Operand) -> Getter:
    getter = operand.getter()
    if isinstance(operand, Path) and operand.is_status:
        inner = getter

        def getter(document: Mapping[str, Any]) -> Any:
            return _normalise_status(inner(document))

    return getter


def compare_values(op: str, left: Any, right: Any) -> bool | None:
    """Compare two values under the module's rules (undefined → None)."""
    left_kind = kind_of(left)
    if left_kind is None or left_kind != kind_of(right):
        return None
    if left_kind == NULL:
        return _NULL_RESULT[op]
    return _ORDERING[op](left, right)


def build_comparison(left: Operand, op: str, right: Operand) -> Evaluator:
    """Compile ``left op right``; ``op`` is one of :data:`COMPARISON_OPERATORS`."""
    if isinstance(left, Constant) and isinstance(right, Path):
        left, op, right = right, _MIRRORED[op], left
    if isinstance(left, Path) and isinstance(right, Constant):
        statusy = left.is_status
        constant = _normalise_status(right.value) if statusy else right.value
        return _path_versus_constant(_operand_getter(left), op, constant, right.kind)

    get_left = _operand_getter(left)
    get_right = _operand_getter(right)

    def evaluate_generic(document: Mapping[str, Any]) -> bool | None:
        return compare_values(op, get_left(document), get_right(document))

    return evaluate_generic


def _path_versus_constant(get: Getter, op: str, constant: Any, kind: str) -> Evaluator:
    compare = _ORDERING[op]

    def slow(value: Any) -> bool | None:
        # Reached for other kinds, MISSING and primitive subclasses only.
        if kind_of(value) != kind:
            return None
        return compare(value, constant)

    if kind == STRING:

        def evaluate_string(document: Mapping[str, Any]) -> bool | None:
            value = get(document)
            if type(value) is str:
                return compare(value, constant)
            return slow(value)

        return evaluate_string

    if kind == NUMBER:

        def evaluate_number(document: Mapping[str, Any]) -> bool | None:
            value = get(document)
            cls = type(value)
            if cls is int or cls is float:
                return compare(value, constant)
            return slow(value)

        return evaluate_number

    if kind == BOOLEAN:

        def evaluate_boolean(document: Mapping[str, Any]) -> bool | None:
            value = get(document)
            if type(value) is bool:
                return compare(value, constant)
            return slow(value)

        return evaluate_boolean

    null_result = _NULL_RESULT[op]

    def evaluate_null(document: Mapping[str, Any]) -> bool | None:
        return null_result if get(document) is None else None

    return evaluate_null


def build_membership(operand: Operand, values: Sequence[Constant], negated: bool) -> Evaluator:
    """Compile ``operand IN [values]`` (or ``NIN`` when ``negated``)."""
    statusy = isinstance(operand, Path) and operand.is_status
    buckets: dict[str, set[Any]] = {STRING: set(), NUMBER: set(), BOOLEAN: set()}
    has_null = False
    for constant in values:
        if constant.kind == NULL:
            has_null = True
        else:
            value = _normalise_status(constant.value) if statusy else constant.value
            buckets[constant.kind].add(value)
    frozen = {kind: frozenset(members) for kind, members in buckets.items()}
    get = _operand_getter(operand)

    def evaluate_membership(document: Mapping[str, Any]) -> bool | None:
        value = get(document)
        kind = kind_of(value)
        if kind is None:
            return None
        found = has_null if kind == NULL else value in frozen[kind]
        return found is not negated

    return evaluate_membership


def build_is_defined(path: Path) -> Evaluator:
    """Compile ``IS_DEFINED(path)``: true when the path leads to a value, null included."""
    get = path.getter()

    def evaluate_is_defined(document: Mapping[str, Any]) -> bool | None:
        return get(document) is not MISSING

    return evaluate_is_defined


def build_not(inner: Evaluator) -> Evaluator:
    """Compile ``NOT inner``: undefined stays undefined."""

    def evaluate_not(document: Mapping[str, Any]) -> bool | None:
        result = inner(document)
        return None if result is None else not result

    return evaluate_not


def build_and(operands: Iterable[Evaluator]) -> Evaluator:
    """Compile a conjunction (false wins, then undefined)."""
    parts = tuple(operands)
    if len(parts) == 2:
        first, second = parts

        def evaluate_and_pair(document: Mapping[str, Any]) -> bool | None:
            left = first(document)
            if left is False:
                return False
            right = second(document)
            if right is False:
                return False
            return True if left is True and right is True else None

        return evaluate_and_pair

    def evaluate_and(document: Mapping[str, Any]) -> bool | None:
        result: bool | None = True
        for part in parts:
            value = part(document)
            if value is False:
                return False
            if value is None:
                result = None
        return result

    return evaluate_and


def build_or(operands: Iterable[Evaluator]) -> Evaluator:
    """Compile a disjunction (true wins, then undefined)."""
    parts = tuple(operands)

    def evaluate_or(document: Mapping[str, Any]) -> bool | None:
        result: bool | None = False
        for part in parts:
            value = part(document)
            if value is True:
                return True
            if value is None:
                result = None
        return result

    return evaluate_or
