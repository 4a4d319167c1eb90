"""The maintenance window with an injected clock: open or not, and when it next opens."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollouts import MaintenanceWindow, PlanError, earliest_wave_start

DAY = datetime(2026, 3, 10, tzinfo=UTC)


def at(hh: int, mm: int = 0, day: int = 0) -> datetime:
    return DAY + timedelta(days=day, hours=hh, minutes=mm)


def test_a_window_within_the_day() -> None:
    window = MaintenanceWindow(time(1), time(5))
    assert [window.is_open(at(h)) for h in (0, 1, 4, 5, 23)] == [False, True, True, False, False]
    assert window.next_opening(at(0, 30)) == at(1)
    assert window.next_opening(at(3)) == at(3)
    assert window.next_opening(at(5)) == at(1, day=1)
    assert window.closes_after(at(2)) == at(5)
    assert window.length == timedelta(hours=4)


def test_a_window_across_midnight() -> None:
    window = MaintenanceWindow.parse("22:00", "04:00")
    assert window is not None
    assert window.crosses_midnight
    assert window.length == timedelta(hours=6)
    assert [
        window.is_open(at(h, m)) for h, m in ((21, 59), (22, 0), (23, 30), (3, 59), (4, 0))
    ] == [
        False,
        True,
        True,
        True,
        False,
    ]
    assert window.next_opening(at(12)) == at(22)
    assert window.next_opening(at(4)) == at(22)
    assert window.next_opening(at(23)) == at(23)
    assert window.closes_after(at(23)) == at(4, day=1)
    assert window.closes_after(at(1)) == at(4)
    with pytest.raises(ValueError, match="closed"):
        window.closes_after(at(12))


def test_now_in_another_zone_is_judged_in_utc() -> None:
    window = MaintenanceWindow(time(22), time(4))
    berlin_midnight = datetime(2026, 3, 11, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert window.is_open(berlin_midnight)  # 23:30 UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        window.is_open(datetime(2026, 3, 11))


def test_parse_rules() -> None:
    assert MaintenanceWindow.parse(None, None) is None
    with pytest.raises(PlanError, match=r"^input windowEnd '25:00' is not a time of day"):
        MaintenanceWindow.parse("01:00", "25:00")


@given(
    start=st.times().map(lambda t: t.replace(second=0, microsecond=0)),
    end=st.times().map(lambda t: t.replace(second=0, microsecond=0)),
    now=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
)
def test_next_opening_is_the_first_open_minute(start: time, end: time, now: datetime) -> None:
    if start == end:
        return
    window = MaintenanceWindow(start, end)
    opening = window.next_opening(now)
    assert now <= opening < now + timedelta(days=1)
    assert window.is_open(opening)
    if opening > now:
        assert opening.time() == start
        # Closed the whole time in between (checked minute by minute at the ends).
        assert not window.is_open(now)
        assert not window.is_open(opening - timedelta(microseconds=1))


def test_earliest_wave_start_combines_the_bounds() -> None:
    window = MaintenanceWindow(time(22), time(4))
    assert earliest_wave_start(at(12)) == at(12)
    assert earliest_wave_start(at(12), not_before=at(13)) == at(13)
    assert earliest_wave_start(at(12), not_before=at(11)) == at(12)
    assert earliest_wave_start(at(12), window=window) == at(22)
    assert earliest_wave_start(at(23), not_before=at(3, day=1), window=window) == at(3, day=1)
    assert earliest_wave_start(at(23), not_before=at(5, day=1), window=window) == at(22, day=1)
