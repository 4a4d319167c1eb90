"""DataShapes and InfoTables: the data model of reference §4.

An InfoTable is a DataShape (an ordered tuple of field definitions) and a list of rows; a row is a
``dict`` keyed by field name. A key missing from a row, or a ``None`` value, is a NOTHING cell.
The wire carries no DataShape name, so a decoded shape's name is ``""``.

Field-definition aspects are a mapping of aspect name to Python value; on the wire each is typed
by its value's Python type (``bool`` → BOOLEAN, ``int`` → INTEGER or LONG, ``float`` → NUMBER,
``str`` → STRING, ...) or explicitly by wrapping the value in a :class:`Variant`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from agent.alwayson.basetypes import BaseType
from agent.alwayson.errors import UsageError

__all__ = ["PRIMARY_KEY_ASPECT", "RESULT_FIELD", "DataShape", "FieldDefinition", "InfoTable"]

RESULT_FIELD = "result"
"""Column name of a primitive service result (reference §4, §7.5)."""

PRIMARY_KEY_ASPECT = "isPrimaryKey"
"""Aspect marking a primary-key field (BOOLEAN; reference §4)."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class FieldDefinition:
    """One column of a DataShape (reference §4).

    Args:
        name: the field name.
        base_type: the column's base type.
        description: free text; ``""`` for none.
        aspects: aspect name → value. The convenience key ``is_primary_key`` is stored as the
            aspect ``isPrimaryKey`` (BOOLEAN).
    """

    name: str
    base_type: BaseType
    description: str = ""
    aspects: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _EMPTY, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise UsageError(f"field name must be a str, not {type(self.name).__name__}")
        if not isinstance(self.description, str):
            raise UsageError(f"field description of {self.name!r} must be a str")
        if not isinstance(self.base_type, BaseType):
            try:
                object.__setattr__(self, "base_type", BaseType(self.base_type))
            except ValueError:
                raise UsageError(f"unknown base type {self.base_type!r}") from None
        aspects = self.aspects
        if aspects is not _EMPTY:
            copied = dict(aspects)
            if "is_primary_key" in copied:
                copied[PRIMARY_KEY_ASPECT] = bool(copied.pop("is_primary_key"))
            object.__setattr__(self, "aspects", MappingProxyType(copied) if copied else _EMPTY)

    @property
    def is_primary_key(self) -> bool:
        """True when the aspect ``isPrimaryKey`` is set and true."""
        return bool(self.aspects.get(PRIMARY_KEY_ASPECT, False))


@dataclass(frozen=True)
class DataShape:
    """An ordered set of field definitions with unique names (reference §4).

    Args:
        fields: the columns, in wire order.
        name: the DataShape's name (metadata only; not on the wire).
    """

    fields: tuple[FieldDefinition, ...]
    name: str = ""
    _index: Mapping[str, FieldDefinition] = dataclasses.field(
        init=False, repr=False, compare=False, hash=False, default_factory=lambda: _EMPTY
    )

    def __post_init__(self) -> None:
        fields = tuple(self.fields)
        index: dict[str, FieldDefinition] = {}
        for f in fields:
            if not isinstance(f, FieldDefinition):
                raise UsageError(
                    f"DataShape fields must be FieldDefinition, not {type(f).__name__}"
                )
            if f.name in index:
                raise UsageError(f"duplicate field name {f.name!r} in DataShape {self.name!r}")
            index[f.name] = f
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "_index", index)

    @classmethod
    def of(cls, *fields: FieldDefinition, name: str = "") -> DataShape:
        """Build a DataShape from field definitions given as arguments."""
        return cls(fields, name)

    def field(self, name: str) -> FieldDefinition:
        """The field called ``name``.

        Raises:
            KeyError: no such field.
        """
        return self._index[name]

    @property
    def names(self) -> tuple[str, ...]:
        """Field names in column order."""
        return tuple(f.name for f in self.fields)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[FieldDefinition]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)


@dataclass(frozen=True, eq=False)
class InfoTable:
    """A DataShape and rows (reference §4).

    Equality compares the shapes and, row by row, the value of every field (a missing key equals
    ``None``), so a table equals its decoded round trip.

    Args:
        shape: the columns.
        rows: one ``dict`` per row, keyed by field name.
    """

    shape: DataShape
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @classmethod
    def single(cls, name: str, base_type: BaseType, value: Any) -> InfoTable:
        """A one-column, one-row table: the convention for single values (reference §4).

        Service results use the column name ``result`` (:data:`RESULT_FIELD`); property values
        use the property's name. The value is checked with
        :func:`~agent.alwayson.values.coerce_value`.

        Raises:
            ValueTypeError: ``value`` does not fit ``base_type``.
        """
        from agent.alwayson.values import coerce_value  # values imports this module

        if type(name) is str and isinstance(base_type, BaseType):
            shape = _single_shape(name, base_type)  # one object per column: codec caches hit
        else:
            shape = DataShape((FieldDefinition(name, base_type),))
        return cls(shape, [{name: coerce_value(base_type, value)}])

    def first_row(self) -> dict[str, Any]:
        """The first row with every field of the shape present (missing → ``None``).

        Returns ``{}`` for a table without rows.
        """
        if not self.rows:
            return {}
        row = self.rows[0]
        return {name: row.get(name) for name in self.shape.names}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InfoTable):
            return NotImplemented
        if self.shape != other.shape or len(self.rows) != len(other.rows):
            return False
        names = self.shape.names
        return all(
            all(a.get(n) == b.get(n) for n in names)
            for a, b in zip(self.rows, other.rows, strict=True)
        )

    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self.rows)


@lru_cache(maxsize=256)
def _single_shape(name: str, base_type: BaseType) -> DataShape:
    return DataShape((FieldDefinition(name, base_type),))
