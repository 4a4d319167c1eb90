"""AlwaysOn messages as frozen dataclasses (reference §2, §5).

Four kinds travel on the wire: :class:`Request` (GET/PUT/POST/DELETE, either direction),
:class:`Response`, :class:`Auth` (edge → server) and :class:`Bind` (BIND/UNBIND, edge → server).
Each validates its own fields when built (enum members, uint32 ids); limits that concern what a C
SDK peer can *read* (names under 128 bytes, no NUL) are checked when a message is encoded, so a
peer's message that breaks them still decodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from agent.alwayson.errors import UsageError
from agent.alwayson.infotable import InfoTable

__all__ = [
    "AUTH_SESSION_ID",
    "Auth",
    "Bind",
    "Characteristic",
    "EntityType",
    "Header",
    "Message",
    "Method",
    "Request",
    "Response",
    "Status",
]

AUTH_SESSION_ID = 0xFFFFFFFF
"""The session id every AUTH carries (reference §2.3)."""

_UINT32_MAX = 0xFFFFFFFF


class Method(IntEnum):
    """Request codes (reference §2.2)."""

    GET = 0x01
    PUT = 0x02
    POST = 0x03
    DELETE = 0x04
    BIND = 0x0A
    UNBIND = 0x0B
    AUTH = 0x14
    KEEP_ALIVE = 0x1F


REQUEST_METHODS = frozenset({Method.GET, Method.PUT, Method.POST, Method.DELETE})


class Status(IntEnum):
    """Response codes (reference §2.2); the bit pattern mirrors CoAP class.detail."""

    SUCCESS = 0x40
    BAD_REQUEST = 0x80
    UNAUTHORIZED = 0x81
    BAD_OPTION = 0x82
    FORBIDDEN = 0x83
    NOT_FOUND = 0x84
    METHOD_NOT_ALLOWED = 0x85
    NOT_ACCEPTABLE = 0x86
    PRECONDITION_FAILED = 0x8C
    ENTITY_TOO_LARGE = 0x8D
    UNSUPPORTED_CONTENT_FORMAT = 0x8F
    INTERNAL_SERVER_ERROR = 0xA0
    NOT_IMPLEMENTED = 0xA1
    BAD_GATEWAY = 0xA2
    SERVICE_UNAVAILABLE = 0xA3
    GATEWAY_TIMEOUT = 0xA4


class EntityType(IntEnum):
    """Entity types of a request body (reference §5.1)."""

    UNDEFINED = 0x00
    THING = 0x0A
    THINGSHAPES = 0x0B
    THINGTEMPLATES = 0x0C
    THINGPACKAGES = 0x0D
    NETWORKS = 0x0E
    DATASHAPES = 0x0F
    MODELTAGS = 0x14
    DATATAGS = 0x15
    MASHUPS = 0x1E
    WIDGETS = 0x1F
    STYLEDEFINITIONS = 0x20
    STATEDEFINITIONS = 0x21
    MENUS = 0x22
    MEDIAENTITIES = 0x23
    LOCALIZATIONTABLES = 0x24
    DASHBOARDS = 0x27
    LOGS = 0x28
    USERS = 0x32
    GROUPS = 0x33
    ORGANIZATIONS = 0x34
    APPLICATIONKEYS = 0x35
    DIRECTORYSERVICES = 0x36
    RESOURCE = 0x3C
    SCRIPTFUNCTIONLIBRARIES = 0x3D
    EXTENSIONPACKAGES = 0x46
    SUBSYSTEM = 0x50


class Characteristic(IntEnum):
    """What a request addresses on its entity (reference §5.1)."""

    PROPERTIES = 0x01
    SERVICES = 0x02
    EVENTS = 0x03


def _enum(cls: type[IntEnum], value: Any, what: str) -> Any:
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        raise UsageError(f"{value!r} is not a valid {what}") from None


def _check_id(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT32_MAX:
        raise UsageError(f"{what} must be a uint32, not {value!r}")


def _check_ids(request_id: int, endpoint_id: int, session_id: int) -> None:
    _check_id(request_id, "request_id")
    _check_id(endpoint_id, "endpoint_id")
    _check_id(session_id, "session_id")


def _check_pairs(pairs: Any, what: str) -> tuple[tuple[str, str], ...]:
    try:
        out = tuple((name, value) for name, value in pairs)
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be (name, value) pairs") from None
    for name, value in out:
        if not isinstance(name, str) or not isinstance(value, str):
            raise UsageError(f"{what} names and values must be str")
    return out


@dataclass(frozen=True, slots=True)
class Header:
    """The fields of the 15-byte message header a message is built from (reference §2.1).

    ``code`` is the raw code byte (a :class:`Method` or :class:`Status` value).
    """

    code: int
    request_id: int
    endpoint_id: int
    session_id: int


@dataclass(frozen=True, slots=True)
class Request:
    """A GET/PUT/POST/DELETE request (reference §5.1), in either direction.

    Args:
        method: GET, PUT, POST or DELETE.
        request_id: chosen by the sender; the response echoes it.
        endpoint_id: 0 from the edge; the server's routing id otherwise (§2.3).
        session_id: the session id assigned at AUTH.
        entity_type: usually THING.
        entity_name: the Thing's name.
        characteristic: PROPERTIES, SERVICES or EVENTS.
        target: the property, service or event name.
        headers: (name, value) pairs; empty in practice.
        params: the input InfoTable, or None (NOTHING).
    """

    method: Method
    request_id: int
    endpoint_id: int
    session_id: int
    entity_type: EntityType
    entity_name: str
    characteristic: Characteristic
    target: str
    headers: tuple[tuple[str, str], ...] = ()
    params: InfoTable | None = None

    def __post_init__(self) -> None:
        method = _enum(Method, self.method, "request method")
        if method not in REQUEST_METHODS:
            raise UsageError(f"{method.name} is not a request method (GET, PUT, POST, DELETE)")
        object.__setattr__(self, "method", method)
        _check_ids(self.request_id, self.endpoint_id, self.session_id)
        object.__setattr__(self, "entity_type", _enum(EntityType, self.entity_type, "entity type"))
        object.__setattr__(
            self, "characteristic", _enum(Characteristic, self.characteristic, "characteristic")
        )
        if not isinstance(self.entity_name, str) or not isinstance(self.target, str):
            raise UsageError("entity_name and target must be str")
        object.__setattr__(self, "headers", _check_pairs(self.headers, "headers"))
        if self.params is not None and not isinstance(self.params, InfoTable):
            raise UsageError(
                f"params must be an InfoTable or None, not {type(self.params).__name__}"
            )


@dataclass(frozen=True, slots=True)
class Response:
    """A response (reference §5.2); echoes the request's request id and endpoint id.

    Args:
        status: the status code.
        request_id: the request id of the request answered.
        endpoint_id: the request's endpoint id, echoed.
        session_id: the session id (for the AUTH response: the one assigned).
        reason: an error text, or None.
        content: the result InfoTable, or None (NOTHING).
    """

    status: Status
    request_id: int
    endpoint_id: int
    session_id: int
    reason: str | None = None
    content: InfoTable | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", _enum(Status, self.status, "status"))
        _check_ids(self.request_id, self.endpoint_id, self.session_id)
        if self.reason is not None and not isinstance(self.reason, str):
            raise UsageError("reason must be a str or None")
        if self.content is not None and not isinstance(self.content, InfoTable):
            raise UsageError(
                f"content must be an InfoTable or None, not {type(self.content).__name__}"
            )

    @property
    def ok(self) -> bool:
        """True for SUCCESS."""
        return self.status is Status.SUCCESS


@dataclass(frozen=True, slots=True)
class Auth:
    """An AUTH request (reference §5.3): claims such as ``(("appKey", key),)``."""

    request_id: int
    claims: tuple[tuple[str, str], ...]
    session_id: int = AUTH_SESSION_ID
    endpoint_id: int = 0

    def __post_init__(self) -> None:
        _check_ids(self.request_id, self.endpoint_id, self.session_id)
        claims = _check_pairs(self.claims, "claims")
        if len(claims) > 255:
            raise UsageError("at most 255 claims fit the claim count byte")
        object.__setattr__(self, "claims", claims)


@dataclass(frozen=True, slots=True)
class Bind:
    """A BIND (or, with ``unbind=True``, UNBIND) of Thing names (reference §5.4).

    ``gateway_name`` and ``gateway_type`` go together: both or neither.
    """

    request_id: int
    session_id: int
    names: tuple[str, ...]
    gateway_name: str | None = None
    gateway_type: str | None = None
    unbind: bool = False
    endpoint_id: int = 0

    def __post_init__(self) -> None:
        _check_ids(self.request_id, self.endpoint_id, self.session_id)
        if isinstance(self.names, str):
            raise UsageError("names must be a sequence of str, not one str")
        names = tuple(self.names)
        if not all(isinstance(n, str) for n in names):
            raise UsageError("names must be str")
        if len(names) > 0xFFFF:
            raise UsageError("at most 65535 names fit one BIND")
        object.__setattr__(self, "names", names)
        if (self.gateway_name is None) != (self.gateway_type is None):
            raise UsageError("gateway_name and gateway_type go together: give both or neither")
        for value in (self.gateway_name, self.gateway_type):
            if value is not None and not isinstance(value, str):
                raise UsageError("gateway_name and gateway_type must be str")

    @property
    def method(self) -> Method:
        """BIND or UNBIND."""
        return Method.UNBIND if self.unbind else Method.BIND


Message = Request | Response | Auth | Bind
"""Any decoded or encodable AlwaysOn message."""
