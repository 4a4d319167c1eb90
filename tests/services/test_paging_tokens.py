"""The continuationToken codec (services/paging.py): round trip, scope binding, hostile text."""

from __future__ import annotations

import base64
import json

import pytest

from agent.registry import ServiceError
from services.paging import (
    MAX_TOKEN_CHARS,
    PageToken,
    decode_token,
    encode_token,
    scope_digest,
)

SCOPE = scope_digest("AzureIotDeviceJobFindJobs", "AzureIotHub", {"type": None, "status": None})


def test_round_trip_and_first_page() -> None:
    token = PageToken("hub-token", ("2024-01-01T00:00:00+00:00", "j1"))
    assert decode_token(encode_token(SCOPE, token), SCOPE) == token
    assert decode_token(encode_token(SCOPE, PageToken("h")), SCOPE) == PageToken("h")
    assert decode_token(None, SCOPE) is None
    assert decode_token("  ", SCOPE) is None


def test_scope_binds_service_thing_and_inputs() -> None:
    text = encode_token(SCOPE, PageToken("h"))
    others = [
        scope_digest("AzureIotDeviceJobFindJobs", "device-0001", {"type": None, "status": None}),
        scope_digest("AzureIotDeviceJobFindJobs", "AzureIotHub", {"type": None, "status": "x"}),
        scope_digest("AzureIotDeviceJobQueryJobResults", "AzureIotHub", {"query": "q"}),
    ]
    for other in others:
        with pytest.raises(ServiceError, match="belongs to another list"):
            decode_token(text, other)


@pytest.mark.parametrize(
    "text",
    ["x!", "e30", "W10", "eyJzIjoxfQ", "bnVsbA", '{"s":"a"}', "\u00e9\u00e9\u00e9\u00e9"],
)
def test_text_not_ours_is_one_line(text: str) -> None:
    with pytest.raises(ServiceError, match="not a token this service gave") as info:
        decode_token(text, SCOPE)
    assert "\n" not in str(info.value)


def test_long_text_is_refused_before_decoding() -> None:
    with pytest.raises(ServiceError, match="10000000 characters long"):
        decode_token("A" * 10_000_000, SCOPE)
    assert len(encode_token(SCOPE, PageToken("h" * 1000, ("t", "j" * 64)))) < MAX_TOKEN_CHARS


def test_wrong_field_types_are_refused() -> None:
    for doc in ({"s": SCOPE, "h": 1}, {"s": SCOPE, "h": None, "k": ["a"]}, {"s": SCOPE, "k": 3}):
        text = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()
        with pytest.raises(ServiceError, match="cannot be read"):
            decode_token(text, SCOPE)
