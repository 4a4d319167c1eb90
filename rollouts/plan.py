"""A rollout's plan: its inputs, its waves, the hub jobs of each wave, and the dry-run answer.

Pure: no I/O, no clock (``now`` is passed in), no randomness.

Rules:
- Inputs keep the services' names (``waveSize``, ``growthFactor``...) in every error, one line
  naming the input, the rule and what to do. Numbers are refused outside their range, never
  clamped; booleans are not numbers.
- Waves: the first holds ``waveSize`` devices, each next one ``ceil(previous * growthFactor)``,
  capped by ``maxWaveSize``; the last holds what is left. ``growthFactor`` is read as the decimal
  it was written as (1.1 * 10 is 11, not 12), so sizes are exact. At most :data:`MAX_WAVES` waves.
- A wave runs as one or more hub jobs ("parts"), each with ``queryCondition``
  ``deviceId IN ['a', 'b', ...]``, ids in plan order, each condition at most
  :data:`MAX_CONDITION_LENGTH` characters, so that even the whole query IoT Hub builds from it
  (``SELECT * FROM devices WHERE`` + condition) stays within IoT Hub's 8,192-character limit.
  A part holds as many ids as fit (greedy, linear in the ids' total length).
- Ids are quoted as the query language writes a string constant: single quotes, with ``\\`` and
  ``'`` escaped by a backslash (IoT Hub allows ``'`` in device ids).
- Device ids given as a list must be IoT Hub device ids (1..128 ASCII letters, digits and
  ``- : . + % _ # * ? ! ( ) , = @ $ '``); duplicates are dropped (with a warning), so no device
  is sent the operation twice by one rollout.
- Wave job ids are ``<rolloutId>-w<wave>-a<attempt>-p<part>``: deterministic, at most 64
  characters of letters, digits and ``-`` (IoT Hub's job-id rule), and :func:`parse_wave_job_id`
  reads them back. A ``rolloutId`` is 1..36 letters, digits and ``-`` (a UUID fits), which
  leaves room for the suffix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

from rollouts.exceptions import PlanError
from rollouts.window import MaintenanceWindow

__all__ = [
    "DEVICE_ID_CHARS",
    "MAX_CONDITION_LENGTH",
    "MAX_DEVICES",
    "MAX_QUERY_LENGTH",
    "MAX_ROLLOUT_ID_LENGTH",
    "MAX_WAVES",
    "SAMPLE_SIZE",
    "DryRun",
    "HubTier",
    "RolloutPlan",
    "WaveJob",
    "check_device_ids",
    "check_rollout_id",
    "device_in_conditions",
    "dry_run",
    "parse_wave_job_id",
    "pause_after",
    "quote_id",
    "wave_job_id",
    "wave_jobs",
    "wave_seconds",
]

MAX_QUERY_LENGTH = 8192
"""IoT Hub's limit on a query's length, in characters (reference/iothub.md §3.3)."""
_QUERY_PREFIX = "SELECT * FROM devices WHERE "
MAX_CONDITION_LENGTH = MAX_QUERY_LENGTH - len(_QUERY_PREFIX)
"""The longest ``queryCondition`` a wave job gets: 8,164 characters."""
MAX_JOB_ID_LENGTH = 64
MAX_ROLLOUT_ID_LENGTH = 36
MAX_DEVICE_ID_LENGTH = 128
MAX_DEVICES = 1_000_000
"""The most devices one rollout may target."""
MAX_WAVES = 10_000
"""The most waves one plan may have (each is at least one hub job and one stored record)."""
SAMPLE_SIZE = 20
LONG_WAVE_SECONDS = 3600
"""A wave whose device operations take longer than this (at the tier's pace) gets a warning: it
could not be stopped for that long."""

DEVICE_ID_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-:.+%_#*?!(),=@$'"
)
"""The characters IoT Hub allows in a device id (reference/iothub.md; up to 128 of them)."""
_DEVICE_ID = re.compile(r"[A-Za-z0-9\-:.+%_#*?!(),=@$']{1,128}")
_ROLLOUT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")
_WAVE_JOB_ID = re.compile(
    r"(?P<rollout>[A-Za-z0-9-]+)-w(?P<wave>[1-9][0-9]*)"
    r"-a(?P<attempt>[1-9][0-9]*)-p(?P<part>[1-9][0-9]*)"
)
_IN_PREFIX = "deviceId IN ["
_IN_SUFFIX = "]"
_SEPARATOR = ", "

# Ranges of the numeric inputs: (lowest, highest), both allowed.
WAVE_SIZE_RANGE = (1, MAX_DEVICES)
GROWTH_FACTOR_RANGE = (1.0, 10.0)
MAX_FAILURE_PERCENT_RANGE = (0.0, 100.0)
RETRIES_RANGE = (0, 10)
RETRY_DELAY_RANGE = (0, 7 * 24 * 3600)
PAUSE_RANGE = (0, 7 * 24 * 3600)
PRIORITY_RANGE = (1, 1000)


# --------------------------------------------------------------------------------------------
# Inputs


def _integer(name: str, value: Any, bounds: tuple[int, int]) -> int:
    """An INTEGER input: an int, or an integral NUMBER (ThingWorx sends 10.0), within bounds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlanError(f"input {name} must be a whole number, not {type(value).__name__}")
    if isinstance(value, float) and not value.is_integer():
        raise PlanError(f"input {name} must be a whole number, not {value}")
    number = int(value)
    low, high = bounds
    if not low <= number <= high:
        raise PlanError(f"input {name} is {number}; it must be between {low:,} and {high:,}")
    return number


def _number(name: str, value: Any, bounds: tuple[float, float]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlanError(f"input {name} must be a number, not {type(value).__name__}")
    low, high = bounds
    if not low <= value <= high:  # also refuses NaN
        raise PlanError(f"input {name} is {value}; it must be between {low:g} and {high:g}")
    return float(value)


@dataclass(frozen=True)
class RolloutPlan:
    """How a rollout is cut into waves and how it reacts to failures (validated on creation).

    Attributes:
        wave_size: ``waveSize``, devices in the first wave (1..1,000,000).
        growth_factor: ``growthFactor``, each wave's size over the previous one (1 = fixed
            size, up to 10).
        max_wave_size: ``maxWaveSize``, the cap on any wave (≥ ``waveSize``); None for none.
        max_failure_percent: ``maxFailurePercent``, the share of failed devices in a finished
            wave above which the rollout is aborted (0..100; 100 never aborts).
        retries: ``retries``, how many more times a device that failed for a retryable reason
            is tried (0..10).
        retry_delay_seconds: ``retryDelaySeconds``, the least time between a wave's end and its
            retry wave (0 .. 7 days).
        retry_device_errors: ``retryDeviceErrors``, also retry devices that answered with an
            error status.
        pause_between_waves_seconds: ``pauseBetweenWavesSeconds`` (0 .. 7 days).
        priority: ``priority``, 1 (first) .. 1000 (last), ThingWorx SCM's convention; rollouts
            of equal priority are admitted oldest first.
        start_time: ``startTime`` (timezone-aware), or None for now.
        window: the daily maintenance window (``windowStart``/``windowEnd``), or None.
    """

    wave_size: int = 100
    growth_factor: float = 1.0
    max_wave_size: int | None = None
    max_failure_percent: float = 100.0
    retries: int = 0
    retry_delay_seconds: int = 60
    retry_device_errors: bool = False
    pause_between_waves_seconds: int = 0
    priority: int = 500
    start_time: datetime | None = None
    window: MaintenanceWindow | None = None
    _growth: Fraction = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fix = object.__setattr__  # frozen: store the normalised values (10.0 → 10)
        fix(self, "wave_size", _integer("waveSize", self.wave_size, WAVE_SIZE_RANGE))
        fix(self, "growth_factor", _number("growthFactor", self.growth_factor, GROWTH_FACTOR_RANGE))
        if self.max_wave_size is not None:
            fix(self, "max_wave_size", _integer("maxWaveSize", self.max_wave_size, WAVE_SIZE_RANGE))
            if self.max_wave_size < self.wave_size:
                raise PlanError(
                    f"input maxWaveSize {self.max_wave_size:,} is below waveSize "
                    f"{self.wave_size:,}: raise maxWaveSize or lower waveSize"
                )
        percent = _number("maxFailurePercent", self.max_failure_percent, MAX_FAILURE_PERCENT_RANGE)
        fix(self, "max_failure_percent", percent)
        fix(self, "retries", _integer("retries", self.retries, RETRIES_RANGE))
        delay = _integer("retryDelaySeconds", self.retry_delay_seconds, RETRY_DELAY_RANGE)
        fix(self, "retry_delay_seconds", delay)
        if not isinstance(self.retry_device_errors, bool):
            raise PlanError("input retryDeviceErrors must be true or false")
        pause = _integer("pauseBetweenWavesSeconds", self.pause_between_waves_seconds, PAUSE_RANGE)
        fix(self, "pause_between_waves_seconds", pause)
        fix(self, "priority", _integer("priority", self.priority, PRIORITY_RANGE))
        if self.start_time is not None and (
            not isinstance(self.start_time, datetime) or self.start_time.tzinfo is None
        ):
            raise PlanError("input startTime must be a date and time with a time zone (UTC)")
        # The decimal the user wrote (1.1 is 11/10, not the float just above it).
        object.__setattr__(self, "_growth", Fraction(repr(float(self.growth_factor))))

    @classmethod
    def from_inputs(cls, inputs: Mapping[str, Any]) -> RolloutPlan:
        """Build a plan from the services' inputs (``waveSize``...); absent or None = default.

        Integral NUMBERs are accepted for INTEGER inputs (ThingWorx sends ``10.0``).

        Raises:
            PlanError: an input breaks its rule.
        """
        names = {
            "waveSize": "wave_size",
            "growthFactor": "growth_factor",
            "maxWaveSize": "max_wave_size",
            "maxFailurePercent": "max_failure_percent",
            "retries": "retries",
            "retryDelaySeconds": "retry_delay_seconds",
            "retryDeviceErrors": "retry_device_errors",
            "pauseBetweenWavesSeconds": "pause_between_waves_seconds",
            "priority": "priority",
            "startTime": "start_time",
        }
        integers = {
            "waveSize": WAVE_SIZE_RANGE,
            "maxWaveSize": WAVE_SIZE_RANGE,
            "retries": RETRIES_RANGE,
            "retryDelaySeconds": RETRY_DELAY_RANGE,
            "pauseBetweenWavesSeconds": PAUSE_RANGE,
            "priority": PRIORITY_RANGE,
        }
        kwargs: dict[str, Any] = {}
        for name, attribute in names.items():
            value = inputs.get(name)
            if value is None:
                continue
            if name in integers:
                value = _integer(name, value, integers[name])
            kwargs[attribute] = value
        window_start, window_end = inputs.get("windowStart"), inputs.get("windowEnd")
        for name, value in (("windowStart", window_start), ("windowEnd", window_end)):
            if value is not None and not isinstance(value, str):
                raise PlanError(f"input {name} must be a text HH:MM (UTC)")
        kwargs["window"] = MaintenanceWindow.parse(window_start, window_end)
        return cls(**kwargs)

    def wave_sizes(self, device_count: int) -> list[int]:
        """The size of every wave for ``device_count`` devices (empty for none).

        Raises:
            PlanError: the plan would make more than :data:`MAX_WAVES` waves.
        """
        sizes: list[int] = []
        cap = self.max_wave_size if self.max_wave_size is not None else MAX_DEVICES
        size, left = min(self.wave_size, cap), device_count
        while left > 0:
            if len(sizes) == MAX_WAVES:
                raise PlanError(
                    f"the plan cuts {device_count:,} devices into more than {MAX_WAVES:,} waves: "
                    "raise waveSize, growthFactor or maxWaveSize"
                )
            sizes.append(min(size, left))
            left -= sizes[-1]
            size = min(cap, math.ceil(size * self._growth))
        return sizes

    def waves(self, device_ids: Sequence[str]) -> list[Sequence[str]]:
        """``device_ids`` cut into waves, in order (slices, no copy of the ids)."""
        waves: list[Sequence[str]] = []
        start = 0
        for size in self.wave_sizes(len(device_ids)):
            waves.append(device_ids[start : start + size])
            start += size
        return waves


# --------------------------------------------------------------------------------------------
# Device ids, conditions, job ids


def check_device_ids(ids: Iterable[Any]) -> tuple[list[str], list[str]]:
    """The ``devices`` input: IoT Hub device ids, duplicates dropped, in their first order.

    Returns:
        The ids and the warnings (how many duplicates were dropped).

    Raises:
        PlanError: an item is not a string, not a valid device id, or there are more than
            :data:`MAX_DEVICES`.
    """
    unique: dict[str, None] = {}
    given = 0
    fullmatch = _DEVICE_ID.fullmatch
    for given, device_id in enumerate(ids, start=1):
        if not isinstance(device_id, str) or fullmatch(device_id) is None:
            shown = repr(device_id)[:60] if isinstance(device_id, str) else type(device_id).__name__
            raise PlanError(
                f"input devices item {given} ({shown}) is not an IoT Hub device id: 1..128 ASCII "
                "letters, digits and - : . + % _ # * ? ! ( ) , = @ $ '"
            )
        unique[device_id] = None
        if len(unique) > MAX_DEVICES:
            raise PlanError(
                f"input devices holds more than {MAX_DEVICES:,} device ids: split the rollout"
            )
    warnings = []
    if given > len(unique):
        warnings.append(
            f"{given - len(unique):,} duplicate device ids were dropped; each device is sent "
            "the operation once"
        )
    return list(unique), warnings


def quote_id(device_id: str) -> str:
    """``device_id`` as a single-quoted string constant of IoT Hub's query language."""
    if "'" in device_id or "\\" in device_id:
        device_id = device_id.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{device_id}'"


def device_in_conditions(
    device_ids: Iterable[str], limit: int = MAX_CONDITION_LENGTH
) -> list[tuple[str, int]]:
    """``deviceId IN [...]`` conditions selecting ``device_ids``, each at most ``limit`` long.

    Greedy: each condition takes as many ids, in order, as fit. Linear in the ids' total length.

    Args:
        device_ids: the ids, in order (none may be empty).
        limit: the longest condition allowed, in characters.

    Returns:
        ``(condition, how many ids it holds)`` for each condition, in order.

    Raises:
        ValueError: one id alone does not fit in ``limit``.
    """
    fixed = len(_IN_PREFIX) + len(_IN_SUFFIX)
    conditions: list[tuple[str, int]] = []
    part: list[str] = []
    length = fixed
    for device_id in device_ids:
        quoted = quote_id(device_id)
        extra = len(quoted) + (len(_SEPARATOR) if part else 0)
        if length + extra > limit:
            if not part:
                raise ValueError(f"device id {device_id[:40]!r}... does not fit in {limit} chars")
            conditions.append((_IN_PREFIX + _SEPARATOR.join(part) + _IN_SUFFIX, len(part)))
            part, length = [], fixed
            extra = len(quoted)
            if length + extra > limit:
                raise ValueError(f"device id {device_id[:40]!r}... does not fit in {limit} chars")
        part.append(quoted)
        length += extra
    if part:
        conditions.append((_IN_PREFIX + _SEPARATOR.join(part) + _IN_SUFFIX, len(part)))
    return conditions


def check_rollout_id(value: str) -> str:
    """``rolloutId``: 1..36 ASCII letters, digits and ``-`` (room for the wave job suffix).

    Raises:
        PlanError: the id breaks the rule.
    """
    if not isinstance(value, str) or _ROLLOUT_ID.fullmatch(value) is None:
        shown = repr(value)[:60] if isinstance(value, str) else type(value).__name__
        raise PlanError(
            f"input rolloutId {shown} must be 1..{MAX_ROLLOUT_ID_LENGTH} ASCII letters, digits "
            "and '-' (its waves' hub job ids add a suffix within IoT Hub's 64); leave it out to "
            "get a new id"
        )
    return value


def wave_job_id(rollout_id: str, wave: int, attempt: int, part: int) -> str:
    """The hub job id of one part of one attempt of one wave: ``<rolloutId>-w3-a1-p2``.

    Args:
        rollout_id: a valid ``rolloutId`` (see :func:`check_rollout_id`).
        wave: the wave's number, from 1.
        attempt: the wave's hub-job round, from 1 (retry waves count up).
        part: the part of that round, from 1 (a wave whose IN list is split).

    Raises:
        ValueError: a number is below 1, the rollout id is invalid, or the id would exceed 64.
    """
    check_rollout_id(rollout_id)
    if min(wave, attempt, part) < 1:
        raise ValueError("wave, attempt and part count from 1")
    job_id = f"{rollout_id}-w{wave}-a{attempt}-p{part}"
    if len(job_id) > MAX_JOB_ID_LENGTH:
        raise ValueError(f"wave job id {job_id!r} is longer than {MAX_JOB_ID_LENGTH} characters")
    return job_id


def parse_wave_job_id(job_id: str) -> tuple[str, int, int, int] | None:
    """Read ``(rolloutId, wave, attempt, part)`` back from a wave job id; None if it is not one."""
    match = _WAVE_JOB_ID.fullmatch(job_id)
    if match is None or len(job_id) > MAX_JOB_ID_LENGTH or len(match["rollout"]) > 36:
        return None
    return match["rollout"], int(match["wave"]), int(match["attempt"]), int(match["part"])


@dataclass(frozen=True, slots=True)
class WaveJob:
    """One hub job of a wave: its id, its ``queryCondition`` and the ids it selects."""

    job_id: str
    query_condition: str
    device_ids: tuple[str, ...]


def wave_jobs(rollout_id: str, wave: int, attempt: int, device_ids: Sequence[str]) -> list[WaveJob]:
    """The hub jobs that run ``device_ids`` as ``wave``'s ``attempt`` (parts numbered from 1).

    Returns:
        One job per condition of :func:`device_in_conditions`; none for no ids.
    """
    jobs: list[WaveJob] = []
    start = 0
    for part, (condition, count) in enumerate(device_in_conditions(device_ids), start=1):
        ids = tuple(device_ids[start : start + count])
        jobs.append(WaveJob(wave_job_id(rollout_id, wave, attempt, part), condition, ids))
        start += count
    return jobs


# --------------------------------------------------------------------------------------------
# Tiers and the dry run


@dataclass(frozen=True, slots=True)
class HubTier:
    """What a hub's tier allows jobs (reference/iothub.md §3.8: Microsoft's quotas page).

    Attributes:
        name: ``F1``, ``S1``, ``S2`` or ``S3``.
        units: how many units the hub has (1..200).
    """

    name: str = "S1"
    units: int = 1

    def __post_init__(self) -> None:
        if self.name not in ("F1", "S1", "S2", "S3"):
            raise ValueError(f"IoT Hub tier {self.name!r} is not one of F1, S1, S2, S3")
        if not 1 <= self.units <= 200:
            raise ValueError(f"an IoT Hub has 1..200 units, not {self.units}")

    @property
    def max_concurrent_jobs(self) -> int:
        """Jobs queued or running at once: 1 on F1/S1, 5 on S2, 10 on S3 (429004 beyond)."""
        return {"F1": 1, "S1": 1, "S2": 5, "S3": 10}[self.name]

    @property
    def device_ops_per_second(self) -> float:
        """Job device operations (twin updates, method calls) per second, hub-wide: 10 on F1
        and S1, max(10, 1 per unit) on S2, 50 per unit on S3."""
        if self.name == "S3":
            return 50.0 * self.units
        if self.name == "S2":
            return float(max(10, self.units))
        return 10.0


def wave_seconds(size: int, parts: int, tier: HubTier, method_timeout_seconds: int) -> int:
    """How long a wave of ``size`` devices in ``parts`` hub jobs takes, at most, on ``tier``.

    The device operations go at the tier's pace (hub-wide, whatever the number of jobs); each
    round of parts that runs together (``max_concurrent_jobs`` at a time) may wait up to
    ``method_timeout_seconds`` (connect + response timeouts) on its last device.
    """
    operations = math.ceil(size / tier.device_ops_per_second)
    rounds = math.ceil(parts / tier.max_concurrent_jobs)
    return operations + rounds * method_timeout_seconds


@dataclass(frozen=True)
class DryRun:
    """The answer of ``AzureIotDeviceJobPlanRollout`` (one row; nothing is created).

    Attributes:
        valid: True when starting the rollout would do something (at least one device).
        device_count: ``deviceCount``, devices targeted (duplicates dropped).
        sample: ``sample``, the first 20 of them in plan order.
        wave_sizes: ``waveSizes``; ``waveCount`` is its length.
        job_counts: hub jobs per wave (more than one where an IN list is split).
        estimated_duration_seconds: ``estimatedDurationSeconds``, first wave to last, without
            retries and without waiting for ``startTime``, a hub job slot or the window.
        warnings: ``warnings``, one line each.
    """

    valid: bool
    device_count: int
    sample: tuple[str, ...]
    wave_sizes: tuple[int, ...]
    job_counts: tuple[int, ...]
    estimated_duration_seconds: int
    warnings: tuple[str, ...]

    @property
    def wave_count(self) -> int:
        """``waveCount``."""
        return len(self.wave_sizes)


def _when(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def dry_run(
    plan: RolloutPlan,
    device_ids: Sequence[str],
    *,
    now: datetime,
    tier: HubTier | None = None,
    method_timeout_seconds: int = 0,
    warnings: Iterable[str] = (),
) -> DryRun:
    """Plan a rollout over ``device_ids`` without creating anything.

    Args:
        plan: the validated plan.
        device_ids: the resolved target, in order, without duplicates (:func:`check_device_ids`
            or a device query's answer).
        now: the current time, to judge ``startTime``.
        tier: the hub's tier (S1 when None: the slowest pace, so the estimate is an upper bound).
        method_timeout_seconds: for a method rollout, ``connectTimeoutInSeconds`` +
            ``responseTimeoutInSeconds``; 0 for a twin rollout.
        warnings: warnings found earlier (e.g. by :func:`check_device_ids`), kept first.

    Raises:
        PlanError: the plan would make more than :data:`MAX_WAVES` waves.
    """
    hub = tier or HubTier()
    notes = list(warnings)
    sizes = plan.wave_sizes(len(device_ids))
    counts: list[int] = []
    seconds = plan.pause_between_waves_seconds * max(0, len(sizes) - 1)
    longest = (0, 0, 0)  # (seconds, wave, size)
    for wave, ids in enumerate(plan.waves(device_ids), start=1):
        parts = len(device_in_conditions(ids))
        counts.append(parts)
        wave_time = wave_seconds(len(ids), parts, hub, method_timeout_seconds)
        seconds += wave_time
        longest = max(longest, (wave_time, -wave, len(ids)))
    if not device_ids:
        notes.append("no device matches the target: the rollout would have nothing to do")
    if plan.start_time is not None and plan.start_time < now:
        notes.append(
            f"startTime {_when(plan.start_time)} is in the past: the first wave would start now"
        )
    split = sum(1 for c in counts if c > 1)
    if split:
        notes.append(
            f"{split:,} of {len(counts):,} waves run as several hub jobs: their deviceId IN "
            f"lists would exceed IoT Hub's {MAX_QUERY_LENGTH:,}-character query limit"
        )
    if longest[0] > LONG_WAVE_SECONDS:
        notes.append(
            f"wave {-longest[1]} holds {longest[2]:,} devices: at {hub.name}'s "
            f"{hub.device_ops_per_second:g} device operations/s it runs about "
            f"{longest[0] / 3600:.1f} h and cannot be stopped meanwhile; a lower maxWaveSize "
            "keeps every wave short"
        )
    if plan.retries and device_ids:
        notes.append(
            f"the estimate counts no retry waves: each adds at least retryDelaySeconds "
            f"({plan.retry_delay_seconds} s) and its devices' operations"
        )
    if plan.window is not None:
        notes.append(
            f"waves start only between {plan.window.start:%H:%M} and {plan.window.end:%H:%M} "
            "UTC: the estimate does not count the waits for the window"
        )
    return DryRun(
        valid=bool(device_ids),
        device_count=len(device_ids),
        sample=tuple(device_ids[:SAMPLE_SIZE]),
        wave_sizes=tuple(sizes),
        job_counts=tuple(counts),
        estimated_duration_seconds=seconds,
        warnings=tuple(notes),
    )


def pause_after(plan: RolloutPlan, ended_at: datetime) -> datetime:
    """When the wave after one that ended at ``ended_at`` may start (the pause between waves)."""
    return ended_at + timedelta(seconds=plan.pause_between_waves_seconds)
