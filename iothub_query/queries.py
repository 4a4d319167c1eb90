"""A parsed query and how it runs over a collection of documents.

Rules: a query reads one collection (``devices``, ``devices.modules`` or ``devices.jobs``; the
caller supplies that collection's documents); it returns the matching documents unchanged
(``SELECT *``), counts them (``SELECT COUNT() [AS alias]``, one row ``{alias: n}``, alias
``$1`` by default as IoT Hub names unnamed columns), or keeps named top-level properties of
each (``SELECT deviceId FROM devices``: ``{"deviceId": ...}``). Paging the result
(``x-ms-max-item-count`` / ``x-ms-continuation``, reference/iothub.md §1.5) is the REST layer's
job: :func:`run_query` returns the whole result, in the documents' order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from iothub_query.conditions import And, Comparison, Condition, IsDefined, Membership, Not, Or
from iothub_query.values import MISSING, Constant, Path, top_level_alias

__all__ = [
    "DEFAULT_COUNT_ALIAS",
    "Query",
    "Source",
    "exact_members",
    "pinned_members",
    "pinned_value",
    "run_query",
    "top_level_names",
]

Source = Literal["devices", "devices.modules", "devices.jobs"]

DEFAULT_COUNT_ALIAS: Final = "$1"


@dataclass(frozen=True, slots=True)
class Query:
    """``SELECT * | SELECT COUNT() [AS alias] | SELECT name[, name...] FROM <source> [WHERE
    <condition>]``.

    Attributes:
        source: the collection read.
        count_alias: None for ``SELECT *``; for ``SELECT COUNT()``, the result's key (the alias,
            or ``$1`` when none was given).
        where: the condition, or None when every document is selected. On ``devices.jobs``
            its paths are already stripped of their ``devices.jobs.`` prefix.
        text: the query text as received.
        fields: ``SELECT deviceId, status FROM devices``: the top-level names each result keeps
            (as written; read case-insensitively like paths); () for ``*`` and ``COUNT()``.
    """

    source: Source
    count_alias: str | None
    where: Condition | None
    text: str
    fields: tuple[str, ...] = ()

    @property
    def is_count(self) -> bool:
        """True for ``SELECT COUNT()``."""
        return self.count_alias is not None

    def to_text(self) -> str:
        """Canonical text of the query (parses back to an equal query, ``text`` aside)."""
        select = "*" if self.count_alias is None else f"COUNT() AS {self.count_alias}"
        if self.count_alias == DEFAULT_COUNT_ALIAS:
            select = "COUNT()"
        if self.fields:
            select = ", ".join(self.fields)
        where = f" WHERE {self.where.to_text()}" if self.where is not None else ""
        return f"SELECT {select} FROM {self.source}{where}"


def run_query(query: Query, documents: Iterable[Mapping[str, Any]]) -> list[Any]:
    """Run ``query`` over the documents of its source collection.

    Args:
        query: a query from :func:`~iothub_query.parse_query`.
        documents: the documents of ``query.source`` (twins, module twins or device-job rows).

    Returns:
        ``SELECT *``: the matching documents themselves, in order. ``SELECT COUNT()``:
        ``[{alias: number of matching documents}]``. ``SELECT name, ...``: per matching
        document, its values of those names (a name it lacks is left out).
    """
    selected: Iterable[Mapping[str, Any]] = documents
    if query.where is not None:
        evaluate = query.where.evaluator
        selected = (document for document in documents if evaluate(document) is True)
    if query.count_alias is not None:
        # Counted as they stream by: a COUNT over 100,000 twins holds one document at a time.
        return [{query.count_alias: sum(1 for _ in selected)}]
    if query.fields:  # each result keeps the names selected that it has
        getters = [(name, Path((name,)).getter()) for name in query.fields]
        return [
            {name: value for name, get in getters if (value := get(document)) is not MISSING}
            for document in selected
        ]
    return list(selected)


def pinned_value(query: Query, key: str) -> str | int | float | bool | None:
    """The constant a top-level ``key = constant`` of the WHERE part fixes, else None.

    The condition is the comparison itself or one operand of a top-level ``AND``
    (``devices.jobs.jobId = 'x' AND status = 'failed'``); the constant may stand on either
    side. A caller may read only the documents whose ``key`` equals the value (a store's key
    lookup) and still evaluate the whole condition on them: every match has that value.

    Args:
        query: a query from :func:`~iothub_query.parse_query`.
        key: a top-level property name, e.g. ``jobId`` (``devices.jobs`` paths are stripped).

    Returns:
        The constant's value, or None when no such equality pins ``key`` (or it pins null).
    """
    where = query.where
    candidates = where.operands if isinstance(where, And) else (where,)
    for condition in candidates:
        if not isinstance(condition, Comparison) or condition.op != "=":
            continue
        for left, right in ((condition.left, condition.right), (condition.right, condition.left)):
            if isinstance(left, Path) and left.keys == (key,) and isinstance(right, Constant):
                return right.value
    return None


def pinned_members(condition: Condition, key: str) -> frozenset[Any] | None:
    """The constants a top-level ``key IN [...]`` or ``key = constant`` limits ``key`` to.

    The condition is the membership (or equality) itself or one operand of a top-level ``AND``
    (a rollout wave's ``deviceId IN ['a', 'b', ...]``); the path is ``key`` alone, its name
    matched case-insensitively as top-level names are. A caller may then evaluate the whole
    condition only on the documents whose ``key`` is one of the constants (a registry's key
    lookup instead of a scan): no other document can match. ``NIN`` pins nothing.

    Args:
        condition: a parsed WHERE condition.
        key: a top-level property name, e.g. ``deviceId``.

    Returns:
        The constants' values (the smallest set when several operands pin ``key``), or None.
    """
    found: frozenset[Any] | None = None
    candidates = condition.operands if isinstance(condition, And) else (condition,)
    for operand in candidates:
        values = _members(operand, key.lower())
        if values is not None and (found is None or len(values) < len(found)):
            found = values
    return found


def exact_members(condition: Condition | None, key: str) -> frozenset[Any] | None:
    """The constants when the whole condition is ``key IN [...]`` or ``key = constant``.

    Then a document whose ``key`` holds a string matches exactly when that string is one of the
    constants, so a caller holding documents by a string ``key`` (the registry by device id, a
    job's rows by job id) may select them by lookup without evaluating anything. Not for
    ``status``, whose comparisons treat ``canceled`` and ``cancelled`` as one word.

    Args:
        condition: a parsed WHERE condition, or None.
        key: a top-level property name, e.g. ``deviceId``; matched case-insensitively.

    Returns:
        The constants' values, or None when the condition is anything else.
    """
    lowered = key.lower()
    if condition is None or lowered == "status":
        return None
    return _members(condition, lowered)


def _members(condition: Condition, lowered: str) -> frozenset[Any] | None:
    """The constants of ``condition`` when it is ``key IN [...]`` or ``key = constant`` (the
    key a top-level path named ``lowered`` in any case), else None."""

    def is_key(operand: object) -> bool:
        return (
            isinstance(operand, Path)
            and len(operand.keys) == 1
            and operand.keys[0].lower() == lowered
        )

    if isinstance(condition, Membership) and not condition.negated and is_key(condition.operand):
        return frozenset(c.value for c in condition.values)
    if isinstance(condition, Comparison) and condition.op == "=":
        for left, right in ((condition.left, condition.right), (condition.right, condition.left)):
            if is_key(left) and isinstance(right, Constant):
                return frozenset((right.value,))
    return None


def top_level_names(query: Query | Condition | None) -> frozenset[str]:
    """The top-level names (lower-cased) a query or condition reads, aliases included.

    A document cut down to its members whose lower-cased names are in this set gives the same
    result as the whole document (top-level names are matched case-insensitively, so every
    spelling of a name read is kept): a store may build only those members for evaluation.

    Args:
        query: a parsed query (its selected names and its WHERE condition), a condition, or
            None (reads nothing).

    Returns:
        The names, lower-cased.
    """
    names: set[str] = set()
    pending: list[Condition] = []
    if isinstance(query, Query):
        names.update(name.lower() for name in query.fields)
        if query.where is not None:
            pending.append(query.where)
    elif query is not None:
        pending.append(query)
    while pending:  # an explicit stack: conditions nest up to MAX_DEPTH levels
        condition = pending.pop()
        if isinstance(condition, And | Or):
            pending.extend(condition.operands)
        elif isinstance(condition, Not):
            pending.append(condition.operand)
        elif isinstance(condition, Comparison):
            operands: tuple[object, ...] = (condition.left, condition.right)
            names.update(o.keys[0].lower() for o in operands if isinstance(o, Path))
        elif isinstance(condition, Membership):
            if isinstance(condition.operand, Path):
                names.add(condition.operand.keys[0].lower())
        elif isinstance(condition, IsDefined):
            names.add(condition.path.keys[0].lower())
        else:  # every node kind is handled above; a new one must be added here
            raise TypeError(f"unknown condition node {type(condition).__name__}")
    return frozenset(names | {alias for name in names if (alias := top_level_alias(name))})
