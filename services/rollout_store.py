"""Where rollouts are kept: the :class:`RolloutStore` interface and its SQLite implementation.

One SQLite file (``rollouts.sqlite``) in the agent's data directory, in WAL mode, with a
versioned schema migrated on open. A PostgreSQL store for several agents implements the same
:class:`RolloutStore` later (its own issue).

Tables: ``rollouts`` (one row per rollout: its request, plan, status and counters), ``devices``
(one row per targeted device: wave, status, attempts, last hub job and its result), ``rounds``
(a wave's round: its members and when it may start) and ``parts`` (one hub job of a round, with
its deterministic id and whether it was created).

Rules:
- Every method is one transaction: a verdict (device outcomes, the next round, the rollout's
  status) is stored whole or not at all, so a crash leaves the state before or after it.
- The store holds no logic of its own: the engine decides, the store remembers.
- Calls are short and synchronous (SQLite on a local disk, WAL); the engine calls them on the
  event loop between hub calls.
- A rollout's device counts (``counts``, read by every GetRollout) are counted once and kept
  until this store writes that rollout's devices again (``create``, ``judge``): counting
  100,000 rows took 0.3 s of the event loop per call. One agent owns the file, so no other
  writer can change them behind the cache.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "SCHEMA_VERSION",
    "DeviceRecord",
    "DeviceUpdate",
    "PartRecord",
    "RolloutRecord",
    "RolloutStore",
    "RoundRecord",
    "SqliteRolloutStore",
    "WaveRecord",
    "wave_records",
]

SCHEMA_VERSION = 1

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE rollouts (
        rollout_id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        operation TEXT NOT NULL,
        inputs TEXT NOT NULL,
        status TEXT NOT NULL,
        requested TEXT,
        reason TEXT,
        priority INTEGER NOT NULL,
        device_count INTEGER NOT NULL,
        wave INTEGER NOT NULL DEFAULT 0,
        wave_count INTEGER NOT NULL,
        current_job_id TEXT,
        created_time TEXT NOT NULL,
        start_time TEXT,
        end_time TEXT,
        last_wave_end TEXT
    );
    CREATE TABLE devices (
        rollout_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        wave INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        retried INTEGER NOT NULL DEFAULT 0,
        last_job_id TEXT,
        error_code TEXT,
        error_description TEXT,
        method_status INTEGER,
        method_payload TEXT,
        end_time TEXT,
        PRIMARY KEY (rollout_id, device_id)
    );
    CREATE INDEX devices_by_wave ON devices (rollout_id, wave, seq);
    CREATE TABLE rounds (
        rollout_id TEXT NOT NULL,
        wave INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        members TEXT NOT NULL,
        not_before TEXT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (rollout_id, wave, attempt)
    );
    CREATE TABLE parts (
        job_id TEXT PRIMARY KEY,
        rollout_id TEXT NOT NULL,
        wave INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        part INTEGER NOT NULL,
        condition TEXT NOT NULL,
        state TEXT NOT NULL,
        hub_status TEXT
    );
    CREATE INDEX parts_by_round ON parts (rollout_id, wave, attempt, part);
    """,
}


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True)
class RolloutRecord:
    """A rollout as stored: what was asked, its status and where it is.

    Attributes:
        rollout_id: its id.
        type: ``twinUpdate`` or ``deviceMethod``.
        operation: the checked operation (patch, or method name/payload/timeouts).
        inputs: the plan's inputs as given (``waveSize``...), to rebuild the plan.
        status: a :class:`rollouts.RolloutStatus` value.
        requested: a pause or cancel waiting for the running wave's end, or None.
        reason: why it aborted or failed, or None.
        priority: 1 (first) .. 1000.
        device_count: devices targeted.
        wave: the last wave started (0 before the first).
        wave_count: waves planned.
        current_job_id: the hub job in flight, or None.
        created_time: when it was started.
        start_time: when its first hub job was created.
        end_time: when it ended.
        last_wave_end: when its last round ended (the pause between waves counts from there).
    """

    rollout_id: str
    type: str
    operation: dict[str, Any]
    inputs: dict[str, Any]
    status: str
    requested: str | None
    reason: str | None
    priority: int
    device_count: int
    wave: int
    wave_count: int
    current_job_id: str | None
    created_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    last_wave_end: datetime | None


@dataclass(frozen=True)
class DeviceRecord:
    """One device of a rollout (a row of ``AzureIotDeviceJobQueryRolloutResults``)."""

    device_id: str
    wave: int
    status: str
    attempts: int
    retried: int
    last_job_id: str | None
    error_code: str | None
    error_description: str | None
    method_status: int | None
    method_payload: Any
    end_time: datetime | None


@dataclass(frozen=True)
class RoundRecord:
    """A round of a wave: ``attempt`` 1 is the wave itself, later ones its retries.

    ``state``: ``planned`` (waits for ``not_before``), ``running`` (its parts are being created
    or run), ``judged`` (its verdict is stored) or ``dropped`` (never run: cancelled, aborted).
    """

    rollout_id: str
    wave: int
    attempt: int
    members: tuple[str, ...]
    not_before: datetime
    state: str


@dataclass(frozen=True)
class PartRecord:
    """One hub job of a round. ``state``: ``intent`` (to create; a create after a crash may
    meet 409104 and attach), ``created``, ``ended`` (terminal on the hub, ``hub_status`` says
    how) or ``skipped`` (never created: the round was cancelled first)."""

    job_id: str
    rollout_id: str
    wave: int
    attempt: int
    part: int
    condition: str
    state: str
    hub_status: str | None


@dataclass(frozen=True)
class DeviceUpdate:
    """What a judged round stores about one device."""

    device_id: str
    status: str
    attempts: int
    retried: bool
    last_job_id: str | None
    error_code: str | None
    error_description: str | None
    method_status: int | None
    method_payload: Any
    end_time: datetime | None


class RolloutStore(Protocol):
    """The rollout engine's memory (SQLite here; PostgreSQL later)."""

    def create(self, record: RolloutRecord, devices: Sequence[tuple[str, int]]) -> None:
        """Store a new rollout and its devices (``(id, wave)`` in plan order)."""
        ...

    def get(self, rollout_id: str) -> RolloutRecord | None:
        """A rollout, or None."""
        ...

    def find(self, statuses: Iterable[str] | None = None) -> list[RolloutRecord]:
        """Rollouts (with one of ``statuses`` when given), oldest first."""
        ...

    def update(self, rollout_id: str, **fields: Any) -> None:
        """Change a rollout's columns (``status``, ``requested``, ``reason``...)."""
        ...

    def devices(
        self,
        rollout_id: str,
        *,
        wave: int | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[DeviceRecord]:
        """A rollout's devices in plan order, filtered by wave and/or status."""
        ...

    def counts(self, rollout_id: str) -> dict[str, int]:
        """Devices by status, and ``retried`` (devices retried at least once)."""
        ...

    def rounds(self, rollout_id: str, state: str | None = None) -> list[RoundRecord]:
        """A rollout's rounds (in ``state`` when given), by wave and attempt."""
        ...

    def add_round(self, round_: RoundRecord, parts: Sequence[PartRecord], **rollout: Any) -> None:
        """Store a round, its parts and the rollout's changed columns, together."""
        ...

    def set_round_state(self, rollout_id: str, state: str, *, where_state: str) -> None:
        """Move every round of a rollout in ``where_state`` to ``state``."""
        ...

    def parts(self, rollout_id: str, wave: int, attempt: int) -> list[PartRecord]:
        """The parts of one round, in order."""
        ...

    def set_part(self, job_id: str, state: str, hub_status: str | None = None) -> None:
        """Record a part's new state."""
        ...

    def judge(
        self,
        rollout_id: str,
        wave: int,
        attempt: int,
        updates: Sequence[DeviceUpdate],
        next_round: RoundRecord | None,
        **rollout: Any,
    ) -> None:
        """Store a round's verdict whole: devices, the retry round, the rollout's columns."""
        ...

    def close(self) -> None:
        """Close the store."""
        ...

    def waves(self, rollout_id: str, limit: int | None = None) -> list[WaveRecord]:
        """One :class:`WaveRecord` per round (wave and attempt), then one per wave not yet
        planned, by wave and attempt; at most ``limit``."""
        ...


_ROLLOUT_COLUMNS = (
    "rollout_id, type, operation, inputs, status, requested, reason, priority, device_count, "
    "wave, wave_count, current_job_id, created_time, start_time, end_time, last_wave_end"
)
_UPDATABLE = frozenset(
    {
        "status",
        "requested",
        "reason",
        "wave",
        "current_job_id",
        "start_time",
        "end_time",
        "last_wave_end",
    }
)


def _rollout(row: sqlite3.Row) -> RolloutRecord:
    return RolloutRecord(
        rollout_id=row["rollout_id"],
        type=row["type"],
        operation=json.loads(row["operation"]),
        inputs=json.loads(row["inputs"]),
        status=row["status"],
        requested=row["requested"],
        reason=row["reason"],
        priority=row["priority"],
        device_count=row["device_count"],
        wave=row["wave"],
        wave_count=row["wave_count"],
        current_job_id=row["current_job_id"],
        created_time=_parse(row["created_time"]) or datetime.now(UTC),
        start_time=_parse(row["start_time"]),
        end_time=_parse(row["end_time"]),
        last_wave_end=_parse(row["last_wave_end"]),
    )


class SqliteRolloutStore:
    """:class:`RolloutStore` in one SQLite file (WAL, schema migrated on open).

    Args:
        path: the database file (its directory is created), or ``:memory:``.

    Raises:
        RuntimeError: the file's schema is newer than this agent knows.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._counts: dict[str, dict[str, int]] = {}

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection, opened (and the schema migrated) on first use: an agent that never
        runs (``jobs-agent check``) creates no file."""
        if self._conn is None:
            path = self.path
            if str(path) != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._conn = db
            self._migrate()
        return self._conn

    @property
    def schema_version(self) -> int:
        """The schema version the file holds."""
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        version = self.schema_version
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"the rollout store has schema version {version}, newer than this agent's "
                f"{SCHEMA_VERSION}: run a newer agent or point rollouts.data_dir elsewhere"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._tx():
                for statement in _MIGRATIONS[target].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {target}")

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        """Close the database (if it was opened)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- rollouts ------------------------------------------------------------------------

    def create(self, record: RolloutRecord, devices: Sequence[tuple[str, int]]) -> None:
        """Store a new rollout and its devices.

        Raises:
            sqlite3.IntegrityError: a rollout with that id exists.
        """
        self._counts.pop(record.rollout_id, None)
        with self._tx():
            self._db.execute(
                f"INSERT INTO rollouts ({_ROLLOUT_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.rollout_id,
                    record.type,
                    json.dumps(record.operation),
                    json.dumps(record.inputs),
                    record.status,
                    record.requested,
                    record.reason,
                    record.priority,
                    record.device_count,
                    record.wave,
                    record.wave_count,
                    record.current_job_id,
                    _time(record.created_time),
                    _time(record.start_time),
                    _time(record.end_time),
                    _time(record.last_wave_end),
                ),
            )
            self._db.executemany(
                "INSERT INTO devices (rollout_id, device_id, seq, wave) VALUES (?, ?, ?, ?)",
                (
                    (record.rollout_id, device_id, seq, wave)
                    for seq, (device_id, wave) in enumerate(devices)
                ),
            )

    def get(self, rollout_id: str) -> RolloutRecord | None:
        """A rollout, or None."""
        row = self._db.execute(
            f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE rollout_id = ?", (rollout_id,)
        ).fetchone()
        return None if row is None else _rollout(row)

    def find(self, statuses: Iterable[str] | None = None) -> list[RolloutRecord]:
        """Rollouts (with one of ``statuses`` when given), oldest first."""
        sql = f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts"
        args: list[str] = []
        if statuses is not None:
            args = list(statuses)
            sql += f" WHERE status IN ({', '.join('?' * len(args))})" if args else " WHERE 0"
        sql += " ORDER BY created_time, rollout_id"
        return [_rollout(row) for row in self._db.execute(sql, args)]

    def update(self, rollout_id: str, **fields: Any) -> None:
        """Change a rollout's columns."""
        with self._tx():
            self._update(rollout_id, fields)

    def _update(self, rollout_id: str, fields: dict[str, Any]) -> None:
        if not fields:
            return
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"rollout columns {sorted(unknown)} cannot be updated")
        values = [_time(v) if isinstance(v, datetime) else v for v in fields.values()]
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._db.execute(
            f"UPDATE rollouts SET {assignments} WHERE rollout_id = ?", [*values, rollout_id]
        )

    # -- devices -------------------------------------------------------------------------

    def devices(
        self,
        rollout_id: str,
        *,
        wave: int | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[DeviceRecord]:
        """A rollout's devices in plan order, filtered by wave and/or status."""
        sql = (
            "SELECT device_id, wave, status, attempts, retried, last_job_id, error_code, "
            "error_description, method_status, method_payload, end_time FROM devices "
            "WHERE rollout_id = ?"
        )
        args: list[Any] = [rollout_id]
        if wave is not None:
            sql += " AND wave = ?"
            args.append(wave)
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [
            DeviceRecord(
                device_id=row[0],
                wave=row[1],
                status=row[2],
                attempts=row[3],
                retried=row[4],
                last_job_id=row[5],
                error_code=row[6],
                error_description=row[7],
                method_status=row[8],
                method_payload=None if row[9] is None else json.loads(row[9]),
                end_time=_parse(row[10]),
            )
            for row in self._db.execute(sql, args)
        ]

    def counts(self, rollout_id: str) -> dict[str, int]:
        """Devices by status (``pending``, ``succeeded``, ``failed``) and ``retried``."""
        cached = self._counts.get(rollout_id)
        if cached is not None:
            return dict(cached)
        counts = {"pending": 0, "succeeded": 0, "failed": 0, "retried": 0}
        for status, count, retried in self._db.execute(
            "SELECT status, COUNT(*), SUM(retried > 0) FROM devices WHERE rollout_id = ? "
            "GROUP BY status",
            (rollout_id,),
        ):
            counts[status] = count
            counts["retried"] += retried or 0
        self._counts[rollout_id] = dict(counts)
        return counts

    # -- rounds and parts ----------------------------------------------------------------

    def rounds(self, rollout_id: str, state: str | None = None) -> list[RoundRecord]:
        """A rollout's rounds (in ``state`` when given), by wave and attempt."""
        sql = (
            "SELECT rollout_id, wave, attempt, members, not_before, state FROM rounds "
            "WHERE rollout_id = ?"
        )
        args: list[Any] = [rollout_id]
        if state is not None:
            sql += " AND state = ?"
            args.append(state)
        sql += " ORDER BY wave, attempt"
        return [
            RoundRecord(
                row[0], row[1], row[2], tuple(json.loads(row[3])), _parse(row[4]) or _EPOCH, row[5]
            )
            for row in self._db.execute(sql, args)
        ]

    def _put_round(self, round_: RoundRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO rounds (rollout_id, wave, attempt, members, not_before, state) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                round_.rollout_id,
                round_.wave,
                round_.attempt,
                json.dumps(list(round_.members)),
                _time(round_.not_before),
                round_.state,
            ),
        )

    def add_round(self, round_: RoundRecord, parts: Sequence[PartRecord], **rollout: Any) -> None:
        """Store a round (new or planned before), its parts and the rollout's columns."""
        with self._tx():
            self._put_round(round_)
            self._db.executemany(
                "INSERT OR IGNORE INTO parts (job_id, rollout_id, wave, attempt, part, condition, "
                "state, hub_status) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (p.job_id, p.rollout_id, p.wave, p.attempt, p.part, p.condition, p.state, None)
                    for p in parts
                ),
            )
            self._update(round_.rollout_id, rollout)

    def set_round_state(self, rollout_id: str, state: str, *, where_state: str) -> None:
        """Move every round of a rollout in ``where_state`` to ``state``."""
        with self._tx():
            self._db.execute(
                "UPDATE rounds SET state = ? WHERE rollout_id = ? AND state = ?",
                (state, rollout_id, where_state),
            )

    def parts(self, rollout_id: str, wave: int, attempt: int) -> list[PartRecord]:
        """The parts of one round, in order."""
        return [
            PartRecord(*row)
            for row in self._db.execute(
                "SELECT job_id, rollout_id, wave, attempt, part, condition, state, hub_status "
                "FROM parts WHERE rollout_id = ? AND wave = ? AND attempt = ? ORDER BY part",
                (rollout_id, wave, attempt),
            )
        ]

    def set_part(self, job_id: str, state: str, hub_status: str | None = None) -> None:
        """Record a part's new state (and the hub's status of its job)."""
        with self._tx():
            self._db.execute(
                "UPDATE parts SET state = ?, hub_status = COALESCE(?, hub_status) WHERE job_id = ?",
                (state, hub_status, job_id),
            )

    def judge(
        self,
        rollout_id: str,
        wave: int,
        attempt: int,
        updates: Sequence[DeviceUpdate],
        next_round: RoundRecord | None,
        **rollout: Any,
    ) -> None:
        """Store a round's verdict whole: devices, the round judged, the retry round, the
        rollout's columns."""
        self._counts.pop(rollout_id, None)
        with self._tx():
            self._db.executemany(
                "UPDATE devices SET status = ?, attempts = ?, retried = retried + ?, "
                "last_job_id = COALESCE(?, last_job_id), error_code = ?, error_description = ?, "
                "method_status = ?, method_payload = ?, end_time = ? "
                "WHERE rollout_id = ? AND device_id = ?",
                (
                    (
                        u.status,
                        u.attempts,
                        1 if u.retried else 0,
                        u.last_job_id,
                        u.error_code,
                        u.error_description,
                        u.method_status,
                        None if u.method_payload is None else json.dumps(u.method_payload),
                        _time(u.end_time),
                        rollout_id,
                        u.device_id,
                    )
                    for u in updates
                ),
            )
            self._db.execute(
                "UPDATE rounds SET state = 'judged' WHERE rollout_id = ? AND wave = ? "
                "AND attempt = ?",
                (rollout_id, wave, attempt),
            )
            if next_round is not None:
                self._put_round(next_round)
            self._update(rollout_id, rollout)

    def waves(self, rollout_id: str, limit: int | None = None) -> list[WaveRecord]:
        """One row per round (wave and attempt), then one per wave not planned yet.

        A member of a judged round counts as the device's stored status when this round is the
        last it was in, and as failed when a later round retries it; every member of a round
        not judged (planned, running, dropped) is pending. One pass over the rollout's rounds,
        parts and devices: linear in their size.
        """
        db = self._db
        db.execute("BEGIN")  # deferred: one read snapshot of the three tables, no write lock
        try:
            rounds = self.rounds(rollout_id)
            parts = db.execute(
                "SELECT wave, attempt, job_id, state FROM parts WHERE rollout_id = ? "
                "ORDER BY wave, attempt, part",
                (rollout_id,),
            ).fetchall()
            devices = db.execute(
                "SELECT device_id, wave, status FROM devices WHERE rollout_id = ?", (rollout_id,)
            ).fetchall()
        finally:
            db.execute("COMMIT")
        return wave_records(rounds, parts, devices, limit)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on an exception)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


@dataclass(frozen=True)
class WaveRecord:
    """One round of a rollout's wave as a progress row (``AzureIotDeviceJobGetRolloutWaves``).

    ``status`` is the round's state (``planned``, ``running``, ``judged``, ``dropped``), or
    ``waiting`` for a wave whose first round is not planned yet (``attempt`` 1, no job).
    """

    wave: int
    attempt: int
    device_count: int
    succeeded: int
    failed: int
    pending: int
    job_ids: tuple[str, ...]
    status: str


def wave_records(
    rounds: Sequence[RoundRecord],
    parts: Iterable[Sequence[Any]],
    devices: Iterable[Sequence[Any]],
    limit: int | None = None,
) -> list[WaveRecord]:
    """The per-round progress rows of :meth:`RolloutStore.waves`, from the rollout's rounds,
    its parts (``wave, attempt, job_id, state``) and its devices (``device_id, wave, status``).

    Shared by every store: only the reading of the three tables differs.
    """
    jobs: dict[tuple[int, int], list[str]] = {}
    for wave, attempt, job_id, state in parts:
        if state != "skipped":
            jobs.setdefault((wave, attempt), []).append(job_id)
    status_of: dict[str, str] = {}
    per_wave: dict[int, int] = {}
    for device_id, wave, status in devices:
        status_of[device_id] = status
        per_wave[wave] = per_wave.get(wave, 0) + 1
    last: dict[str, tuple[int, int]] = {}
    for round_ in rounds:
        for device_id in round_.members:
            last[device_id] = (round_.wave, round_.attempt)
    records: list[WaveRecord] = []
    for round_ in rounds:
        key = (round_.wave, round_.attempt)
        counts = dict.fromkeys(("succeeded", "failed", "pending"), 0)
        for device_id in round_.members:
            if round_.state != "judged":
                counts["pending"] += 1
            elif last.get(device_id) != key:
                counts["failed"] += 1  # retried in a later round: this attempt failed
            else:
                status = status_of.get(device_id, "pending")
                counts[status] = counts.get(status, 0) + 1
        records.append(
            WaveRecord(
                round_.wave,
                round_.attempt,
                len(round_.members),
                counts["succeeded"],
                counts["failed"],
                counts["pending"],
                tuple(jobs.get(key, ())),
                round_.state,
            )
        )
    started = {r.wave for r in rounds}
    for wave in sorted(per_wave):
        if wave not in started:
            count = per_wave[wave]
            records.append(WaveRecord(wave, 1, count, 0, 0, count, (), "waiting"))
    records.sort(key=lambda r: (r.wave, r.attempt))
    return records if limit is None else records[:limit]
