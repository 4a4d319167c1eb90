"""The ThingWorx AlwaysOn wire protocol, sans-I/O (reference: shared/reference/alwayson.md).

Bytes in, typed messages out, and back: base types and their Python values, DataShapes and
InfoTables, the four message kinds, the codec (plain and multipart), the reassembler of incoming
chunks, the GetMetadata JSON, and :class:`Connection`, one connection of either end (request
ids, pending ids, session ids, answers and the malformed-message policy). No asyncio, no sockets, no
logging: the agent's channel and the ThingWorx stand-in do the I/O around it. Every UNCONFIRMED
point of the reference is a constant in :mod:`agent.alwayson.unconfirmed`; those a server stand-in
acts on are exported here.

Rules: this package imports nothing else of the project; code outside it (the stand-in above all)
uses only the names below, never its modules.

:data:`ACCELERATED` says whether InfoTable rows are read by the optional C extension
(``agent.alwayson._rowreader``, built at install time where a C compiler exists; the environment
variable ``JOBS_AGENT_PURE_PYTHON=1`` turns it off) or by the pure-Python reader; both give the
same values and errors (:mod:`agent.alwayson.rowcodec`).
"""

from __future__ import annotations

from agent.alwayson.assembler import DEFAULT_MAX_PENDING_BYTES, MessageAssembler, PendingBudget
from agent.alwayson.basetypes import STRING_LIKE_TYPES, BaseType, Location, Variant
from agent.alwayson.connection import (
    ANSWERABLE_CODES,
    UNSUPPORTED_MESSAGE_REASON,
    AuthReceived,
    BindReceived,
    Connection,
    ConnectionEvent,
    MalformedMessage,
    OversizedMessage,
    PendingLimitRefused,
    RefusedBeforeAuth,
    RequestIds,
    RequestReceived,
    ResponseReceived,
    Side,
    UnmatchedResponse,
    UnsupportedMessage,
)
from agent.alwayson.errors import (
    AlwaysOnError,
    IncompleteMessage,
    MessageRefused,
    MessageTooLarge,
    PendingLimitExceeded,
    ProtocolError,
    UsageError,
    ValueTypeError,
)
from agent.alwayson.infotable import RESULT_FIELD, DataShape, FieldDefinition, InfoTable
from agent.alwayson.messagecodec import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_MESSAGE_SIZE,
    decode_message,
    encode_message,
)
from agent.alwayson.messages import (
    AUTH_SESSION_ID,
    Auth,
    Bind,
    Characteristic,
    EntityType,
    Header,
    Message,
    Method,
    Request,
    Response,
    Status,
)
from agent.alwayson.metadata import (
    EventMetadata,
    PropertyMetadata,
    ServiceMetadata,
    ThingMetadata,
    metadata_json,
    parse_metadata_json,
)
from agent.alwayson.push import (
    GET_PROPERTY_SUBSCRIPTIONS,
    PUSH_TYPES,
    UPDATE_SUBSCRIBED_PROPERTY_VALUES,
    PropertySubscription,
    PropertyValue,
    property_values_params,
    read_property_values,
    read_subscriptions,
    subscriptions_from_aspects,
    subscriptions_params,
    subscriptions_table,
)
from agent.alwayson.rowcodec import ACCELERATED
from agent.alwayson.shapecache import IdentityCache, is_frozen
from agent.alwayson.unconfirmed import (
    AUTH_FAILURE_STATUS,
    BIND_MULTIPART_ACCEPTED,
    BIND_REFUSED_STATUS,
    DEFAULT_MAX_FRAME_SIZE,
    GET_METADATA_METHOD,
    NOTIFY_PROPERTY_UPDATE_METHOD,
    SERVICE_CALL_METHOD,
)
from agent.alwayson.valuecodec import (
    MAX_NESTING,
    decode_infotable,
    decode_value,
    encode_infotable,
    encode_value,
)
from agent.alwayson.values import coerce_value, infer_base_type, millis_from_datetime

__all__ = [
    "ACCELERATED",
    "ANSWERABLE_CODES",
    "AUTH_FAILURE_STATUS",
    "AUTH_SESSION_ID",
    "BIND_MULTIPART_ACCEPTED",
    "BIND_REFUSED_STATUS",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_PENDING_BYTES",
    "GET_METADATA_METHOD",
    "GET_PROPERTY_SUBSCRIPTIONS",
    "MAX_NESTING",
    "NOTIFY_PROPERTY_UPDATE_METHOD",
    "PUSH_TYPES",
    "RESULT_FIELD",
    "SERVICE_CALL_METHOD",
    "STRING_LIKE_TYPES",
    "UNSUPPORTED_MESSAGE_REASON",
    "UPDATE_SUBSCRIBED_PROPERTY_VALUES",
    "AlwaysOnError",
    "Auth",
    "AuthReceived",
    "BaseType",
    "Bind",
    "BindReceived",
    "Characteristic",
    "Connection",
    "ConnectionEvent",
    "DataShape",
    "EntityType",
    "EventMetadata",
    "FieldDefinition",
    "Header",
    "IdentityCache",
    "IncompleteMessage",
    "InfoTable",
    "Location",
    "MalformedMessage",
    "Message",
    "MessageAssembler",
    "MessageRefused",
    "MessageTooLarge",
    "Method",
    "OversizedMessage",
    "PendingBudget",
    "PendingLimitExceeded",
    "PendingLimitRefused",
    "PropertyMetadata",
    "PropertySubscription",
    "PropertyValue",
    "ProtocolError",
    "RefusedBeforeAuth",
    "Request",
    "RequestIds",
    "RequestReceived",
    "Response",
    "ResponseReceived",
    "ServiceMetadata",
    "Side",
    "Status",
    "ThingMetadata",
    "UnmatchedResponse",
    "UnsupportedMessage",
    "UsageError",
    "ValueTypeError",
    "Variant",
    "coerce_value",
    "decode_infotable",
    "decode_message",
    "decode_value",
    "encode_infotable",
    "encode_message",
    "encode_value",
    "infer_base_type",
    "is_frozen",
    "metadata_json",
    "millis_from_datetime",
    "parse_metadata_json",
    "property_values_params",
    "read_property_values",
    "read_subscriptions",
    "subscriptions_from_aspects",
    "subscriptions_params",
    "subscriptions_table",
]
