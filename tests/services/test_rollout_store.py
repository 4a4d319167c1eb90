"""The rollout store on both backends: SQLite (a file in a temporary directory) and PostgreSQL (a
fresh database on the session's throwaway server), through the same tests."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agent.settings import Settings
from services.store import (
    AsyncRolloutStore,
    PostgresRolloutStore,
    RolloutExistsError,
    SqliteRolloutStore,
    StaleRolloutError,
    StoreError,
    StoreUnavailable,
    open_store,
)
from services.store.rollouts import (
    DeviceUpdate,
    PartRecord,
    RolloutRecord,
    RolloutStore,
    RoundRecord,
)
from services.store.schema import SchemaTooNewError, schema_version
from services.store.tables import RolloutTables

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
_V1_FILE = Path(__file__).parent / "data" / "rollouts-v1.sqlite"


class Backend:
    """One database of one backend: :meth:`open` makes a new store object over it each time."""

    def __init__(self, kind: str, target: str) -> None:
        self.kind = kind
        self.target = target  # the SQLite file, or the PostgreSQL URL
        self.opened: list[RolloutTables] = []

    def open(self) -> RolloutTables:
        store: RolloutTables
        if self.kind == "sqlite":
            store = SqliteRolloutStore(self.target)
        else:
            store = PostgresRolloutStore(self.target)
        self.opened.append(store)
        return store

    def execute(self, sql: str) -> None:
        """Run ``sql`` on the database, beside the store."""
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.target)) as db, db:
                db.execute(sql)
        else:
            with psycopg.connect(self.target, autocommit=True) as conn:
                conn.execute(sql.encode())


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh database: a file in a temporary directory, or a new PostgreSQL database."""
    if request.param == "sqlite":
        (tmp_path / "data").mkdir()
        db = Backend("sqlite", str(tmp_path / "data" / "rollouts.sqlite"))
    else:
        db = Backend("postgres", request.getfixturevalue("postgres_url"))
    yield db
    for store in db.opened:
        store.close()


def _record(rollout_id: str = "ro1", created: datetime = T0, **fields: Any) -> RolloutRecord:
    values: dict[str, Any] = {
        "rollout_id": rollout_id,
        "type": "twinUpdate",
        "operation": {"patch": {"tags": {"fw": "2.1"}}},
        "inputs": {"waveSize": 2, "startTime": "2026-12-01T08:00:00+00:00"},
        "status": "queued",
        "requested": None,
        "reason": None,
        "priority": 500,
        "device_count": 3,
        "wave": 0,
        "wave_count": 2,
        "current_job_id": None,
        "created_time": created,
        "start_time": None,
        "end_time": None,
        "last_wave_end": None,
    }
    values.update(fields)
    return RolloutRecord(**values)


_DEVICES = [("dev-1", 1), ("dev-2", 1), ("dev-3", 2)]


def _round(attempt: int = 1, state: str = "running", members: tuple[str, ...] = ()) -> RoundRecord:
    return RoundRecord("ro1", 1, attempt, members or ("dev-1", "dev-2"), T0, state)


def _part(n: int = 1, attempt: int = 1) -> PartRecord:
    return PartRecord(
        f"ro1-w1-a{attempt}-p{n}", "ro1", 1, attempt, n, "deviceId IN ['dev-1']", "intent", None
    )


def _update(device_id: str, status: str, *, retried: bool = False) -> DeviceUpdate:
    return DeviceUpdate(
        device_id=device_id,
        status=status,
        attempts=1,
        retried=retried,
        last_job_id="ro1-w1-a1-p1",
        error_code="DeviceNotOnline" if status != "succeeded" else None,
        error_description="offline" if status != "succeeded" else None,
        method_status=200 if status == "succeeded" else None,
        method_payload={"ok": True, "text": "100% ?"} if status == "succeeded" else None,
        end_time=T0 + timedelta(minutes=1) if status != "pending" else None,
    )


# -- every Protocol method -------------------------------------------------------------------


def test_create_get_find_and_update(backend: Backend) -> None:
    store = backend.open()
    assert store.get("ro1") is None and store.find() == []
    store.create(_record(), _DEVICES)
    store.create(_record("ro0", T0 + timedelta(seconds=1), status="paused"), [("d", 1)])
    assert store.get("ro1") == _record()
    assert [r.rollout_id for r in store.find()] == ["ro1", "ro0"]  # oldest first
    assert [r.rollout_id for r in store.find(["paused", "running"])] == ["ro0"]
    assert store.find([]) == []
    store.update("ro1", status="running", start_time=T0, wave=1, current_job_id="j1")
    got = store.get("ro1")
    assert got is not None
    assert (got.status, got.start_time, got.wave, got.current_job_id) == (
        "running",
        T0,
        1,
        "j1",
    )
    with pytest.raises(ValueError, match="cannot be updated"):
        store.update("ro1", priority=1)


def test_a_rollout_id_is_stored_once(backend: Backend) -> None:
    store = backend.open()
    store.create(_record(), _DEVICES)
    with pytest.raises(RolloutExistsError):
        store.create(_record(), [("other", 1)])
    assert [d.device_id for d in store.devices("ro1")] == ["dev-1", "dev-2", "dev-3"]


def test_devices_counts_rounds_parts_and_judge(backend: Backend) -> None:
    store = backend.open()
    store.create(_record(), _DEVICES)
    assert [d.device_id for d in store.devices("ro1", wave=1)] == ["dev-1", "dev-2"]
    assert [d.device_id for d in store.devices("ro1", limit=1)] == ["dev-1"]
    assert store.counts("ro1") == {"pending": 3, "succeeded": 0, "failed": 0, "retried": 0}

    store.add_round(_round(), [_part(1), _part(2)], wave=1, status="running")
    assert store.rounds("ro1") == [_round()]
    assert store.get("ro1").wave == 1  # type: ignore[union-attr]
    store.add_round(_round(), [_part(1)], wave=1)  # again (after a crash): parts kept as they are
    assert [p.part for p in store.parts("ro1", 1, 1)] == [1, 2]
    store.set_part("ro1-w1-a1-p1", "created", "running")
    store.set_part("ro1-w1-a1-p1", "ended")  # no hub status: the last one stays
    assert store.parts("ro1", 1, 1)[0].state == "ended"
    assert store.parts("ro1", 1, 1)[0].hub_status == "running"

    retry = RoundRecord("ro1", 1, 2, ("dev-2",), T0 + timedelta(minutes=5), "planned")
    store.judge(
        "ro1",
        1,
        1,
        [_update("dev-1", "succeeded"), _update("dev-2", "pending", retried=True)],
        retry,
        current_job_id=None,
        last_wave_end=T0,
    )
    assert [r.state for r in store.rounds("ro1")] == ["judged", "planned"]
    assert store.rounds("ro1", "planned") == [retry]
    assert store.counts("ro1") == {"pending": 2, "succeeded": 1, "failed": 0, "retried": 1}
    (dev1,) = store.devices("ro1", status="succeeded")
    assert dev1.method_payload == {"ok": True, "text": "100% ?"}
    assert dev1.end_time == T0 + timedelta(minutes=1) and dev1.last_job_id == "ro1-w1-a1-p1"
    assert store.get("ro1").last_wave_end == T0  # type: ignore[union-attr]

    store.set_round_state("ro1", "dropped", where_state="planned")
    assert [r.state for r in store.rounds("ro1")] == ["judged", "dropped"]


_FAIL_ROLLOUT_UPDATES = {
    # The database itself fails the verdict's last statement, after its device and round writes.
    "sqlite": "CREATE TRIGGER fail_verdict BEFORE UPDATE ON rollouts "
    "BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    "postgres": "CREATE FUNCTION fail_verdict() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$; "
    "CREATE TRIGGER fail_verdict BEFORE UPDATE ON rollouts "
    "FOR EACH ROW EXECUTE FUNCTION fail_verdict()",
}


def test_a_verdict_is_stored_whole_or_not_at_all(backend: Backend) -> None:
    store = backend.open()
    store.create(_record(), _DEVICES)
    store.add_round(_round(), [_part()], wave=1, status="running")
    backend.execute(_FAIL_ROLLOUT_UPDATES[backend.kind])
    verdict = [_update("dev-1", "succeeded"), _update("dev-2", "failed")]
    retry = RoundRecord("ro1", 1, 2, ("dev-2",), T0, "planned")
    with pytest.raises(StoreError, match="injected failure"):
        store.judge("ro1", 1, 1, verdict, retry, status="completed", current_job_id=None)
    # Nothing of it: devices, the round, the retry round and the rollout are as before.
    assert store.counts("ro1") == {"pending": 3, "succeeded": 0, "failed": 0, "retried": 0}
    assert [(r.attempt, r.state) for r in store.rounds("ro1")] == [(1, "running")]
    assert store.get("ro1").status == "running"  # type: ignore[union-attr]

    backend.execute(
        "DROP TRIGGER fail_verdict" + (" ON rollouts" if backend.kind != "sqlite" else "")
    )
    with pytest.raises(ValueError, match="cannot be updated"):  # refused before any write
        store.judge("ro1", 1, 1, verdict, None, bogus=1)
    assert store.counts("ro1")["succeeded"] == 0
    store.judge("ro1", 1, 1, verdict, retry, status="running")  # the same store goes on
    assert store.counts("ro1") == {"pending": 1, "succeeded": 1, "failed": 1, "retried": 0}
    assert [(r.attempt, r.state) for r in store.rounds("ro1")] == [(1, "judged"), (2, "planned")]


def test_a_created_part_and_its_rollout_change_together(backend: Backend) -> None:
    store = backend.open()
    store.create(_record(), _DEVICES)
    store.add_round(_round(), [_part()], wave=1)
    with pytest.raises(ValueError, match="cannot be updated"):
        store.set_part("ro1-w1-a1-p1", "created", "queued", status="running", bogus=1)
    assert store.parts("ro1", 1, 1)[0].state == "intent"
    store.set_part("ro1-w1-a1-p1", "created", "queued", status="running", current_job_id="j")
    record = store.get("ro1")
    assert record is not None and (record.status, record.current_job_id) == ("running", "j")
    assert store.parts("ro1", 1, 1)[0].state == "created"


def test_a_write_that_expects_a_changed_status_writes_nothing(backend: Backend) -> None:
    """Compare-and-set: a write decided from ``(status, requested)`` goes through only while
    they are unchanged; otherwise StaleRolloutError and nothing of the call is stored (devices,
    rounds and parts included), on both databases; with them unchanged it goes through."""
    store = backend.open()
    other = backend.open()  # another agent on the same database
    store.create(_record(), _DEVICES)
    store.add_round(_round(), [_part()], wave=1, status="running")
    read = ("running", None)
    other.update("ro1", expect=read, requested="pause")  # the other agent's pause goes first
    verdict = [_update("dev-1", "succeeded"), _update("dev-2", "failed")]
    retry = RoundRecord("ro1", 1, 2, ("dev-2",), T0, "planned")
    with pytest.raises(StaleRolloutError, match="changed since it was read"):
        store.judge("ro1", 1, 1, verdict, retry, expect=read, status="queued")
    with pytest.raises(StaleRolloutError):
        store.set_part("ro1-w1-a1-p1", "created", "queued", expect=read, current_job_id="j")
    with pytest.raises(StaleRolloutError):
        store.update("ro1", expect=read, status="cancelled")
    with pytest.raises(StaleRolloutError):
        store.update("gone", expect=read, status="cancelled")
    assert store.counts("ro1") == {"pending": 3, "succeeded": 0, "failed": 0, "retried": 0}
    assert [(r.attempt, r.state) for r in store.rounds("ro1")] == [(1, "running")]
    assert store.parts("ro1", 1, 1)[0].state == "intent"
    record = store.get("ro1")
    assert record is not None
    assert (record.status, record.requested, record.current_job_id) == ("running", "pause", None)
    # Decided again from what is stored now, the same verdict goes through.
    store.judge("ro1", 1, 1, verdict, retry, expect=("running", "pause"), status="paused")
    assert store.counts("ro1") == {"pending": 1, "succeeded": 1, "failed": 1, "retried": 0}
    assert store.get("ro1").status == "paused"  # type: ignore[union-attr]


def test_reopened_it_reads_back_what_was_stored(backend: Backend) -> None:
    first = backend.open()
    first.create(_record(), _DEVICES)
    first.add_round(_round(), [_part()], wave=1, status="running")
    first.judge("ro1", 1, 1, [_update("dev-1", "succeeded")], None)
    first.close()
    second = backend.open()
    assert second.get("ro1") == _record(wave=1, status="running")
    assert second.counts("ro1")["succeeded"] == 1
    assert second.parts("ro1", 1, 1) == [_part()]


async def test_the_async_seam_calls_the_store_off_the_loop(backend: Backend) -> None:
    store = backend.open()
    async_store = AsyncRolloutStore(store)
    await async_store.create(_record(), _DEVICES)
    assert (await async_store.get("ro1")) == store.get("ro1") == _record()
    worker = await async_store._call(lambda: threading.current_thread().name)
    assert worker.startswith("rollout-store") and worker != threading.current_thread().name
    assert [r.rollout_id for r in await async_store.find(iter(["queued"]))] == ["ro1"]
    assert (await async_store.counts("ro1"))["pending"] == 3
    async_store.close()


# -- schema -----------------------------------------------------------------------------------


def test_a_file_of_the_previous_agent_opens_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "rollouts.sqlite"
    shutil.copy(_V1_FILE, path)  # made by services/rollout_store.py (PRAGMA user_version = 1)
    store = SqliteRolloutStore(path)
    assert store.schema_version == 1
    record = store.get("ro-v1")
    assert record is not None and record.status == "running" and record.wave == 1
    assert store.counts("ro-v1") == {"pending": 2, "succeeded": 1, "failed": 0, "retried": 0}
    assert store.parts("ro-v1", 1, 1)[0].state == "created"
    store.create(_record(), _DEVICES)  # and it takes new ones
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_versions").fetchall() == [(1,)]


def test_a_newer_schema_is_refused(backend: Backend) -> None:
    store = backend.open()
    store.get("x")
    store.close()
    backend.execute("UPDATE schema_versions SET version = 99")
    with pytest.raises(SchemaTooNewError, match="newer than this agent's"):
        backend.open().get("x")


# -- PostgreSQL only --------------------------------------------------------------------------


def test_two_stores_write_one_postgres_database_at_once(postgres_url: str) -> None:
    stores = [PostgresRolloutStore(postgres_url) for _ in range(2)]
    devices = [(f"dev-{n}", 1) for n in range(200)]
    stores[0].create(_record("shared", device_count=200), devices)
    errors: list[BaseException] = []
    won: list[int] = []

    def writer(n: int) -> None:
        store = stores[n]
        try:
            for k in range(20):
                store.create(_record(f"own-{n}-{k}"), [("d", 1)])
            # Both judge every device of the shared rollout as retried: no update lost.
            for start in range(0, 200, 50):
                store.judge(
                    "shared",
                    1,
                    1,
                    [_update(d, "pending", retried=True) for d, _ in devices[start : start + 50]],
                    None,
                )
            try:
                store.create(_record("race"), [("d", 1)])
                won.append(n)
            except RolloutExistsError:
                pass
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(won) == 1  # one create of "race" won, the other was told it exists
    assert len(stores[1].find()) == 1 + 40 + 1
    assert {d.retried for d in stores[0].devices("shared")} == {2}
    for store in stores:
        store.close()


def test_the_url_is_never_in_an_error(tmp_path: Path) -> None:
    store = PostgresRolloutStore("postgresql://agent:s3cret-pw@127.0.0.1:1/jobs", connect_timeout=2)
    with pytest.raises(StoreUnavailable) as caught:
        store.get("ro1")
    message = str(caught.value)
    assert "s3cret-pw" not in message and "agent:" not in message
    assert "PostgreSQL at 127.0.0.1:1/jobs" in message and "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://agent:s3cret-pw@[::1/jobs",  # libpq quotes a URL it cannot parse
        "postgresql://agent:s3cret-pw%zz@127.0.0.1:1/jobs",
    ],
)
def test_a_malformed_url_is_not_in_the_error(url: str) -> None:
    with pytest.raises(StoreError) as caught:
        PostgresRolloutStore(url).get("ro1")
    assert "s3cret-pw" not in str(caught.value) and "store.url" in str(caught.value)


def test_open_store_follows_store_url(tmp_path: Path, postgres_url: str) -> None:
    sqlite_store = open_store(Settings(rollouts={"data_dir": str(tmp_path)}))
    assert isinstance(sqlite_store, SqliteRolloutStore)
    assert sqlite_store.path == tmp_path / "rollouts.sqlite"
    assert not (tmp_path / "rollouts.sqlite").exists()  # nothing opened before the first call
    shared = open_store(Settings(store={"url": postgres_url}))
    assert isinstance(shared, PostgresRolloutStore)
    shared.create(_record(), _DEVICES)
    with psycopg.connect(postgres_url) as conn:
        assert schema_version(conn, "rollouts") == 1
    shared.close()


def _protocol_check(store: RolloutStore) -> None:
    """mypy: both backends are RolloutStores."""


_protocol_check(SqliteRolloutStore(":memory:"))
_protocol_check(PostgresRolloutStore("postgresql://127.0.0.1/x"))
