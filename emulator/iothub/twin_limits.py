"""IoT Hub's limits on twin documents, and a JSON decoder whose work is linear in its input.

Everything a device or a service caller writes into a twin passes :func:`check_section` (and the
size check on the merged result), so nothing the registry stores can be deeper, wider or larger
than IoT Hub itself would store. Sources: reference/iothub.md §3.8 and Microsoft's device-twin
guide ("Tags and properties format"); choices where neither says are in docs/iothub-emulator.md.

Rules:

- **Keys**: 1..1024 UTF-8 bytes, no UNICODE control characters (C0, C1), ``.``, ``$`` or space.
- **Values**: strings of at most 4 KB of UTF-8; integers from -4503599627370496 to
  4503599627370495; other numbers finite (``NaN``/``Infinity`` are not JSON and are refused).
- **Depth**: objects and arrays nest at most :data:`MAX_DEPTH` (10) levels below the section root
  (``tags``, ``properties.desired``, ``properties.reported``); IoT Hub's own example, keys ``one``
  .. ``ten`` each holding an object, is the deepest valid shape. Arrays count as levels.
- **Size**: tags ≤ 8 KB, desired and reported ≤ 32 KB each, computed as IoT Hub documents it:
  the sum over the section of each key's length and each value's length (strings: characters
  other than control characters; numbers 8; booleans and ``null`` 4). An operation that makes a
  section grow past its limit is refused (one that shrinks an over-limit section is not).
- Every violation is a :class:`~emulator.iothub.errors.HubError` 400004 ArgumentInvalid with a
  one-line message naming the section, the path and the limit.
- Nothing here recurses: documents are walked with an explicit stack, and :func:`decode_json`
  measures the nesting of the text in one pass *before* :func:`json.loads` sees it, so the C
  decoder never descends past the limit. Work is linear in the length of the input.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from itertools import accumulate
from typing import Any, Final

from emulator.iothub.errors import HubError

__all__ = [
    "JSON_MAX_DEPTH",
    "MAX_DEPTH",
    "MAX_KEY_BYTES",
    "MAX_PROPERTIES_BYTES",
    "MAX_STRING_BYTES",
    "MAX_TAGS_BYTES",
    "JsonTooDeep",
    "check_growth",
    "check_section",
    "container_extent",
    "decode_json",
    "decode_section",
    "json_depth",
    "section_size",
    "value_depth",
]

MAX_DEPTH: Final = 10
"""Levels of objects/arrays allowed below a twin section's root."""
MAX_KEY_BYTES: Final = 1024
MAX_STRING_BYTES: Final = 4 * 1024
MAX_TAGS_BYTES: Final = 8 * 1024
MAX_PROPERTIES_BYTES: Final = 32 * 1024
MIN_INTEGER: Final = -4503599627370496
MAX_INTEGER: Final = 4503599627370495
JSON_MAX_DEPTH: Final = 100
"""Nesting accepted in any other JSON the emulator decodes (REST bodies, method responses): far
below Python's recursion limit, far above any twin or job body IoT Hub accepts."""

_BAD_KEY_CHARS = re.compile(r"[.$ \x00-\x1f\x7f-\x9f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ESCAPED = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP: Final = {"[": 1, "{": 1, "]": -1, "}": -1}
_SPECIAL = re.compile(r'[\[\]{}"\\]')
_NUMBER_BYTES = 8
_FLAG_BYTES = 4

# A node met while walking a section: (value, level below the root, parent node, key or index).
# Paths are built from the parent chain only for a message, so the walk stays linear.
_Node = tuple[Any, int, Any, Any]


class JsonTooDeep(ValueError):
    """A JSON text nests objects/arrays deeper than the decoder accepts.

    Attributes:
        depth: how deep the text nests (a top-level object or array is 1).
        limit: the deepest nesting accepted.
    """

    def __init__(self, depth: int, limit: int) -> None:
        super().__init__(f"JSON nested {depth} levels deep; the limit is {limit}")
        self.depth = depth
        self.limit = limit


def json_depth(text: str) -> int:
    """How deep a JSON text nests objects and arrays (0 for a scalar), in one linear pass.

    Strings are skipped (escapes first, then quoted runs), so brackets inside them do not count.
    For a text that is not valid JSON the figure is an upper bound on the depth a JSON parser
    reaches before it finds the error.
    """
    if "[" not in text and "{" not in text:
        return 0
    unescaped = _ESCAPED.sub("", text)
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", unescaped))
    return max(0, max(accumulate(map(_STEP.__getitem__, brackets)), default=0))


def container_extent(text: str, start: int) -> tuple[int, int]:
    """Where the JSON object or array opening at ``text[start]`` ends, and how deep it nests.

    One pass over the brackets, quotes and backslashes after ``start``; nothing is decoded, so
    any depth is measured without recursion.

    Returns:
        (the index just past its closing bracket, its depth: 1 for ``[]``).

    Raises:
        ValueError: the value is not closed before the end of the text.
    """
    depth = deepest = 0
    in_string = False
    escaped_at = -1
    for match in _SPECIAL.finditer(text, start):
        pos = match.start()
        if pos == escaped_at:
            continue
        char = text[pos]
        if in_string:
            if char == "\\":
                escaped_at = pos + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return pos + 1, deepest
    raise ValueError("the JSON value is not closed")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def decode_json(data: bytes | str, max_depth: int = JSON_MAX_DEPTH) -> Any:
    """Decode untrusted JSON (UTF-8 when bytes) in time linear in its length.

    Args:
        data: the JSON text.
        max_depth: the deepest nesting of objects/arrays accepted (a top-level object is 1).

    Returns:
        The decoded value.

    Raises:
        JsonTooDeep: the text nests deeper than ``max_depth`` (found before decoding).
        ValueError: the text is not UTF-8 or not JSON, or holds NaN, Infinity or a number out of
            the double range.
    """
    text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    depth = json_depth(text)
    if depth > max_depth:
        raise JsonTooDeep(depth, max_depth)
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def decode_section(data: bytes | str, where: str) -> dict[str, Any]:
    """Decode a twin section sent as JSON (a device's reported-properties patch) and check it.

    Args:
        data: the JSON text of one object.
        where: the section's name for messages, e.g. ``properties.reported``.

    Returns:
        The decoded object, which passed :func:`check_section`.

    Raises:
        HubError: 400004 ArgumentInvalid when the text is not a JSON object or breaks a limit.
    """
    try:
        value = decode_json(data, MAX_DEPTH + 1)
    except JsonTooDeep as exc:
        raise _too_deep(where, exc.depth - 1) from None
    except ValueError as exc:
        raise HubError.argument_invalid(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HubError.argument_invalid(f"{where} must be a JSON object")
    check_section(value, where)
    return value


def value_depth(value: Any) -> int:
    """Levels of objects/arrays in a decoded JSON value (0 for a scalar), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def check_section(section: Mapping[str, Any], where: str, *, system_members: bool = True) -> None:
    """Check a twin section (or a patch of one) against IoT Hub's key, value and depth rules.

    Sizes are checked separately (:func:`check_growth`), on the result of the operation.

    Args:
        section: the decoded object.
        where: its name for messages (``tags``, ``properties.desired``, ``updateTwin.tags``...).
        system_members: when true, members of the root whose name starts with ``$`` (system
            properties such as ``$version``, which twin patches may carry and the registry
            ignores) are skipped; when false they are refused like any bad key.

    Raises:
        HubError: 400004 ArgumentInvalid naming the path and the rule broken.
    """
    stack: list[_Node] = [(section, 0, None, None)]
    deepest = 0
    while stack:
        entry = stack.pop()
        value, level = entry[0], entry[1]
        if isinstance(value, Mapping):
            deepest = max(deepest, level)
            for key, child in value.items():
                if system_members and level == 0 and isinstance(key, str) and key[:1] == "$":
                    continue
                _check_key(key, entry, where)
                stack.append((child, level + 1, entry, key))
        elif isinstance(value, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1, entry, i) for i, child in enumerate(value))
        elif isinstance(value, str):
            if len(value) > MAX_STRING_BYTES // 4 and len(value.encode()) > MAX_STRING_BYTES:
                raise HubError.argument_invalid(
                    f"{_path(where, entry)} is a string of {len(value.encode())} bytes; "
                    f"IoT Hub allows {MAX_STRING_BYTES}"
                )
        elif isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, int):
            if not MIN_INTEGER <= value <= MAX_INTEGER:
                raise HubError.argument_invalid(
                    f"{_path(where, entry)} is an integer out of IoT Hub's range "
                    f"{MIN_INTEGER}..{MAX_INTEGER}"
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise HubError.argument_invalid(f"{_path(where, entry)} is not a finite number")
        else:
            raise HubError.argument_invalid(f"{_path(where, entry)} is not a JSON value")
    if deepest > MAX_DEPTH:
        raise _too_deep(where, deepest)


def section_size(section: Mapping[str, Any]) -> int:
    """A section's size as IoT Hub counts it (see the module rules), without recursion."""
    total = 0
    stack: list[Any] = [section]
    while stack:
        value = stack.pop()
        if isinstance(value, Mapping):
            for key, child in value.items():
                total += _text_size(str(key))
                stack.append(child)
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            total += _text_size(value)
        elif isinstance(value, bool) or value is None:
            total += _FLAG_BYTES
        else:
            total += _NUMBER_BYTES
    return total


def check_growth(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, where: str, limit: int
) -> None:
    """Refuse an operation that makes a section grow past its size limit.

    Raises:
        HubError: 400004 ArgumentInvalid naming the section, its new size and the limit.
    """
    new_size = section_size(after or {})
    if new_size > limit and new_size > section_size(before or {}):
        raise HubError.argument_invalid(
            f"{where} would be {new_size} bytes; IoT Hub allows {limit}"
        )


def _text_size(text: str) -> int:
    if text.isprintable():
        return len(text)
    return len(text) - len(_CONTROL.findall(text))


def _check_key(key: Any, entry: _Node, where: str) -> None:
    if not isinstance(key, str) or not key or _BAD_KEY_CHARS.search(key):
        raise HubError.argument_invalid(
            f"Invalid property name {str(key)[:64]!r} in {_path(where, entry)}: names may not "
            "be empty or contain '.', '$', spaces or control characters"
        )
    if len(key) > MAX_KEY_BYTES // 4 and len(key.encode()) > MAX_KEY_BYTES:
        raise HubError.argument_invalid(
            f"A property name in {_path(where, entry)} is {len(key.encode())} bytes; "
            f"IoT Hub allows {MAX_KEY_BYTES}"
        )


def _path(where: str, entry: _Node | None) -> str:
    parts: list[str] = []
    while entry is not None and entry[2] is not None:
        key = entry[3]
        parts.append(f"[{key}]" if isinstance(key, int) else f".{str(key)[:64]}")
        entry = entry[2]
    return where + "".join(reversed(parts))


def _too_deep(where: str, depth: int) -> HubError:
    return HubError.argument_invalid(
        f"{where} is nested {depth} levels deep; IoT Hub allows {MAX_DEPTH} levels of objects "
        "and arrays"
    )
