"""The AlwaysOn package's exceptions, in one tree.

Errors are split the way h11 splits them: what the *peer* sent that does not parse, and what *we*
asked for that the protocol cannot carry. Size refusals sit apart because both sides meet them.

::

    AlwaysOnError                     base of everything this package raises
    ├── ProtocolError                 the peer's bytes do not parse (truncated, unknown base type
    │   │                             byte, bad marker, bad UTF-8, bad JSON text, unknown code...)
    │   └── IncompleteMessage         the bytes end before the body does (reference §12.1: may be
    │                                 the first half of a body split over two plain messages)
    ├── MessageTooLarge               a message (or a multipart set) over the max message size
    └── UsageError                    local misuse: a name of 128 bytes or more, a string with NUL,
        │                             an id out of range, a row key not in the DataShape...
        └── ValueTypeError            a Python value that does not fit its base type

A :class:`ProtocolError` raised while decoding a message whose header was read carries that
header's ``code`` and ``request_id``, so the caller can answer BAD_REQUEST (reference §3.2) or fail
the matching pending request instead of waiting for its timeout.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlwaysOnError",
    "IncompleteMessage",
    "MessageTooLarge",
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


class MessageTooLarge(AlwaysOnError):
    """A message or multipart set exceeds the maximum message size (reference §1.5, §6.1, §6.5).

    Attributes:
        size: the size that was refused, in bytes.
        limit: the maximum message size in force.
        request_id: the request id of the refused message, when known.
    """

    def __init__(self, size: int, limit: int, *, request_id: int | None = None):
        super().__init__(f"message of {size} bytes exceeds the maximum message size of {limit}")
        self.size = size
        self.limit = limit
        self.request_id = request_id


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
