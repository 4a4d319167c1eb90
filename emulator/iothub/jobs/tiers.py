"""IoT Hub tiers as far as jobs care: how many jobs may be active, how fast device operations go.

Figures from reference/iothub.md §3.8 (Microsoft's quotas-and-throttling page): 1 concurrent job
on Free/S1, 5 on S2, 10 on S3; job device operations (update twin, invoke method) at 10/s on S1,
max(10/s, 1/s per unit) on S2 and 50/s per unit on S3 (:meth:`Tier.with_units`; a hub has up to
200 units of S1 or S2, 10 of S3). An engine with no tier is unthrottled and has no concurrent-job
limit.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_UNITS", "TIERS", "Tier"]


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

    def with_units(self, units: int) -> Tier:
        """This tier on a hub of ``units`` units: the job device-operation pace scales (S3: 50/s
        per unit; S2: max(10/s, 1/s per unit); S1: 10/s whatever the units), the concurrent-job
        quota does not.

        Raises:
            ValueError: ``units`` outside what the tier allows (1..200; S3: 1..10).
        """
        most = MAX_UNITS.get(self.name, 200)
        if not 1 <= units <= most:
            raise ValueError(f"an {self.name} hub has 1 to {most} units, not {units}")
        rate = {"S3": 50.0 * units, "S2": max(10.0, float(units))}.get(
            self.name, self.device_ops_per_second
        )
        return Tier(self.name, self.max_active_jobs, rate)

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

MAX_UNITS: dict[str, int] = {"S1": 200, "S2": 200, "S3": 10}
"""The most units a hub of each tier may have."""
