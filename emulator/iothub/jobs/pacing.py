"""Pacing of job device operations at a tier's rate, on the injected clock.

Rules: one :class:`Pacer` per engine (IoT Hub's "jobs device operations" quota is per hub, not
per job). Each :meth:`Pacer.acquire` reserves the next free slot(s) and sleeps on the clock until
its slot, so a ManualClock test releases operations by advancing time, and the real clock spreads
them at the configured rate. A waiter cancelled before its slot leaves that slot unused.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from emulator.iothub.clock import Clock

__all__ = ["Pacer"]


class Pacer:
    """Hands out operation slots ``1 / rate`` seconds apart."""

    def __init__(self, clock: Clock, per_second: float) -> None:
        if per_second <= 0:
            raise ValueError("a pacing rate must be positive")
        self._clock = clock
        self._interval = 1.0 / per_second
        self._next: datetime | None = None

    async def acquire(self, count: int = 1) -> None:
        """Wait until ``count`` operations may run.

        Args:
            count: how many device operations the caller is about to perform at once.
        """
        now = self._clock.now()
        slot = now if self._next is None or self._next < now else self._next
        self._next = slot + timedelta(seconds=self._interval * count)
        await self._clock.sleep_until(slot)
