"""``jobs-agent check``'s store step: the agent's own state, read only.

- SQLite (``store.url`` empty): ``rollouts.data_dir`` is writable (or can be created), and each
  file there (``rollouts.sqlite``, ``audit.sqlite``) holds schemas this agent knows, or is absent.
- PostgreSQL: the database answers within the store's connect timeout, each component's schema
  version is one this agent knows (or absent), and whether another agent holds the hub's rollout
  leadership (then this agent would be its standby).

Rules:
- Nothing is created, migrated or locked: a file or table that is absent is reported as such
  (the agent creates it on first use); the writability probe is a temporary file, removed.
- The store URL is a secret: lines and errors name the store by host, port and database only
  (:func:`services.store.postgres.describe`), never the URL.
- One line per step; a failing step is one line with a hint (``fail``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

import psycopg
from rich.console import Console

from agent.cli.args import EXIT_FAILED, EXIT_OK
from agent.settings import Settings
from services.store import SQLITE_FILE, fencing
from services.store import admission as admission_store
from services.store import audit as audit_store
from services.store import rollouts as rollout_store
from services.store.leadership import leadership_key
from services.store.postgres import CONNECT_TIMEOUT, describe
from services.store.schema import stored_versions

__all__ = ["KNOWN_SCHEMAS", "check_store"]

KNOWN_SCHEMAS: dict[str, int] = {
    rollout_store.COMPONENT: max(rollout_store.MIGRATIONS),
    audit_store.AUDIT_COMPONENT: max(audit_store.SQLITE_MIGRATIONS),
    "admission": max(admission_store.MIGRATIONS),
    fencing.COMPONENT: max(fencing.MIGRATIONS),
}
"""The schema version of each store component this agent knows (migrates up to)."""

AUDIT_FILE = "audit.sqlite"
"""The SQLite audit log's file name in ``rollouts.data_dir``."""

Fail = Callable[[str, str, str], None]
_OK = "[green]✓[/green]"


def _ok(console: Console, text: str) -> None:
    """A step that passed: the green mark, then ``text`` as plain text (server text inside)."""
    console.print(f"{_OK} ", end="")
    console.print(text, markup=False, highlight=False)


async def check_store(settings: Settings, hub_host: str, console: Console, fail: Fail) -> int:
    """Check the store ``settings`` name, one line per step.

    Args:
        settings: the agent's settings.
        hub_host: the IoT Hub's host name (the key of its rollout leadership).
        console: where the lines go.
        fail: prints a failed step (step, message, hint).

    Returns:
        0 when the store is usable, 1 when a step failed.
    """
    url = settings.store.url.get_secret_value()
    if url:
        return await _check_postgres(url, hub_host, console, fail)
    return await asyncio.to_thread(_check_sqlite, Path(settings.rollouts.data_dir), console, fail)


def _versions_line(versions: dict[str, int], components: list[str]) -> tuple[str, str | None]:
    """The versions as text, and the first one newer than this agent knows (or None)."""
    parts, too_new = [], None
    for component in components:
        known = KNOWN_SCHEMAS[component]
        have = versions.get(component)
        if have is None:
            parts.append(f"{component} absent (created on first use)")
            continue
        note = "" if have == known else f", this agent knows v{known}"
        parts.append(f"{component} v{have}{note}")
        if have > known and too_new is None:
            too_new = f"the '{component}' schema is v{have}, newer than this agent's v{known}"
    unknown = sorted(set(versions) - set(components) - set(KNOWN_SCHEMAS))
    parts.extend(f"{name} v{versions[name]} (not this agent's)" for name in unknown)
    return "; ".join(parts), too_new


# -- SQLite ----------------------------------------------------------------------------------


def _check_sqlite(data_dir: Path, console: Console, fail: Fail) -> int:
    step = f"store: SQLite in {data_dir}/"
    where = data_dir
    while not where.exists() and where != where.parent:
        where = where.parent  # the directory the agent would create data_dir in
    try:
        if not where.is_dir():
            raise NotADirectoryError(f"{where} is not a directory")
        with tempfile.TemporaryFile(dir=where, prefix=".jobs-agent-check-"):
            pass
    except OSError as exc:
        fail(
            step,
            f"cannot write there: {exc.strerror or exc}",
            "make rollouts.data_dir a directory the agent's user can write to",
        )
        return EXIT_FAILED
    created = "" if where == data_dir else f" (absent: created in {where}/ on first use)"
    _ok(console, f"{step}: writable{created}")
    status = EXIT_OK
    files = [(SQLITE_FILE, [rollout_store.COMPONENT]), (AUDIT_FILE, [audit_store.AUDIT_COMPONENT])]
    for name, components in files:
        path = data_dir / name
        step = f"store {name}"
        if not path.exists():
            _ok(console, f"{step}: absent (created on first use)")
            continue
        try:
            versions = _sqlite_versions(path, components[0])
        except sqlite3.Error as exc:
            fail(step, f"cannot be read: {exc}", f"check {path} (a SQLite file of the agent)")
            status = EXIT_FAILED
            continue
        text, too_new = _versions_line(versions, components)
        if too_new:
            fail(step, too_new, "run a newer agent, or point rollouts.data_dir elsewhere")
            status = EXIT_FAILED
            continue
        _ok(console, f"{step}: schema {text}")
    return status


def _sqlite_versions(path: Path, component: str) -> dict[str, int]:
    """The file's schema versions, opened read only (a file of the agent before
    ``schema_versions`` counts by its ``user_version``, as the store adopts it)."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        versions = stored_versions(db)
        if versions is None:
            (old,) = db.execute("PRAGMA user_version").fetchone()
            return {component: int(old)} if old else {}
        return versions
    finally:
        db.close()


# -- PostgreSQL ------------------------------------------------------------------------------


async def _check_postgres(url: str, hub_host: str, console: Console, fail: Fail) -> int:
    where = describe(url)
    step = f"store {where}"
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT + 5):
            found = await asyncio.to_thread(_read_postgres, url, hub_host)
    except psycopg.ProgrammingError:
        # libpq quotes a URL it cannot parse, password and all: say so without it.
        fail(
            step,
            "store.url is not a valid postgresql:// URL (not shown: it may hold a password)",
            "check store.url (or store.url_file), and percent-encode special characters",
        )
        return EXIT_FAILED
    except (psycopg.Error, OSError, TimeoutError) as exc:
        error = _one_line(exc).replace(url, "(the store URL)")
        fail(
            step,
            f"unreachable within its connect timeout ({CONNECT_TIMEOUT} s): {error}",
            "check that PostgreSQL runs and store.url's host, port, database and credentials",
        )
        return EXIT_FAILED
    server, versions, holder = found
    _ok(console, f"{step}: reachable ({server})")
    status = EXIT_OK
    if versions is None:
        _ok(console, f"{step} schemas: none yet (created on first use)")
    else:
        text, too_new = _versions_line(versions, list(KNOWN_SCHEMAS))
        if too_new:
            fail(f"{step} schemas", too_new, "run a newer agent (another agent migrated it)")
            status = EXIT_FAILED
        else:
            _ok(console, f"{step} schemas: {text}")
    if holder is None:
        line = f"rollout leadership of {hub_host}: free (this agent would take it)"
    else:
        line = (
            f"rollout leadership of {hub_host}: held by another agent ({holder}); this agent "
            "would be its standby"
        )
    _ok(console, f"{step} {line}")
    return status


def _read_postgres(url: str, hub_host: str) -> tuple[str, dict[str, int] | None, str | None]:
    """The server's version, the stored schema versions, and who holds the leadership lock (and
    in which epoch, once an agent of this version took it)."""
    key = leadership_key(hub_host)
    with psycopg.connect(
        url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, application_name="jobs-agent check"
    ) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        server = f"PostgreSQL {row[0]}" if row else "PostgreSQL"
        versions = stored_versions(conn)
        holder = conn.execute(
            "SELECT a.application_name, host(a.client_addr), l.pid FROM pg_locks AS l "
            "LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid::bigint = %s AND l.objid::bigint = %s "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (key >> 32, key & 0xFFFF_FFFF),
        ).fetchone()
        epoch = None
        if holder is not None and versions and fencing.COMPONENT in versions:
            epoch = conn.execute(
                "SELECT epoch FROM leadership WHERE hub = %s", (hub_host.lower(),)
            ).fetchone()
    if holder is None:
        return server, versions, None
    name, address, pid = holder
    who = f"{name or 'a session'}, server pid {pid}"
    who = f"{who}, from {address}" if address else who
    return server, versions, f"{who}, epoch {epoch[0]}" if epoch else who


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return " ".join(str(exc).split()) or type(exc).__name__
