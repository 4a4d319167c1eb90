"""The stand-in's limits on what one connection can cost it, with defaults from a real server.

A real ThingWorx server bounds what an edge connection can make it hold or do; so does the
stand-in (issue 15 §3, §4). :class:`StandInLimits` gathers every such limit and its default;
:class:`FrameRate` and :class:`RefusalCounter` are the two small pieces of bookkeeping the
connection layer uses. Time is injected (``now``: seconds on the event loop's monotonic clock).

Rules:

- a limit a real server documents takes its value (reference ``alwayson.md`` §1.5: 1 MiB
  messages, stale multipart sets dropped after 50 s; ThingWorx waits 15 s for AUTH); the others
  are our choice, generous for a real edge and small next to the memory of one process;
- a peer past the frame rate is disconnected (close 1008), not silently thinned out: dropping
  frames would break multipart sets and leave calls waiting for their timeout, while a close
  frees everything the connection holds at once and tells the peer why; a real edge reconnects
  with backoff and binds again;
- refused or dropped frames are logged as counts per interval (the first of each kind in full),
  never one line per frame: a flood must not turn into a flood of log lines.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.alwayson import DEFAULT_MAX_PENDING_BYTES
from emulator.thingworx.unconfirmed import STALE_MULTIPART_SECONDS

__all__ = ["FrameRate", "RefusalCounter", "StandInLimits"]


@dataclass(frozen=True)
class StandInLimits:
    """Every limit of the stand-in on one connection (and on all of them together).

    Attributes:
        auth_timeout: seconds a new connection has to authenticate; closed (1008) after. A real
            ThingWorx server waits 15 s.
        stale_multipart_after: seconds after which an incomplete multipart set is dropped
            (§1.5: 5 x the 10 s message timeout), checked on a timer.
        multipart_pending_bytes: bytes of incomplete multipart sets one connection may make the
            stand-in hold (four 1 MiB messages).
        multipart_pending_bytes_total: the same for every connection together.
        max_things_per_connection: Things one connection may hold bound; a BIND that would
            pass it is refused whole.
        unbound_things_kept: names of unbound Things remembered (REST answers 503 for them,
            404 once forgotten); the oldest are forgotten first.
        frame_rate: websocket frames per second one connection may send on average (0: no
            limit); past ``frame_burst`` frames over that rate it is closed (1008).
        frame_burst: frames a connection may send at once above ``frame_rate``.
        refusal_log_interval: seconds between two log lines counting refused frames.
    """

    auth_timeout: float = 15.0
    stale_multipart_after: float = STALE_MULTIPART_SECONDS
    multipart_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES
    multipart_pending_bytes_total: int = 64 * 1_048_576
    max_things_per_connection: int = 10_000
    unbound_things_kept: int = 1_000
    frame_rate: float = 2_000.0
    frame_burst: int = 4_000
    refusal_log_interval: float = 10.0

    def __post_init__(self) -> None:
        for name in ("auth_timeout", "stale_multipart_after", "refusal_log_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.frame_rate < 0 or self.frame_burst < 1:
            raise ValueError("frame_rate must be >= 0 and frame_burst >= 1")
        if self.max_things_per_connection < 1 or self.unbound_things_kept < 0:
            raise ValueError("max_things_per_connection must be >= 1, unbound_things_kept >= 0")
        if not 0 < self.multipart_pending_bytes <= self.multipart_pending_bytes_total:
            raise ValueError(
                "multipart_pending_bytes must be positive and at most multipart_pending_bytes_total"
            )


class FrameRate:
    """A token bucket: ``rate`` frames per second on average, ``burst`` at once.

    Args:
        rate: frames per second (tokens added per second).
        burst: the bucket's size (and its content at the start).
        now: the current time.
    """

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    def allow(self, now: float) -> bool:
        """Take one frame's token; False when the bucket is empty (the peer is over the rate)."""
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class RefusalCounter:
    """Counts refused or dropped frames by reason, for one log line per interval."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._seen: set[str] = set()
        self.total = 0

    def add(self, reason: str) -> bool:
        """Count one frame refused for ``reason``.

        Returns:
            True for the first frame of that reason on this connection (log that one in full).
        """
        self._counts[reason] = self._counts.get(reason, 0) + 1
        self.total += 1
        if reason in self._seen:
            return False
        self._seen.add(reason)
        return True

    def take(self) -> dict[str, int]:
        """The counts since the last call (empty when none), reset."""
        counts, self._counts = self._counts, {}
        return counts
