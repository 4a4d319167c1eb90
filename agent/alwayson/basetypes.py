"""ThingWorx base types (reference §3.2) and the small value classes that go with them.

Python values per base type:

=======================================  =====================================================
NOTHING                                  ``None``
STRING, XML, QUERY, HYPERLINK,           ``str`` (no NUL character: the C SDK's writer stops
IMAGELINK, PASSWORD, HTML, TEXT, TAGS,   at the first zero byte, §12.1)
SCHEDULE, GUID, every ``*NAME`` type
JSON                                     the parsed JSON value (dict, list, str, int, float,
                                         bool, None); encoded compactly
NUMBER                                   ``float``
INTEGER                                  ``int`` in the int32 range
LONG                                     ``int`` in the int64 range
BOOLEAN                                  ``bool``
DATETIME                                 aware UTC ``datetime``, millisecond precision
TIMESPAN                                 ``int`` milliseconds
INFOTABLE                                :class:`~agent.alwayson.infotable.InfoTable`
LOCATION                                 :class:`Location`
IMAGE, BLOB                              ``bytes``
VARIANT                                  :class:`Variant`
=======================================  =====================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from agent.alwayson.errors import UsageError

__all__ = ["STRING_LIKE_TYPES", "BaseType", "Location", "Variant"]


class BaseType(IntEnum):
    """A ThingWorx base type; the value is the platform's number (reference §3.2).

    The wire byte is the value modulo 256 (NOTHING = -1 travels as ``0xFF``): see
    :attr:`wire_byte`.
    """

    NOTHING = -1
    STRING = 0
    NUMBER = 1
    BOOLEAN = 2
    DATETIME = 3
    TIMESPAN = 4
    INFOTABLE = 5
    LOCATION = 6
    XML = 7
    JSON = 8
    QUERY = 9
    IMAGE = 10
    HYPERLINK = 11
    IMAGELINK = 12
    PASSWORD = 13
    HTML = 14
    TEXT = 15
    TAGS = 16
    SCHEDULE = 17
    VARIANT = 18
    GUID = 20
    BLOB = 21
    INTEGER = 22
    LONG = 23
    PROPERTYNAME = 50
    SERVICENAME = 51
    EVENTNAME = 52
    THINGNAME = 100
    THINGSHAPENAME = 101
    THINGTEMPLATENAME = 102
    DATASHAPENAME = 104
    MASHUPNAME = 105
    MENUNAME = 106
    BASETYPENAME = 107
    USERNAME = 108
    GROUPNAME = 109
    CATEGORYNAME = 110
    STATEDEFINITIONNAME = 111
    STYLEDEFINITIONNAME = 112
    MODELTAGVOCABULARYNAME = 113
    DATATAGVOCABULARYNAME = 114
    NETWORKNAME = 115
    MEDIAENTITYNAME = 116
    APPLICATIONKEYNAME = 117
    LOCALIZATIONTABLENAME = 118
    ORGANIZATIONNAME = 119
    DASHBOARDNAME = 120

    @property
    def type_name(self) -> str:
        """The upper-case name used in metadata JSON (reference §3.2, §7.4), e.g. ``"NUMBER"``."""
        return self.name

    @property
    def wire_byte(self) -> int:
        """The type byte on the wire (``0xFF`` for NOTHING)."""
        return self.value & 0xFF

    @classmethod
    def from_name(cls, name: str) -> BaseType:
        """The base type called ``name`` (case-insensitive).

        Raises:
            UsageError: no base type has that name.
        """
        try:
            return cls[name.upper()]
        except (KeyError, AttributeError):
            raise UsageError(f"unknown base type name {name!r}") from None

    @classmethod
    def from_wire_byte(cls, byte: int) -> BaseType:
        """The base type whose wire byte is ``byte``.

        Raises:
            UsageError: no base type has that byte.
        """
        found = _BY_BYTE.get(byte)
        if found is None:
            raise UsageError(f"unknown base type byte 0x{byte:02X}")
        return found


_BY_BYTE: dict[int, BaseType] = {t.value & 0xFF: t for t in BaseType}

STRING_LIKE_TYPES: frozenset[BaseType] = frozenset(
    {
        BaseType.STRING,
        BaseType.XML,
        BaseType.QUERY,
        BaseType.HYPERLINK,
        BaseType.IMAGELINK,
        BaseType.PASSWORD,
        BaseType.HTML,
        BaseType.TEXT,
        BaseType.TAGS,
        BaseType.SCHEDULE,
        BaseType.GUID,
    }
    | {t for t in BaseType if t.value >= 50}
)
"""Base types whose Python value is a ``str`` and whose wire form is a string (§3.1)."""


@dataclass(frozen=True, slots=True)
class Location:
    """A LOCATION value; on the wire three doubles in this order (reference §3.2)."""

    longitude: float
    latitude: float
    elevation: float = 0.0


@dataclass(frozen=True, slots=True)
class Variant:
    """A value together with its base type.

    In a VARIANT column or aspect it is written as ``0x12`` + type byte + value (reference §3.2,
    §7.3). In a column of another type it means "write this typed value with its own type byte"
    (and that is how a decoded cell whose type byte differs from its column's comes back).
    """

    base_type: BaseType
    value: Any
