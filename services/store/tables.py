"""The rollout tables' SQL, shared by the SQLite and the PostgreSQL store.

:class:`RolloutTables` implements every :class:`~services.store.rollouts.RolloutStore` method over
a DB-API cursor; a backend supplies :meth:`RolloutTables._tx` (one transaction on its connection,
its driver's errors translated) and may replace :meth:`RolloutTables._insert_devices`.

Rules:
- SQL is written once, with ``?`` parameters (:class:`Sql` turns them into ``%s`` for psycopg)
  and in the subset both databases run alike: ``INSERT ... ON CONFLICT``, ``CASE`` rather than
  boolean arithmetic, ``1 = 0`` rather than a bare ``0``. No ``?`` or ``%`` in SQL text.
- Rows are read by position, never by a driver's row factory.
- Every public method opens exactly one transaction; a method that writes asks for a write
  transaction (SQLite: ``BEGIN IMMEDIATE``).
- Writes made inside :meth:`RolloutTables.fenced` carry a leadership epoch; a backend that
  shares its database (PostgreSQL) checks it first in the write transaction
  (:mod:`services.store.fencing`), SQLite ignores it (one agent, always the leader).
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from services.store.errors import StaleRolloutError
from services.store.fencing import Fence
from services.store.rollouts import (
    DeviceRecord,
    DeviceUpdate,
    Expect,
    PartRecord,
    RolloutRecord,
    RoundRecord,
    WaveRecord,
    wave_records,
)

__all__ = ["DeviceRow", "RolloutTables", "Sql"]

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
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

DeviceRow = tuple[
    str, str, int, int, str | None, str | None, str | None, int | None, str | None, str | None
]
"""A judged device as stored: ``device_id, status, attempts, retried (0/1), last_job_id,
error_code, error_description, method_status, method_payload (JSON), end_time (ISO)``."""


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class Sql:
    """A DB-API cursor that takes ``?`` parameters on either driver.

    Args:
        cursor: the driver's cursor (``sqlite3`` or ``psycopg``).
        placeholder: the driver's parameter marker (``?`` or ``%s``).
    """

    def __init__(self, cursor: Any, placeholder: str) -> None:
        self.cursor = cursor
        self._placeholder = placeholder

    def _text(self, sql: str) -> str:
        return sql if self._placeholder == "?" else sql.replace("?", self._placeholder)

    def run(self, sql: str, args: Sequence[Any] = ()) -> Sql:
        """Execute one statement."""
        self.cursor.execute(self._text(sql), args)
        return self

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Execute one statement for each of ``rows``."""
        self.cursor.executemany(self._text(sql), rows)

    def rows(self) -> list[tuple[Any, ...]]:
        """Every row of the last statement."""
        return [tuple(row) for row in self.cursor.fetchall()]

    def one(self) -> tuple[Any, ...] | None:
        """The first row of the last statement, or None."""
        row = self.cursor.fetchone()
        return None if row is None else tuple(row)


def _rollout(row: Sequence[Any]) -> RolloutRecord:
    return RolloutRecord(
        rollout_id=row[0],
        type=row[1],
        operation=json.loads(row[2]),
        inputs=json.loads(row[3]),
        status=row[4],
        requested=row[5],
        reason=row[6],
        priority=row[7],
        device_count=row[8],
        wave=row[9],
        wave_count=row[10],
        current_job_id=row[11],
        created_time=_parse(row[12]) or _EPOCH,
        start_time=_parse(row[13]),
        end_time=_parse(row[14]),
        last_wave_end=_parse(row[15]),
    )


class RolloutTables:
    """Every :class:`~services.store.rollouts.RolloutStore` method, over :meth:`_tx`.

    Calls are serialised by one lock per store (one connection, one transaction at a time),
    whichever thread makes them.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._fence: Fence | None = None

    @contextlib.contextmanager
    def fenced(self, fence: Fence | None) -> Iterator[None]:
        """Write calls made inside (in this thread: the store's lock is held throughout) carry
        ``fence`` (None: unfenced).

        Args:
            fence: the leader's token, checked by a shared database's write transactions.
        """
        with self._lock:
            before, self._fence = self._fence, fence
            try:
                yield
            finally:
                self._fence = before

    def _tx(self, *, write: bool) -> contextlib.AbstractContextManager[Sql]:
        """One transaction on the store's connection (opened and migrated when needed), under
        the store's lock; the driver's errors leave as :mod:`services.store.errors`."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection (if it was opened)."""
        raise NotImplementedError

    def _insert_devices(self, sql: Sql, rows: Iterable[tuple[str, str, int, int]]) -> None:
        """Insert ``(rollout_id, device_id, seq, wave)`` rows."""
        sql.many("INSERT INTO devices (rollout_id, device_id, seq, wave) VALUES (?, ?, ?, ?)", rows)

    def _update_devices(self, sql: Sql, rollout_id: str, rows: list[DeviceRow]) -> None:
        """Store a verdict's device rows (:data:`DeviceRow`: the ``UPDATE``'s values)."""
        sql.many(
            "UPDATE devices SET status = ?, attempts = ?, retried = retried + ?, "
            "last_job_id = COALESCE(?, last_job_id), error_code = ?, error_description = ?, "
            "method_status = ?, method_payload = ?, end_time = ? "
            "WHERE rollout_id = ? AND device_id = ?",
            [(*row[1:], rollout_id, row[0]) for row in rows],
        )

    # -- rollouts ------------------------------------------------------------------------

    def create(self, record: RolloutRecord, devices: Sequence[tuple[str, int]]) -> None:
        """Store a new rollout and its devices.

        Raises:
            RolloutExistsError: a rollout with that id exists.
            StoreUnavailable: the database failed the call.
        """
        with self._tx(write=True) as sql:
            sql.run(
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
            self._insert_devices(
                sql,
                (
                    (record.rollout_id, device_id, seq, wave)
                    for seq, (device_id, wave) in enumerate(devices)
                ),
            )

    def get(self, rollout_id: str) -> RolloutRecord | None:
        """A rollout, or None."""
        with self._tx(write=False) as sql:
            row = sql.run(
                f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE rollout_id = ?", (rollout_id,)
            ).one()
        return None if row is None else _rollout(row)

    def find(self, statuses: Iterable[str] | None = None) -> list[RolloutRecord]:
        """Rollouts (with one of ``statuses`` when given), oldest first."""
        text = f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts"
        args: list[str] = []
        if statuses is not None:
            args = list(statuses)
            text += f" WHERE status IN ({', '.join('?' * len(args))})" if args else " WHERE 1 = 0"
        text += " ORDER BY created_time, rollout_id"
        with self._tx(write=False) as sql:
            rows = sql.run(text, args).rows()
        return [_rollout(row) for row in rows]

    def update(self, rollout_id: str, *, expect: Expect | None = None, **fields: Any) -> None:
        """Change a rollout's columns (with ``expect``: only while its status and request are
        still those, else :class:`StaleRolloutError`)."""
        _check_columns(fields)
        with self._tx(write=True) as sql:
            _update(sql, rollout_id, fields, expect)

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
        text, args = _of_rollout(
            "device_id, wave, status, attempts, retried, last_job_id, error_code, "
            "error_description, method_status, method_payload, end_time FROM devices",
            rollout_id,
            {"wave": wave, "status": status},
            "seq",
        )
        if limit is not None:
            text += " LIMIT ?"
            args.append(limit)
        with self._tx(write=False) as sql:
            rows = sql.run(text, args).rows()
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
            for row in rows
        ]

    def device_attempts(
        self, rollout_id: str, *, wave: int, status: str | None = None
    ) -> list[tuple[str, int]]:
        """``(device id, attempts)`` of a wave's devices in plan order (with ``status``)."""
        text, args = _of_rollout(
            "device_id, attempts FROM devices", rollout_id, {"wave": wave, "status": status}, "seq"
        )
        with self._tx(write=False) as sql:
            return [(row[0], row[1]) for row in sql.run(text, args).cursor.fetchall()]

    def counts(self, rollout_id: str) -> dict[str, int]:
        """Devices by status (``pending``, ``succeeded``, ``failed``) and ``retried``."""
        return self._wave_counts(rollout_id, None)

    def _wave_counts(self, rollout_id: str, wave: int | None) -> dict[str, int]:
        """:meth:`counts` of one wave's devices (of every wave: None)."""
        counts = {"pending": 0, "succeeded": 0, "failed": 0, "retried": 0}
        text = (
            "SELECT status, COUNT(*), SUM(CASE WHEN retried > 0 THEN 1 ELSE 0 END) "
            "FROM devices WHERE rollout_id = ?"
        )
        args: list[Any] = [rollout_id]
        if wave is not None:
            text += " AND wave = ?"
            args.append(wave)
        with self._tx(write=False) as sql:
            rows = sql.run(text + " GROUP BY status", args).rows()
        for status, count, retried in rows:
            counts[status] = int(count)
            counts["retried"] += int(retried or 0)
        return counts

    # -- rounds and parts ----------------------------------------------------------------

    def rounds(self, rollout_id: str, state: str | None = None) -> list[RoundRecord]:
        """A rollout's rounds (in ``state`` when given), by wave and attempt."""
        text, args = _of_rollout(
            "rollout_id, wave, attempt, members, not_before, state FROM rounds",
            rollout_id,
            {"state": state},
            "wave, attempt",
        )
        with self._tx(write=False) as sql:
            rows = sql.run(text, args).rows()
        return _round_records(rows)

    def add_round(self, round_: RoundRecord, parts: Sequence[PartRecord], **rollout: Any) -> None:
        """Store a round (new or planned before), its parts and the rollout's columns."""
        _check_columns(rollout)
        with self._tx(write=True) as sql:
            _put_round(sql, round_)
            sql.many(
                "INSERT INTO parts (job_id, rollout_id, wave, attempt, part, condition, state, "
                "hub_status) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id) DO NOTHING",
                [
                    (p.job_id, p.rollout_id, p.wave, p.attempt, p.part, p.condition, p.state, None)
                    for p in parts
                ],
            )
            _update(sql, round_.rollout_id, rollout)

    def set_round_state(self, rollout_id: str, state: str, *, where_state: str) -> None:
        """Move every round of a rollout in ``where_state`` to ``state``."""
        with self._tx(write=True) as sql:
            sql.run(
                "UPDATE rounds SET state = ? WHERE rollout_id = ? AND state = ?",
                (state, rollout_id, where_state),
            )

    def parts(self, rollout_id: str, wave: int, attempt: int) -> list[PartRecord]:
        """The parts of one round, in order."""
        with self._tx(write=False) as sql:
            rows = sql.run(
                "SELECT job_id, rollout_id, wave, attempt, part, condition, state, hub_status "
                "FROM parts WHERE rollout_id = ? AND wave = ? AND attempt = ? ORDER BY part",
                (rollout_id, wave, attempt),
            ).rows()
        return [PartRecord(*row) for row in rows]

    def waves(self, rollout_id: str, limit: int | None = None) -> list[WaveRecord]:
        """One row per round (wave and attempt), then one per wave not planned yet
        (:func:`services.store.rollouts.wave_records`), read in one snapshot of the three
        tables: linear in their size."""
        rounds_text, rounds_args = _of_rollout(
            "rollout_id, wave, attempt, members, not_before, state FROM rounds",
            rollout_id,
            {},
            "wave, attempt",
        )
        with self._tx(write=False) as sql:
            round_rows = sql.run(rounds_text, rounds_args).rows()
            parts = sql.run(
                "SELECT wave, attempt, job_id, state FROM parts WHERE rollout_id = ? "
                "ORDER BY wave, attempt, part",
                (rollout_id,),
            ).rows()
            devices = sql.run(
                "SELECT device_id, wave, status FROM devices WHERE rollout_id = ?", (rollout_id,)
            ).rows()
        return wave_records(_round_records(round_rows), parts, devices, limit)

    def set_part(
        self,
        job_id: str,
        state: str,
        hub_status: str | None = None,
        *,
        expect: Expect | None = None,
        **rollout: Any,
    ) -> None:
        """Record a part's new state (and the hub's status of its job), and its rollout's
        changed columns with it (with ``expect``: only while the rollout's status and request
        are still those, else :class:`StaleRolloutError` and nothing written)."""
        _check_columns(rollout)
        with self._tx(write=True) as sql:
            if rollout or expect is not None:
                row = sql.run("SELECT rollout_id FROM parts WHERE job_id = ?", (job_id,)).one()
                if row is not None:
                    _update(sql, row[0], rollout, expect)
            sql.run(
                "UPDATE parts SET state = ?, hub_status = COALESCE(?, hub_status) WHERE job_id = ?",
                (state, hub_status, job_id),
            )

    def end_parts(self, ended: Sequence[tuple[str, str]]) -> None:
        """Record parts whose hub jobs ended (``(job id, hub status)``), in one transaction."""
        if not ended:
            return
        with self._tx(write=True) as sql:
            sql.many(
                "UPDATE parts SET state = 'ended', hub_status = ? WHERE job_id = ?",
                [(status, job_id) for job_id, status in ended],
            )

    def judge(
        self,
        rollout_id: str,
        wave: int,
        attempt: int,
        updates: Sequence[DeviceUpdate],
        next_round: RoundRecord | None,
        *,
        expect: Expect | None = None,
        **rollout: Any,
    ) -> None:
        """Store a round's verdict whole: devices, the round judged, the retry round, the
        rollout's columns (with ``expect``: only while the rollout's status and request are
        still those, else :class:`StaleRolloutError` and nothing written)."""
        _check_columns(rollout)
        rows = [
            (
                u.device_id,
                u.status,
                u.attempts,
                1 if u.retried else 0,
                u.last_job_id,
                u.error_code,
                u.error_description,
                u.method_status,
                None if u.method_payload is None else json.dumps(u.method_payload),
                _time(u.end_time),
            )
            for u in updates
        ]
        with self._tx(write=True) as sql:
            _update(sql, rollout_id, rollout, expect)  # first: a stale verdict writes nothing
            self._update_devices(sql, rollout_id, rows)
            sql.run(
                "UPDATE rounds SET state = 'judged' WHERE rollout_id = ? AND wave = ? "
                "AND attempt = ?",
                (rollout_id, wave, attempt),
            )
            if next_round is not None:
                _put_round(sql, next_round)


@functools.lru_cache(maxsize=16)
def _members(text: str) -> tuple[str, ...]:
    """A round's stored members (JSON), decoded once: the engine reads its running round at
    every step, and a wave of 10,000 ids took milliseconds to decode each time."""
    return tuple(json.loads(text))


def _round_records(rows: Iterable[Sequence[Any]]) -> list[RoundRecord]:
    return [
        RoundRecord(row[0], row[1], row[2], _members(row[3]), _parse(row[4]) or _EPOCH, row[5])
        for row in rows
    ]


def _of_rollout(
    source: str, rollout_id: str, filters: dict[str, Any], order: str
) -> tuple[str, list[Any]]:
    """``SELECT source`` of one rollout's rows, with ``column = value`` for each filter given
    (not None), ordered by ``order``: the statement and its arguments."""
    text = f"SELECT {source} WHERE rollout_id = ?"
    args: list[Any] = [rollout_id]
    for column, value in filters.items():
        if value is not None:
            text += f" AND {column} = ?"
            args.append(value)
    return f"{text} ORDER BY {order}", args


def _check_columns(fields: dict[str, Any]) -> None:
    unknown = set(fields) - _UPDATABLE
    if unknown:
        raise ValueError(f"rollout columns {sorted(unknown)} cannot be updated")


def _update(
    sql: Sql, rollout_id: str, fields: dict[str, Any], expect: Expect | None = None
) -> None:
    """Change a rollout's columns; with ``expect``, only while its ``(status, requested)`` are
    still those (else :class:`StaleRolloutError`, and the caller's transaction rolls back)."""
    if not fields and expect is None:
        return
    values = [_time(v) if isinstance(v, datetime) else v for v in fields.values()]
    # A bare check keeps the row as it is (the status assigned to itself).
    assignments = ", ".join(f"{name} = ?" for name in fields) or "status = status"
    text = f"UPDATE rollouts SET {assignments} WHERE rollout_id = ?"
    args = [*values, rollout_id]
    if expect is not None:
        text += " AND status = ? AND requested IS NOT DISTINCT FROM ?"
        args.extend(expect)
    sql.run(text, args)
    if expect is not None and sql.cursor.rowcount == 0:
        raise StaleRolloutError(
            f"rollout '{rollout_id}' changed since it was read (status and request "
            f"{expect[0]}/{expect[1] or '-'}, or gone): decide again"
        )


def _put_round(sql: Sql, round_: RoundRecord) -> None:
    sql.run(
        "INSERT INTO rounds (rollout_id, wave, attempt, members, not_before, state) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (rollout_id, wave, attempt) DO UPDATE SET "
        "members = excluded.members, not_before = excluded.not_before, state = excluded.state",
        (
            round_.rollout_id,
            round_.wave,
            round_.attempt,
            json.dumps(list(round_.members)),
            _time(round_.not_before),
            round_.state,
        ),
    )
