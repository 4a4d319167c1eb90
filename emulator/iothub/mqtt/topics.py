"""IoT Hub's MQTT topic names and MQTT topic-filter matching, sans-I/O.

Topic conventions follow reference/iothub.md §2.2; filter matching follows MQTT 3.1.1 §4.7.
Rules: the builders here are the only place the hub- and device-side topic strings are spelled;
``$rid`` values are opaque strings; property bags (``?a=1&b=2``) are URL-decoded when parsed.
"""

from __future__ import annotations

import urllib.parse

__all__ = [
    "DESIRED_FILTER",
    "METHODS_FILTER",
    "TWIN_RESPONSE_FILTER",
    "desired_patch_topic",
    "method_request_topic",
    "method_response_topic",
    "property_bag",
    "reported_patch_topic",
    "topic_matches",
    "twin_get_topic",
    "twin_response_topic",
]

METHODS_FILTER = "$iothub/methods/POST/#"
TWIN_RESPONSE_FILTER = "$iothub/twin/res/#"
DESIRED_FILTER = "$iothub/twin/PATCH/properties/desired/#"

METHOD_REQUEST_PREFIX = "$iothub/methods/POST/"
METHOD_RESPONSE_PREFIX = "$iothub/methods/res/"
TWIN_GET_PREFIX = "$iothub/twin/GET/"
TWIN_RESPONSE_PREFIX = "$iothub/twin/res/"
REPORTED_PATCH_PREFIX = "$iothub/twin/PATCH/properties/reported/"
DESIRED_PATCH_PREFIX = "$iothub/twin/PATCH/properties/desired/"


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether a topic name matches a topic filter (MQTT 3.1.1 §4.7).

    ``+`` matches one level, a trailing ``#`` matches the parent level and everything below; a
    filter starting with a wildcard does not match topics starting with ``$`` (§4.7.2).
    """
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


def property_bag(topic: str) -> dict[str, str]:
    """The URL-decoded ``name=value`` pairs after the ``?`` of a topic (empty when none)."""
    _, sep, query = topic.partition("?")
    if not sep:
        return {}
    bag: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        bag[urllib.parse.unquote(name)] = urllib.parse.unquote(value)
    return bag


def _rid(rid: str) -> str:
    return urllib.parse.quote(rid, safe="")


def twin_get_topic(rid: str) -> str:
    """Device → hub: request the twin's properties."""
    return f"{TWIN_GET_PREFIX}?$rid={_rid(rid)}"


def reported_patch_topic(rid: str) -> str:
    """Device → hub: merge-patch the reported properties."""
    return f"{REPORTED_PATCH_PREFIX}?$rid={_rid(rid)}"


def twin_response_topic(status: int, rid: str, version: int | None = None) -> str:
    """Hub → device: the answer to a twin GET or reported PATCH."""
    topic = f"{TWIN_RESPONSE_PREFIX}{status}/?$rid={_rid(rid)}"
    if version is not None:
        topic += f"&$version={version}"
    return topic


def method_request_topic(method_name: str, rid: str) -> str:
    """Hub → device: a direct-method request."""
    return f"{METHOD_REQUEST_PREFIX}{method_name}/?$rid={_rid(rid)}"


def method_response_topic(status: int, rid: str) -> str:
    """Device → hub: the answer to a direct-method request."""
    return f"{METHOD_RESPONSE_PREFIX}{status}/?$rid={_rid(rid)}"


def desired_patch_topic(version: object) -> str:
    """Hub → device: a desired-properties patch carrying ``$version``."""
    return f"{DESIRED_PATCH_PREFIX}?$version={version}"
