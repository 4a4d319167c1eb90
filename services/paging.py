"""The ``continuationToken`` of FindJobs and QueryJobResults: where the next page starts.

A token is opaque to the caller: URL-safe base64 of a small JSON object holding

- ``s``: a digest of what the page answers (service, Thing and the inputs that choose the rows,
  ``maxRows`` excepted), so a token given with other inputs, or on another Thing, is refused
  instead of continuing a different list;
- ``h``: IoT Hub's own continuation token (``x-ms-continuation``) to read from, or null for the
  start of the hub's list;
- ``k`` (FindJobs only): the sort key (created time as ISO-8601, jobId) of the last job
  returned, when the next page continues inside the same window of the hub's job list.

Rules:
- Decoding untrusted text is linear in its length and bounded (:data:`MAX_TOKEN_CHARS`); any
  text that is not a token this agent made is one clear line, never a traceback.
- The token carries nothing secret and grants nothing: the rows of a device Thing are filtered
  on its device whatever IoT Hub answers, so a forged hub token cannot widen a Thing's scope.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.registry import ServiceError

__all__ = ["MAX_TOKEN_CHARS", "PageToken", "decode_token", "encode_token", "scope_digest"]

# IoT Hub's tokens are a few hundred characters; anything much longer is not one of ours.
MAX_TOKEN_CHARS = 8192
_INPUT = "input continuationToken"


@dataclass(frozen=True)
class PageToken:
    """Where a page starts.

    Attributes:
        hub: IoT Hub's continuation token to read from, None for the start of its list.
        key: FindJobs only: (created time as ISO-8601 text, jobId) of the last job returned,
            when the next page continues inside the same window; None otherwise.
    """

    hub: str | None = None
    key: tuple[str, str] | None = None


def scope_digest(service: str, thing: str, inputs: Mapping[str, Any]) -> str:
    """A short digest of what a page answers (the service, the Thing and the row-choosing
    inputs), bound into each token."""
    text = json.dumps([service, thing, dict(inputs)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode_token(scope: str, token: PageToken) -> str:
    """The caller's ``continuationToken`` text for ``token`` under ``scope``."""
    doc: dict[str, Any] = {"s": scope, "h": token.hub}
    if token.key is not None:
        doc["k"] = list(token.key)
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(text: str | None, scope: str) -> PageToken | None:
    """Read a caller's ``continuationToken``; None or empty text is the first page (None).

    Raises:
        ServiceError: the text is not a token this service gave, or it was given with other
            inputs or on another Thing than the page that gave it.
    """
    if text is None or not text.strip():
        return None
    text = text.strip()
    if len(text) > MAX_TOKEN_CHARS:
        raise _not_ours(f"is {len(text)} characters long")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        doc = json.loads(raw)
    except (binascii.Error, ValueError):
        raise _not_ours("cannot be read") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("s"), str):
        raise _not_ours("cannot be read")
    if doc["s"] != scope:
        raise ServiceError(
            f"{_INPUT} belongs to another list: it was given by a call with other inputs or on "
            "another Thing; call with the same inputs (maxRows may differ) as the page that gave "
            "it, or without a token for the first page"
        )
    hub = doc.get("h")
    key = doc.get("k")
    if hub is not None and not isinstance(hub, str):
        raise _not_ours("cannot be read")
    if key is not None and not (
        isinstance(key, list) and len(key) == 2 and all(isinstance(k, str) for k in key)
    ):
        raise _not_ours("cannot be read")
    return PageToken(hub or None, (key[0], key[1]) if key is not None else None)


def _not_ours(why: str) -> ServiceError:
    return ServiceError(
        f"{_INPUT} {why}; it is not a token this service gave: pass the continuationToken of "
        "the previous page's first row unchanged, or none for the first page"
    )
