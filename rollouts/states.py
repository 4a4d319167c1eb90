"""The rollout lifecycle as an explicit transition table.

Statuses (the ``status`` of an ``AzureIotDeviceRollout`` row)::

    queued ──wave admitted──► running ──wave ended──► queued   (more waves or retries to go)
      │  ▲                       │ ├──all devices done──► completed
      │  └──resume── paused ◄────┤ ├──threshold exceeded─► aborted
      │              ▲    │      │ └──(a pause/cancel request pending at the wave's end)
      ├──pause───────┘    └──cancel──► cancelled ◄──cancel──┘
      └──all devices done──► completed  (nothing left, e.g. no device)
    queued, running, paused ──unrecoverable error──► failed

``queued`` means "no hub job of the rollout is in flight; the next one waits" (for a free job
slot, ``startTime``, the pause between waves, a retry delay or the maintenance window).

Rules:
- Every status change goes through :func:`transition`, which raises
  :class:`~rollouts.exceptions.IllegalTransitionError` for anything :data:`TRANSITIONS` does not
  list; a terminal status (completed, aborted, cancelled, failed) accepts no event.
- Pause and cancel take effect at the next wave boundary: while a wave runs they are recorded
  as the state's ``requested`` and applied when the wave ends with more to do (a wave that ends
  the rollout completes or aborts it whatever was requested). A cancel replaces a pending pause;
  a resume withdraws a pending pause. While no wave runs (queued) they apply at once.
- The engine also cancels the wave's hub job when a cancel arrives before the job runs (IoT Hub
  refuses to cancel a running job); the wave then ends with its devices not run.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from rollouts.exceptions import IllegalTransitionError

__all__ = [
    "TERMINAL",
    "TRANSITIONS",
    "Request",
    "RolloutEvent",
    "RolloutState",
    "RolloutStatus",
    "transition",
]


class RolloutStatus(StrEnum):
    """A rollout's status, as the services show it."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        """True for completed, aborted, cancelled and failed."""
        return self in TERMINAL


class RolloutEvent(StrEnum):
    """What moves a rollout."""

    WAVE_ADMITTED = "waveAdmitted"
    """The next wave's hub job got a slot and was created."""
    WAVE_ENDED = "waveEnded"
    """The wave's hub jobs ended; devices or retries remain."""
    ALL_DEVICES_DONE = "allDevicesDone"
    """Every device succeeded or failed for good: nothing is left to run."""
    THRESHOLD_EXCEEDED = "thresholdExceeded"
    """The finished wave's failed share exceeded ``maxFailurePercent``."""
    PAUSE_REQUESTED = "pauseRequested"
    RESUME_REQUESTED = "resumeRequested"
    CANCEL_REQUESTED = "cancelRequested"
    UNRECOVERABLE_ERROR = "unrecoverableError"
    """The rollout cannot go on (e.g. the hub refuses its jobs for good)."""


class Request(StrEnum):
    """A pause or cancel waiting for the running wave to end."""

    PAUSE = "pause"
    CANCEL = "cancel"


TERMINAL = frozenset(
    {
        RolloutStatus.COMPLETED,
        RolloutStatus.ABORTED,
        RolloutStatus.CANCELLED,
        RolloutStatus.FAILED,
    }
)

_Q, _R, _P = RolloutStatus.QUEUED, RolloutStatus.RUNNING, RolloutStatus.PAUSED
_E = RolloutEvent

TRANSITIONS: dict[tuple[RolloutStatus, RolloutEvent], RolloutStatus] = {
    (_Q, _E.WAVE_ADMITTED): _R,
    (_Q, _E.ALL_DEVICES_DONE): RolloutStatus.COMPLETED,
    (_Q, _E.PAUSE_REQUESTED): _P,
    (_Q, _E.CANCEL_REQUESTED): RolloutStatus.CANCELLED,
    (_Q, _E.UNRECOVERABLE_ERROR): RolloutStatus.FAILED,
    (_R, _E.WAVE_ENDED): _Q,  # or the pending request's status
    (_R, _E.ALL_DEVICES_DONE): RolloutStatus.COMPLETED,
    (_R, _E.THRESHOLD_EXCEEDED): RolloutStatus.ABORTED,
    (_R, _E.PAUSE_REQUESTED): _R,  # recorded, applied at the wave's end
    (_R, _E.RESUME_REQUESTED): _R,  # only withdraws a pending pause
    (_R, _E.CANCEL_REQUESTED): _R,  # recorded, applied at the wave's end
    (_R, _E.UNRECOVERABLE_ERROR): RolloutStatus.FAILED,
    (_P, _E.RESUME_REQUESTED): _Q,
    (_P, _E.CANCEL_REQUESTED): RolloutStatus.CANCELLED,
    (_P, _E.UNRECOVERABLE_ERROR): RolloutStatus.FAILED,
}
"""``TRANSITIONS[(status, event)]`` is the status the event leads to; a missing key is illegal."""

_AT_BOUNDARY = {Request.PAUSE: _P, Request.CANCEL: RolloutStatus.CANCELLED}
_REQUEST_OF = {_E.PAUSE_REQUESTED: Request.PAUSE, _E.CANCEL_REQUESTED: Request.CANCEL}


@dataclass(frozen=True, slots=True)
class RolloutState:
    """A rollout's status and the request waiting for the running wave's end.

    Attributes:
        status: the status shown.
        requested: a pause or cancel asked for while a wave runs, or None.
    """

    status: RolloutStatus = RolloutStatus.QUEUED
    requested: Request | None = None

    def __post_init__(self) -> None:
        if self.requested is not None and self.status is not RolloutStatus.RUNNING:
            raise ValueError("only a running rollout has a request pending")


def _refuse(state: RolloutState, event: RolloutEvent, why: str) -> IllegalTransitionError:
    return IllegalTransitionError(
        f"a {state.status.value} rollout cannot take {event.value}: {why}"
    )


def transition(state: RolloutState, event: RolloutEvent) -> RolloutState:
    """Apply ``event`` to ``state`` following :data:`TRANSITIONS`.

    Args:
        state: the rollout's current state.
        event: what happened.

    Returns:
        The new state.

    Raises:
        IllegalTransitionError: the table does not allow ``event`` in ``state`` (including a
            resume of a running rollout with no pause pending, or a pause after a cancel).
    """
    target = TRANSITIONS.get((state.status, event))
    if target is None:
        if state.status.is_terminal:
            raise _refuse(state, event, "it has ended")
        raise _refuse(state, event, "the transition table does not allow it")
    if state.status is not RolloutStatus.RUNNING:
        return RolloutState(target)
    # Running: requests wait for the wave boundary.
    if event in _REQUEST_OF:
        request = _REQUEST_OF[event]
        if state.requested is Request.CANCEL and request is Request.PAUSE:
            raise _refuse(state, event, "a cancel is already pending")
        return RolloutState(_R, request)
    if event is _E.RESUME_REQUESTED:
        if state.requested is not Request.PAUSE:
            raise _refuse(state, event, "it is not paused and no pause is pending")
        return RolloutState(_R)
    if event is _E.WAVE_ENDED and state.requested is not None:
        return RolloutState(_AT_BOUNDARY[state.requested])
    return RolloutState(target)
