"""Versioned schemas: each component migrates its own tables forward, on SQLite or PostgreSQL.

A component (``rollouts``, ``audit``, ...) keeps its version in its own row of
``schema_versions (component, version)``. :func:`migrate` applies the component's migrations
above the stored version, each in its own transaction together with the new version number, so a
crash leaves the schema at one version or the next, never between.

Why a small table and not a migration tool: the agent owns a handful of tables, ships its
migrations inside the package (no files to deploy beside it) and must run the same steps on
SQLite and PostgreSQL; Alembic or Flyway would bring a second configuration and a dependency for
what is a dozen lines here.

Rules:
- Migrations only move forward; a database newer than the agent is refused with a one-line error
  (run a newer agent), never altered.
- On PostgreSQL the migration holds a transaction-level advisory lock per component, so two agents
  starting at once do not apply the same step twice.
- Statements of one migration are separated by ``;`` at the end of a line; no statement may
  contain one there.
"""

from __future__ import annotations

import contextlib
import sqlite3
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["SchemaTooNewError", "migrate", "schema_version", "stored_versions"]

_TABLE = """CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
)"""


class SchemaTooNewError(RuntimeError):
    """The database holds a schema newer than this agent knows."""


def _is_sqlite(conn: Any) -> bool:
    return isinstance(conn, sqlite3.Connection)


def _param(conn: Any) -> str:
    return "?" if _is_sqlite(conn) else "%s"


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";\n") if s.strip().rstrip(";").strip()]


def schema_version(conn: Any, component: str) -> int:
    """The version of ``component``'s schema in the database (0: none yet).

    Args:
        conn: a :class:`sqlite3.Connection` (autocommit, ``isolation_level=None``) or a
            ``psycopg.Connection`` (autocommit).
        component: the component's name.
    """
    _ensure_table(conn)
    row = conn.execute(
        f"SELECT version FROM schema_versions WHERE component = {_param(conn)}", (component,)
    ).fetchone()
    return int(row[0]) if row else 0


def stored_versions(conn: Any) -> dict[str, int] | None:
    """Every component's schema version in the database, read only (nothing is created).

    Args:
        conn: as for :func:`schema_version`.

    Returns:
        component -> version, or None when the database has no ``schema_versions`` table yet.
    """
    if _is_sqlite(conn):
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_versions'"
        ).fetchone()
    else:
        found = conn.execute("SELECT to_regclass('schema_versions')").fetchone()
        found = found if found and found[0] is not None else None
    if not found:
        return None
    rows = conn.execute("SELECT component, version FROM schema_versions").fetchall()
    return {str(component): int(version) for component, version in rows}


def migrate(conn: Any, component: str, migrations: Mapping[int, str]) -> int:
    """Bring ``component``'s schema up to the highest version of ``migrations``.

    Args:
        conn: as for :func:`schema_version` (autocommit: each step is its own transaction here).
        component: the component's name.
        migrations: version (1, 2, ...) -> SQL script taking the schema from version - 1.

    Returns:
        The schema version now held.

    Raises:
        SchemaTooNewError: the database's version is above every migration known here.
    """
    latest = max(migrations, default=0)
    p = _param(conn)
    current = schema_version(conn, component)
    if current > latest:
        raise SchemaTooNewError(
            f"the store's '{component}' schema is version {current}, newer than this agent's "
            f"{latest}: run a newer agent"
        )
    for target in range(current + 1, latest + 1):
        with _locked_transaction(conn, component):
            # Another agent may have moved it on while we waited for the lock.
            row = conn.execute(
                f"SELECT version FROM schema_versions WHERE component = {p}", (component,)
            ).fetchone()
            done = int(row[0]) if row else 0
            if done < target:
                for statement in _statements(migrations[target]):
                    conn.execute(statement)
                conn.execute(
                    f"INSERT INTO schema_versions (component, version) VALUES ({p}, {p}) "
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (component, target),
                )
    return schema_version(conn, component)


def _ensure_table(conn: Any) -> None:
    """Create ``schema_versions`` once (PostgreSQL: under a lock, as two agents may race)."""
    if _is_sqlite(conn):
        conn.execute(_TABLE)
        return
    with _locked_transaction(conn, "schema_versions"):
        conn.execute(_TABLE)


@contextlib.contextmanager
def _locked_transaction(conn: Any, name: str) -> Iterator[None]:
    """One transaction (SQLite: ``BEGIN IMMEDIATE``, the write lock at once; PostgreSQL: holding
    the advisory lock of ``name`` until it ends), committed, or rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE" if _is_sqlite(conn) else "BEGIN")
    try:
        if not _is_sqlite(conn):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(name),))
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _lock_key(component: str) -> int:
    """A stable 63-bit advisory-lock key for ``component``'s migrations."""
    return zlib.crc32(f"jobs-agent schema {component}".encode()) & 0x7FFF_FFFF_FFFF_FFFF
