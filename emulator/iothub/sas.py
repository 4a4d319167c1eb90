"""Shared-access-signature tokens, exactly as the azure-iot SDKs build them.

Service side (reference/iothub.md §1.2):
``SharedAccessSignature sr=<quote_plus(host)>&sig=<quote(b64)>&se=<expiry>&skn=<policy>``;
the string to sign is the *encoded* ``sr`` + ``"\\n"`` + ``se``.
Device side (§2.1): ``sr=<quote("{host}/devices/{id}", safe="")>``, no ``skn``.
Verifiers recompute the HMAC over the raw ``sr`` as it appears (falling back to a canonical
re-encoding), compare in constant time, refuse expired tokens, and compare the host part
case-insensitively, ignoring any port.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from emulator.errors import EmulatorError

__all__ = ["SasError", "SasToken", "make_token", "parse_token", "verify_token"]

_PREFIX = "SharedAccessSignature "


class SasError(EmulatorError):
    """A token that is malformed, expired, unknown or wrongly signed (the text says which)."""


@dataclass(frozen=True, slots=True)
class SasToken:
    """The parts of a SAS token; ``sr`` and ``sig`` as they appeared (still URL-encoded)."""

    sr: str
    sig: str
    se: int
    skn: str | None

    @property
    def resource(self) -> str:
        """The decoded resource URI, e.g. ``myhub.local/devices/d1``."""
        return urllib.parse.unquote(self.sr)


def make_token(resource: str, key_b64: str, expiry: int, policy: str | None = None) -> str:
    """Build a token the way the SDKs do (used by the simulated fleet and by tests)."""
    sr = urllib.parse.quote(resource, safe="")
    signature = _sign(sr, expiry, key_b64)
    token = f"{_PREFIX}sr={sr}&sig={urllib.parse.quote(signature, safe='')}&se={expiry}"
    if policy is not None:
        token += f"&skn={policy}"
    return token


def parse_token(text: str) -> SasToken:
    """Split a ``SharedAccessSignature ...`` string into its fields.

    Raises:
        SasError: when it is not a SAS token or lacks ``sr``, ``sig`` or a numeric ``se``.
    """
    if not text.startswith(_PREFIX):
        raise SasError("not a SharedAccessSignature token")
    fields: dict[str, str] = {}
    for part in text[len(_PREFIX) :].split("&"):
        name, sep, value = part.partition("=")
        if not sep:
            raise SasError(f"malformed token field {name!r}")
        fields[name] = value
    try:
        return SasToken(
            sr=fields["sr"], sig=fields["sig"], se=int(fields["se"]), skn=fields.get("skn")
        )
    except KeyError as exc:
        raise SasError(f"token lacks {exc.args[0]!r}") from None
    except ValueError:
        raise SasError("token expiry 'se' is not a number") from None


def verify_token(
    text: str,
    *,
    expected_resource: str,
    key_lookup: Callable[[str | None], list[str]],
    now: float,
) -> SasToken:
    """Verify a token against the resource it must cover and the keys that may have signed it.

    Args:
        text: the whole ``SharedAccessSignature ...`` string.
        expected_resource: ``host`` for service tokens, ``host/devices/{id}`` for device tokens;
            compared case-insensitively, the host's port ignored on both sides.
        key_lookup: returns the base64 keys valid for the token's ``skn`` (None for device
            tokens); an empty list means an unknown policy or device.
        now: the current Unix time.

    Returns:
        The parsed token.

    Raises:
        SasError: with the reason (malformed, expired, wrong resource, unknown policy, bad
            signature).
    """
    token = parse_token(text)
    if token.se < now:
        raise SasError("token expired")
    if _normalise(token.resource) != _normalise(expected_resource):
        raise SasError(f"token is for {token.resource!r}, not {expected_resource!r}")
    keys = key_lookup(token.skn)
    if not keys:
        raise SasError(f"unknown policy {token.skn!r}" if token.skn else "unknown device")
    given = urllib.parse.unquote(token.sig)
    canonical_sr = urllib.parse.quote(token.resource, safe="")
    for key in keys:
        for sr in {token.sr, canonical_sr, urllib.parse.quote_plus(token.resource)}:
            if hmac.compare_digest(_sign(sr, token.se, key), given):
                return token
    raise SasError("signature does not match")


def _sign(encoded_sr: str, expiry: int, key_b64: str) -> str:
    digest = hmac.new(
        base64.b64decode(key_b64), f"{encoded_sr}\n{expiry}".encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


def _normalise(resource: str) -> str:
    host, sep, rest = resource.partition("/")
    return host.split(":", 1)[0].lower() + sep + rest.lower()
