"""The rules the job services enforce before anything is sent to IoT Hub (docs/services.md).

Each check takes an input's value, returns it in the form to send, and raises
:class:`~agent.registry.ServiceError` (BAD_REQUEST) with one line naming the input and the rule.
Pure functions: no I/O, no clock except where a ``now`` is passed in.

Rules:
- ``jobId``: 1..64 characters of ASCII letters, digits and ``-``.
- ``queryCondition``: the WHERE part of a twin query, 1..8192 characters, not a whole
  ``SELECT``, not ``*``; required on the gateway Thing (a job must never silently hit every
  device; ``IS_DEFINED(deviceId)`` says "all devices" on purpose). A device Thing has no
  ``queryCondition``: its jobs target ``deviceId = '<thing>'`` only.
- Syntax (``queryCondition`` and the QueryJobResults ``query``): read with IoT Hub's query
  language (:mod:`iothub_query`), so a malformed text (``deviceId = = 'x'``, an unclosed quote,
  a trailing ``AND``) is refused at once, naming the line and column, instead of becoming a job
  that fails on the hub. Only where the grammar covers IoT Hub's documented language: a text
  whose first error is at a construct IoT Hub documents and the grammar lacks (arithmetic
  ``+ - * / %``, an array constant ``[...]``), whose error lies inside one token (an escape, a
  number's size), or that uses a function or form the emulator does not run, is left for the
  hub to judge.
- ``startTime``: one in the past is sent as now, with a warning.
- Device scope: a device Thing's QueryJobResults query gets ``devices.jobs.deviceId = '<thing>'``
  ANDed in front of the caller's WHERE part, which must be one balanced expression (strings
  closed, parentheses and brackets balanced, no comment, no ``;``, nothing but ASCII outside
  quoted strings), so nothing the caller writes can widen it.
- ``patch``: an object with ``properties.desired`` and/or ``tags`` and nothing else at the top
  level but ``properties``; a ``properties.reported`` section is dropped with a warning;
  ``properties`` holds nothing else but ``desired`` and ``reported``. In ``tags`` and
  ``properties.desired``, IoT Hub's twin rules: keys of at most 1 KB without ``.``, ``$``,
  spaces or control characters, objects and lists nested at most 10 deep (checked before
  descending, so any depth is refused in constant stack), strings of at most 4 KB, and
  the section within its size (tags 8 KB, desired 32 KB, counted as IoT Hub counts). IoT Hub
  refuses such a patch, at job creation or on every device (which, it does not document).
- QueryJobResults ``query``: ``SELECT * FROM devices.jobs [WHERE ...]`` only.
- Timeouts: response 5..300 s, connect 0..300 s, job window 1 s .. 30 days: refused outside,
  never clamped.
- Patterns match whole strings (``fullmatch``): a trailing newline is a character like any other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from agent.registry import ServiceError
from iothub_query import QueryError, QuerySyntaxError, parse_condition, parse_query

__all__ = [
    "CONNECT_TIMEOUT_RANGE",
    "MAX_EXECUTION_TIME_RANGE",
    "MAX_QUERY_LENGTH",
    "MAX_ROWS_LIMIT",
    "METHOD_NAME",
    "RESPONSE_TIMEOUT_RANGE",
    "check_connect_timeout",
    "check_direct_call_fits",
    "check_job_id",
    "check_json",
    "check_max_execution_time",
    "check_max_rows",
    "check_method_name",
    "check_patch",
    "check_payload",
    "check_query_condition",
    "check_response_timeout",
    "check_results_query",
    "check_start_time",
    "device_condition",
    "device_results_query",
    "query_literal",
]

MAX_QUERY_LENGTH = 8192
MAX_JOB_ID_LENGTH = 64
RESPONSE_TIMEOUT_RANGE = (5, 300)
CONNECT_TIMEOUT_RANGE = (0, 300)
MAX_EXECUTION_TIME_RANGE = (1, 30 * 24 * 3600)
"""``maxExecutionTimeInSeconds``: IoT Hub documents no upper bound (an int64); 30 days is the
time IoT Hub keeps a job's record, so a longer window could never be followed to its end
(docs/services.md, "maxExecutionTimeInSeconds")."""
MAX_ROWS_LIMIT = 100_000
MAX_PAYLOAD_BYTES = 128 * 1024
# Twin limits (IoT Hub's device twin guide, reference §3.8).
TWIN_SECTION_LIMITS = {"tags": 8 * 1024, "properties.desired": 32 * 1024}
MAX_TWIN_KEY_BYTES = 1024
MAX_TWIN_STRING_BYTES = 4 * 1024
MAX_TWIN_DEPTH = 10
_TWIN_KEY_FORBIDDEN = re.compile(r"[.$ \x00-\x1f\x7f-\x9f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_SELECT = re.compile(r"\s*select\b", re.IGNORECASE)  # a prefix: used with match
# Whole-string patterns: always used with fullmatch (``$`` alone would accept a trailing "\n").
_JOB_ID = re.compile(r"[A-Za-z0-9-]+")
_RESULTS_QUERY = re.compile(
    r"\s*SELECT\s+\*\s+FROM\s+devices\.jobs(?P<rest>(?:\s.*)?)", re.IGNORECASE | re.DOTALL
)
METHOD_NAME = re.compile(r"[^\s$/?#]{1,100}")
"""A direct method's name: 1..100 characters without whitespace, ``$``, ``/``, ``?`` or ``#``
(use with ``fullmatch``)."""


def _clip(value: str, limit: int) -> str:
    """``value`` on one line (whitespace runs folded), cut to ``limit`` characters."""
    text = " ".join(value.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: str, limit: int = 60) -> str:
    """``value`` quoted with its escapes visible (a trailing newline shows as ``\\n``), cut to
    ``limit`` characters."""
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


def check_job_id(value: str) -> str:
    """``jobId``: 1..64 ASCII letters, digits and ``-``."""
    if not value:
        raise ServiceError("input jobId is empty; leave it out to get a new id")
    if len(value) > MAX_JOB_ID_LENGTH:
        raise ServiceError(
            f"input jobId has {len(value)} characters; at most {MAX_JOB_ID_LENGTH} are allowed"
        )
    if not _JOB_ID.fullmatch(value):
        raise ServiceError(
            f"input jobId {_show(value)} may only hold ASCII letters, digits and '-'"
        )
    return value


def check_query_condition(value: str | None, *, required: bool) -> str:
    """``queryCondition``: the WHERE part of a twin query (``deviceId IN ['a', 'b']``).

    Args:
        value: the input, or None when absent.
        required: True on the gateway Thing.
    """
    if value is None or not value.strip():
        if required:
            raise ServiceError(
                "input queryCondition is required on the gateway Thing: give the WHERE part of "
                "a twin query selecting the devices, e.g. deviceId IN ['d1','d2'] or "
                "tags.site = 'a'; for all devices write IS_DEFINED(deviceId)"
            )
        raise ServiceError("input queryCondition is empty: leave it out to target this device")
    if value.strip() == "*":
        raise ServiceError(
            "input queryCondition '*' is not a twin query condition: for all devices write "
            "IS_DEFINED(deviceId), or select them, e.g. tags.site = 'a'"
        )
    if len(value) > MAX_QUERY_LENGTH:
        raise ServiceError(
            f"input queryCondition has {len(value)} characters; IoT Hub accepts at most "
            f"{MAX_QUERY_LENGTH}: select the devices by a tag instead of a long IN list"
        )
    if _SELECT.match(value):
        raise ServiceError(
            "input queryCondition must be only the WHERE part of a twin query "
            f"(e.g. deviceId = 'd1'), not a whole SELECT: got {_show(value)}"
        )
    _check_syntax("queryCondition", value, parse_condition, "deviceId IN ['d1','d2']")
    return value.strip()


# The first characters of the constructs IoT Hub documents (reference/iothub.md §3.6) and the
# grammar of iothub_query lacks: arithmetic and array constants.
_UNCOVERED_STARTS = frozenset("+-*/%[")


def _check_syntax(name: str, value: str, parse: Callable[[str], object], example: str) -> None:
    """Refuse ``value`` when the query language's grammar shows it malformed (module rules)."""
    try:
        parse(value)
    except QuerySyntaxError as error:
        if error.expected and error.near[:1] not in _UNCOVERED_STARTS:
            raise ServiceError(
                f"input {name}: {error} (IoT Hub's query syntax); e.g. {example}"
            ) from None
    except QueryError:  # not supported by the emulator, or too deep: the hub's call, not ours
        pass


def query_literal(value: str) -> str:
    """``value`` as a single-quoted string of IoT Hub's query language (``\\``, ``'`` escaped)."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def device_condition(device_id: str) -> str:
    """The ``queryCondition`` of a device Thing's jobs: ``deviceId = '<id>'`` (quotes escaped)."""
    return f"deviceId = {query_literal(device_id)}"


# A start time this far in the past still counts as "now" without a warning (clock skew, transit).
START_TIME_SLACK = timedelta(seconds=2)


def check_start_time(value: datetime | None, now: datetime) -> tuple[datetime, list[str]]:
    """``startTime``: returns the start to send (never in the past) and the warnings.

    A start in the past is sent as ``now``: IoT Hub would run the job at once anyway, and the row
    should show when it really starts.
    """
    if value is None:
        return now, []
    if value >= now:
        return value, []
    warnings = []
    if now - value > START_TIME_SLACK:
        warnings.append(
            f"startTime {value.isoformat().replace('+00:00', 'Z')} was in the past; the job was "
            "scheduled to start now"
        )
    return now, warnings


def check_json(name: str, value: Any) -> Any:
    """A JSON input: a parsed value (JSON text given as a STRING-like value is parsed)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ServiceError(f"input {name} is not valid JSON text: {_show(value)}") from None
    return value


def check_patch(value: Any) -> tuple[dict[str, Any], list[str]]:
    """``patch`` of a twin job: returns the patch to send and the warnings to report.

    Raises:
        ServiceError: the patch is not an object, holds other top-level keys than
            ``properties``/``tags``, or has neither ``properties.desired`` nor ``tags``.
    """
    patch = check_json("patch", value)
    if not isinstance(patch, Mapping):
        raise ServiceError(
            'input patch must be a JSON object like {"properties": {"desired": {...}}, '
            f'"tags": {{...}}}}, not {type(patch).__name__}'
        )
    extra = sorted(str(k) for k in patch if k not in ("properties", "tags"))
    if extra:
        raise ServiceError(
            f"input patch may only hold properties and tags at the top level, not {extra}; "
            'desired properties go under {"properties": {"desired": {...}}}'
        )
    warnings: list[str] = []
    out: dict[str, Any] = {}
    if "tags" in patch:
        tags = patch["tags"]
        if not isinstance(tags, Mapping):
            raise ServiceError("input patch: tags must be a JSON object")
        out["tags"] = dict(tags)
    if "properties" in patch:
        properties = patch["properties"]
        if not isinstance(properties, Mapping):
            raise ServiceError("input patch: properties must be a JSON object")
        unknown = sorted(str(k) for k in properties if k not in ("desired", "reported"))
        if unknown:
            raise ServiceError(
                f"input patch: properties may only hold desired (and reported), not {unknown}"
            )
        if "reported" in properties:
            warnings.append(
                "patch.properties.reported was dropped: only a device writes its reported "
                "properties"
            )
        if "desired" in properties:
            desired = properties["desired"]
            if not isinstance(desired, Mapping):
                raise ServiceError("input patch: properties.desired must be a JSON object")
            out["properties"] = {"desired": dict(desired)}
    if not out.get("tags") and not out.get("properties", {}).get("desired"):
        raise ServiceError(
            "input patch must contain properties.desired and/or tags (a non-empty object); "
            'e.g. {"properties": {"desired": {"interval": 30}}}'
        )
    if "tags" in out:
        _check_twin_section("tags", out["tags"])
    if "properties" in out:
        _check_twin_section("properties.desired", out["properties"]["desired"])
    return out, warnings


def _check_twin_section(where: str, section: Mapping[str, Any]) -> None:
    """IoT Hub's rules for a twin section (keys, depth, string size, section size).

    The size is counted as IoT Hub documents it: each key's length plus its value's, a string by
    its characters other than control characters, a number as 8, a boolean as 4, an object as
    the sum of its members; a null (which deletes a property) as nothing.
    """
    limit = TWIN_SECTION_LIMITS[where]
    size = _twin_size(where, section, 1)
    if size > limit:
        raise ServiceError(
            f"input patch: {where} is {size:,} bytes by IoT Hub's count; a twin's {where} may "
            f"hold at most {limit // 1024} KB ({limit:,}), so every device would refuse it"
        )


def _twin_size(path: str, value: Any, depth: int) -> int:
    """IoT Hub's size of ``value``; ``depth`` counts the objects and lists from the section
    (depth 1) down to ``value``. A container deeper than the limit is refused before anything
    inside it is looked at, so the recursion never goes deeper than the limit."""
    if isinstance(value, Mapping | list) and depth > MAX_TWIN_DEPTH + 1:
        raise ServiceError(
            f"input patch: {_clip(path, 120)} nests objects and lists more than "
            f"{MAX_TWIN_DEPTH} deep, which IoT Hub refuses"
        )
    if isinstance(value, Mapping):
        total = 0
        for key, member in value.items():
            key = str(key)
            if (
                len(key.encode("utf-8")) > MAX_TWIN_KEY_BYTES
                or not key
                or (_TWIN_KEY_FORBIDDEN.search(key))
            ):
                raise ServiceError(
                    f"input patch: key {_show(key)} in {path} is not allowed in a twin (keys are "
                    f"1..{MAX_TWIN_KEY_BYTES} bytes, without '.', '$', spaces or control "
                    "characters)"
                )
            total += len(_CONTROL.sub("", key)) + _twin_size(f"{path}.{key}", member, depth + 1)
        return total
    if isinstance(value, list):
        return sum(_twin_size(f"{path}[{i}]", item, depth + 1) for i, item in enumerate(value))
    if isinstance(value, str):
        if len(value.encode("utf-8")) > MAX_TWIN_STRING_BYTES:
            raise ServiceError(
                f"input patch: the string at {path} is over {MAX_TWIN_STRING_BYTES // 1024} KB, "
                "IoT Hub's limit for one twin value"
            )
        return len(_CONTROL.sub("", value))
    if isinstance(value, bool):
        return 4
    if isinstance(value, int | float):
        return 8
    return 0  # null: deletes the property


def check_results_query(value: str) -> str:
    """QueryJobResults ``query``: ``SELECT * FROM devices.jobs`` optionally with a WHERE part."""
    if len(value) > MAX_QUERY_LENGTH:
        raise ServiceError(
            f"input query has {len(value)} characters; IoT Hub accepts at most {MAX_QUERY_LENGTH}"
        )
    match = _RESULTS_QUERY.fullmatch(value)
    if not match:
        raise ServiceError(
            "input query must be SELECT * FROM devices.jobs [WHERE ...]: IoT Hub allows no "
            f"projection and no other collection here; got {_show(value)}"
        )
    rest = match.group("rest").strip()
    if rest and not rest.lower().startswith("where "):
        raise ServiceError(
            "input query may only add a WHERE clause after SELECT * FROM devices.jobs "
            f"(no GROUP BY, ORDER BY or TOP); got {_show(value)}"
        )
    _check_syntax(
        "query", value, parse_query, "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j1'"
    )
    return value.strip()


def _check_range(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ServiceError(f"input {name} is {value}; it must be between {low} and {high} seconds")
    return value


def check_response_timeout(value: int) -> int:
    """``responseTimeoutInSeconds``: 5..300."""
    return _check_range("responseTimeoutInSeconds", value, *RESPONSE_TIMEOUT_RANGE)


def check_connect_timeout(value: int) -> int:
    """``connectTimeoutInSeconds``: 0..300 (0 means the device must already be online)."""
    return _check_range("connectTimeoutInSeconds", value, *CONNECT_TIMEOUT_RANGE)


def check_direct_call_fits(
    connect_timeout: int,
    response_timeout: int,
    *,
    margin: float,
    request_timeout: float,
    job_form: str,
) -> None:
    """A direct call must end before the platform stops waiting for it.

    ThingWorx fails a remote-service call its edge has not answered within its request timeout
    (``thingworx.request_timeout``, 30 s by default), with a generic timeout that says nothing of
    the device. A direct call may wait ``connect + response`` seconds for the hub, plus the
    agent's ``margin``: when that cannot fit, it is refused before anything is sent.

    Args:
        connect_timeout: ``connectTimeoutInSeconds``.
        response_timeout: ``responseTimeoutInSeconds``.
        margin: ``jobs.direct_call_margin``, seconds.
        request_timeout: ``thingworx.request_timeout``, seconds.
        job_form: where the long-wait form of the call is, e.g. ``Reboot on the gateway Thing
            AzureIotHub``.

    Raises:
        ServiceError: the two timeouts and the margin exceed the request timeout.
    """
    total = connect_timeout + response_timeout + margin
    if total > request_timeout:
        raise ServiceError(
            f"inputs connectTimeoutInSeconds ({connect_timeout}) + responseTimeoutInSeconds "
            f"({response_timeout}) + {margin:g} s margin = {total:g} s cannot fit in "
            f"thingworx.request_timeout ({request_timeout:g} s), after which ThingWorx fails the "
            f"call; lower them, or for long waits use the job form {job_form}"
        )


def check_max_execution_time(value: int) -> int:
    """``maxExecutionTimeInSeconds``: 1 s .. 30 days (:data:`MAX_EXECUTION_TIME_RANGE`)."""
    low, high = MAX_EXECUTION_TIME_RANGE
    if value < low:
        raise ServiceError(
            f"input maxExecutionTimeInSeconds is {value}; the job window must be at least 1 second"
        )
    if value > high:
        raise ServiceError(
            f"input maxExecutionTimeInSeconds is {value}; the job window may be at most {high} "
            "seconds (30 days, as long as IoT Hub keeps a job): choose a shorter window"
        )
    return value


def check_max_rows(value: int) -> int:
    """``maxRows``: 1..100000."""
    if not 1 <= value <= MAX_ROWS_LIMIT:
        raise ServiceError(f"input maxRows is {value}; it must be between 1 and {MAX_ROWS_LIMIT}")
    return value


def check_method_name(value: str) -> str:
    """``methodName``: 1..100 characters, no whitespace, ``$``, ``/``, ``?`` or ``#``."""
    if not METHOD_NAME.fullmatch(value):
        raise ServiceError(
            f"input methodName {_show(value)} must be 1..100 characters without spaces, "
            "'$', '/', '?' or '#'"
        )
    return value


def check_payload(name: str, value: Any) -> Any:
    """A method payload: any JSON value (object, list, string, number, boolean or null, as IoT
    Hub accepts) of at most 128 KB (IoT Hub's limit).

    The value is the JSON input's value as decoded: a string is a JSON string (``"hello"``), not
    JSON text to parse again.
    """
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ServiceError(f"input {name} cannot be sent as JSON: {_show(str(exc))}") from None
    size = len(text.encode("utf-8"))
    if size > MAX_PAYLOAD_BYTES:
        raise ServiceError(
            f"input {name} is {size} bytes of JSON; IoT Hub carries at most "
            f"{MAX_PAYLOAD_BYTES} bytes"
        )
    return value


_FORBIDDEN_OUTSIDE_STRINGS = ("--", "/*", "*/", "//", ";")


def _check_one_expression(name: str, condition: str) -> None:
    """Refuse a WHERE part that is not one balanced expression (see the module's rules).

    Linear in the length: one pass over the characters.
    """
    closing = {"(": ")", "[": "]"}
    stack: list[str] = []
    quote: str | None = None
    escaped = False
    for i, char in enumerate(condition):
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
            continue
        if char in ("'", '"'):
            quote = char
        elif char in closing:
            stack.append(closing[char])
        elif char in (")", "]"):
            if not stack or stack.pop() != char:
                raise ServiceError(
                    f"input {name}: unbalanced {char!r} at character {i + 1}; the WHERE part "
                    "must be one expression"
                )
        elif not char.isascii() or (not char.isprintable() and not char.isspace()):
            raise ServiceError(
                f"input {name}: character {char!r} (U+{ord(char):04X}) at {i + 1} is only "
                "allowed inside a quoted string"
            )
        elif condition.startswith(_FORBIDDEN_OUTSIDE_STRINGS, i):
            raise ServiceError(
                f"input {name}: {condition[i : i + 2].strip()!r} at character {i + 1} is not "
                "part of IoT Hub's query language (no comments, one statement)"
            )
    if quote is not None:
        raise ServiceError(f"input {name}: a string opened with {quote} is never closed")
    if stack:
        raise ServiceError(f"input {name}: {len(stack)} bracket(s) opened and never closed")


def device_results_query(query: str, device_id: str) -> str:
    """QueryJobResults ``query`` on a device Thing: only that device's rows can match.

    Args:
        query: the caller's query, already checked by :func:`check_results_query`.
        device_id: the device Thing's name.

    Returns:
        ``SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = '<id>' [AND (<where>)]``.

    Raises:
        ServiceError: the WHERE part is not one balanced expression.
    """
    match = _RESULTS_QUERY.match(query)
    if not match:  # pragma: no cover - check_results_query ran first
        raise ServiceError(f"input query {_show(query)} is not SELECT * FROM devices.jobs")
    scope = f"devices.jobs.deviceId = {query_literal(device_id)}"
    rest = match.group("rest").strip()
    if not rest:
        return f"SELECT * FROM devices.jobs WHERE {scope}"
    condition = rest[len("where") :].strip()
    if not condition:
        raise ServiceError("input query has an empty WHERE part")
    _check_one_expression("query", condition)
    return f"SELECT * FROM devices.jobs WHERE {scope} AND ({condition})"
