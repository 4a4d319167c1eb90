"""Versioned schemas on SQLite and on a real PostgreSQL server (services/store/schema.py)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from services.store.schema import SchemaTooNewError, migrate, schema_version

_V1 = {1: "CREATE TABLE widgets (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n"}
_V2 = {
    **_V1,
    2: "ALTER TABLE widgets ADD COLUMN colour TEXT;\n"
    "CREATE INDEX widgets_by_name ON widgets (name);\n",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def connect(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    opened: list[Any] = []
    if request.param == "sqlite":
        path = tmp_path / "store.sqlite"

        def open_() -> Any:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            opened.append(conn)
            return conn
    else:
        url = request.getfixturevalue("postgres_url")

        def open_() -> Any:
            conn = psycopg.connect(url, autocommit=True)
            opened.append(conn)
            return conn

    yield open_
    for conn in opened:
        conn.close()


def test_migrations_apply_in_order_and_only_once(connect: Callable[[], Any]) -> None:
    conn = connect()
    assert schema_version(conn, "widgets") == 0
    assert migrate(conn, "widgets", _V1) == 1
    conn.execute("INSERT INTO widgets (id, name) VALUES (1, 'a')")
    assert migrate(conn, "widgets", _V1) == 1  # nothing to do
    assert migrate(conn, "widgets", _V2) == 2
    row = conn.execute("SELECT name, colour FROM widgets").fetchone()
    assert tuple(row) == ("a", None)
    assert schema_version(conn, "other") == 0  # components are independent


def test_a_failed_step_leaves_the_previous_version(connect: Callable[[], Any]) -> None:
    conn = connect()
    migrate(conn, "widgets", _V1)
    broken = {**_V1, 2: "ALTER TABLE widgets ADD COLUMN ok TEXT;\nTHIS IS NOT SQL;\n"}
    with pytest.raises(Exception, match="syntax error"):
        migrate(conn, "widgets", broken)
    assert schema_version(conn, "widgets") == 1
    # The first statement of the failed step was rolled back with it.
    migrate(conn, "widgets", {**_V1, 2: "ALTER TABLE widgets ADD COLUMN ok TEXT;\n"})
    assert schema_version(conn, "widgets") == 2


def test_a_newer_schema_is_refused_not_altered(connect: Callable[[], Any]) -> None:
    conn = connect()
    migrate(conn, "widgets", _V2)
    with pytest.raises(SchemaTooNewError, match="version 2, newer than this agent's 1"):
        migrate(conn, "widgets", _V1)
    assert schema_version(conn, "widgets") == 2


def test_agents_starting_at_once_migrate_once(postgres_url: str) -> None:
    counted = {1: "CREATE TABLE runs (n INTEGER);\nINSERT INTO runs VALUES (1);\n"}
    errors: list[BaseException] = []

    def start() -> None:
        try:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                migrate(conn, "runs", counted)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (1,)
