"""Rollout leadership on a real PostgreSQL server (services/store/leadership.py): one leader per
hub, a standby that takes over when the leader's session goes (closed, terminated, or its process
killed with SIGKILL), a leader that notices at once that it lost the lock, and the SQLite case."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from services.store.leadership import (
    LocalLeadership,
    PostgresLeadership,
    leadership_key,
    session_options,
)

HUB = "contoso-hub.azure-devices.net"
T = 2.0  # takeover_seconds: renew/try every 0.5 s


def _pair(url: str, hub: str = HUB) -> tuple[PostgresLeadership, PostgresLeadership]:
    return PostgresLeadership(url, hub, T), PostgresLeadership(url, hub, T)


async def test_one_leader_per_hub_and_the_standby_takes_over_when_it_closes(
    postgres_url: str,
) -> None:
    first, second = _pair(postgres_url)
    other_hub = PostgresLeadership(postgres_url, "other-hub.azure-devices.net", T)
    try:
        assert await first.try_acquire() is True
        assert await second.try_acquire() is False
        assert await other_hub.try_acquire() is True  # one lock per hub
        assert (first.role, second.role) == ("active", "standby")
        assert await first.confirm() is True
        assert await second.confirm() is False
        await first.close()
        assert first.role == "standby"
        assert await second.try_acquire() is True
        assert await second.confirm() is True
        assert (first.changes, second.changes) == (2, 1)
    finally:
        for leadership in (first, second, other_hub):
            await leadership.close()


async def test_a_leader_whose_session_is_terminated_stops_at_once(postgres_url: str) -> None:
    changes: list[str] = []
    first, second = _pair(postgres_url)
    first.on_change = lambda: changes.append(first.role)
    try:
        assert await first.try_acquire()
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'jobs-agent leadership' AND pid <> pg_backend_pid()"
            )
        assert await first.confirm() is False  # the next renewal (before a wave) says so
        assert first.role == "standby" and changes == ["active", "standby"]
        assert first.last_error is not None
        assert await second.try_acquire() is True
        assert await first.try_acquire() is False  # a fresh session, and the lock is taken
    finally:
        await first.close()
        await second.close()


_HOLDER = """
import sys, time, psycopg
from services.store.leadership import leadership_key
conn = psycopg.connect(sys.argv[1], autocommit=True)
assert conn.execute("SELECT pg_try_advisory_lock(%s)", (leadership_key(sys.argv[2]),)).fetchone()[0]
print("held", flush=True)
time.sleep(600)
"""


async def test_kill_9_of_the_leaders_process_frees_the_lock_for_the_standby(
    postgres_url: str,
) -> None:
    holder = subprocess.Popen(  # noqa: ASYNC220 - a plain child, killed and reaped below
        [sys.executable, "-c", _HOLDER, postgres_url, HUB], stdout=subprocess.PIPE, text=True
    )
    standby = PostgresLeadership(postgres_url, HUB, T)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        assert await standby.try_acquire() is False
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        killed = time.monotonic()
        task = asyncio.create_task(standby.run())
        while standby.role != "active":
            assert time.monotonic() - killed < T, "the standby did not take over within T"
            await asyncio.sleep(0.02)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        if holder.poll() is None:
            holder.kill()
        await standby.close()


async def test_an_unreachable_store_makes_a_standby_that_says_why() -> None:
    from tests.support.network import free_port

    leadership = PostgresLeadership(f"postgresql://u:secret@127.0.0.1:{free_port()}/db", HUB, T)
    try:
        assert await leadership.try_acquire() is False
        assert leadership.role == "standby"
        assert leadership.last_error is not None and "secret" not in leadership.last_error
    finally:
        await leadership.close()


async def test_the_role_expires_with_the_lease_without_a_renewal(postgres_url: str) -> None:
    now = [100.0]
    leadership = PostgresLeadership(postgres_url, HUB, 4.0, clock=lambda: now[0])
    try:
        assert await leadership.try_acquire()
        now[0] += 1.9
        assert leadership.role == "active"
        now[0] += 0.2  # T/2 after the last renewal: it stops driving before anyone may take over
        assert leadership.role == "standby"
        assert await leadership.confirm() is True  # a renewal: the lock is still held
        assert leadership.role == "active"
    finally:
        await leadership.close()


async def test_without_a_shared_store_the_agent_always_leads() -> None:
    local = LocalLeadership()
    assert local.role == "active" and await local.confirm() and local.changes == 0


def test_keys_timings_and_the_url_in_logs() -> None:
    assert leadership_key(HUB) == leadership_key(HUB.upper())
    assert leadership_key(HUB) != leadership_key("other")
    assert 0 < leadership_key(HUB) < 2**63
    options = session_options(15.0)
    # The server gives up on a silent leader after T*3/4: later than the leader's lease (T/2).
    idle, interval = int(options["keepalives_idle"]), int(options["keepalives_interval"])
    assert 15.0 / 2 <= idle + 3 * interval <= 15.0
    assert "tcp_user_timeout=11250" in str(options["options"])


@pytest.mark.parametrize("takeover", [1.0, 15.0, 600.0])
def test_session_options_are_valid_for_any_takeover(takeover: float) -> None:
    options = session_options(takeover)
    assert int(options["keepalives_idle"]) >= 1 and int(options["keepalives_interval"]) >= 1
