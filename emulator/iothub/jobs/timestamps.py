"""UTC timestamps as the jobs API writes and reads them.

Rules: the engine writes every time as ``2024-01-01T00:00:00.000Z`` (UTC, milliseconds, ``Z``),
the form the service SDK's msrest reads. It reads ISO-8601 strings with or without a zone and
with up to 7 fractional digits (the service's own form); a naive time is taken as UTC, like the
SDK does when it serialises a naive ``datetime``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["format_utc", "parse_utc"]

_FRACTION = re.compile(r"(\.\d{6})\d+")


def format_utc(when: datetime) -> str:
    """Format an aware datetime as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC."""
    utc = when.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_utc(text: str) -> datetime:
    """Parse an ISO-8601 timestamp into an aware UTC datetime.

    Args:
        text: e.g. ``2024-01-01T00:00:00.000Z``, ``2024-01-01T00:00:00.1234567+00:00`` or a naive
            ``2024-01-01T00:00:00`` (taken as UTC).

    Returns:
        The moment as an aware UTC datetime.

    Raises:
        ValueError: when ``text`` is not an ISO-8601 date-time.
    """
    cleaned = _FRACTION.sub(r"\1", text.strip())
    parsed = datetime.fromisoformat(cleaned)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
