"""The ``GetMetadata`` JSON an edge returns for a bound Thing (reference §7.4).

:func:`metadata_json` builds the document the way the C SDK does: keys ``propertyDefinitions``,
``serviceDefinitions`` and ``eventDefinitions``; each service has ``Inputs`` (``{}`` without
inputs, else ``fieldDefinitions`` and the shape's ``name`` if it has one) and ``Outputs`` (named
``result``, with ``aspects.dataShape`` for an INFOTABLE result with a named shape).

:func:`parse_metadata_json` reads such a document back for the ThingWorx stand-in. It is
tolerant: extra keys are ignored and the Edge MicroServer's richer variant is accepted; only
``propertyDefinitions`` / ``serviceDefinitions`` / ``eventDefinitions`` maps whose entries carry
``name`` (and, for properties, ``baseType``) are required. A definition whose base type name this
package does not know is skipped and listed in :attr:`ThingMetadata.skipped`, since nothing could
be encoded for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.alwayson.basetypes import BaseType, Location, Variant
from agent.alwayson.errors import ProtocolError, UsageError
from agent.alwayson.infotable import RESULT_FIELD, DataShape, FieldDefinition
from agent.alwayson.unconfirmed import SERVICE_IS_ASYNC_ASPECT
from agent.alwayson.values import millis_from_datetime

__all__ = [
    "EventMetadata",
    "PropertyMetadata",
    "ServiceMetadata",
    "ThingMetadata",
    "metadata_json",
    "parse_metadata_json",
]


@dataclass(frozen=True)
class ServiceMetadata:
    """A remote service as GetMetadata describes it.

    Args:
        name: the service name.
        description: free text.
        inputs: the input parameters, one field each.
        result_type: the result's base type (NOTHING for none).
        result_shape: the columns of an INFOTABLE result, when known.
        aspects: service-level aspects (``{}`` in the C SDK's output).
    """

    name: str
    description: str
    inputs: DataShape
    result_type: BaseType
    result_shape: DataShape | None = None
    aspects: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class PropertyMetadata:
    """A remote property as GetMetadata describes it (aspects such as ``pushType``)."""

    name: str
    base_type: BaseType
    description: str = ""
    aspects: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class EventMetadata:
    """A remote event as GetMetadata describes it: its event data is a named DataShape (§7.4,
    ``EventData`` with ``fieldDefinitions``, ``name`` and ``aspects.dataShape``)."""

    name: str
    data_shape: DataShape
    description: str = ""
    aspects: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ThingMetadata:
    """A parsed GetMetadata document.

    Attributes:
        name: the Thing's name (``""`` if the document has none).
        description: its description.
        properties: property name → definition.
        services: service name → definition.
        events: event name → definition.
        skipped: names of definitions dropped because their base type is unknown here.
    """

    name: str
    description: str
    properties: Mapping[str, PropertyMetadata]
    services: Mapping[str, ServiceMetadata]
    skipped: tuple[str, ...] = ()
    events: Mapping[str, EventMetadata] = field(default_factory=dict)

    def service(self, name: str) -> ServiceMetadata:
        """The service called ``name``.

        Raises:
            KeyError: no such service.
        """
        return self.services[name]


def _aspect_json(value: Any) -> Any:
    if isinstance(value, Variant):
        value = value.value
    if isinstance(value, datetime):
        return millis_from_datetime(value)
    if isinstance(value, Location):
        return {
            "longitude": value.longitude,
            "latitude": value.latitude,
            "elevation": value.elevation,
        }
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    raise UsageError(f"aspect value {value!r} has no JSON form")


def _aspects_json(aspects: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _aspect_json(value) for name, value in aspects.items()}


def _field_json(f: FieldDefinition) -> dict[str, Any]:
    return {
        "name": f.name,
        "description": f.description,
        "baseType": f.base_type.type_name,
        "aspects": _aspects_json(f.aspects),
    }


def _fields_json(shape: DataShape) -> dict[str, Any]:
    return {f.name: _field_json(f) for f in shape.fields}


def _service_json(svc: ServiceMetadata) -> dict[str, Any]:
    aspects = _aspects_json(svc.aspects)
    if SERVICE_IS_ASYNC_ASPECT is not None:
        aspects.setdefault("isAsync", SERVICE_IS_ASYNC_ASPECT)
    inputs: dict[str, Any] = {}
    if svc.inputs.fields:
        inputs["fieldDefinitions"] = _fields_json(svc.inputs)
        if svc.inputs.name:
            inputs["name"] = svc.inputs.name
    outputs: dict[str, Any] = {"baseType": svc.result_type.type_name}
    shape = svc.result_shape
    if svc.result_type is BaseType.INFOTABLE and shape is not None and shape.name:
        outputs["aspects"] = {"dataShape": shape.name}
    outputs["fieldDefinitions"] = (
        _fields_json(shape) if svc.result_type is BaseType.INFOTABLE and shape is not None else {}
    )
    outputs["name"] = RESULT_FIELD
    return {
        "name": svc.name,
        "description": svc.description,
        "aspects": aspects,
        "Inputs": inputs,
        "Outputs": outputs,
    }


def _property_json(prop: PropertyMetadata) -> dict[str, Any]:
    out: dict[str, Any] = {"name": prop.name}
    if prop.description:
        out["description"] = prop.description
    out["baseType"] = prop.base_type.type_name
    out["aspects"] = _aspects_json(prop.aspects)
    return out


def _event_json(event: EventMetadata) -> dict[str, Any]:
    shape = event.data_shape
    return {
        "name": event.name,
        "description": event.description,
        "aspects": _aspects_json(event.aspects),
        "EventData": {
            "fieldDefinitions": _fields_json(shape),
            "name": shape.name,
            "aspects": {"dataShape": shape.name},
        },
    }


def metadata_json(
    thing_name: str,
    services: Iterable[ServiceMetadata],
    *,
    properties: Iterable[PropertyMetadata] = (),
    events: Iterable[EventMetadata] = (),
    description: str = "",
) -> dict[str, Any]:
    """The GetMetadata JSON document of a Thing, shaped as the C SDK shapes it (§7.4).

    Encode it compactly (``json.dumps(doc, separators=(",", ":"))``) into a one-row InfoTable
    with one JSON column ``result``: a JSON cell takes the dict itself.

    Args:
        thing_name: the Thing's name.
        services: the services to list (the C SDK also lists ``GetMetadata`` and
            ``NotifyPropertyUpdate`` themselves; include them if you serve them).
        properties: the properties to list.
        events: the events to list (their data shapes in ``EventData``).
        description: the Thing's description.

    Returns:
        A JSON-serialisable dict.

    Raises:
        UsageError: an aspect value has no JSON form.
    """
    return {
        "name": thing_name,
        "description": description,
        "isSystemObject": False,
        "propertyDefinitions": {p.name: _property_json(p) for p in properties},
        "serviceDefinitions": {s.name: _service_json(s) for s in services},
        "eventDefinitions": {e.name: _event_json(e) for e in events},
    }


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


class _UnknownType(Exception):
    pass


def _base_type(value: Any) -> BaseType:
    if not isinstance(value, str):
        raise ProtocolError(f"metadata baseType must be a string, not {value!r}")
    try:
        return BaseType.from_name(value)
    except UsageError:
        raise _UnknownType(value) from None


def _shape(defs: Any, name: str) -> DataShape:
    entries = [d for d in _map(defs).values() if isinstance(d, Mapping) and "name" in d]
    # The Edge MicroServer adds an ``ordinal``; respect it when every entry has one.
    if entries and all(isinstance(d.get("ordinal"), int) for d in entries):
        entries.sort(key=lambda d: d["ordinal"])
    fields = []
    for d in entries:
        if "baseType" not in d:
            raise ProtocolError(f"field definition {d.get('name')!r} has no baseType")
        fields.append(
            FieldDefinition(
                _str(d["name"]),
                _base_type(d["baseType"]),
                _str(d.get("description")),
                dict(_map(d.get("aspects"))),
            )
        )
    try:
        return DataShape(tuple(fields), name)
    except UsageError as exc:
        raise ProtocolError(f"bad field definitions in metadata: {exc}") from None


def _parse_service(key: str, d: Mapping[str, Any]) -> ServiceMetadata:
    inputs = _map(d.get("Inputs"))
    outputs = _map(d.get("Outputs"))
    result_type = _base_type(outputs["baseType"]) if "baseType" in outputs else BaseType.NOTHING
    result_shape = None
    if result_type is BaseType.INFOTABLE:
        shape_name = _str(_map(outputs.get("aspects")).get("dataShape"))
        result_shape = _shape(outputs.get("fieldDefinitions"), shape_name)
    return ServiceMetadata(
        name=_str(d.get("name"), key),
        description=_str(d.get("description")),
        inputs=_shape(inputs.get("fieldDefinitions"), _str(inputs.get("name"))),
        result_type=result_type,
        result_shape=result_shape,
        aspects=dict(_map(d.get("aspects"))),
    )


def parse_metadata_json(obj: Mapping[str, Any] | str | bytes) -> ThingMetadata:
    """Read a GetMetadata document (the C SDK's shape or the Edge MicroServer's).

    Args:
        obj: the parsed JSON object, or its text.

    Returns:
        The Thing's properties and services.

    Raises:
        ProtocolError: the document is not JSON, not an object, or a definition lacks ``name``
            (or, for a property or field, ``baseType``).
    """
    if isinstance(obj, str | bytes):
        try:
            obj = json.loads(obj)
        except ValueError as exc:
            raise ProtocolError(f"metadata is not JSON: {exc}") from None
    if not isinstance(obj, Mapping):
        raise ProtocolError("metadata must be a JSON object")
    skipped: list[str] = []
    properties: dict[str, PropertyMetadata] = {}
    for key, d in _map(obj.get("propertyDefinitions")).items():
        if not isinstance(d, Mapping) or "name" not in d or "baseType" not in d:
            raise ProtocolError(f"property definition {key!r} lacks name or baseType")
        try:
            base_type = _base_type(d["baseType"])
        except _UnknownType:
            skipped.append(str(key))
            continue
        properties[_str(d["name"], key)] = PropertyMetadata(
            _str(d["name"], key),
            base_type,
            _str(d.get("description")),
            dict(_map(d.get("aspects"))),
        )
    services: dict[str, ServiceMetadata] = {}
    for key, d in _map(obj.get("serviceDefinitions")).items():
        if not isinstance(d, Mapping) or "name" not in d:
            raise ProtocolError(f"service definition {key!r} lacks a name")
        try:
            svc = _parse_service(str(key), d)
        except _UnknownType:
            skipped.append(str(key))
            continue
        services[svc.name] = svc
    events: dict[str, EventMetadata] = {}
    for key, d in _map(obj.get("eventDefinitions")).items():
        if not isinstance(d, Mapping) or "name" not in d:
            raise ProtocolError(f"event definition {key!r} lacks a name")
        data = _map(d.get("EventData"))
        shape_name = _str(data.get("name")) or _str(_map(data.get("aspects")).get("dataShape"))
        try:
            shape = _shape(data.get("fieldDefinitions"), shape_name)
        except _UnknownType:
            skipped.append(str(key))
            continue
        name = _str(d["name"], str(key))
        events[name] = EventMetadata(
            name, shape, _str(d.get("description")), dict(_map(d.get("aspects")))
        )
    return ThingMetadata(
        name=_str(obj.get("name")),
        description=_str(obj.get("description")),
        properties=properties,
        services=services,
        skipped=tuple(skipped),
        events=events,
    )
