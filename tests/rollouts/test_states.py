"""The rollout status table: every (status, event) pair is either in the table or refused."""

from __future__ import annotations

import itertools

import pytest

from rollouts import IllegalTransitionError, Request, RolloutEvent, RolloutState, RolloutStatus
from rollouts.states import TERMINAL, TRANSITIONS, transition

S = RolloutStatus
E = RolloutEvent


@pytest.mark.parametrize(("status", "event"), list(itertools.product(S, E)))
def test_every_pair_is_either_in_the_table_or_refused(status: S, event: E) -> None:
    state = RolloutState(status)
    if (status, event) in TRANSITIONS and not (status is S.RUNNING and event is E.RESUME_REQUESTED):
        assert transition(state, event).status is TRANSITIONS[(status, event)]
    else:
        with pytest.raises(IllegalTransitionError, match=f"^a {status.value} rollout cannot"):
            transition(state, event)


def test_terminal_statuses_take_no_event() -> None:
    assert {s for s in S if s.is_terminal} == TERMINAL
    assert not any(status in TERMINAL for status, _ in TRANSITIONS)
    with pytest.raises(IllegalTransitionError, match="cannot take cancelRequested: it has ended"):
        transition(RolloutState(S.COMPLETED), E.CANCEL_REQUESTED)


def _run(*events: E, start: RolloutState | None = None) -> RolloutState:
    state = start or RolloutState()
    for event in events:
        state = transition(state, event)
    return state


def test_a_rollout_runs_its_waves_to_completion() -> None:
    state = _run(E.WAVE_ADMITTED, E.WAVE_ENDED, E.WAVE_ADMITTED)
    assert state == RolloutState(S.RUNNING)
    assert _run(E.ALL_DEVICES_DONE, start=state).status is S.COMPLETED
    assert _run(E.ALL_DEVICES_DONE).status is S.COMPLETED  # nothing to run


def test_pause_and_cancel_wait_for_the_wave_boundary() -> None:
    paused = _run(E.WAVE_ADMITTED, E.PAUSE_REQUESTED)
    assert paused == RolloutState(S.RUNNING, Request.PAUSE)  # the wave goes on
    assert _run(E.WAVE_ENDED, start=paused).status is S.PAUSED
    assert _run(E.WAVE_ENDED, E.RESUME_REQUESTED, E.WAVE_ADMITTED, start=paused).status is (
        S.RUNNING
    )
    withdrawn = _run(E.RESUME_REQUESTED, start=paused)
    assert withdrawn == RolloutState(S.RUNNING)
    assert _run(E.WAVE_ENDED, start=withdrawn).status is S.QUEUED
    cancelling = _run(E.CANCEL_REQUESTED, start=paused)  # a cancel replaces the pause
    assert cancelling.requested is Request.CANCEL
    assert _run(E.WAVE_ENDED, start=cancelling).status is S.CANCELLED
    with pytest.raises(IllegalTransitionError, match="a cancel is already pending"):
        transition(cancelling, E.PAUSE_REQUESTED)
    with pytest.raises(IllegalTransitionError, match="no pause is pending"):
        transition(cancelling, E.RESUME_REQUESTED)


def test_a_wave_that_ends_the_rollout_wins_over_a_pending_request() -> None:
    for request in (E.PAUSE_REQUESTED, E.CANCEL_REQUESTED):
        state = _run(E.WAVE_ADMITTED, request)
        assert _run(E.ALL_DEVICES_DONE, start=state).status is S.COMPLETED
        assert _run(E.THRESHOLD_EXCEEDED, start=state).status is S.ABORTED
        assert _run(E.UNRECOVERABLE_ERROR, start=state).status is S.FAILED


def test_requests_apply_at_once_between_waves() -> None:
    assert _run(E.PAUSE_REQUESTED).status is S.PAUSED
    assert _run(E.CANCEL_REQUESTED).status is S.CANCELLED
    assert _run(E.PAUSE_REQUESTED, E.CANCEL_REQUESTED).status is S.CANCELLED
    assert _run(E.PAUSE_REQUESTED, E.RESUME_REQUESTED).status is S.QUEUED
    with pytest.raises(IllegalTransitionError):
        _run(E.PAUSE_REQUESTED, E.WAVE_ADMITTED)  # a paused rollout admits no wave
    with pytest.raises(IllegalTransitionError):
        _run(E.PAUSE_REQUESTED, E.PAUSE_REQUESTED)


def test_only_a_running_state_holds_a_request() -> None:
    with pytest.raises(ValueError, match="only a running rollout"):
        RolloutState(S.QUEUED, Request.PAUSE)
