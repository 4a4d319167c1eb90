"""The SQLite rollout store's device counts: counted once per change of the rollout's devices.

GetRollout reads them on every call; counting 100,000 device rows held the agent's event loop
for about 0.3 s per call (benchmarks/bench_rollout.py). The store now counts once and keeps the
counts until it writes that rollout's devices itself (create, judge).
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

    # The store's own write of r1's devices counts them again (and leaves r2's alone).
    store.judge("r1", 1, 1, [_update("d1", "succeeded")], None, status="running")
    assert store.counts("r1") == {"pending": 1, "succeeded": 1, "failed": 1, "retried": 0}
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
