"""The rollout store in a PostgreSQL database shared by several agents (``store.url``).

The same tables, schema and SQL as the SQLite store (:mod:`services.store.tables`); psycopg 3 on
one connection per store, in autocommit mode with explicit ``BEGIN`` … ``COMMIT`` per call.

Dialect differences (the only ones): ``%s`` parameters (:class:`~services.store.tables.Sql`),
a new rollout's devices are written with ``COPY`` and a verdict's with one ``UPDATE ... FROM
unnest(arrays)`` (one round trip for 10,000 rows, where a statement per row would be one each;
benchmarks/bench_rollout_store.py), and migrations take an advisory lock
(:func:`services.store.schema.migrate`).

Rules:
- The URL is a secret (it may carry a password): it is never logged nor put in an error; the
  store names itself by host, port and database only (:func:`describe`).
- The connection is opened on first use and again after it broke: a call that fails because the
  database went away raises :class:`~services.store.errors.StoreUnavailable` (one line) and
  drops the connection; the next call connects anew. A connection found dead at ``BEGIN``
  (nothing sent yet) is replaced once within the same call.
- Every wait is bounded: ``connect_timeout`` for a connection, TCP keepalives for a server that
  vanished without closing the socket.
- A write made under a fence (:meth:`~services.store.tables.RolloutTables.fenced`) checks it
  first in its transaction (:func:`~services.store.fencing.check_fence`) and is refused whole
  (:class:`~services.store.errors.FencedError`) when another agent leads the hub now.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import psycopg
import structlog
from psycopg import errors as pg_errors

from services.store.errors import RolloutExistsError, StoreError, StoreUnavailable
from services.store.fencing import check_fence
from services.store.rollouts import COMPONENT, MIGRATIONS
from services.store.schema import migrate
from services.store.tables import DeviceRow, RolloutTables, Sql

__all__ = ["CONNECT_TIMEOUT", "PostgresRolloutStore", "describe"]

_log = structlog.get_logger("services.store.postgres")
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError)

CONNECT_TIMEOUT = 5
"""Seconds the rollout store's connection attempt may take (``jobs-agent check`` waits as long)."""


def describe(url: str) -> str:
    """``PostgreSQL at host:port/database``: the URL without user, password or options.

    Args:
        url: a ``postgresql://`` URL.
    """
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "PostgreSQL (the store URL does not parse)"
    host = info.get("host") or "localhost"
    port = info.get("port") or "5432"
    return f"PostgreSQL at {host}:{port}/{info.get('dbname') or '(default database)'}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class PostgresRolloutStore(RolloutTables):
    """:class:`~services.store.rollouts.RolloutStore` in a PostgreSQL database.

    Args:
        url: ``postgresql://user:password@host:port/database`` (a secret).
        connect_timeout: seconds a connection attempt may take.

    Raises:
        SchemaTooNewError: (on first use) the database's rollout schema is newer than this
            agent knows.
    """

    def __init__(self, url: str, *, connect_timeout: int = CONNECT_TIMEOUT) -> None:
        super().__init__()
        self._url = url
        self._connect_timeout = connect_timeout
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self.where = describe(url)

    def _open(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            try:
                conn = psycopg.connect(
                    self._url,
                    autocommit=True,
                    connect_timeout=self._connect_timeout,
                    keepalives=1,
                    keepalives_idle=10,
                    keepalives_interval=5,
                    keepalives_count=3,
                    application_name="jobs-agent rollouts",
                )
            except psycopg.ProgrammingError:
                # libpq quotes a URL it cannot parse, password and all: say so without it.
                raise StoreError(
                    "store.url is not a valid postgresql:// URL (not shown: it may hold a "
                    "password); check it, and percent-encode special characters"
                ) from None
            try:
                migrate(conn, COMPONENT, MIGRATIONS)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            _log.info("rollout store connected", store=self.where)
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def _begin(self) -> psycopg.Connection[tuple[object, ...]]:
        """A connection inside a new transaction: one found dead at ``BEGIN`` is replaced."""
        conn = self._open()
        try:
            conn.execute("BEGIN")
        except _UNAVAILABLE:
            # Dropped by the server since the last call (a restart): nothing was sent yet.
            self._drop()
            conn = self._open()
            conn.execute("BEGIN")
        return conn

    @contextlib.contextmanager
    def _tx(self, *, write: bool) -> Iterator[Sql]:
        with self._lock:
            try:
                conn = self._begin()
                try:
                    with conn.cursor() as cursor:
                        if write and self._fence is not None:
                            check_fence(cursor, self._fence)
                        yield Sql(cursor, "%s")
                except BaseException:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except pg_errors.UniqueViolation as exc:
                raise RolloutExistsError(
                    f"the rollout is stored already ({exc.diag.message_primary})"
                ) from None
            except _UNAVAILABLE as exc:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._drop()
                raise StoreUnavailable(
                    f"the rollout store ({self.where}) is unavailable: {_one_line(exc)}; "
                    "the agent retries when it is back"
                ) from exc
            except psycopg.Error as exc:
                raise StoreError(
                    f"the rollout store ({self.where}) failed: {_one_line(exc)}"
                ) from exc

    def _insert_devices(self, sql: Sql, rows: Iterable[tuple[str, str, int, int]]) -> None:
        with sql.cursor.copy("COPY devices (rollout_id, device_id, seq, wave) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def _update_devices(self, sql: Sql, rollout_id: str, rows: list[DeviceRow]) -> None:
        # One statement over arrays: an UPDATE per device costs a round trip each.
        if not rows:
            return
        columns = list(zip(*rows, strict=True))
        sql.run(
            "UPDATE devices AS d SET status = u.status, attempts = u.attempts, "
            "retried = d.retried + u.retried, "
            "last_job_id = COALESCE(u.last_job_id, d.last_job_id), "
            "error_code = u.error_code, error_description = u.error_description, "
            "method_status = u.method_status, method_payload = u.method_payload, "
            "end_time = u.end_time "
            "FROM unnest(?::text[], ?::text[], ?::integer[], ?::integer[], ?::text[], ?::text[], "
            "?::text[], ?::integer[], ?::text[], ?::text[]) AS u(device_id, status, attempts, "
            "retried, last_job_id, error_code, error_description, method_status, method_payload, "
            "end_time) WHERE d.rollout_id = ? AND d.device_id = u.device_id",
            [*(list(column) for column in columns), rollout_id],
        )

    def close(self) -> None:
        """Close the connection (if it was opened)."""
        with self._lock:
            self._drop()
