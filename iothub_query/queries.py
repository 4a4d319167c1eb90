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

from iothub_query.conditions import And, Comparison, Condition, Membership
from iothub_query.values import MISSING, Constant, Path

__all__ = [
    "DEFAULT_COUNT_ALIAS",
    "Query",
    "Source",
    "pinned_members",
    "pinned_value",
    "run_query",
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
    lowered = key.lower()

    def is_key(operand: object) -> bool:
        return (
            isinstance(operand, Path)
            and len(operand.keys) == 1
            and operand.keys[0].lower() == lowered
        )

    found: frozenset[Any] | None = None
    candidates = condition.operands if isinstance(condition, And) else (condition,)
    for operand in candidates:
        values: frozenset[Any] | None = None
        if isinstance(operand, Membership) and not operand.negated and is_key(operand.operand):
            values = frozenset(c.value for c in operand.values)
        elif isinstance(operand, Comparison) and operand.op == "=":
            for left, right in ((operand.left, operand.right), (operand.right, operand.left)):
                if is_key(left) and isinstance(right, Constant):
                    values = frozenset((right.value,))
        if values is not None and (found is None or len(values) < len(found)):
            found = values
    return found
