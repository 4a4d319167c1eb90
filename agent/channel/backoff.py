"""Reconnect delays: exponential backoff with full jitter.

The n-th consecutive failure (n = 0, 1, ...) waits a uniformly random time in
``[0, min(max_delay, initial_delay * 2**n)]`` ("full jitter"), so a fleet of agents that lost the
same server does not come back in step. A success resets the sequence. The random source is
injected so tests can fix it.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays before reconnect attempts.

    Args:
        initial_delay: the ceiling of the first delay, s (``reconnect_initial_delay``).
        max_delay: the largest ceiling, s (``reconnect_max_delay``).
        rng: the random source (default: a new ``random.Random``).
    """

    def __init__(
        self, initial_delay: float, max_delay: float, rng: random.Random | None = None
    ) -> None:
        self._initial = initial_delay
        self._max = max(max_delay, initial_delay)
        self._rng = rng or random.Random()
        self._failures = 0

    @property
    def failures(self) -> int:
        """Consecutive failures since the last reset."""
        return self._failures

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        # Cap the exponent: 2**n overflows a float long before any real outage ends.
        return min(self._max, self._initial * 2.0 ** min(self._failures, 62))

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        delay = self._rng.uniform(0.0, self.ceiling())
        self._failures += 1
        return delay

    def reset(self) -> None:
        """Forget the failures (after a successful connection)."""
        self._failures = 0
