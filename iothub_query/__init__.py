"""The IoT Hub query language, as far as jobs and device queries use it (reference/iothub.md
§3.5, §3.6): a pure core (docs/architecture.md) that imports nothing of this project.

Sans-I/O: text in, immutable trees out, and documents (plain JSON dicts) in, booleans out. The
emulator runs queries with it; the agent checks a job's ``queryCondition`` with it before
sending (``services/rules.py``).

- :func:`parse_condition` reads a WHERE condition alone (a job's ``queryCondition``);
  :func:`parse_query` reads ``SELECT * | SELECT COUNT() [AS alias] FROM devices |
  devices.modules | devices.jobs [WHERE condition]``.
- A :class:`Condition` is compiled to closures once, when built; ``condition.matches(twin)`` is
  the emulator's ``Predicate`` protocol (``ports.py``).
- :func:`run_query` filters a collection and returns its documents or a count.
- What a store may skip: :func:`pinned_members` / :func:`exact_members` (the key values a
  condition limits a key to, or is exactly) and :func:`top_level_names` (the top-level members a
  query reads; a document cut down to them evaluates the same).

Semantics chosen (details in ``evaluation.py`` and docs/query-language.md): three-valued logic
in the manner of Cosmos DB SQL, from which IoT Hub's language derives. A missing property, an
object or array, or a comparison between values of different kinds (string, number, boolean,
null) is *undefined*; ``NOT`` keeps undefined undefined, so ``NOT (x = 1)`` is true when ``x``
is 2 and false when ``x`` is missing or a string; only an exactly-true result selects a
document. ``IS_DEFINED(path)`` is true for any value, ``null`` included. Top-level names
(``deviceId``, ``status``, ``tags``...) are matched case-insensitively, keys below them
case-sensitively; on ``devices.jobs`` paths may carry the ``devices.jobs.`` prefix,
``createdTimeUtc`` reads ``createdDateTimeUtc`` and a ``status`` comparison treats ``canceled``
and ``cancelled`` as the same word. Dates are strings and compare as strings.
"""

from __future__ import annotations

from iothub_query.conditions import (
    And,
    Comparison,
    Condition,
    IsDefined,
    Membership,
    Not,
    Or,
)
from iothub_query.errors import (
    QueryError,
    QueryLimitExceeded,
    QueryNotSupported,
    QuerySyntaxError,
)
from iothub_query.parsing import (
    MAX_DEPTH,
    MAX_QUERY_LENGTH,
    parse_condition,
    parse_query,
)
from iothub_query.queries import (
    Query,
    Source,
    exact_members,
    pinned_members,
    pinned_value,
    run_query,
    top_level_names,
)
from iothub_query.values import MISSING, Constant, Path

__all__ = [
    "MAX_DEPTH",
    "MAX_QUERY_LENGTH",
    "MISSING",
    "And",
    "Comparison",
    "Condition",
    "Constant",
    "IsDefined",
    "Membership",
    "Not",
    "Or",
    "Path",
    "Query",
    "QueryError",
    "QueryLimitExceeded",
    "QueryNotSupported",
    "QuerySyntaxError",
    "Source",
    "exact_members",
    "parse_condition",
    "parse_query",
    "pinned_members",
    "pinned_value",
    "run_query",
    "top_level_names",
]
