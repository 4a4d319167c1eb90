"""A wave's devices.jobs rows → each device's outcome, the retry round, the abort decision.

Rows are read by the agent's own reader (``DeviceJobResult.from_json``) from JSON shaped as
IoT Hub's ``devices.jobs`` rows (reference/iothub.md §3.5), as the engine will hand them over.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.iothub.models import DeviceJobResult
from rollouts import DeviceOutcome, RolloutPlan, classify, exceeds_threshold, judge_wave

ENDED = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
Out = DeviceOutcome


def row(device_id: str, status: str, **extra: Any) -> DeviceJobResult:
    doc: dict[str, Any] = {"deviceId": device_id, "jobId": "r-w1-a1-p1", "status": status}
    if "code" in extra:
        doc["error"] = {"code": extra["code"], "description": f"{extra['code']}: text"}
    if "answer" in extra:
        doc["outcome"] = {"deviceMethodResponse": {"status": extra["answer"], "payload": {}}}
    return DeviceJobResult.from_json(doc)


@pytest.mark.parametrize(
    ("result", "method", "outcome"),
    [
        (row("d", "completed"), False, Out.SUCCEEDED),
        (row("d", "completed", answer=200), True, Out.SUCCEEDED),
        (row("d", "completed", answer=204), True, Out.SUCCEEDED),
        (row("d", "completed", answer=500), True, Out.FAILED_DEVICE_ERROR),
        (row("d", "completed", answer=404), True, Out.FAILED_DEVICE_ERROR),
        (row("d", "completed"), True, Out.FAILED_FINAL),  # a method row with no answer
        (row("d", "failed", code="DeviceNotOnline"), True, Out.FAILED_RETRYABLE),
        (row("d", "failed", code="404103"), True, Out.FAILED_RETRYABLE),
        (row("d", "failed", code="GatewayTimeout"), True, Out.FAILED_RETRYABLE),
        (row("d", "failed", code="504101"), True, Out.FAILED_RETRYABLE),
        (row("d", "failed", code="JobRunPreconditionFailed"), True, Out.FAILED_RETRYABLE),
        (row("d", "failed", code="ThrottlingException"), False, Out.FAILED_RETRYABLE),
        (row("d", "failed", code="429001"), False, Out.FAILED_RETRYABLE),
        (row("d", "failed", code="DeviceNotFound"), True, Out.FAILED_FINAL),
        (row("d", "failed", code="PreconditionFailed"), False, Out.FAILED_FINAL),
        (row("d", "failed"), False, Out.FAILED_FINAL),
        (row("d", "canceled"), True, Out.NOT_RUN),
        (row("d", "pending"), True, Out.NOT_RUN),
        (row("d", "running"), False, Out.NOT_RUN),
    ],
)
def test_classify(result: DeviceJobResult, method: bool, outcome: DeviceOutcome) -> None:
    assert classify(result, method=method) is outcome


def test_threshold_is_strictly_above_and_exact() -> None:
    assert not exceeds_threshold(1, 10, 10)
    assert exceeds_threshold(2, 10, 10)
    assert not exceeds_threshold(1, 3, 33.34)
    assert exceeds_threshold(1, 3, 33.33)
    assert not exceeds_threshold(10, 10, 100)
    assert exceeds_threshold(1, 1000, 0)
    assert not exceeds_threshold(0, 0, 0)


def test_a_first_wave_with_offline_devices_over_the_threshold_aborts() -> None:
    members = [f"d{i}" for i in range(10)]
    rows = [row(d, "completed", answer=200) for d in members[:7]]
    rows += [row(d, "failed", code="DeviceNotOnline") for d in members[7:]]
    plan = RolloutPlan(max_failure_percent=20, retries=3)
    verdict = judge_wave(members, rows, plan=plan, method=True, wave=1, attempt=1, ended_at=ENDED)
    assert verdict.abort
    assert verdict.abort_reason == (
        "wave 1: 3 of 10 devices failed (30.0 %), above maxFailurePercent 20 %"
    )
    assert verdict.retry is None  # an aborted rollout runs nothing more
    assert verdict.succeeded == tuple(members[:7])
    kept = judge_wave(
        members,
        rows,
        plan=RolloutPlan(max_failure_percent=30, retries=3),
        method=True,
        wave=1,
        attempt=1,
        ended_at=ENDED,
    )
    assert not kept.abort


def test_retryable_devices_come_back_after_the_delay_until_retries_are_used() -> None:
    plan = RolloutPlan(retries=2, retry_delay_seconds=300)
    members = ["on", "off", "broken", "gone"]
    rows = [
        row("on", "completed", answer=200),
        row("off", "failed", code="JobRunPreconditionFailed"),
        row("broken", "completed", answer=500),
    ]
    first = judge_wave(members, rows, plan=plan, method=True, wave=4, attempt=1, ended_at=ENDED)
    assert first.outcomes == {
        "on": Out.SUCCEEDED,
        "off": Out.FAILED_RETRYABLE,
        "broken": Out.FAILED_DEVICE_ERROR,
        "gone": Out.FAILED_FINAL,
    }
    assert first.missing == ("gone",)
    assert first.failed == ("broken", "gone")  # device errors are not retried unless asked
    assert first.retry is not None
    assert (first.retry.wave, first.retry.attempt, first.retry.device_ids) == (4, 2, ("off",))
    assert first.retry.not_before == ENDED + timedelta(seconds=300)
    assert first.attempts == {"on": 1, "off": 1, "broken": 1, "gone": 1}
    # Second and third attempts: still offline; after 1 + retries attempts it fails for good.
    again = [row("off", "failed", code="404103")]
    verdicts = [first]
    for attempt in (2, 3):
        verdicts.append(
            judge_wave(
                ["off"],
                again,
                plan=plan,
                method=True,
                wave=4,
                attempt=attempt,
                ended_at=ENDED,
                attempts=verdicts[-1].attempts,
            )
        )
    second, third = verdicts[1:]
    assert second.retry is not None and second.retry.device_ids == ("off",)
    assert third.attempts == {"off": 3}
    assert third.retry is None
    assert third.failed == ("off",)


def test_retry_rounds_are_not_judged_against_the_threshold() -> None:
    plan = RolloutPlan(max_failure_percent=0, retries=1)
    rows = [row("off", "failed", code="DeviceNotOnline")]
    verdict = judge_wave(["off"], rows, plan=plan, method=True, wave=2, attempt=2, ended_at=ENDED)
    assert not verdict.abort


def test_device_errors_are_retried_when_asked() -> None:
    plan = RolloutPlan(retries=1, retry_device_errors=True)
    rows = [row("broken", "completed", answer=503)]
    verdict = judge_wave(
        ["broken"], rows, plan=plan, method=True, wave=1, attempt=1, ended_at=ENDED
    )
    assert verdict.retry is not None and verdict.retry.device_ids == ("broken",)


def test_devices_the_job_never_reached_run_again_without_using_an_attempt() -> None:
    plan = RolloutPlan(retries=0, max_failure_percent=0)
    rows = [row("a", "completed"), row("b", "canceled"), row("c", "pending")]
    verdict = judge_wave(
        ["a", "b", "c"],
        rows,
        plan=plan,
        method=False,
        wave=1,
        attempt=1,
        ended_at=ENDED,
        attempts={"b": 0, "c": 0},
    )
    assert (verdict.ran, verdict.failed_count, verdict.abort) == (1, 0, False)
    assert verdict.attempts == {"a": 1, "b": 0, "c": 0}
    assert verdict.retry is not None and verdict.retry.device_ids == ("b", "c")


@given(
    outcomes=st.lists(
        st.sampled_from(["ok", "offline", "error", "final", "notrun", "missing"]), max_size=60
    ),
    retries=st.integers(0, 3),
    before=st.integers(0, 3),
    percent=st.floats(0, 100),
)
def test_every_member_gets_exactly_one_fate(
    outcomes: list[str], retries: int, before: int, percent: float
) -> None:
    members = [f"d{i}" for i in range(len(outcomes))]
    make = {
        "ok": lambda d: row(d, "completed", answer=200),
        "offline": lambda d: row(d, "failed", code="DeviceNotOnline"),
        "error": lambda d: row(d, "completed", answer=500),
        "final": lambda d: row(d, "failed", code="DeviceNotFound"),
        "notrun": lambda d: row(d, "canceled"),
    }
    rows = [make[o](d) for d, o in zip(members, outcomes, strict=True) if o != "missing"]
    plan = RolloutPlan(retries=retries, max_failure_percent=percent)
    verdict = judge_wave(
        members,
        rows,
        plan=plan,
        method=True,
        wave=1,
        attempt=1,
        ended_at=ENDED,
        attempts=dict.fromkeys(members, before),
    )
    retried = set(verdict.retry.device_ids) if verdict.retry else set()
    fates = [set(verdict.succeeded), set(verdict.failed), retried]
    assert sum(len(f) for f in fates) + (
        0 if not verdict.abort else len(set(members) - set().union(*fates))
    ) == len(members)
    assert not (fates[0] & fates[1]) and not (fates[0] & fates[2]) and not (fates[1] & fates[2])
    assert verdict.ran == sum(o != "notrun" for o in outcomes)
    assert verdict.failed_count == sum(
        o in ("offline", "error", "final", "missing") for o in outcomes
    )
    for device_id in retried:
        assert verdict.attempts[device_id] <= retries or verdict.outcomes[device_id] is Out.NOT_RUN
