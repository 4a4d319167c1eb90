"""The store's per-wave progress rows (``RolloutStore.waves``, ``AzureIotDeviceJobGetRolloutWaves``)
on the SQLite store, written through the same store calls the engine makes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from services.store.rollouts import (
    DeviceUpdate,
    PartRecord,
    RolloutRecord,
    RoundRecord,
    WaveRecord,
)
from services.store.sqlite import SqliteRolloutStore

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _record(rollout_id: str, devices: int, waves: int) -> RolloutRecord:
    return RolloutRecord(
        rollout_id=rollout_id,
        type="twinUpdate",
        operation={"patch": {"tags": {"a": 1}}},
        inputs={},
        status="running",
        requested=None,
        reason=None,
        priority=500,
        device_count=devices,
        wave=0,
        wave_count=waves,
        current_job_id=None,
        created_time=NOW,
        start_time=None,
        end_time=None,
        last_wave_end=None,
    )


def _update(device_id: str, status: str, attempts: int, job: str) -> DeviceUpdate:
    return DeviceUpdate(device_id, status, attempts, status == "pending", job, None, None, None,
                        None, NOW if status != "pending" else None)  # fmt: skip


def _round(wave: int, attempt: int, members: list[str], state: str = "running") -> RoundRecord:
    return RoundRecord("r1", wave, attempt, tuple(members), NOW, state)


def _part(wave: int, attempt: int, part: int, state: str = "created") -> PartRecord:
    return PartRecord(f"r1-w{wave}-a{attempt}-p{part}", "r1", wave, attempt, part, "c", state, None)


def test_rounds_retries_and_waves_not_yet_planned(tmp_path: Path) -> None:
    store = SqliteRolloutStore(tmp_path / "rollouts.sqlite")
    ids = [f"d{n}" for n in range(7)]
    store.create(
        _record("r1", 7, 3), [(d, 1 if n < 3 else 2 if n < 6 else 3) for n, d in enumerate(ids)]
    )
    assert store.waves("r1") == [
        WaveRecord(1, 1, 3, 0, 0, 3, (), "waiting"),
        WaveRecord(2, 1, 3, 0, 0, 3, (), "waiting"),
        WaveRecord(3, 1, 1, 0, 0, 1, (), "waiting"),
    ]
    # Wave 1 in two parts: d0 succeeds, d1 fails for good, d2 fails retryably (a retry round).
    store.add_round(_round(1, 1, ids[:3]), [_part(1, 1, 1), _part(1, 1, 2)], wave=1)
    running = store.waves("r1")[0]
    assert running == WaveRecord(1, 1, 3, 0, 0, 3, ("r1-w1-a1-p1", "r1-w1-a1-p2"), "running")
    store.judge(
        "r1", 1, 1,
        [_update("d0", "succeeded", 1, "r1-w1-a1-p1"), _update("d1", "failed", 1, "r1-w1-a1-p1"),
         _update("d2", "pending", 1, "r1-w1-a1-p2")],
        _round(1, 2, ["d2"], "planned"),
    )  # fmt: skip
    waves = store.waves("r1")
    assert waves[:2] == [
        WaveRecord(1, 1, 3, 1, 2, 0, ("r1-w1-a1-p1", "r1-w1-a1-p2"), "judged"),
        WaveRecord(1, 2, 1, 0, 0, 1, (), "planned"),
    ]
    # The retry brings d2 back; wave 2's round is cancelled with one part never created.
    store.add_round(_round(1, 2, ["d2"]), [_part(1, 2, 1)])
    store.judge("r1", 1, 2, [_update("d2", "succeeded", 2, "r1-w1-a2-p1")], None)
    store.add_round(_round(2, 1, ids[3:6]), [_part(2, 1, 1), _part(2, 1, 2, "skipped")], wave=2)
    store.set_round_state("r1", "dropped", where_state="running")
    assert store.waves("r1") == [
        WaveRecord(1, 1, 3, 1, 2, 0, ("r1-w1-a1-p1", "r1-w1-a1-p2"), "judged"),
        WaveRecord(1, 2, 1, 1, 0, 0, ("r1-w1-a2-p1",), "judged"),
        WaveRecord(2, 1, 3, 0, 0, 3, ("r1-w2-a1-p1",), "dropped"),
        WaveRecord(3, 1, 1, 0, 0, 1, (), "waiting"),
    ]
    assert store.waves("r1", limit=2) == store.waves("r1")[:2]
    assert store.waves("unknown") == []
    store.close()
