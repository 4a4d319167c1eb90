"""Recording calls in the audit log (services/audit.py over the registry's seam): which calls are
kept and how (answered, refused by the handler, refused inputs, reads left out), inputs masked
and cut, and no silent loss while the store is down (the queue, the counted drop, the gap entry,
the entries logged at exit). A real SQLite audit log throughout; the store "goes down" by a file
standing where its directory must be, or a real PostgreSQL server killed and started again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import structlog.testing

from agent.alwayson import BaseType, DataShape, FieldDefinition, InfoTable, Status
from agent.registry import CallRecord, RemoteService, ServiceCall, ServiceError, ThingRegistry
from agent.settings import AuditSettings, JobSettings
from services.audit import GAP_ACTION, AuditRecorder, audit_inputs
from services.store.audit import AuditQuery, PostgresAuditLog, SqliteAuditLog
from tests.support.postgres import PostgresCluster, find_binaries

F = FieldDefinition
JOB = DataShape.of(F("jobId", BaseType.STRING), F("status", BaseType.STRING), name="Job")
INPUTS = DataShape.of(
    F("jobId", BaseType.STRING),
    F("count", BaseType.INTEGER, "", {"isRequired": True}),
    F("payload", BaseType.JSON),
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def params(**cells: Any) -> InfoTable:
    types = {str: BaseType.STRING, int: BaseType.INTEGER, dict: BaseType.JSON}
    shape = DataShape(tuple(F(k, types[type(v)]) for k, v in cells.items()))
    return InfoTable(shape, [cells])


async def schedule(call: ServiceCall) -> InfoTable:
    if call.inputs["count"] < 0:
        raise ServiceError("input count is negative; give 0 or more")
    return InfoTable(JOB, [{"jobId": call.inputs.get("jobId") or "made-here", "status": "queued"}])


async def read(call: ServiceCall) -> InfoTable:
    return InfoTable(JOB, [])


def registry() -> ThingRegistry:
    reg = ThingRegistry(JobSettings())
    reg.add_thing("Gw")
    reg.add_service(
        "Gw",
        RemoteService(
            "Schedule", "", INPUTS, BaseType.INFOTABLE, JOB, schedule, audit_action="scheduleIt"
        ),
    )
    reg.add_service("Gw", RemoteService("Read", "", INPUTS, BaseType.INFOTABLE, JOB, read))
    return reg


def settings(**overrides: Any) -> AuditSettings:
    return AuditSettings(**{"retry_interval": 0.02, "retry_max_interval": 0.05, **overrides})


@pytest_asyncio.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[ThingRegistry, AuditRecorder]]:
    reg = registry()
    log = SqliteAuditLog(tmp_path / "audit.sqlite")
    recorder = AuditRecorder(log, settings(), agent="host/Gw")
    reg.recorder = recorder
    task = asyncio.create_task(recorder.run())
    yield reg, recorder
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    log.close()


async def test_changing_calls_are_kept_answered_or_refused_reads_are_not(
    running: tuple[ThingRegistry, AuditRecorder],
) -> None:
    reg, recorder = running
    answer = await reg.dispatch("Gw", "Schedule", params(count=2), user="alice")
    assert answer is not None and answer.rows[0]["jobId"] == "made-here"
    with pytest.raises(ServiceError, match="count is negative"):
        await reg.dispatch("Gw", "Schedule", params(jobId="j-neg", count=-1))
    with pytest.raises(ServiceError, match="missing required input count"):
        await reg.dispatch("Gw", "Schedule", params(jobId="j-bad"))
    with pytest.raises(ServiceError, match="must be an INTEGER"):
        await reg.dispatch("Gw", "Schedule", params(jobId="j-type", count="two"))
    await reg.dispatch("Gw", "Read", params(count=1))
    assert await recorder.flush(5)
    entries = await asyncio.to_thread(recorder.log.query, AuditQuery())
    got = [(e.job_id, e.outcome, e.action, e.user) for e in reversed(entries)]
    assert got == [
        ("made-here", "ok", "scheduleIt", "alice"),  # the id the answer gave
        ("j-neg", "BAD_REQUEST", "scheduleIt", ""),
        ("j-bad", "BAD_REQUEST", "scheduleIt", ""),
        ("j-type", "BAD_REQUEST", "scheduleIt", ""),
    ]
    ok, neg, bad, wrong = reversed(entries)
    assert (ok.thing, ok.service, ok.agent, ok.message) == ("Gw", "Schedule", "host/Gw", "")
    assert json.loads(ok.inputs) == {"count": 2}
    assert neg.message == "input count is negative; give 0 or more"
    assert bad.message.startswith("missing required input count") and json.loads(bad.inputs) == {
        "jobId": "j-bad"
    }
    assert json.loads(wrong.inputs) == {"jobId": "j-type", "count": "two"}  # as sent


async def test_a_recorder_that_fails_does_not_change_the_answer() -> None:
    class Broken:
        def record(self, call: CallRecord) -> None:
            raise RuntimeError("recorder bug")

    reg = registry()
    reg.recorder = Broken()
    with structlog.testing.capture_logs() as logs:
        answer = await reg.dispatch("Gw", "Schedule", params(count=1))
    assert answer is not None and answer.rows[0]["status"] == "queued"
    assert any(e["event"] == "call not recorded: the recorder failed" for e in logs)


def test_inputs_mask_secrets_at_any_depth_and_keep_the_rest() -> None:
    text = audit_inputs(
        {
            "methodName": "configure",
            "password": "hunter2",
            "payload": {"wifi": {"ssid": "plant", "psk_passphrase": "x"}, "apiKey": "k", "n": 1},
            "patch": {"properties": {"desired": {"sharedAccessKey": "abc", "fw": "2.0"}}},
            "when": T0,
            "list": [{"token": "t"}, 3],
        },
        4096,
    )
    assert json.loads(text) == {
        "methodName": "configure",
        "password": "***",
        "payload": {"wifi": {"ssid": "plant", "psk_passphrase": "***"}, "apiKey": "***", "n": 1},
        "patch": {"properties": {"desired": {"sharedAccessKey": "***", "fw": "2.0"}}},
        "when": "2026-01-01T00:00:00+00:00",
        "list": [{"token": "***"}, 3],
    }
    for secret in ("hunter2", '"k"', "abc", '"t"'):
        assert secret not in text


def test_long_inputs_are_cut_with_a_marker_and_stay_json() -> None:
    text = audit_inputs({"payload": {"blob": "x" * 100_000}}, 1000)
    assert len(text) <= 1000
    cut = json.loads(text)
    head = cut["head"]
    assert cut["cut"] == f"inputs of 100023 characters; the first {len(head)} are kept"
    assert head == '{"payload":{"blob":"' + "x" * (len(head) - 20) and len(head) > 800
    # Characters JSON escapes (quotes, controls) grow the kept text: still within the bound.
    text = audit_inputs({"payload": '"\x00' * 50_000}, 1000)
    assert len(text) <= 1000 and json.loads(text)["cut"].startswith("inputs of ")


async def test_a_store_down_keeps_entries_queued_then_writes_them(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("not a directory")
    log = SqliteAuditLog(blocker / "audit.sqlite")
    reg = registry()
    recorder = AuditRecorder(log, settings(), agent="a")
    reg.recorder = recorder
    task = asyncio.create_task(recorder.run())
    try:
        with structlog.testing.capture_logs() as logs:
            for n in range(3):
                answer = await reg.dispatch("Gw", "Schedule", params(jobId=f"j{n}", count=n))
                assert answer is not None  # the answer does not wait on the audit store
            assert not await recorder.flush(0.3)
            assert recorder.pending == 3 and recorder.failure is not None
            assert "unavailable" in recorder.failure
            blocker.unlink()  # the store comes back
            assert await recorder.flush(5)
        assert recorder.pending == 0 and recorder.failure is None and recorder.dropped == 0
        events = [e["event"] for e in logs]
        assert events.count("audit store unavailable; entries wait in memory") == 1
        assert "audit store back" in events
        entries = await asyncio.to_thread(log.query, AuditQuery())
        assert [e.job_id for e in entries] == ["j2", "j1", "j0"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        log.close()


async def test_past_the_queue_bound_entries_are_counted_logged_and_leave_a_gap_entry(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("not a directory")
    log = SqliteAuditLog(blocker / "audit.sqlite")
    reg = registry()
    times = iter(T0 + timedelta(minutes=n) for n in range(100))
    recorder = AuditRecorder(log, settings(queue_size=2), agent="a", clock=lambda: next(times))
    reg.recorder = recorder
    task = asyncio.create_task(recorder.run())
    try:
        with structlog.testing.capture_logs() as logs:
            for n in range(5):
                await reg.dispatch("Gw", "Schedule", params(jobId=f"j{n}", count=n))
        assert recorder.pending == 2 and recorder.dropped == 3
        dropped = [e for e in logs if e["event"] == "audit entry dropped: the queue is full"]
        assert [e["job_id"] for e in dropped] == ["j2", "j3", "j4"]  # every field, in the log
        assert dropped[0]["service"] == "Schedule" and dropped[0]["outcome"] == "ok"
        blocker.unlink()
        assert await recorder.flush(5)
        entries = await asyncio.to_thread(log.query, AuditQuery())
        gap = [e for e in entries if e.action == GAP_ACTION]
        assert len(gap) == 1 and gap[0].outcome == "DROPPED"
        assert json.loads(gap[0].inputs) == {
            "dropped": 3,
            "first": "2026-01-01T00:02:00+00:00",
            "last": "2026-01-01T00:04:00+00:00",
        }
        assert gap[0].message.startswith("3 audit entries were not kept")
        assert sorted(e.job_id for e in entries if e.action != GAP_ACTION) == ["j0", "j1"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        log.close()


async def test_entries_left_at_exit_are_logged_not_lost_silently(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("not a directory")
    recorder = AuditRecorder(SqliteAuditLog(blocker / "audit.sqlite"), settings(), agent="a")
    reg = registry()
    reg.recorder = recorder
    await reg.dispatch("Gw", "Schedule", params(jobId="late", count=1))
    with structlog.testing.capture_logs() as logs:
        assert recorder.abandon() == 1
    (entry,) = [e for e in logs if e["event"] == "audit entry not written: the agent stopped"]
    assert entry["job_id"] == "late" and entry["log_level"] == "warning"


async def test_a_call_cut_off_at_the_drain_deadline_is_recorded_as_unknown(
    running: tuple[ThingRegistry, AuditRecorder],
) -> None:
    reg, recorder = running
    started = asyncio.Event()

    async def slow(call: ServiceCall) -> InfoTable:
        started.set()
        await asyncio.sleep(60)
        raise AssertionError("not reached")

    reg.add_service(
        "Gw", RemoteService("Slow", "", INPUTS, BaseType.INFOTABLE, JOB, slow, audit_action="slow")
    )
    call = asyncio.create_task(reg.dispatch("Gw", "Slow", params(jobId="cut", count=1)))
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await recorder.flush(5)
    (entry,) = await asyncio.to_thread(recorder.log.query, AuditQuery(job_id="cut"))
    assert entry.outcome == Status.SERVICE_UNAVAILABLE.name
    assert "its effect is unknown" in entry.message


async def test_postgresql_killed_under_the_recorder_then_back_loses_nothing() -> None:
    bin_dir, why = find_binaries()
    if bin_dir is None:
        pytest.skip(why)
    cluster = PostgresCluster(bin_dir)  # its own server: this test kills it
    reg = registry()
    task: asyncio.Task[None] | None = None
    try:
        cluster.init()
        cluster.start()
        log = PostgresAuditLog(cluster.new_database(), connect_timeout=2)
        recorder = AuditRecorder(log, settings(), agent="a")
        reg.recorder = recorder
        task = asyncio.create_task(recorder.run())
        await reg.dispatch("Gw", "Schedule", params(jobId="before", count=0))
        assert await recorder.flush(10)
        cluster.kill()
        for n in range(3):
            answer = await reg.dispatch("Gw", "Schedule", params(jobId=f"while-{n}", count=n))
            assert answer is not None  # answered while the database is down
        assert not await recorder.flush(0.5)
        assert recorder.pending == 3 and recorder.failure is not None
        cluster.start()
        assert await recorder.flush(20)
        entries = await asyncio.to_thread(log.query, AuditQuery())
        assert [e.job_id for e in entries] == ["while-2", "while-1", "while-0", "before"]
        assert recorder.dropped == 0
        log.close()
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        cluster.destroy()
