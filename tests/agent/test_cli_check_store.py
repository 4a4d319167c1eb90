"""``jobs-agent check``'s store step: SQLite (the data directory writable, the schema known or
absent) and a real PostgreSQL (reachable, schema versions, who holds the hub's rollout
leadership), read only, naming the store by host:port/db and never by its URL."""

from __future__ import annotations

import io
import socket
import sqlite3
from pathlib import Path

import psycopg
from pydantic import SecretStr
from rich.console import Console

from agent import cli
from agent.cli.check_store import KNOWN_SCHEMAS, check_store
from agent.settings import RolloutSettings, Settings, StoreSettings
from services.store import PostgresRolloutStore, SqliteRolloutStore
from services.store.leadership import PostgresLeadership
from services.store.schema import stored_versions

HUB = "myhub.azure-devices.net"


class Printed:
    """A console and a ``fail`` that print as ``check`` does, into a string."""

    def __init__(self) -> None:
        self.out = io.StringIO()
        self.console = Console(file=self.out, width=400, color_system=None)

    def fail(self, step: str, message: str, hint: str) -> None:
        self.console.print(f"✗ {step}: {message}\n  → {hint}", markup=False, highlight=False)

    @property
    def lines(self) -> list[str]:
        return self.out.getvalue().splitlines()


def _sqlite_settings(data_dir: Path) -> Settings:
    return Settings(rollouts=RolloutSettings(data_dir=str(data_dir)))


def _pg_settings(url: str) -> Settings:
    return Settings(store=StoreSettings(url=SecretStr(url)))


async def test_sqlite_absent_then_known_then_newer(tmp_path: Path) -> None:
    data = tmp_path / "data" / "agent"
    printed = Printed()
    assert await check_store(_sqlite_settings(data), HUB, printed.console, printed.fail) == 0
    assert printed.lines == [
        f"✓ store: SQLite in {data}/: writable (absent: created in {tmp_path}/ on first use)",
        "✓ store rollouts.sqlite: absent (created on first use)",
        "✓ store audit.sqlite: absent (created on first use)",
    ]
    assert not data.exists()  # nothing created

    store = SqliteRolloutStore(data / "rollouts.sqlite")
    assert store.schema_version == KNOWN_SCHEMAS["rollouts"]
    store.close()
    printed = Printed()
    assert await check_store(_sqlite_settings(data), HUB, printed.console, printed.fail) == 0
    assert printed.lines[0] == f"✓ store: SQLite in {data}/: writable"
    assert (
        printed.lines[1] == f"✓ store rollouts.sqlite: schema rollouts v{KNOWN_SCHEMAS['rollouts']}"
    )

    newer = KNOWN_SCHEMAS["rollouts"] + 1
    with sqlite3.connect(data / "rollouts.sqlite") as db:
        db.execute("UPDATE schema_versions SET version = ? WHERE component = 'rollouts'", (newer,))
    printed = Printed()
    assert await check_store(_sqlite_settings(data), HUB, printed.console, printed.fail) == 1
    assert (
        f"✗ store rollouts.sqlite: the 'rollouts' schema is v{newer}, newer than this agent's "
        f"v{KNOWN_SCHEMAS['rollouts']}"
    ) in printed.lines
    assert "  → run a newer agent, or point rollouts.data_dir elsewhere" in printed.lines
    with sqlite3.connect(data / "rollouts.sqlite") as db:  # read only: left as it was
        assert stored_versions(db) == {"rollouts": newer}


async def test_sqlite_data_dir_that_cannot_be_written_fails_with_a_hint(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    printed = Printed()
    settings = _sqlite_settings(blocker / "data")
    assert await check_store(settings, HUB, printed.console, printed.fail) == 1
    assert printed.lines[0].startswith(f"✗ store: SQLite in {blocker}/data/: cannot write there")
    assert (
        printed.lines[1] == "  → make rollouts.data_dir a directory the agent's user can write to"
    )


async def test_postgres_reachable_versions_and_the_leadership_held_elsewhere(
    postgres_url: str,
) -> None:
    where = PostgresRolloutStore(postgres_url).where  # "PostgreSQL at host:port/db"
    printed = Printed()
    assert await check_store(_pg_settings(postgres_url), HUB, printed.console, printed.fail) == 0
    assert printed.lines[0].startswith(f"✓ store {where}: reachable (PostgreSQL ")
    assert printed.lines[1:] == [
        f"✓ store {where} schemas: none yet (created on first use)",
        f"✓ store {where} rollout leadership of {HUB}: free (this agent would take it)",
    ]
    with psycopg.connect(postgres_url) as conn:  # read only: check created no table
        assert stored_versions(conn) is None

    store = PostgresRolloutStore(postgres_url)
    assert _open_with_one_read(store) == []
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # a newer agent's component
        conn.execute("INSERT INTO schema_versions (component, version) VALUES ('future', 3)")
    leader = PostgresLeadership(postgres_url, HUB, 4.0)
    other_hub = PostgresLeadership(postgres_url, "other.azure-devices.net", 4.0)
    try:
        assert await leader.try_acquire()
        assert await other_hub.try_acquire()
        printed = Printed()
        settings = _pg_settings(postgres_url)
        assert await check_store(settings, HUB, printed.console, printed.fail) == 0
        assert printed.lines[1] == (
            f"✓ store {where} schemas: rollouts v{KNOWN_SCHEMAS['rollouts']}; audit absent "
            "(created on first use); admission absent (created on first use); leadership "
            f"v{KNOWN_SCHEMAS['leadership']}; future v3 (not this agent's)"
        )
        assert printed.lines[2].startswith(
            f"✓ store {where} rollout leadership of {HUB}: held by another agent "
            "(jobs-agent leadership, server pid "
        )
        assert printed.lines[2].endswith(
            "from 127.0.0.1, epoch 1); this agent would be its standby"
        )
        # Another hub's leadership is not this hub's.
        printed = Printed()
        assert await check_store(settings, "third.azure-devices.net", printed.console,
                                 printed.fail) == 0  # fmt: skip
        assert printed.lines[2].endswith("free (this agent would take it)")
    finally:
        await leader.close()
        await other_hub.close()
        store.close()


def _open_with_one_read(store: PostgresRolloutStore) -> list[object]:
    """Open the store (it migrates its schema) with one read."""
    return list(store.find(["running"]))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_postgres_fails_naming_host_port_db_never_the_url() -> None:
    port = _closed_port()
    url = f"postgresql://agent:s3cret-pw@127.0.0.1:{port}/jobs?sslmode=disable"
    printed = Printed()
    assert await check_store(_pg_settings(url), HUB, printed.console, printed.fail) == 1
    text = printed.out.getvalue()
    assert printed.lines[0].startswith(
        f"✗ store PostgreSQL at 127.0.0.1:{port}/jobs: unreachable within its connect timeout "
        "(5 s): "
    )
    assert "refused" in printed.lines[0].lower()
    assert printed.lines[1] == (
        "  → check that PostgreSQL runs and store.url's host, port, database and credentials"
    )
    assert len(printed.lines) == 2
    assert "s3cret" not in text and "agent:" not in text and url not in text


async def test_check_reports_the_store_after_the_ends_and_fails_on_it() -> None:
    """Through ``jobs-agent check``: ThingWorx and the hub unreachable, the store too; the
    store's line is printed (it does not depend on the ends) and the URL never."""
    port = _closed_port()
    url = f"postgresql://agent:s3cret-pw@127.0.0.1:{port}/jobs"
    settings = Settings.model_validate(
        {
            "thingworx": {
                "url": f"ws://127.0.0.1:{port}/Thingworx/WS",
                "app_key": "k",
                "connect_timeout": 2.0,
                "auth_timeout": 2.0,
            },
            "iothub": {
                "connection_string": "HostName=127.0.0.1:9;SharedAccessKeyName="
                "iothubowner;SharedAccessKey=QUFBQQ=="
            },
            "store": {"url": url},
        }
    )
    out = io.StringIO()
    assert await cli.check(settings, Console(file=out, width=400, color_system=None)) == 1
    text = out.getvalue()
    assert "✗ ThingWorx" in text
    assert f"✗ store PostgreSQL at 127.0.0.1:{port}/jobs: unreachable" in text
    assert "s3cret" not in text
