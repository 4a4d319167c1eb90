"""Operands of a condition: property paths and constants, and how they read a document.

Rules (reference/iothub.md §3.5, §3.6):

- A :class:`Path` is a sequence of keys. Its first key names a top-level field of the document
  and is matched case-insensitively (``DeviceId`` finds ``deviceId``); an exact match wins over
  a case-insensitive one. Keys below the top level are case-sensitive (``tags.Site`` is not
  ``tags.site``). ``$version`` / ``$metadata`` are ordinary keys.
- The top-level name ``createdTimeUtc`` falls back to ``createdDateTimeUtc`` when the document
  has no field of the former name: IoT Hub's docs filter ``devices.jobs`` on the first while the
  rows carry the second.
- Reading a path through a missing key or a non-object yields :data:`MISSING` (IoT Hub's
  *undefined*), never an exception.
- Values have a kind: string, number, boolean, null, or none (objects, arrays and anything else).
  Booleans are not numbers, even though Python's ``bool`` is an ``int``.
- Text forms are canonical: strings in single quotes with ``\\'``, ``\\\\`` and ``\\uXXXX``
  escapes, numbers in Python's shortest round-tripping form, keys below the top level that are
  not plain names in bracket form ``['key']``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "BOOLEAN",
    "KEYWORDS",
    "MISSING",
    "NULL",
    "NUMBER",
    "STRING",
    "Constant",
    "Getter",
    "Operand",
    "Path",
    "kind_of",
    "quote_string",
    "top_level_alias",
]


class _Missing:
    """The value of a path that leads nowhere (IoT Hub's *undefined*)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

STRING: Final = "string"
NUMBER: Final = "number"
BOOLEAN: Final = "boolean"
NULL: Final = "null"

Getter = Callable[[Mapping[str, Any]], Any]
"""Reads an operand's value from a document; returns :data:`MISSING` when there is none."""

_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*\Z")
# Reserved words (any case): never the first key of a path; fine as a later key.
KEYWORDS: Final = frozenset(
    {"select", "from", "where", "top", "as", "group", "by", "and", "or", "not", "in", "nin"}
    | {"true", "false", "null"}
)

# Canonical spellings of the documented top-level fields of twins and devices.jobs rows, so
# that a differently-cased name usually costs one extra dict lookup instead of a scan.
_KNOWN_TOP_LEVEL: Final = {
    name.lower(): name
    for name in (
        "deviceId",
        "moduleId",
        "etag",
        "deviceEtag",
        "version",
        "status",
        "statusReason",
        "statusUpdateTime",
        "connectionState",
        "lastActivityTime",
        "cloudToDeviceMessageCount",
        "authenticationType",
        "x509Thumbprint",
        "capabilities",
        "modelId",
        "deviceScope",
        "parentScopes",
        "tags",
        "properties",
        "jobId",
        "jobType",
        "startTimeUtc",
        "endTimeUtc",
        "createdDateTimeUtc",
        "lastUpdatedDateTimeUtc",
        "outcome",
        "error",
        "parentJobId",
    )
}
_ALIASES: Final = {"createdtimeutc": "createdDateTimeUtc"}


def kind_of(value: Any) -> str | None:
    """The query-language kind of a JSON value, or None when it is not a primitive."""
    cls = type(value)
    if cls is str:
        return STRING
    if cls is int or cls is float:
        return NUMBER
    if cls is bool:
        return BOOLEAN
    if value is None:
        return NULL
    # Subclasses (str enums, int enums...) are rare: the slow checks keep them correct.
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, str):
        return STRING
    if isinstance(value, (int, float)):
        return NUMBER
    return None


def quote_string(value: str) -> str:
    """``value`` as a single-quoted query-language string literal."""
    out = ["'"]
    for char in value:
        code = ord(char)
        if char == "'":
            out.append("\\'")
        elif char == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append("'")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Constant:
    """A literal: a string, a number (int or float, not NaN), a boolean or null.

    Attributes:
        value: the Python value.
        kind: its query-language kind (part of equality, so ``true`` never equals ``1``).
    """

    value: str | int | float | bool | None
    kind: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        kind = kind_of(self.value)
        if kind is None:
            raise ValueError(f"not a query constant: {self.value!r}")
        if kind == NUMBER and isinstance(self.value, float) and math.isnan(self.value):
            raise ValueError("NaN is not a query constant")
        object.__setattr__(self, "kind", kind)

    @classmethod
    def strings(cls, values: Iterable[str]) -> tuple[Constant, ...]:
        """Constants of many strings at once (a rollout wave's 500 device ids): the same
        constants as ``Constant(value)`` gives, each kind known to be a string.

        Raises:
            ValueError: when a value is not a ``str``.
        """
        new, set_value, set_kind = object.__new__, _SET_VALUE, _SET_KIND
        made: list[Constant] = []
        for value in values:
            if type(value) is not str:
                raise ValueError(f"not a string constant: {value!r}")
            constant = new(cls)
            set_value(constant, value)
            set_kind(constant, STRING)
            made.append(constant)
        return tuple(made)

    def to_text(self) -> str:
        """The constant as the query language writes it."""
        value = self.value
        if value is None:
            return "null"
        if value is True:
            return "true"
        if value is False:
            return "false"
        if isinstance(value, str):
            return quote_string(value)
        if isinstance(value, float):
            if math.isinf(value):
                return "1e999" if value > 0 else "-1e999"
            return repr(value)
        return str(int(value))

    def getter(self) -> Getter:
        """A getter that ignores the document and returns the value."""
        value = self.value
        return lambda _document: value


# The slot setters of the frozen Constant (what ``object.__setattr__`` reaches, less its lookup).
_SET_VALUE: Final[Callable[[Constant, object], None]] = vars(Constant)["value"].__set__
_SET_KIND: Final[Callable[[Constant, object], None]] = vars(Constant)["kind"].__set__


@dataclass(frozen=True, slots=True)
class Path:
    """A property path such as ``tags.site`` or ``properties.reported.$version``.

    Attributes:
        keys: the keys, top level first; at least one. The first must be a plain name
            (letters, digits, ``_``, ``$``) and not a keyword (``not``, ``in``, ``true``...).
    """

    keys: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a path needs at least one key")
        first = self.keys[0]
        if not isinstance(first, str) or not _NAME.match(first):
            raise ValueError(f"a path must start with a plain name, not {first!r}")
        if first.lower() in KEYWORDS:
            raise ValueError(f"a path cannot start with the keyword {first!r}")
        if not all(isinstance(key, str) for key in self.keys):
            raise ValueError("path keys must be strings")

    def to_text(self) -> str:
        """The path as the query language writes it."""
        parts = [self.keys[0]]
        for key in self.keys[1:]:
            if _NAME.match(key):
                parts.append("." + key)
            else:
                parts.append("[" + quote_string(key) + "]")
        return "".join(parts)

    @property
    def is_status(self) -> bool:
        """True for the top-level ``status`` field (device-job status words are normalised)."""
        return len(self.keys) == 1 and self.keys[0].lower() == "status"

    def getter(self) -> Getter:
        """A compiled reader of this path (see the module rules)."""
        top = _top_level_getter(self.keys[0])
        rest = self.keys[1:]
        if not rest:
            return top
        if len(rest) == 1:
            (key,) = rest

            def get_two(document: Mapping[str, Any]) -> Any:
                value = top(document)
                if type(value) is dict:
                    return value.get(key, MISSING)
                return _child(value, key)

            return get_two

        def get_deep(document: Mapping[str, Any]) -> Any:
            value = top(document)
            for key in rest:
                value = value.get(key, MISSING) if type(value) is dict else _child(value, key)
                if value is MISSING:
                    return MISSING
            return value

        return get_deep


Operand = Path | Constant


def _child(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(key, MISSING)
    return MISSING


def top_level_alias(lowered: str) -> str | None:
    """The lower-cased name a lower-cased top-level name also reads when a document lacks it
    (``createdtimeutc`` → ``createddatetimeutc``), else None."""
    alias = _ALIASES.get(lowered)
    return None if alias is None else alias.lower()


def _top_level_getter(name: str) -> Getter:
    lowered = name.lower()
    canonical = _KNOWN_TOP_LEVEL.get(lowered, name)
    if canonical == name:
        canonical = ""  # no second exact lookup worth trying
    alias = _ALIASES.get(lowered)
    get_alias = _top_level_getter(alias) if alias is not None else None

    def get(document: Mapping[str, Any]) -> Any:
        value = document.get(name, MISSING)
        if value is not MISSING:
            return value
        if canonical:
            value = document.get(canonical, MISSING)
            if value is not MISSING:
                return value
        for key in document:
            if isinstance(key, str) and key.lower() == lowered:
                return document[key]
        if get_alias is not None:
            return get_alias(document)
        return MISSING

    return get
