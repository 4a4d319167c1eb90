"""The plan: inputs and their rules, wave sizes, IN-list splitting, wave job ids, the dry run."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iothub_query import parse_condition, parse_query
from rollouts import HubTier, MaintenanceWindow, PlanError, RolloutPlan, dry_run
from rollouts.plan import (
    DEVICE_ID_CHARS,
    MAX_CONDITION_LENGTH,
    MAX_QUERY_LENGTH,
    MAX_WAVES,
    check_device_ids,
    check_rollout_id,
    device_in_conditions,
    parse_wave_job_id,
    quote_id,
    wave_job_id,
    wave_jobs,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
device_ids = st.text(alphabet=sorted(DEVICE_ID_CHARS), min_size=1, max_size=128)


# ---- inputs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"waveSize": 0}, "input waveSize is 0; it must be between 1 and 1,000,000"),
        ({"waveSize": 2.5}, "input waveSize must be a whole number, not 2.5"),
        ({"waveSize": True}, "input waveSize must be a whole number, not bool"),
        ({"waveSize": "10"}, "input waveSize must be a whole number, not str"),
        ({"growthFactor": 0.5}, "input growthFactor is 0.5; it must be between 1 and 10"),
        ({"growthFactor": float("nan")}, "input growthFactor is nan"),
        ({"waveSize": 50, "maxWaveSize": 10}, "input maxWaveSize 10 is below waveSize 50"),
        ({"maxFailurePercent": 101}, "input maxFailurePercent is 101; it must be between 0"),
        ({"maxFailurePercent": -1}, "input maxFailurePercent is -1"),
        ({"retries": 11}, "input retries is 11; it must be between 0 and 10"),
        ({"retryDelaySeconds": -1}, "input retryDelaySeconds is -1"),
        ({"retryDeviceErrors": "yes"}, "input retryDeviceErrors must be true or false"),
        ({"pauseBetweenWavesSeconds": 7 * 86400 + 1}, "input pauseBetweenWavesSeconds is"),
        ({"priority": 0}, "input priority is 0; it must be between 1 and 1,000"),
        ({"startTime": datetime(2026, 1, 1)}, "input startTime must be a date and time with a"),
        ({"windowStart": "22:00"}, "input windowStart is given without windowEnd"),
        ({"windowEnd": "04:00"}, "input windowEnd is given without windowStart"),
        ({"windowStart": "24:00", "windowEnd": "04:00"}, "input windowStart '24:00' is not a"),
        ({"windowStart": "22:00", "windowEnd": "4:00"}, "input windowEnd '4:00' is not a time"),
        ({"windowStart": "22:00\n", "windowEnd": "04:00"}, "input windowStart '22:00\\n'"),
        ({"windowStart": "10:00", "windowEnd": "10:00"}, "windowStart and windowEnd are both"),
        ({"windowStart": 10, "windowEnd": "11:00"}, "input windowStart must be a text HH:MM"),
    ],
)
def test_each_input_is_refused_with_a_one_line_error_naming_it(
    inputs: dict[str, Any], message: str
) -> None:
    with pytest.raises(PlanError) as caught:
        RolloutPlan.from_inputs(inputs)
    text = str(caught.value)
    assert text.startswith(message) or message in text, text
    assert "\n" not in text


def test_inputs_take_their_defaults_and_integral_numbers() -> None:
    plan = RolloutPlan.from_inputs({"waveSize": 10.0, "retries": 2.0, "maxWaveSize": None})
    assert (plan.wave_size, plan.retries, plan.max_wave_size) == (10, 2, None)
    assert type(plan.wave_size) is int
    assert plan == RolloutPlan(wave_size=10, retries=2)
    windowed = RolloutPlan.from_inputs({"windowStart": "22:00", "windowEnd": "04:00"})
    assert windowed.window == MaintenanceWindow(time(22), time(4))
    assert RolloutPlan.from_inputs({"windowStart": "", "windowEnd": ""}).window is None


# ---- waves ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "count", "sizes"),
    [
        (RolloutPlan(wave_size=10), 35, [10, 10, 10, 5]),
        (RolloutPlan(wave_size=10, growth_factor=2), 100, [10, 20, 40, 30]),
        (RolloutPlan(wave_size=10, growth_factor=2, max_wave_size=25), 100, [10, 20, 25, 25, 20]),
        # 1.1 is read as the decimal 11/10: 10 x 1.1 is 11 (a float product would ceil to 12).
        (RolloutPlan(wave_size=10, growth_factor=1.1), 60, [10, 11, 13, 15, 11]),
        (RolloutPlan(wave_size=1, growth_factor=1.5), 12, [1, 2, 3, 5, 1]),
        (RolloutPlan(wave_size=500), 20, [20]),
        (RolloutPlan(wave_size=500), 0, []),
    ],
)
def test_wave_sizes(plan: RolloutPlan, count: int, sizes: list[int]) -> None:
    assert plan.wave_sizes(count) == sizes


@settings(max_examples=200)
@given(
    wave_size=st.integers(1, 2000),
    growth=st.sampled_from([1, 1.05, 1.1, 1.25, 1.5, 2, 3.7, 10]),
    cap_extra=st.one_of(st.none(), st.integers(0, 5000)),
    count=st.integers(0, 20_000),
)
def test_wave_sizes_cover_every_device_once_and_grow_as_asked(
    wave_size: int, growth: float, cap_extra: int | None, count: int
) -> None:
    cap = None if cap_extra is None else wave_size + cap_extra
    plan = RolloutPlan(wave_size=wave_size, growth_factor=growth, max_wave_size=cap)
    try:
        sizes = plan.wave_sizes(count)
    except PlanError as exc:
        assert f"more than {MAX_WAVES:,} waves" in str(exc)
        return
    assert sum(sizes) == count
    assert all(size >= 1 for size in sizes)
    if sizes:
        assert sizes[0] == min(wave_size, count)
    full = sizes[:-1]  # the last wave holds what is left
    for before, after in itertools.pairwise(full):
        assert after <= (cap if cap is not None else after)
        assert after == min(cap or 10**9, -(-before * round(growth * 100) // 100))
    waves = plan.waves([f"d{i}" for i in range(count)])
    assert [len(w) for w in waves] == sizes
    assert [d for w in waves for d in w] == [f"d{i}" for i in range(count)]


def test_too_many_waves_is_refused_with_what_to_change() -> None:
    with pytest.raises(PlanError, match=r"more than 10,000 waves: raise waveSize"):
        RolloutPlan(wave_size=1).wave_sizes(MAX_WAVES + 1)
    assert len(RolloutPlan(wave_size=1).wave_sizes(MAX_WAVES)) == MAX_WAVES


# ---- device ids and IN lists ----------------------------------------------------------------


def test_device_ids_are_checked_and_deduplicated_in_order() -> None:
    ids, warnings = check_device_ids(["b", "a", "b", "c'd", "a"])
    assert ids == ["b", "a", "c'd"]
    assert warnings == [
        "2 duplicate device ids were dropped; each device is sent the operation once"
    ]
    assert check_device_ids(["x"]) == (["x"], [])
    for bad, shown in (("a b", "'a b'"), ("", "''"), ("x" * 129, "'xxx"), (7, "int")):
        with pytest.raises(PlanError, match=r"^input devices item 2 \(" + re.escape(shown)):
            check_device_ids(["ok", bad])


def test_quote_id_writes_a_query_string_constant() -> None:
    assert quote_id("dev-1") == "'dev-1'"
    assert quote_id("o'brien") == "'o\\'brien'"
    condition = parse_condition("deviceId = " + quote_id("it's"))
    assert condition.matches({"deviceId": "it's"})
    assert not condition.matches({"deviceId": "its"})


def test_five_thousand_ids_split_into_in_lists_under_the_query_limit() -> None:
    ids = [f"building-7-floor-{i // 100:02d}-sensor-{i:05d}" for i in range(5000)]
    conditions = device_in_conditions(ids)
    assert len(conditions) > 1
    assert sum(count for _, count in conditions) == 5000
    start = 0
    for text, count in conditions:
        assert len(text) <= MAX_CONDITION_LENGTH
        assert len("SELECT * FROM devices WHERE " + text) <= MAX_QUERY_LENGTH
        parsed = parse_condition(text)  # refuses texts over 8,192 characters
        chunk = ids[start : start + count]
        assert all(parsed.matches({"deviceId": d}) for d in chunk)
        assert not parsed.matches({"deviceId": ids[start + count - 1] + "x"})
        start += count
    # Greedy: each list is full, the next id would not have fitted.
    for (text, _), (following, _) in itertools.pairwise(conditions):
        first_next = following[len("deviceId IN [") :].split(", ")[0].rstrip("]")
        assert len(text) + len(", ") + len(first_next) > MAX_CONDITION_LENGTH


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(device_ids, min_size=1, max_size=120, unique=True), limit=st.integers(140, 2000)
)
def test_in_lists_select_exactly_their_ids_whatever_the_characters(
    ids: list[str], limit: int
) -> None:
    conditions = device_in_conditions(ids, limit)
    assert sum(count for _, count in conditions) == len(ids)
    start = 0
    for text, count in conditions:
        assert len(text) <= limit
        parsed = parse_query(f"SELECT * FROM devices WHERE {text}")
        chunk = set(ids[start : start + count])
        for device_id in ids:
            assert parsed.where is not None
            assert parsed.where.matches({"deviceId": device_id}) == (device_id in chunk)
        start += count


def test_an_id_that_cannot_fit_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit in 20 chars"):
        device_in_conditions(["a" * 10], limit=20)
    assert device_in_conditions(["a" * 4], limit=20) == [("deviceId IN ['aaaa']", 1)]
    assert device_in_conditions([]) == []


# ---- wave job ids ---------------------------------------------------------------------------


@given(
    rollout_id=st.from_regex(r"[A-Za-z0-9-]{1,36}", fullmatch=True),
    wave=st.integers(1, MAX_WAVES),
    attempt=st.integers(1, 999),
    part=st.integers(1, 99_999),
)
def test_wave_job_ids_are_valid_hub_job_ids_and_read_back(
    rollout_id: str, wave: int, attempt: int, part: int
) -> None:
    job_id = wave_job_id(rollout_id, wave, attempt, part)
    assert re.fullmatch(r"[A-Za-z0-9-]{1,64}", job_id)
    assert parse_wave_job_id(job_id) == (rollout_id, wave, attempt, part)


def test_wave_job_ids_are_deterministic_and_distinct() -> None:
    assert wave_job_id("r1", 3, 1, 2) == "r1-w3-a1-p2" == wave_job_id("r1", 3, 1, 2)
    seen = {
        wave_job_id(r, w, a, p)
        for r in ("r", "r-w1")
        for w in (1, 2)
        for a in (1, 2)
        for p in (1, 11)
    }
    assert len(seen) == 16
    assert parse_wave_job_id("r-w1-a1-p1-w2-a3-p4") == ("r-w1-a1-p1", 2, 3, 4)
    for other in ("job-1", "r-w0-a1-p1", "r-w1-a01-p1", "-w1-a1-p1", "r-w1-a1-p1\n"):
        assert parse_wave_job_id(other) is None
    with pytest.raises(ValueError, match="count from 1"):
        wave_job_id("r", 0, 1, 1)


def test_rollout_id_rule() -> None:
    assert check_rollout_id("3f2b-rollout") == "3f2b-rollout"
    for bad in ("", "a" * 37, "a_b", "a b", "é"):
        with pytest.raises(PlanError, match=r"^input rolloutId .* must be 1\.\.36 ASCII"):
            check_rollout_id(bad)


def test_wave_jobs_number_their_parts_and_keep_the_ids_in_order() -> None:
    ids = [f"device-with-a-long-name-{i:06d}" for i in range(600)]
    jobs = wave_jobs("ro1", 2, 1, ids)
    assert [j.job_id for j in jobs] == [f"ro1-w2-a1-p{n}" for n in range(1, len(jobs) + 1)]
    assert len(jobs) == 3
    assert [d for j in jobs for d in j.device_ids] == ids
    assert all(
        parse_condition(j.query_condition).matches({"deviceId": j.device_ids[-1]}) for j in jobs
    )


# ---- dry run --------------------------------------------------------------------------------


def test_dry_run_answers_the_plan_row() -> None:
    ids = [f"d{i:04d}" for i in range(1000)]
    plan = RolloutPlan(wave_size=100, growth_factor=2, pause_between_waves_seconds=60)
    answer = dry_run(plan, ids, now=NOW, tier=HubTier("S1"), method_timeout_seconds=40)
    assert answer.valid
    assert answer.device_count == 1000
    assert answer.sample == tuple(ids[:20])
    assert answer.wave_sizes == (100, 200, 400, 300)
    assert answer.wave_count == 4
    assert answer.job_counts == (1, 1, 1, 1)
    # 10 device operations/s on S1: 10 + 20 + 40 + 30 s, plus 40 s per wave for the last
    # device's answer, plus three 60 s pauses.
    assert answer.estimated_duration_seconds == 100 + 4 * 40 + 3 * 60
    assert answer.warnings == ()


def test_dry_run_estimate_follows_the_tier() -> None:
    ids = [f"d{i}" for i in range(5000)]
    plan = RolloutPlan(wave_size=5000)
    s1 = dry_run(plan, ids, now=NOW, tier=HubTier("S1")).estimated_duration_seconds
    s3 = dry_run(plan, ids, now=NOW, tier=HubTier("S3", units=2)).estimated_duration_seconds
    assert (s1, s3) == (500, 50)
    assert HubTier("S2", 20).device_ops_per_second == 20
    assert [HubTier(t).max_concurrent_jobs for t in ("F1", "S1", "S2", "S3")] == [1, 1, 5, 10]
    with pytest.raises(ValueError, match="not one of"):
        HubTier("B1")


def test_dry_run_warnings() -> None:
    empty = dry_run(RolloutPlan(), [], now=NOW)
    assert not empty.valid
    assert empty.wave_sizes == ()
    assert empty.warnings == ("no device matches the target: the rollout would have nothing to do",)
    ids = [f"sensor-{i:07d}" for i in range(60_000)]
    plan = RolloutPlan(
        wave_size=60_000,
        retries=2,
        start_time=NOW - timedelta(hours=1),
        window=MaintenanceWindow(time(22), time(4)),
    )
    answer = dry_run(plan, ids, now=NOW, warnings=["3 duplicate device ids were dropped"])
    assert answer.job_counts[0] > 1
    assert answer.warnings == (
        "3 duplicate device ids were dropped",
        "startTime 2026-06-01T11:00:00Z is in the past: the first wave would start now",
        "1 of 1 waves run as several hub jobs: their deviceId IN lists would exceed IoT Hub's "
        "8,192-character query limit",
        "wave 1 holds 60,000 devices: at S1's 10 device operations/s it runs about 1.7 h and "
        "cannot be stopped meanwhile; a lower maxWaveSize keeps every wave short",
        "the estimate counts no retry waves: each adds at least retryDelaySeconds (60 s) and "
        "its devices' operations",
        "waves start only between 22:00 and 04:00 UTC: the estimate does not count the waits for "
        "the window",
    )
