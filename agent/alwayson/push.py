"""Pushed property values, events and property subscriptions, as tables (reference §7.2, §7.3,
§7.6).

Pure builders and readers, used by the connection on both ends:

- :func:`property_values_params`: the params of ``UpdateSubscribedPropertyValues`` (§7.3): an
  InfoTable with one INFOTABLE column ``values``, one row whose cell holds one row per property
  change (``name`` STRING, ``value`` VARIANT, ``time`` DATETIME, ``quality`` STRING);
- :func:`read_property_values`: the same table read back (the stand-in), tolerant of a value
  that is not wrapped in a VARIANT;
- :func:`subscriptions_params` / :func:`read_subscriptions`: ``GetPropertySubscriptions``' input
  (one JSON column ``options`` holding ``{"hasDeadband":true}``) and its answer (one row per
  remote-bound property: ``edgeName``, ``pushType``, ``pushThreshold``; other columns ignored).

Rules: a value whose base type cannot be guessed from its Python type is wrapped by the caller in
a :class:`~agent.alwayson.Variant`; a malformed table read back raises
:class:`~agent.alwayson.ProtocolError` with one line, never anything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.alwayson.basetypes import BaseType, Variant
from agent.alwayson.errors import ProtocolError
from agent.alwayson.infotable import DataShape, FieldDefinition, InfoTable

__all__ = [
    "GET_PROPERTY_SUBSCRIPTIONS",
    "PROPERTY_VALUES_SHAPE",
    "PUSH_TYPES",
    "SUBSCRIPTIONS_SHAPE",
    "UPDATE_SUBSCRIBED_PROPERTY_VALUES",
    "PropertySubscription",
    "PropertyValue",
    "property_values_params",
    "read_property_values",
    "read_subscriptions",
    "subscriptions_from_aspects",
    "subscriptions_params",
    "subscriptions_table",
]

GET_PROPERTY_SUBSCRIPTIONS = "GetPropertySubscriptions"
"""The service an edge calls after ``NotifyPropertyUpdate`` to learn what to push (§7.2)."""
UPDATE_SUBSCRIBED_PROPERTY_VALUES = "UpdateSubscribedPropertyValues"
"""The service an edge pushes property values with (§7.3)."""

PROPERTY_VALUES_SHAPE = DataShape.of(
    FieldDefinition("name", BaseType.STRING),
    FieldDefinition("value", BaseType.VARIANT),
    FieldDefinition("time", BaseType.DATETIME),
    FieldDefinition("quality", BaseType.STRING),
)
"""The rows of one ``UpdateSubscribedPropertyValues`` call (§7.3)."""

_VALUES_OUTER = DataShape.of(FieldDefinition("values", BaseType.INFOTABLE))
_OPTIONS_SHAPE = DataShape.of(FieldDefinition("options", BaseType.JSON))

SUBSCRIPTIONS_SHAPE = DataShape.of(
    FieldDefinition("edgeName", BaseType.STRING),
    FieldDefinition("pushType", BaseType.STRING),
    FieldDefinition("pushThreshold", BaseType.NUMBER),
)
"""The columns of ``GetPropertySubscriptions``' answer the C SDK reads (§7.2)."""

PUSH_TYPES = frozenset({"ALWAYS", "VALUE", "NEVER", "DEADBAND"})
"""``pushType`` values (§7.2; DEADBAND inferred from ``hasDeadband``)."""

_QUALITIES = frozenset({"GOOD", "BAD", "UNKNOWN"})


@dataclass(frozen=True, slots=True)
class PropertyValue:
    """One property change.

    Attributes:
        name: the property's name.
        base_type: its declared base type (the VARIANT's inner type byte).
        value: the value, a Python value of that base type.
        time: the sample time (aware datetime).
        quality: ``GOOD``, ``BAD`` or ``UNKNOWN``.
    """

    name: str
    base_type: BaseType
    value: Any
    time: datetime
    quality: str = "GOOD"


@dataclass(frozen=True, slots=True)
class PropertySubscription:
    """One remote-bound property, as ``GetPropertySubscriptions`` lists it."""

    edge_name: str
    push_type: str
    push_threshold: float = 0.0


def property_values_params(values: Iterable[PropertyValue]) -> InfoTable:
    """The params of one ``UpdateSubscribedPropertyValues`` call (§7.3), a row per change."""
    rows = [
        {
            "name": v.name,
            "value": Variant(v.base_type, v.value),
            "time": v.time,
            "quality": v.quality if v.quality in _QUALITIES else "UNKNOWN",
        }
        for v in values
    ]
    return InfoTable(_VALUES_OUTER, [{"values": InfoTable(PROPERTY_VALUES_SHAPE, rows)}])


def read_property_values(params: InfoTable | None) -> list[PropertyValue]:
    """The changes carried by an ``UpdateSubscribedPropertyValues`` call.

    Raises:
        ProtocolError: there is no ``values`` InfoTable, or a row has no string ``name``.
    """
    if params is None or "values" not in params.shape:
        raise ProtocolError("UpdateSubscribedPropertyValues needs a values InfoTable")
    out: list[PropertyValue] = []
    for outer in params.rows:
        table = outer.get("values")
        if not isinstance(table, InfoTable):
            raise ProtocolError("UpdateSubscribedPropertyValues: values is not an InfoTable")
        for row in table.rows:
            name = row.get("name")
            if not isinstance(name, str) or not name:
                raise ProtocolError("UpdateSubscribedPropertyValues: a row has no name")
            value = row.get("value")
            base_type = BaseType.NOTHING if value is None else BaseType.VARIANT
            if isinstance(value, Variant):
                base_type, value = BaseType(value.base_type), value.value
            time = row.get("time")
            quality = row.get("quality")
            out.append(
                PropertyValue(
                    name,
                    base_type,
                    value,
                    time if isinstance(time, datetime) else datetime.now().astimezone(),
                    quality if isinstance(quality, str) else "GOOD",
                )
            )
    return out


def subscriptions_params() -> InfoTable:
    """``GetPropertySubscriptions``' input: ``options`` = ``{"hasDeadband":true}`` (§7.2)."""
    return InfoTable(_OPTIONS_SHAPE, [{"options": {"hasDeadband": True}}])


def subscriptions_table(subscriptions: Iterable[PropertySubscription]) -> InfoTable:
    """``GetPropertySubscriptions``' answer (the server side)."""
    return InfoTable(
        SUBSCRIPTIONS_SHAPE,
        [
            {"edgeName": s.edge_name, "pushType": s.push_type, "pushThreshold": s.push_threshold}
            for s in subscriptions
        ],
    )


def read_subscriptions(content: InfoTable | None) -> dict[str, PropertySubscription]:
    """The subscriptions of ``GetPropertySubscriptions``' answer, by edge name (§7.2).

    Rows without an ``edgeName`` are skipped; an unknown ``pushType`` reads as ``VALUE``.
    """
    out: dict[str, PropertySubscription] = {}
    if content is None:
        return out
    for row in content.rows:
        name = row.get("edgeName")
        if not isinstance(name, str) or not name:
            continue
        push = row.get("pushType")
        push_type = push if isinstance(push, str) and push in PUSH_TYPES else "VALUE"
        threshold = row.get("pushThreshold")
        out[name] = PropertySubscription(
            name, push_type, float(threshold) if isinstance(threshold, int | float) else 0.0
        )
    return out


def subscriptions_from_aspects(
    properties: Mapping[str, Mapping[str, Any]],
) -> list[PropertySubscription]:
    """Subscriptions for properties whose aspects declare a ``pushType`` other than NEVER."""
    out = []
    for name, aspects in properties.items():
        push = aspects.get("pushType", "VALUE")
        if push == "NEVER":
            continue
        threshold = aspects.get("pushThreshold", 0.0)
        out.append(
            PropertySubscription(
                name,
                push if push in PUSH_TYPES else "VALUE",
                float(threshold) if isinstance(threshold, int | float) else 0.0,
            )
        )
    return out
