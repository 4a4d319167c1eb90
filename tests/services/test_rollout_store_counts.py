"""The SQLite rollout store's device counts: counted once, then kept in step with its own writes.

GetRollout reads them on every call; counting 100,000 device rows held the agent's event loop
for about 0.3 s per call (benchmarks/bench_rollout.py). The store now counts once and keeps the
counts: a verdict (judge) moves them by what it changed in the judged wave, create drops them.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from services.store import SqliteRolloutStore
from services.store.rollouts import DeviceUpdate, RolloutRecord

_NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _record(rollout_id: str, devices: int) -> RolloutRecord:
    return RolloutRecord(
        rollout_id, "twinUpdate", {"patch": {"tags": {"a": 1}}}, {}, "running", None, None,
        500, devices, 1, 1, None, _NOW, None, None, None,
    )  # fmt: skip


def _update(device_id: str, status: str) -> DeviceUpdate:
    return DeviceUpdate(device_id, status, 1, False, "job-1", None, None, None, None, _NOW)


def test_counts_are_read_once_until_the_store_writes_the_devices(tmp_path: Path) -> None:
    path = tmp_path / "rollouts.sqlite"
    store = SqliteRolloutStore(path)
    store.create(_record("r1", 3), [("d1", 1), ("d2", 1), ("d3", 1)])
    store.create(_record("r2", 1), [("d1", 1)])
    assert store.counts("r1") == {"pending": 3, "succeeded": 0, "failed": 0, "retried": 0}
    assert store.counts("r2")["pending"] == 1

    # A row changed behind the store's back is not seen: the second call read nothing.
    other = sqlite3.connect(path, isolation_level=None)
    other.execute(
        "UPDATE devices SET status = 'failed' WHERE rollout_id = 'r1' AND device_id = 'd3'"
    )
    other.close()
    counts = store.counts("r1")
    assert counts == {"pending": 3, "succeeded": 0, "failed": 0, "retried": 0}
    counts["pending"] = 99  # a caller's copy, not the store's
    assert store.counts("r1")["pending"] == 3

    # The store's own verdict moves the kept counts by what it changed in the judged wave (d1:
    # pending -> succeeded), counted in that wave before and after; the row changed behind its
    # back stays unseen (one agent owns the file), r2's counts are left alone.
    store.judge("r1", 1, 1, [_update("d1", "succeeded")], None, status="running")
    assert store.counts("r1") == {"pending": 2, "succeeded": 1, "failed": 0, "retried": 0}
    assert store.counts("r2") == {"pending": 1, "succeeded": 0, "failed": 0, "retried": 0}
    store.close()


def test_a_new_store_on_the_file_counts_what_the_file_holds(tmp_path: Path) -> None:
    path = tmp_path / "rollouts.sqlite"
    first = SqliteRolloutStore(path)
    first.create(_record("r1", 2), [("d1", 1), ("d2", 1)])
    assert first.counts("r1")["pending"] == 2
    first.judge("r1", 1, 1, [_update("d1", "failed"), _update("d2", "succeeded")], None)
    first.close()
    second = SqliteRolloutStore(path)
    assert second.counts("r1") == {"pending": 0, "succeeded": 1, "failed": 1, "retried": 0}
    assert second.counts("unknown") == {"pending": 0, "succeeded": 0, "failed": 0, "retried": 0}
    second.close()


def test_kept_counts_move_with_each_verdict_as_a_fresh_count_would(tmp_path: Path) -> None:
    """Verdicts over three waves, with retries (a failed device back to pending, retried) and a
    wave judged twice (its retry round): the kept counts equal a fresh store's after each."""
    path = tmp_path / "rollouts.sqlite"
    store = SqliteRolloutStore(path)
    ids = [f"d{n}" for n in range(30)]
    store.create(_record("r1", 30), [(d, 1 + n // 10) for n, d in enumerate(ids)])
    store.counts("r1")  # kept from here on
    statuses = ("succeeded", "failed", "pending")
    verdicts = [
        (1, 1, [(d, statuses[n % 3], n % 3 == 2) for n, d in enumerate(ids[:10])]),
        (1, 2, [(d, "succeeded", False) for n, d in enumerate(ids[:10]) if n % 3 == 2]),
        (2, 1, [(d, statuses[(n + 1) % 3], (n + 1) % 3 == 2) for n, d in enumerate(ids[10:20])]),
        (3, 1, [(d, "failed", False) for d in ids[20:25]]),
    ]
    for wave, attempt, updates in verdicts:
        store.judge(
            "r1",
            wave,
            attempt,
            [
                DeviceUpdate(d, status, attempt, retried, "job", None, None, None, None, _NOW)
                for d, status, retried in updates
            ],
            None,
        )
        fresh = SqliteRolloutStore(path)
        assert store.counts("r1") == fresh.counts("r1")
        fresh.close()
    assert store.counts("r1") == {"pending": 8, "succeeded": 10, "failed": 12, "retried": 6}
    store.close()
