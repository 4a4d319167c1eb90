"""Injectable time for the IoT Hub emulator.

Rules: every piece of emulator logic that depends on wall-clock time (job start times, job
windows, device-job timestamps, SAS expiry) takes a :class:`Clock` and never calls
``datetime.now`` itself, so that tests of hour-long job windows run without sleeping.
Short protocol timeouts (MQTT keep-alive, method response timeouts) use asyncio's own timers.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "utc_now"]


def utc_now() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


class Clock(Protocol):
    """A source of UTC time that can also wait until a moment."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep_until(self, when: datetime) -> None:
        """Return once ``now() >= when`` (at once if that already holds)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return utc_now()

    async def sleep_until(self, when: datetime) -> None:
        while True:
            delay = (when - utc_now()).total_seconds()
            if delay <= 0:
                return
            # Re-check after waking: the event loop's timer may fire a little early.
            await asyncio.sleep(min(delay, 3600.0))


class ManualClock:
    """A clock that only moves when a test calls :meth:`advance` or :meth:`set`.

    Sleepers are woken in deadline order when time passes their deadline.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, when: datetime) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._seq), fut))
        await fut

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake every sleeper now due."""
        self.set(self._now + timedelta(seconds=seconds))

    def set(self, when: datetime) -> None:
        """Move time to ``when`` (never backwards) and wake every sleeper now due."""
        if when < self._now:
            raise ValueError("a ManualClock never goes backwards")
        self._now = when
        while self._sleepers and self._sleepers[0][0] <= when:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
