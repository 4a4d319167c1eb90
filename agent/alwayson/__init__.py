"""The ThingWorx AlwaysOn wire protocol, sans-I/O (reference: shared/reference/alwayson.md).

Bytes in, typed messages out, and back: base types and their Python values, DataShapes and
InfoTables, the four message kinds, the codec (plain and multipart), the reassembler of incoming
chunks, and the GetMetadata JSON. No asyncio, no sockets, no logging: the channel above does the
I/O. Every UNCONFIRMED point of the reference is a constant in :mod:`agent.alwayson.unconfirmed`.

:data:`ACCELERATED` says whether InfoTable rows are read by the optional C extension
(``agent.alwayson._rowreader``, built at install time where a C compiler exists; the environment
variable ``JOBS_AGENT_PURE_PYTHON=1`` turns it off) or by the pure-Python reader; both give the
same values and errors (:mod:`agent.alwayson.rowcodec`).
"""

from __future__ import annotations

from agent.alwayson.assembler import MessageAssembler
from agent.alwayson.basetypes import BaseType, Location, Variant
from agent.alwayson.errors import (
    AlwaysOnError,
    IncompleteMessage,
    MessageTooLarge,
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
    PropertyMetadata,
    ServiceMetadata,
    ThingMetadata,
    metadata_json,
    parse_metadata_json,
)
from agent.alwayson.rowcodec import ACCELERATED
from agent.alwayson.valuecodec import decode_infotable, decode_value, encode_infotable, encode_value
from agent.alwayson.values import coerce_value, infer_base_type

__all__ = [
    "ACCELERATED",
    "AUTH_SESSION_ID",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "RESULT_FIELD",
    "AlwaysOnError",
    "Auth",
    "BaseType",
    "Bind",
    "Characteristic",
    "DataShape",
    "EntityType",
    "FieldDefinition",
    "Header",
    "IncompleteMessage",
    "InfoTable",
    "Location",
    "Message",
    "MessageAssembler",
    "MessageTooLarge",
    "Method",
    "PropertyMetadata",
    "ProtocolError",
    "Request",
    "Response",
    "ServiceMetadata",
    "Status",
    "ThingMetadata",
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
    "metadata_json",
    "parse_metadata_json",
]
