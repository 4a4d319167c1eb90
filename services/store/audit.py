"""The audit log: who changed what through the agent, from which Thing, and how it ended.

One row per audited call (:mod:`services.audit` turns the registry's call records into
:class:`AuditEntry` rows): when, which agent, the Thing the call came to, the user when the
platform names one, the service and its action, the job and rollout it concerns, its inputs
(JSON, secrets masked, bounded) and its outcome. :class:`AuditLog` is the interface;
:class:`SqliteAuditLog` keeps the rows in ``audit.sqlite`` in the agent's data directory,
:class:`PostgresAuditLog` in the shared PostgreSQL database of ``store.url`` (every agent of the
hub writes there). Both migrate the ``audit`` component's schema (:func:`~services.store.schema.
migrate`) with the same steps.

Rules:
- Rows are only ever added: no update, no delete, no expiry (kept past IoT Hub's 30 days; the
  operator prunes or archives with SQL if ever needed, docs/operations.md).
- Each entry carries a key made by the agent (``entry_key``): writing the same batch twice (a
  retry after a connection lost at commit) adds it once.
- The calls block (a database round trip): callers run them off the event loop
  (``asyncio.to_thread``); one lock serialises them per log.
- Any database failure is one :class:`AuditStoreError` line (never the URL, which may carry a
  password); a PostgreSQL connection that failed is dropped and opened again on the next call.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg

from services.store.schema import SchemaTooNewError, migrate

__all__ = [
    "AUDIT_COMPONENT",
    "AuditEntry",
    "AuditLog",
    "AuditQuery",
    "AuditStoreError",
    "PostgresAuditLog",
    "SqliteAuditLog",
    "open_audit_log",
]

AUDIT_COMPONENT = "audit"
"""The component name of the audit log's schema in ``schema_versions``."""

_COLUMNS = (
    "entry_key, time, agent, thing, user_name, service, action, job_id, rollout_id, inputs, "
    "outcome, message"
)


def _migrations(identity: str, timestamp: str) -> dict[int, str]:
    """The ``audit`` schema's steps; only the id and time column types differ by database."""
    return {
        1: f"""CREATE TABLE audit_log (
    id {identity},
    entry_key TEXT NOT NULL UNIQUE,
    time {timestamp} NOT NULL,
    agent TEXT NOT NULL,
    thing TEXT NOT NULL,
    user_name TEXT NOT NULL,
    service TEXT NOT NULL,
    action TEXT NOT NULL,
    job_id TEXT NOT NULL,
    rollout_id TEXT NOT NULL,
    inputs TEXT NOT NULL,
    outcome TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX audit_log_by_time ON audit_log (time, id);
CREATE INDEX audit_log_by_job ON audit_log (job_id, time, id);
CREATE INDEX audit_log_by_rollout ON audit_log (rollout_id, time, id);
"""
    }


SQLITE_MIGRATIONS = _migrations("INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT")
POSTGRES_MIGRATIONS = _migrations("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "TIMESTAMPTZ")


class AuditStoreError(Exception):
    """The audit log's database cannot be reached or refused a statement (one line)."""


@dataclass(frozen=True)
class AuditEntry:
    """One audited call.

    Attributes:
        key: a unique key made by the agent (a retried write adds the entry once).
        time: when the call was answered (UTC).
        agent: the agent that served it (``host/gateway Thing``).
        thing: the Thing the call came to.
        user: the calling user when the platform names one, else "".
        service: the service called.
        action: what it changes (``scheduleTwinJob``, ``cancelJob``, ``startRollout``...).
        job_id: the job concerned ("" when none is known).
        rollout_id: the rollout concerned ("" when none).
        inputs: the inputs as JSON text (secrets masked, cut past a bound with a marker).
        outcome: ``ok``, or the AlwaysOn status of the refusal (``BAD_REQUEST``, ``NOT_FOUND``...).
        message: the refusal's one-line message ("" when ok).
        entry_id: the store's id (ascending in insertion order); None before it is written.
    """

    key: str
    time: datetime
    agent: str
    thing: str
    user: str
    service: str
    action: str
    job_id: str
    rollout_id: str
    inputs: str
    outcome: str
    message: str
    entry_id: int | None = None


@dataclass(frozen=True)
class AuditQuery:
    """Which entries to read, newest first.

    Attributes:
        start: the earliest time (inclusive); None for no bound.
        end: the latest time (inclusive); None for no bound.
        job_id: only the entries of this job.
        rollout_id: only the entries of this rollout.
        before: (time, entry_id) of the last entry of the previous page: only older entries.
        limit: the most entries to return.
    """

    start: datetime | None = None
    end: datetime | None = None
    job_id: str | None = None
    rollout_id: str | None = None
    before: tuple[datetime, int] | None = None
    limit: int = 100


class AuditLog(Protocol):
    """Where audit entries are kept (blocking calls: run them off the event loop)."""

    def append(self, entries: Sequence[AuditEntry]) -> None:
        """Add the entries in one transaction (those whose key is stored already are skipped).

        Raises:
            AuditStoreError: nothing was written.
        """
        ...

    def query(self, query: AuditQuery) -> list[AuditEntry]:
        """The entries ``query`` selects, newest first (time, then id, descending).

        Raises:
            AuditStoreError: the database cannot be read.
        """
        ...

    def close(self) -> None:
        """Close the database connection (a later call opens it again)."""
        ...


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class _SqlAuditLog:
    """What both databases share: the statements, the lock, the connection life."""

    _param = "?"
    _migrations: dict[int, str] = {}
    _what = "the audit log"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: Any = None

    def _open(self) -> Any:  # pragma: no cover - each database has its own
        raise NotImplementedError

    def _time_in(self, value: datetime) -> Any:
        return _utc(value)

    def _time_out(self, value: Any) -> datetime:
        return _utc(value)

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """The open connection (opened and migrated on first use), under the lock; a driver
        error becomes :class:`AuditStoreError` and drops the connection."""
        with self._lock:
            try:
                if self._conn is None:
                    conn = self._open()
                    try:
                        migrate(conn, AUDIT_COMPONENT, self._migrations)
                    except BaseException:
                        conn.close()
                        raise
                    self._conn = conn
                yield self._conn
            except SchemaTooNewError as exc:
                raise AuditStoreError(str(exc)) from None
            except (sqlite3.Error, psycopg.Error, OSError) as exc:
                self._drop()
                first = " ".join(str(exc).split()) or type(exc).__name__
                raise AuditStoreError(f"{self._what} is unavailable: {first[:300]}") from None

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):  # closing a broken connection: nothing more to do
                conn.close()

    def append(self, entries: Sequence[AuditEntry]) -> None:
        """See :meth:`AuditLog.append`."""
        if not entries:
            return
        p = self._param
        statement = (
            f"INSERT INTO audit_log ({_COLUMNS}) VALUES ({', '.join([p] * 12)}) "
            "ON CONFLICT (entry_key) DO NOTHING"
        )
        rows = [
            (
                e.key,
                self._time_in(e.time),
                e.agent,
                e.thing,
                e.user,
                e.service,
                e.action,
                e.job_id,
                e.rollout_id,
                e.inputs,
                e.outcome,
                e.message,
            )
            for e in entries
        ]
        with self._connection() as conn:
            conn.execute("BEGIN")
            try:
                conn.cursor().executemany(statement, rows)
                conn.execute("COMMIT")
            except BaseException:
                with suppress(Exception):  # the connection is gone: the caller sees the first error
                    conn.execute("ROLLBACK")
                raise

    def query(self, query: AuditQuery) -> list[AuditEntry]:
        """See :meth:`AuditLog.query`."""
        p = self._param
        where: list[str] = []
        params: list[Any] = []
        if query.start is not None:
            where.append(f"time >= {p}")
            params.append(self._time_in(query.start))
        if query.end is not None:
            where.append(f"time <= {p}")
            params.append(self._time_in(query.end))
        if query.job_id is not None:
            where.append(f"job_id = {p}")
            params.append(query.job_id)
        if query.rollout_id is not None:
            where.append(f"rollout_id = {p}")
            params.append(query.rollout_id)
        if query.before is not None:
            when, entry_id = query.before
            where.append(f"(time < {p} OR (time = {p} AND id < {p}))")
            params += [self._time_in(when), self._time_in(when), entry_id]
        sql = f"SELECT id, {_COLUMNS} FROM audit_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY time DESC, id DESC LIMIT {p}"
        params.append(query.limit)
        with self._connection() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [
            AuditEntry(
                key=r[1],
                time=self._time_out(r[2]),
                agent=r[3],
                thing=r[4],
                user=r[5],
                service=r[6],
                action=r[7],
                job_id=r[8],
                rollout_id=r[9],
                inputs=r[10],
                outcome=r[11],
                message=r[12],
                entry_id=int(r[0]),
            )
            for r in rows
        ]

    def close(self) -> None:
        """See :meth:`AuditLog.close`."""
        with self._lock:
            self._drop()


class SqliteAuditLog(_SqlAuditLog):
    """:class:`AuditLog` in one SQLite file (WAL), opened and migrated on first use.

    Args:
        path: the database file (its directory is created), e.g. ``<data_dir>/audit.sqlite``.
    """

    _migrations = SQLITE_MIGRATIONS
    _what = "the audit log (SQLite)"

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.path = Path(path)

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def _time_in(self, value: datetime) -> str:
        # Fixed-width UTC text sorts as time does.
        return _utc(value).replace(tzinfo=None).isoformat(timespec="microseconds")

    def _time_out(self, value: Any) -> datetime:
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


class PostgresAuditLog(_SqlAuditLog):
    """:class:`AuditLog` in a PostgreSQL database shared by the agents of a hub (psycopg 3).

    Args:
        url: ``store.url`` (``postgresql://...``; never logged).
        connect_timeout: seconds one connection attempt may take.
    """

    _param = "%s"
    _migrations = POSTGRES_MIGRATIONS
    _what = "the audit log (PostgreSQL)"

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        super().__init__()
        self._url = url
        self._connect_timeout = max(1, round(connect_timeout))

    def __repr__(self) -> str:
        return "PostgresAuditLog(<store.url>)"

    def _open(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self._url, autocommit=True, connect_timeout=self._connect_timeout)


def open_audit_log(url: str, data_dir: Path | str, *, connect_timeout: float = 5.0) -> AuditLog:
    """The audit log the ``[store]`` settings name (nothing is opened yet).

    Args:
        url: ``store.url``: empty for SQLite, ``postgresql://...`` for the shared database.
        data_dir: ``rollouts.data_dir``, where the SQLite file goes.
        connect_timeout: seconds one PostgreSQL connection attempt may take.
    """
    if url:
        return PostgresAuditLog(url, connect_timeout=connect_timeout)
    return SqliteAuditLog(Path(data_dir) / "audit.sqlite")
