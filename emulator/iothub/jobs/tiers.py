"""IoT Hub tiers as far as jobs care: how many jobs may be active, how fast device operations go.

Figures from reference/iothub.md §3.8 (Microsoft's quotas-and-throttling page): 1 concurrent job
on Free/S1, 5 on S2, 10 on S3; job device operations (update twin, invoke method) at 10/s on S1
and S2 (one unit) and 50/s per unit on S3. An engine with no tier is unthrottled and has no
concurrent-job limit.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TIERS", "Tier"]


@dataclass(frozen=True, slots=True)
class Tier:
    """The job quotas of one IoT Hub tier (one unit).

    Attributes:
        name: the tier's name, e.g. ``S1``.
        max_active_jobs: how many jobs may be queued or running at once (429004 beyond).
        device_ops_per_second: the pace of job device operations across the whole hub.
    """

    name: str
    max_active_jobs: int
    device_ops_per_second: float

    def __post_init__(self) -> None:
        if self.max_active_jobs < 1:
            raise ValueError("a tier allows at least one active job")
        if self.device_ops_per_second <= 0:
            raise ValueError("a tier's device operation rate must be positive")


TIERS: dict[str, Tier] = {
    "S1": Tier("S1", 1, 10.0),
    "S2": Tier("S2", 5, 10.0),
    "S3": Tier("S3", 10, 50.0),
}
"""The standard tiers by name."""
