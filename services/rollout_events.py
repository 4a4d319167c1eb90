"""Rollout events on the gateway Thing, through the push path the job events take.

- ``AzureIotDeviceRolloutStatusChanged`` (one ``AzureIotDeviceRollout`` row: ``rolloutId``,
  ``status``, ``reason``, ``wave``, ``waveCount``, the device counts...) each time a rollout's
  stored status changes, its creation (``queued``) included;
- ``AzureIotDeviceRolloutWaveEnded`` (one ``AzureIotDeviceRolloutWaveEnded`` row: ``rolloutId``,
  ``wave``, ``attempt``, ``succeeded``, ``failed``, ``jobIds``) when a round of a wave is judged.

Rules:
- The engine (:mod:`services.rollout_engine`) tells :class:`RolloutEvents` after it stored the
  change, so an event never announces what a crash could take back.
- Events go to a :class:`~services.watch.Publisher` (the AlwaysOn channel), which queues them
  while the link is down; nothing here waits or does I/O.
"""

from __future__ import annotations

from agent.alwayson import BaseType, DataShape, EventMetadata, InfoTable
from services.rollout_engine import JudgedRound
from services.rollouts import ROLLOUT_SHAPE, rollout_row
from services.shapes import column
from services.store.rollouts import RolloutRecord
from services.watch import Publisher

__all__ = [
    "ROLLOUT_STATUS_CHANGED_EVENT",
    "ROLLOUT_WAVE_ENDED_EVENT",
    "WAVE_ENDED_SHAPE",
    "RolloutEvents",
    "rollout_events",
]

ROLLOUT_STATUS_CHANGED_EVENT = "AzureIotDeviceRolloutStatusChanged"
ROLLOUT_WAVE_ENDED_EVENT = "AzureIotDeviceRolloutWaveEnded"

WAVE_ENDED_SHAPE = DataShape.of(
    column("rolloutId", BaseType.STRING, "the rollout's id", key=True),
    column("wave", BaseType.INTEGER, "the wave"),
    column("attempt", BaseType.INTEGER, "the round: 1 for the wave, 2 for its first retry..."),
    column("succeeded", BaseType.INTEGER, "devices of the round that succeeded"),
    column("failed", BaseType.INTEGER, "devices of the round that failed (retried or not)"),
    column("jobIds", BaseType.JSON, "the round's hub jobs (JSON array of job ids)"),
    name="AzureIotDeviceRolloutWaveEnded",
)


def rollout_events() -> list[EventMetadata]:
    """The gateway Thing's rollout events (declared in its metadata)."""
    return [
        EventMetadata(ROLLOUT_STATUS_CHANGED_EVENT, ROLLOUT_SHAPE, "a rollout's status changed"),
        EventMetadata(
            ROLLOUT_WAVE_ENDED_EVENT, WAVE_ENDED_SHAPE, "a round of a rollout's wave was judged"
        ),
    ]


class RolloutEvents:
    """The engine's listener that fires the rollout events on the gateway Thing.

    Args:
        publisher: where events go (the channel).
        gateway: the gateway Thing's name.
    """

    def __init__(self, publisher: Publisher, gateway: str) -> None:
        self._publisher = publisher
        self._gateway = gateway

    def status_changed(self, record: RolloutRecord, counts: dict[str, int]) -> None:
        """Fire ``AzureIotDeviceRolloutStatusChanged`` with the rollout's row."""
        self._publisher.fire_event(
            self._gateway,
            ROLLOUT_STATUS_CHANGED_EVENT,
            InfoTable(ROLLOUT_SHAPE, [rollout_row(record, counts)]),
        )

    def round_judged(self, judged: JudgedRound) -> None:
        """Fire ``AzureIotDeviceRolloutWaveEnded`` for the judged round."""
        row = {
            "rolloutId": judged.rollout_id,
            "wave": judged.wave,
            "attempt": judged.attempt,
            "succeeded": judged.succeeded,
            "failed": judged.failed,
            "jobIds": list(judged.job_ids),
        }
        self._publisher.fire_event(
            self._gateway, ROLLOUT_WAVE_ENDED_EVENT, InfoTable(WAVE_ENDED_SHAPE, [row])
        )
