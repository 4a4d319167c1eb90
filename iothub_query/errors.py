"""The query language's exceptions; :class:`QueryError` is the package's root (a pure core's
own: the emulator translates it where it catches it, the agent where it checks a condition).

::

    ValueError
     └── QueryError                 anything wrong with a query or condition text
          ├── QuerySyntaxError      not in the language: where it went wrong, what was expected
          ├── QueryNotSupported     valid IoT Hub syntax this emulator refuses (projections,
          │                         aggregates on devices.jobs, GROUP BY, TOP, other functions)
          └── QueryLimitExceeded    longer than IoT Hub's 8192 characters, or nested too deep

Messages are one line, fit for an IoT Hub error body (the REST layer maps any
:class:`QueryError` to a 400 answer).
"""

from __future__ import annotations

__all__ = ["QueryError", "QueryLimitExceeded", "QueryNotSupported", "QuerySyntaxError"]


class QueryError(ValueError):
    """A query or condition the emulator cannot run."""


class QuerySyntaxError(QueryError):
    """The text is not in the query language.

    Attributes:
        line: 1-based line of the offending token or character.
        column: 1-based column of the offending token or character.
        near: the offending text (empty at the end of input).
        expected: human names of what would have been accepted there (may be empty when the
            problem is inside a token, e.g. a bad escape in a string).
    """

    def __init__(
        self,
        message: str,
        *,
        line: int,
        column: int,
        near: str,
        expected: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.line = line
        self.column = column
        self.near = near
        self.expected = expected


class QueryNotSupported(QueryError):
    """A form IoT Hub documents that this emulator deliberately does not run."""


class QueryLimitExceeded(QueryError):
    """The text is longer, or nests deeper, than the emulator accepts."""
