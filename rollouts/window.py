"""The daily maintenance window: waves start only inside it (``windowStart``/``windowEnd``).

Rules:
- Times are ``HH:MM`` in UTC, 00:00..23:59; both inputs or neither; they may not be equal (a
  window of no time, or of the whole day: leave both out for no window).
- The window is half-open, ``[windowStart, windowEnd)``; when ``windowEnd`` is earlier than
  ``windowStart`` the window crosses midnight UTC (22:00..04:00 is open at 23:30 and at 03:59,
  closed at 04:00).
- Only a wave's *start* is bound by the window: a wave that started inside it runs to its end
  (a running IoT Hub job cannot be stopped).
- No clock is read here: every function takes ``now`` (timezone-aware) from its caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from rollouts.exceptions import PlanError

__all__ = ["MaintenanceWindow", "earliest_wave_start"]

_HH_MM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_DAY = timedelta(days=1)


def _parse_hh_mm(name: str, value: str) -> time:
    match = _HH_MM.fullmatch(value)
    if match is None:
        raise PlanError(
            f"input {name} {value[:20]!r} is not a time of day: write HH:MM in UTC, "
            "00:00..23:59 (e.g. 22:00)"
        )
    return time(int(match[1]), int(match[2]))


def _utc(name: str, now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return now.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """A daily UTC window ``[start, end)``; ``end < start`` crosses midnight.

    Attributes:
        start: when the window opens each day (UTC).
        end: when it closes (UTC), exclusive.
    """

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise PlanError(
                f"inputs windowStart and windowEnd are both {self.start:%H:%M}: a window needs "
                "two different times; leave both out to start waves at any time"
            )

    @classmethod
    def parse(cls, window_start: str | None, window_end: str | None) -> MaintenanceWindow | None:
        """Read the ``windowStart``/``windowEnd`` inputs.

        Args:
            window_start: ``HH:MM`` UTC, or None/empty when absent.
            window_end: ``HH:MM`` UTC, or None/empty when absent.

        Returns:
            The window, or None when both inputs are absent.

        Raises:
            PlanError: one is given without the other, a time is not ``HH:MM``, or both are equal.
        """
        if not window_start and not window_end:
            return None
        if not window_start or not window_end:
            given, missing = (
                ("windowStart", "windowEnd") if window_start else ("windowEnd", "windowStart")
            )
            raise PlanError(
                f"input {given} is given without {missing}: give both (HH:MM UTC) or neither"
            )
        return cls(_parse_hh_mm("windowStart", window_start), _parse_hh_mm("windowEnd", window_end))

    @property
    def crosses_midnight(self) -> bool:
        """True when the window closes on the day after it opens (e.g. 22:00..04:00)."""
        return self.end < self.start

    @property
    def length(self) -> timedelta:
        """How long the window stays open each day."""
        day = datetime(2000, 1, 1, tzinfo=UTC)
        opens = datetime.combine(day, self.start, UTC)
        closes = datetime.combine(day, self.end, UTC)
        return closes - opens + (_DAY if self.crosses_midnight else timedelta(0))

    def is_open(self, now: datetime) -> bool:
        """Whether a wave may start at ``now`` (timezone-aware)."""
        at = _utc("now", now).time()
        if self.crosses_midnight:
            return at >= self.start or at < self.end
        return self.start <= at < self.end

    def next_opening(self, now: datetime) -> datetime:
        """The earliest moment at or after ``now`` when a wave may start (``now`` if open).

        Returns:
            A UTC datetime: ``now`` itself while the window is open, else the next ``start``.
        """
        utc = _utc("now", now)
        if self.is_open(utc):
            return utc
        opens = datetime.combine(utc.date(), self.start, UTC)
        return opens if opens > utc else opens + _DAY

    def closes_after(self, now: datetime) -> datetime:
        """When the window that is open at ``now`` closes.

        Raises:
            ValueError: the window is closed at ``now``.
        """
        utc = _utc("now", now)
        if not self.is_open(utc):
            raise ValueError("the maintenance window is closed at that time")
        closes = datetime.combine(utc.date(), self.end, UTC)
        return closes if closes > utc else closes + _DAY


def earliest_wave_start(
    now: datetime,
    *,
    not_before: datetime | None = None,
    window: MaintenanceWindow | None = None,
) -> datetime:
    """When the next wave may start: not before ``now`` and ``not_before``, inside the window.

    Args:
        now: the current time (timezone-aware).
        not_before: a later bound (the rollout's ``startTime``, the end of the pause between
            waves, a retry wave's ``retryDelaySeconds``), or None.
        window: the maintenance window, or None for none.

    Returns:
        A UTC datetime ≥ ``now``; equal to ``now`` when a wave may start at once.
    """
    start = _utc("now", now)
    if not_before is not None:
        start = max(start, _utc("not_before", not_before))
    return window.next_opening(start) if window is not None else start
