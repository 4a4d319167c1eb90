"""Counters of the channel, read by the /metrics endpoint.

Mutated only by the client, on the event loop; readers take :meth:`ChannelStats.snapshot`.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

__all__ = ["LATENCY_SAMPLES", "ChannelStats", "StatsSnapshot"]

LATENCY_SAMPLES = 1024
"""How many recent call latencies are kept (a ring buffer)."""


@dataclass(frozen=True)
class StatsSnapshot:
    """A copy of the counters at one moment.

    Attributes:
        calls: service name → calls answered (success or error).
        errors: service name → calls answered with an error status.
        connection_attempts: websocket connections tried.
        connects: times the channel reached READY.
        reconnects: times it reached READY again after a lost or failed link.
        links_lost: established links that ended without stop().
        abandoned_calls: calls whose answer could not be delivered (link gone).
        refused_busy: calls refused at once because ``MAX_CALLS_IN_FLIGHT`` were being served.
        latencies: recent call latencies in seconds, oldest first.
        pushes_sent: property pushes and events the server accepted.
        pushes_dropped: pushes dropped from a full queue (oldest first) or refused.
        push_queue: pushes waiting for a synchronised link.
    """

    calls: dict[str, int]
    errors: dict[str, int]
    connection_attempts: int
    connects: int
    reconnects: int
    links_lost: int
    abandoned_calls: int
    latencies: tuple[float, ...]
    refused_busy: int = 0
    pushes_sent: int = 0
    pushes_dropped: int = 0
    push_queue: int = 0


@dataclass
class ChannelStats:
    """Live counters; see :class:`StatsSnapshot` for their meaning."""

    calls: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    connection_attempts: int = 0
    connects: int = 0
    links_lost: int = 0
    abandoned_calls: int = 0
    refused_busy: int = 0
    pushes_sent: int = 0
    pushes_dropped: int = 0
    push_queue: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))

    @property
    def reconnects(self) -> int:
        """Times the channel reached READY again after the first time."""
        return max(0, self.connects - 1)

    def record_call(self, service: str, seconds: float, *, ok: bool) -> None:
        """Count one answered call and keep its latency."""
        self.calls[service] += 1
        if not ok:
            self.errors[service] += 1
        self.latencies.append(seconds)

    def snapshot(self) -> StatsSnapshot:
        """A frozen copy of the counters."""
        return StatsSnapshot(
            calls=dict(self.calls),
            errors=dict(self.errors),
            connection_attempts=self.connection_attempts,
            connects=self.connects,
            reconnects=self.reconnects,
            links_lost=self.links_lost,
            abandoned_calls=self.abandoned_calls,
            latencies=tuple(self.latencies),
            refused_busy=self.refused_busy,
            pushes_sent=self.pushes_sent,
            pushes_dropped=self.pushes_dropped,
            push_queue=self.push_queue,
        )
