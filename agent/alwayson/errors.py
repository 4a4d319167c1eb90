"""The AlwaysOn package's exceptions, in one tree.

Errors are split the way h11 splits them: what the *peer* sent that does not parse, and what *we*
asked for that the protocol cannot carry. Size refusals sit apart because both sides meet them.

::

    AlwaysOnError                     base of everything this package raises
    ├── ProtocolError                 the peer's bytes do not parse (truncated, unknown base type
    │   │                             byte, bad marker, bad UTF-8, bad JSON text, unknown code...)
    │   └── IncompleteMessage         the bytes end before the body does (reference §12.1: may be
    │                                 the first half of a body split over two plain messages)
    │   └── MessageRefused            refused on its header before its body was read (a server
    │                                 reads nothing but AUTH before AUTH: MessageAssembler.restrict)
    ├── MessageTooLarge               a message (or a multipart set) over the max message size
    │   └── PendingLimitExceeded      a chunk or split body would take the incomplete messages
    │                                 held over a connection's or a process's limit
    └── UsageError                    local misuse: a name of 128 bytes or more, a string with NUL,
        │                             an id out of range, a row key not in the DataShape...
        └── ValueTypeError            a Python value that does not fit its base type

A :class:`ProtocolError` raised while decoding a message whose header was read carries that
header's ``code`` and ``request_id``, so the caller can answer BAD_REQUEST (reference §3.2) or fail
the matching pending request instead of waiting for its timeout; a :class:`MessageTooLarge`
raised on receipt carries them too. :class:`~agent.alwayson.connection.Connection` applies that
policy for both ends.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlwaysOnError",
    "IncompleteMessage",
    "MessageRefused",
    "MessageTooLarge",
    "PendingLimitExceeded",
    "ProtocolError",
    "UsageError",
    "ValueTypeError",
]


class AlwaysOnError(Exception):
    """Base class of every exception of the AlwaysOn package."""


class ProtocolError(AlwaysOnError):
    """The peer sent bytes that do not parse as AlwaysOn.

    Attributes:
        code: the message code from the header, when the header was read, else None.
        request_id: the request id from the header, when the header was read, else None.
    """

    def __init__(self, message: str, *, code: int | None = None, request_id: int | None = None):
        super().__init__(message)
        self.code = code
        self.request_id = request_id


class IncompleteMessage(ProtocolError):
    """The data ends before the message body is complete (truncated)."""


class MessageRefused(ProtocolError):
    """A payload refused before its body was read (see ``MessageAssembler.restrict``).

    Attributes:
        endpoint_id: the endpoint id from the header, to echo in an answer.
    """

    def __init__(self, message: str, *, code: int, request_id: int, endpoint_id: int):
        super().__init__(message, code=code, request_id=request_id)
        self.endpoint_id = endpoint_id


class MessageTooLarge(AlwaysOnError):
    """A message or multipart set exceeds the maximum message size (reference §1.5, §6.1, §6.5).

    Attributes:
        size: the size that was refused, in bytes.
        limit: the maximum message size in force.
        request_id: the request id of the refused message, when known.
        code: the message code from the header of a refused incoming message, when known.
    """

    def __init__(
        self, size: int, limit: int, *, request_id: int | None = None, code: int | None = None
    ):
        super().__init__(f"message of {size} bytes exceeds the maximum message size of {limit}")
        self.size = size
        self.limit = limit
        self.request_id = request_id
        self.code = code


class PendingLimitExceeded(MessageTooLarge):
    """A chunk or split body would take the incomplete messages held over a limit.

    The set (or held body) it belongs to is dropped; the connection stays usable. It is a
    :class:`MessageTooLarge`, so a caller that only knows that one refuses it the same way.

    Attributes:
        scope: ``"connection"`` (``max_pending_bytes``) or ``"process"`` (the shared budget).
        code: the message code from the header.
    """

    code: int

    def __init__(self, scope: str, size: int, limit: int, *, code: int, request_id: int):
        super().__init__(size, limit, request_id=request_id, code=code)
        self.args = (
            f"incomplete messages would hold {size} bytes, over the {scope} limit of {limit}: "
            f"message {request_id} dropped; send fewer multipart messages at once",
        )
        self.scope = scope


class UsageError(AlwaysOnError):
    """Local misuse: something the protocol (or the C SDK peer) cannot carry."""


class ValueTypeError(UsageError):
    """A Python value that does not fit the base type it is encoded or coerced as.

    Attributes:
        base_type: name of the base type (e.g. ``"INTEGER"``).
        value: the offending value.
    """

    def __init__(self, base_type: str, value: Any, detail: str = ""):
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        text = f"{shown} ({type(value).__name__}) is not a valid {base_type} value"
        super().__init__(f"{text}: {detail}" if detail else text)
        self.base_type = base_type
        self.value = value
