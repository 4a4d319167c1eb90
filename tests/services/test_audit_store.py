"""The audit log's store on SQLite and on a real PostgreSQL server (services/store/audit.py):
write, read newest first, filter by time, job and rollout, page, keep old entries, write a
retried batch once, and fail in one line (never naming the URL) when the database is gone."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from services.store.audit import (
    AUDIT_COMPONENT,
    AuditEntry,
    AuditLog,
    AuditQuery,
    AuditStoreError,
    PostgresAuditLog,
    SqliteAuditLog,
    open_audit_log,
)
from services.store.schema import schema_version
from tests.support.network import free_port

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def entry(n: int, *, minutes: float = 0, job: str = "", rollout: str = "") -> AuditEntry:
    return AuditEntry(
        key=f"key-{n}",
        time=NOW + timedelta(minutes=minutes),
        agent="host/AzureIotHub",
        thing="AzureIotHub",
        user="",
        service="AzureIotDeviceJobCancelJob",
        action="cancelJob",
        job_id=job,
        rollout_id=rollout,
        inputs=f'{{"n":{n}}}',
        outcome="ok",
        message="",
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditLog]:
    opened: AuditLog
    if request.param == "sqlite":
        opened = open_audit_log("", tmp_path)
        assert isinstance(opened, SqliteAuditLog) and opened.path == tmp_path / "audit.sqlite"
    else:
        opened = open_audit_log(request.getfixturevalue("postgres_url"), tmp_path)
        assert isinstance(opened, PostgresAuditLog)
    yield opened
    opened.close()


def test_entries_come_back_newest_first_with_every_field(log: AuditLog) -> None:
    log.append([entry(1, minutes=0, job="j1"), entry(2, minutes=5, rollout="r1")])
    log.append([entry(3, minutes=2)])
    got = log.query(AuditQuery())
    assert [e.key for e in got] == ["key-2", "key-3", "key-1"]
    first = got[-1]
    assert first.time == NOW and first.time.tzinfo is not None
    assert (first.agent, first.thing, first.service, first.action) == (
        "host/AzureIotHub",
        "AzureIotHub",
        "AzureIotDeviceJobCancelJob",
        "cancelJob",
    )
    assert (first.job_id, first.rollout_id, first.inputs, first.outcome) == (
        "j1",
        "",
        '{"n":1}',
        "ok",
    )
    ids = [e.entry_id for e in got]
    assert all(isinstance(i, int) for i in ids) and ids[0] != ids[1]


def test_filters_select_by_time_job_and_rollout(log: AuditLog) -> None:
    log.append(
        [
            entry(1, minutes=0, job="j1"),
            entry(2, minutes=10, job="j2"),
            entry(3, minutes=20, job="j1", rollout="r1"),
            entry(4, minutes=30, rollout="r1"),
        ]
    )

    def keys(query: AuditQuery) -> list[str]:
        return [e.key for e in log.query(query)]

    assert keys(AuditQuery(job_id="j1")) == ["key-3", "key-1"]
    assert keys(AuditQuery(rollout_id="r1")) == ["key-4", "key-3"]
    assert keys(AuditQuery(job_id="j1", rollout_id="r1")) == ["key-3"]
    # Both bounds inclusive.
    window = AuditQuery(start=NOW + timedelta(minutes=10), end=NOW + timedelta(minutes=20))
    assert keys(window) == ["key-3", "key-2"]
    assert keys(AuditQuery(start=NOW + timedelta(minutes=31))) == []
    assert keys(AuditQuery(job_id="nope")) == []


def test_pages_continue_after_the_last_entry_even_with_equal_times(log: AuditLog) -> None:
    # Three entries share one time: the id breaks the tie, so no page repeats or skips one.
    log.append([entry(n, minutes=0 if n <= 3 else n) for n in range(1, 8)])
    seen: list[str] = []
    before = None
    while True:
        page = log.query(AuditQuery(before=before, limit=2))
        seen += [e.key for e in page]
        if len(page) < 2:
            break
        last = page[-1]
        assert last.entry_id is not None
        before = (last.time, last.entry_id)
    assert seen == [e.key for e in log.query(AuditQuery())]
    assert sorted(seen) == sorted(f"key-{n}" for n in range(1, 8))


def test_old_entries_are_kept_past_iot_hubs_30_days(log: AuditLog) -> None:
    log.append([entry(1, minutes=-60 * 24 * 400), entry(2)])
    got = log.query(AuditQuery(end=NOW - timedelta(days=30)))
    assert [e.key for e in got] == ["key-1"]
    assert got[0].time == NOW - timedelta(days=400)


def test_a_batch_written_twice_is_kept_once(log: AuditLog) -> None:
    batch = [entry(1), entry(2, minutes=1)]
    log.append(batch)
    log.append([*batch, entry(3, minutes=2)])  # a retry after a lost acknowledgement
    assert [e.key for e in log.query(AuditQuery())] == ["key-3", "key-2", "key-1"]


def test_the_schema_is_the_audit_components_own_version(
    log: AuditLog, request: pytest.FixtureRequest
) -> None:
    log.append([entry(1)])
    conn: sqlite3.Connection | psycopg.Connection[tuple[object, ...]]
    if isinstance(log, SqliteAuditLog):
        conn = sqlite3.connect(log.path, isolation_level=None)
    else:  # the same database as the log's (one per test)
        conn = psycopg.connect(request.getfixturevalue("postgres_url"), autocommit=True)
    try:
        assert schema_version(conn, AUDIT_COMPONENT) == 1
    finally:
        conn.close()


def test_a_database_that_is_not_there_is_one_line_without_the_url() -> None:
    url = f"postgresql://auditor:s3cret-pw@127.0.0.1:{free_port()}/audit"
    log = PostgresAuditLog(url, connect_timeout=1)
    with pytest.raises(AuditStoreError) as caught:
        log.append([entry(1)])
    message = str(caught.value)
    assert message.startswith("the audit log (PostgreSQL) is unavailable: ")
    assert "\n" not in message and "s3cret-pw" not in message and "auditor" not in message
    assert "s3cret-pw" not in repr(log)
    with pytest.raises(AuditStoreError):
        log.query(AuditQuery())


def test_an_sqlite_file_that_cannot_be_made_is_one_line_and_recovers(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data directory should be")
    log = SqliteAuditLog(blocker / "audit.sqlite")
    with pytest.raises(AuditStoreError, match=r"^the audit log \(SQLite\) is unavailable: "):
        log.append([entry(1)])
    blocker.unlink()  # the operator fixes it: the next write opens the file
    log.append([entry(1)])
    assert [e.key for e in log.query(AuditQuery())] == ["key-1"]
    log.close()
