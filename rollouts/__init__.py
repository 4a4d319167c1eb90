"""Rollouts: staged, cancellable, self-healing device jobs built from plain IoT Hub jobs.

This package is the pure core (issue 11, first part): no asyncio, no SDK, no sockets, no SQLite,
no logging, no clock (every ``now`` is passed in). The engine, the store and the services come
on top of it (docs/rollouts.md).

Modules:
- :mod:`rollouts.plan`: the plan's inputs (:class:`RolloutPlan`), wave sizes, the
  ``deviceId IN [...]`` conditions and wave job ids, the dry run (:func:`dry_run`).
- :mod:`rollouts.states`: the status table and :func:`transition`.
- :mod:`rollouts.outcomes`: a wave's ``devices.jobs`` rows → outcomes, retries, abort.
- :mod:`rollouts.window`: the daily UTC maintenance window.
- :mod:`rollouts.exceptions`: :class:`RolloutError` and its subclasses.
"""

from __future__ import annotations

from rollouts.exceptions import IllegalTransitionError, PlanError, RolloutError
from rollouts.outcomes import (
    DeviceJobRow,
    DeviceOutcome,
    RetryRound,
    WaveVerdict,
    classify,
    exceeds_threshold,
    judge_wave,
)
from rollouts.plan import (
    DryRun,
    HubTier,
    RolloutPlan,
    WaveJob,
    check_device_ids,
    check_rollout_id,
    device_in_conditions,
    dry_run,
    parse_wave_job_id,
    quote_id,
    wave_job_id,
    wave_jobs,
)
from rollouts.states import Request, RolloutEvent, RolloutState, RolloutStatus, transition
from rollouts.window import MaintenanceWindow, earliest_wave_start

__all__ = [
    "DeviceJobRow",
    "DeviceOutcome",
    "DryRun",
    "HubTier",
    "IllegalTransitionError",
    "MaintenanceWindow",
    "PlanError",
    "Request",
    "RetryRound",
    "RolloutError",
    "RolloutEvent",
    "RolloutPlan",
    "RolloutState",
    "RolloutStatus",
    "WaveJob",
    "WaveVerdict",
    "check_device_ids",
    "check_rollout_id",
    "classify",
    "device_in_conditions",
    "dry_run",
    "earliest_wave_start",
    "exceeds_threshold",
    "judge_wave",
    "parse_wave_job_id",
    "quote_id",
    "transition",
    "wave_job_id",
    "wave_jobs",
]
