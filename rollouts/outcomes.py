"""What a finished wave did, device by device, and what the rollout does next.

Input: the wave's ``devices.jobs`` rows as the agent reads them (any object with the attributes
of :class:`DeviceJobRow`, e.g. ``agent.iothub.DeviceJobResult``). The hub is the source of truth:
nothing here guesses an outcome the rows do not show.

Rules:
- ``completed`` row: succeeded; for a method rollout only when the device answered with a 2xx
  status; another status is a *device error*; no answer at all is final.
- ``failed`` row: *retryable* when the error is the device being offline or slow (``404103``
  DeviceNotOnline, ``404104`` DeviceConnectionClosedRemotely, ``504101`` GatewayTimeout,
  ``412003`` JobRunPreconditionFailed) or throttling (``429xxx``, ``Throttling...``); codes are
  recognised by number or by name. Any other error is *final*.
- ``pending``/``running``/``canceled`` rows (the hub job was cancelled or failed before reaching
  the device): *not run*; no attempt is counted and the device runs again in the next round.
- A member with no row: *final* (the wave's query did not select it: the device is gone).
- A device is retried when its failure is retryable (or a device error with
  ``retryDeviceErrors``) and it has had at most ``retries`` + 1 attempts in all.
- Abort: only a first-round wave (attempt 1) is judged. Failed devices of every kind over the
  devices that ran; the rollout aborts when that share is strictly above ``maxFailurePercent``
  (exact arithmetic: 1 of 10 with 10 % does not abort, 2 of 10 does). Retry rounds hold devices
  that already failed, so their share says nothing new about the operation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from typing import Protocol

from rollouts.plan import RolloutPlan

__all__ = [
    "RETRYABLE_CODES",
    "DeviceJobRow",
    "DeviceOutcome",
    "RetryRound",
    "WaveVerdict",
    "classify",
    "exceeds_threshold",
    "judge_wave",
]

RETRYABLE_CODES = frozenset(
    {
        "404103",
        "DeviceNotOnline",
        "404104",
        "DeviceConnectionClosedRemotely",
        "504101",
        "GatewayTimeout",
        "412003",
        "JobRunPreconditionFailed",
        "429001",
        "429002",
        "429003",
        "429004",
    }
)
"""Error codes (numbers and names) of a device that may well succeed later; besides these, any
``429…`` code and any name starting with ``Throttling`` is throttling."""


class DeviceOutcome(StrEnum):
    """How one device fared in one round of a wave."""

    SUCCEEDED = "succeeded"
    FAILED_RETRYABLE = "failedRetryable"
    FAILED_DEVICE_ERROR = "failedDeviceError"
    FAILED_FINAL = "failedFinal"
    NOT_RUN = "notRun"

    @property
    def is_failure(self) -> bool:
        """True for the three failed outcomes."""
        return self in (
            DeviceOutcome.FAILED_RETRYABLE,
            DeviceOutcome.FAILED_DEVICE_ERROR,
            DeviceOutcome.FAILED_FINAL,
        )


class DeviceJobRow(Protocol):
    """The fields of a ``devices.jobs`` row the verdict reads (read-only attributes)."""

    @property
    def device_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def error_code(self) -> str | None: ...
    @property
    def method_status(self) -> int | None: ...


def _retryable(code: str | None) -> bool:
    if not code:
        return False
    return code in RETRYABLE_CODES or code.startswith(("429", "Throttling"))


def classify(row: DeviceJobRow, *, method: bool) -> DeviceOutcome:
    """The outcome a ``devices.jobs`` row shows (see the module's rules).

    Args:
        row: the device's row in the wave's hub job.
        method: True for a method rollout, False for a twin rollout.
    """
    status = row.status.lower()
    if status == "completed":
        if not method:
            return DeviceOutcome.SUCCEEDED
        if row.method_status is None:
            return DeviceOutcome.FAILED_FINAL
        if 200 <= row.method_status <= 299:
            return DeviceOutcome.SUCCEEDED
        return DeviceOutcome.FAILED_DEVICE_ERROR
    if status == "failed":
        return (
            DeviceOutcome.FAILED_RETRYABLE
            if _retryable(row.error_code)
            else DeviceOutcome.FAILED_FINAL
        )
    return DeviceOutcome.NOT_RUN


def exceeds_threshold(failed: int, ran: int, max_failure_percent: float) -> bool:
    """Whether ``failed`` of ``ran`` devices is strictly above ``max_failure_percent`` %.

    Exact (no float rounding); a wave where no device ran never exceeds.
    """
    if ran <= 0:
        return False
    return Fraction(failed * 100, ran) > Fraction(repr(float(max_failure_percent)))


@dataclass(frozen=True, slots=True)
class RetryRound:
    """The next round of a wave: who runs again, as which attempt, and not before when."""

    wave: int
    attempt: int
    device_ids: tuple[str, ...]
    not_before: datetime


@dataclass(frozen=True)
class WaveVerdict:
    """The judgement of one finished round of a wave.

    Attributes:
        outcomes: each member's outcome in this round.
        attempts: each member's attempts so far, this round included (not-run ones unchanged).
        succeeded: members that succeeded.
        failed: members failed for good (final, device errors not retried, retries used up).
        retry: the next round of the wave, or None when no member runs again.
        missing: members the rows do not mention (counted as final failures).
        ran: members that the round reached (every outcome but not-run).
        failed_count: members of ``ran`` that failed, of any kind.
        abort_reason: one line when the rollout must abort, else None.
    """

    outcomes: Mapping[str, DeviceOutcome]
    attempts: Mapping[str, int]
    succeeded: tuple[str, ...]
    failed: tuple[str, ...]
    retry: RetryRound | None
    missing: tuple[str, ...]
    ran: int
    failed_count: int
    abort_reason: str | None

    @property
    def abort(self) -> bool:
        """True when the rollout must stop (``aborted``)."""
        return self.abort_reason is not None


def judge_wave(
    members: Sequence[str],
    rows: Iterable[DeviceJobRow],
    *,
    plan: RolloutPlan,
    method: bool,
    wave: int,
    attempt: int,
    ended_at: datetime,
    attempts: Mapping[str, int] | None = None,
) -> WaveVerdict:
    """Judge a finished round of a wave from its ``devices.jobs`` rows.

    Args:
        members: the device ids this round targeted.
        rows: the rows of this round's hub jobs (rows of other devices are ignored).
        plan: the rollout's plan (``retries``, ``retryDelaySeconds``, ``retryDeviceErrors``,
            ``maxFailurePercent``).
        method: True for a method rollout.
        wave: the wave's number.
        attempt: this round's number (1 for the wave's first hub jobs).
        ended_at: when the round's last hub job ended (the retry delay counts from here).
        attempts: each member's attempts before this round (0 when absent).

    Returns:
        The verdict: outcomes, who failed for good, the retry round, the abort decision.
    """
    before = attempts or {}
    member_set = set(members)
    by_device: dict[str, DeviceOutcome] = {}
    for row in rows:
        if row.device_id in member_set:
            by_device[row.device_id] = classify(row, method=method)
    outcomes: dict[str, DeviceOutcome] = {}
    after: dict[str, int] = {}
    succeeded: list[str] = []
    failed: list[str] = []
    again: list[str] = []
    missing: list[str] = []
    ran = failed_count = 0
    for device_id in members:
        outcome = by_device.get(device_id)
        if outcome is None:
            missing.append(device_id)
            outcome = DeviceOutcome.FAILED_FINAL
        outcomes[device_id] = outcome
        count = before.get(device_id, 0)
        if outcome is DeviceOutcome.NOT_RUN:
            after[device_id] = count
            again.append(device_id)
            continue
        count += 1
        after[device_id] = count
        ran += 1
        if outcome is DeviceOutcome.SUCCEEDED:
            succeeded.append(device_id)
            continue
        failed_count += 1
        retryable = outcome is DeviceOutcome.FAILED_RETRYABLE or (
            outcome is DeviceOutcome.FAILED_DEVICE_ERROR and plan.retry_device_errors
        )
        if retryable and count <= plan.retries:
            again.append(device_id)
        else:
            failed.append(device_id)
    abort_reason = None
    if attempt == 1 and exceeds_threshold(failed_count, ran, plan.max_failure_percent):
        abort_reason = (
            f"wave {wave}: {failed_count:,} of {ran:,} devices failed "
            f"({100 * failed_count / ran:.1f} %), above maxFailurePercent "
            f"{plan.max_failure_percent:g} %"
        )
    retry = None
    if again and abort_reason is None:
        retry = RetryRound(
            wave=wave,
            attempt=attempt + 1,
            device_ids=tuple(again),
            not_before=ended_at + timedelta(seconds=plan.retry_delay_seconds),
        )
    return WaveVerdict(
        outcomes=outcomes,
        attempts=after,
        succeeded=tuple(succeeded),
        failed=tuple(failed),
        retry=retry,
        missing=tuple(missing),
        ran=ran,
        failed_count=failed_count,
        abort_reason=abort_reason,
    )
