"""The condition tree: frozen nodes that compile themselves once and render canonical text.

Every node is a :class:`Condition`, which satisfies the emulator's ``Predicate`` protocol
(``ports.py``). A node compiles its closure (``evaluation.py``) when it is built, from its
children's closures, so building a tree is linear and evaluating it walks no tree.

Canonical text (:meth:`Condition.to_text`): keywords in upper case, single spaces, ``<>``
written ``!=``, ``IN``/``NIN`` lists as ``[a, b]``, and parentheses around every ``AND``/``OR``
that sits inside another ``AND``, ``OR`` or ``NOT``. Parsing the text gives back an equal tree
(``AND``/``OR`` are n-ary and parentheses keep nesting, so ``a AND (b AND c)`` stays nested).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from iothub_query.evaluation import (
    COMPARISON_OPERATORS,
    Evaluator,
    build_and,
    build_comparison,
    build_is_defined,
    build_membership,
    build_not,
    build_or,
)
from iothub_query.values import Constant, Operand, Path

__all__ = ["And", "Comparison", "Condition", "IsDefined", "Membership", "Not", "Or"]


class Condition:
    """A query condition (the WHERE part of an IoT Hub query)."""

    __slots__ = ()

    # Every node declares this field and sets it once, in ``__post_init__``.
    _evaluator: Evaluator

    @property
    def evaluator(self) -> Evaluator:
        """The compiled closure: document → True, False or None (undefined)."""
        return self._evaluator

    def evaluate(self, document: Mapping[str, Any]) -> bool | None:
        """Evaluate in three-valued logic: True, False, or None when undefined."""
        return self.evaluator(document)

    def matches(self, document: Mapping[str, Any]) -> bool:
        """True when the condition evaluates to exactly true on ``document``."""
        return self.evaluator(document) is True

    def to_text(self) -> str:
        """Canonical text that parses back to an equal condition."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.to_text()


def _grouped(condition: Condition) -> str:
    text = condition.to_text()
    return f"({text})" if isinstance(condition, And | Or) else text


@dataclass(frozen=True, slots=True)
class Comparison(Condition):
    """``left op right``, op one of ``= != < > <= >=`` (``<>`` is read as ``!=``)."""

    left: Operand
    op: str
    right: Operand
    _evaluator: Evaluator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.op not in COMPARISON_OPERATORS:
            raise ValueError(f"unknown comparison operator {self.op!r}")
        object.__setattr__(self, "_evaluator", build_comparison(self.left, self.op, self.right))

    def to_text(self) -> str:
        """Canonical text."""
        return f"{self.left.to_text()} {self.op} {self.right.to_text()}"


@dataclass(frozen=True, slots=True)
class Membership(Condition):
    """``operand IN [values]``, or ``operand NIN [values]`` when ``negated``."""

    operand: Operand
    values: tuple[Constant, ...]
    negated: bool = False
    _evaluator: Evaluator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_evaluator", build_membership(self.operand, self.values, self.negated)
        )

    def to_text(self) -> str:
        """Canonical text."""
        keyword = "NIN" if self.negated else "IN"
        items = ", ".join(value.to_text() for value in self.values)
        return f"{self.operand.to_text()} {keyword} [{items}]"


@dataclass(frozen=True, slots=True)
class IsDefined(Condition):
    """``IS_DEFINED(path)``."""

    path: Path
    _evaluator: Evaluator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_evaluator", build_is_defined(self.path))

    def to_text(self) -> str:
        """Canonical text."""
        return f"IS_DEFINED({self.path.to_text()})"


@dataclass(frozen=True, slots=True)
class Not(Condition):
    """``NOT operand``."""

    operand: Condition
    _evaluator: Evaluator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_evaluator", build_not(self.operand.evaluator))

    def to_text(self) -> str:
        """Canonical text."""
        return f"NOT {_grouped(self.operand)}"


@dataclass(frozen=True, slots=True)
class And(Condition):
    """``a AND b [AND ...]``: two operands or more."""

    operands: tuple[Condition, ...]
    _evaluator: Evaluator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("AND needs two operands or more")
        object.__setattr__(
            self, "_evaluator", build_and(operand.evaluator for operand in self.operands)
        )

    def to_text(self) -> str:
        """Canonical text."""
        return " AND ".join(_grouped(operand) for operand in self.operands)


@dataclass(frozen=True, slots=True)
class Or(Condition):
    """``a OR b [OR ...]``: two operands or more."""

    operands: tuple[Condition, ...]
    _evaluator: Evaluator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("OR needs two operands or more")
        object.__setattr__(
            self, "_evaluator", build_or(operand.evaluator for operand in self.operands)
        )

    def to_text(self) -> str:
        """Canonical text."""
        return " OR ".join(_grouped(operand) for operand in self.operands)
