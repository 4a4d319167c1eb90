"""Rollout leadership: exactly one agent of a hub drives its rollouts at a time.

With a shared PostgreSQL store (``store.url``) every agent of a hub races for one session-level
advisory lock (``pg_try_advisory_lock``), its key derived from the hub's host name, on a
connection of its own that does nothing else. The winner is the hub's rollout leader
(``active``); the others are ``standby`` and try again every ``takeover_seconds / 4``. The lock
belongs to the leader's database session, so it goes when that session goes: a leader killed
with SIGKILL loses it at once (the kernel closes its socket and the server ends the session), a
leader cut off silently loses it when the server's TCP keepalives give up on it.

Timings, with T = ``store.takeover_seconds`` (docs/operations.md, "Several agents"):
- the leader renews every T/4 (one round trip: the session alive and the lock still in
  ``pg_locks``), and before every wave the engine starts (:meth:`Leadership.confirm`); a renewal
  that fails or takes longer than T/4 ends its leadership at once. A wave starts only right
  after a renewal that succeeded (and takes its admission slot in the same database), so a
  leader cut off from the database starts nothing; its :attr:`PostgresLeadership.role` says
  ``standby`` once its last renewal is older than T/2, before anyone can take over;
- the server gives up on a silent leader's socket after T/2 idle plus three keepalive probes
  T/12 apart (T*3/4; ``tcp_user_timeout`` the same for unacknowledged data), set per session, so
  the lock is free again only after the old leader has stopped;
- a standby tries every T/4, so it takes over within T/4 of a kill -9 and within T of a silent
  death.

With the SQLite store nothing is shared: :class:`LocalLeadership` is always the leader.

Rules:
- The store URL is a secret: it is never logged; errors name the host and database only.
- Every database wait is bounded (connect and query, T/4); a connection that failed once is
  closed and a fresh one opened on the next attempt.
- Losing or gaining leadership calls ``on_change`` (the engine wakes and, on gaining, continues
  every rollout from the store through its recovery path).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable
from typing import Protocol

import psycopg
import structlog

from services.store.postgres import describe

__all__ = [
    "Leadership",
    "LocalLeadership",
    "PostgresLeadership",
    "leadership_key",
    "session_conninfo",
    "session_options",
]

_log = structlog.get_logger("services.store.leadership")


def leadership_key(hub_host: str) -> int:
    """The advisory-lock key (a positive 63-bit integer) of ``hub_host``'s rollout leadership."""
    digest = hashlib.sha256(f"jobs-agent rollouts {hub_host.lower()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def session_options(takeover_seconds: float) -> dict[str, str | int]:
    """libpq parameters that make both ends notice a silently dead peer in time.

    The client's keepalives end the leader's own connection; the server-side settings (sent as
    ``options``) end the leader's session, and so release its lock, after T*3/4.
    """
    idle = max(1, round(takeover_seconds / 2))
    interval = max(1, round(takeover_seconds / 12))
    user_timeout_ms = max(1000, round(takeover_seconds * 750))
    return {
        "connect_timeout": max(2, round(takeover_seconds / 4)),
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": 3,
        "tcp_user_timeout": user_timeout_ms,
        "options": (
            f"-c tcp_keepalives_idle={idle} -c tcp_keepalives_interval={interval} "
            f"-c tcp_keepalives_count=3 -c tcp_user_timeout={user_timeout_ms} "
            "-c idle_session_timeout=0 -c statement_timeout=0"
        ),
    }


def session_conninfo(url: str, takeover_seconds: float, role: str) -> str:
    """``url`` with :func:`session_options` and ``application_name=jobs-agent <role>``."""
    options = {**session_options(takeover_seconds), "application_name": f"jobs-agent {role}"}
    return psycopg.conninfo.make_conninfo(url, **options)


class Leadership(Protocol):
    """Whether this agent may drive the hub's rollouts now."""

    on_change: Callable[[], None] | None

    @property
    def role(self) -> str:
        """``active`` (it drives the rollouts) or ``standby``."""
        ...

    @property
    def changes(self) -> int:
        """Times this agent became or stopped being the leader."""
        ...

    async def confirm(self) -> bool:
        """Check, with the database, that this agent still leads (before every wave)."""
        ...

    async def run(self) -> None:
        """Keep the leadership (renew) or try to take it, until cancelled."""
        ...

    async def close(self) -> None:
        """Give the leadership up (if held) and close the connection."""
        ...


class LocalLeadership:
    """The leadership of an agent that shares nothing (the SQLite store): always the leader."""

    on_change: Callable[[], None] | None = None

    @property
    def role(self) -> str:
        """Always ``active``."""
        return "active"

    @property
    def changes(self) -> int:
        """Always 0."""
        return 0

    async def confirm(self) -> bool:
        """Always True."""
        return True

    async def run(self) -> None:
        """Nothing to keep: waits until cancelled."""
        await asyncio.Event().wait()

    async def close(self) -> None:
        """Nothing to close."""


class PostgresLeadership:
    """The hub's rollout leadership as a PostgreSQL session advisory lock.

    Args:
        url: the shared store's ``postgresql://`` URL (a secret: never logged).
        hub_host: the IoT Hub's host name (the lock's key).
        takeover_seconds: ``store.takeover_seconds`` (T above).
        on_change: called after this agent became or stopped being the leader.
        clock: monotonic seconds (injected for tests).
    """

    def __init__(
        self,
        url: str,
        hub_host: str,
        takeover_seconds: float,
        *,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self.hub_host = hub_host
        self.key = leadership_key(hub_host)
        self.takeover_seconds = takeover_seconds
        self.on_change = on_change
        self._clock = clock
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._confirmed_at: float | None = None
        self._lock = asyncio.Lock()
        self._changes = 0
        self.location = describe(url)
        self.last_error: str | None = None

    @property
    def interval(self) -> float:
        """Seconds between two renewals (leader) or two attempts (standby): T/4."""
        return self.takeover_seconds / 4

    @property
    def lease(self) -> float:
        """Seconds a renewal lets the leader drive: T/2."""
        return self.takeover_seconds / 2

    @property
    def role(self) -> str:
        """``active`` while the last renewal is younger than the lease, else ``standby``."""
        return "active" if self._leading() else "standby"

    @property
    def changes(self) -> int:
        """Times this agent became or stopped being the leader."""
        return self._changes

    def _leading(self) -> bool:
        at = self._confirmed_at
        return at is not None and self._clock() - at < self.lease

    async def confirm(self) -> bool:
        """Renew now: True when the session is alive and still holds the lock.

        A standby answers False at once (it does not try to take the lock here: that is
        :meth:`run`'s job, every T/4).
        """
        if self._confirmed_at is None:
            return False
        async with self._lock:
            if self._confirmed_at is None:
                return False
            held = await self._query(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = pg_backend_pid() AND granted AND objsubid = 1 "
                "AND classid::bigint = %s AND objid::bigint = %s)",
                (self.key >> 32, self.key & 0xFFFF_FFFF),
            )
            if held is None or self._confirmed_at is None:
                return False  # the store did not answer: lost already
            if held:
                self._confirmed_at = self._clock()
                return True
            self._lose("the advisory lock is no longer held")
            return False

    async def try_acquire(self) -> bool:
        """One attempt to take the lock (a standby's); True when this agent now leads."""
        async with self._lock:
            if self._confirmed_at is not None:
                return True
            taken = await self._query("SELECT pg_try_advisory_lock(%s)", (self.key,))
            if taken:
                self._confirmed_at = self._clock()
                self._changes += 1
                _log.info("rollout leadership taken", hub=self.hub_host, store=self.location)
                self._notify()
                return True
            return False

    async def run(self) -> None:
        """Renew (leader) or try to take the lock (standby) every T/4, until cancelled."""
        while True:
            if self._confirmed_at is not None:
                await self.confirm()
            else:
                await self.try_acquire()
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        """Give the lock up (a standby may take it at once) and close the connection."""
        async with self._lock:
            if self._confirmed_at is not None:
                await self._query("SELECT pg_advisory_unlock(%s)", (self.key,))
                if self._confirmed_at is not None:
                    self._lose("the agent is stopping")
            await self._drop()

    async def _query(self, sql: str, params: tuple[object, ...]) -> bool | None:
        """Run a one-boolean query on the dedicated connection; None (and the connection
        dropped, leadership lost) on any failure or after T/4."""
        try:
            async with asyncio.timeout(self.interval):
                if self._conn is None or self._conn.closed:
                    conninfo = session_conninfo(self._url, self.takeover_seconds, "leadership")
                    self._conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
                cursor = await self._conn.execute(sql, params)
                row = await cursor.fetchone()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            error = _one_line(exc) if not isinstance(exc, TimeoutError) else "no answer in time"
            if error != self.last_error:
                _log.warning("rollout leadership: store unreachable", store=self.location,
                             error=error)  # fmt: skip
            self.last_error = error
            if self._confirmed_at is not None:
                self._lose(f"the store did not answer: {error}")
            await self._drop()
            return None
        self.last_error = None
        return bool(row and row[0])

    def _lose(self, why: str) -> None:
        self._confirmed_at = None
        self._changes += 1
        _log.warning("rollout leadership lost", hub=self.hub_host, reason=why)
        self._notify()

    def _notify(self) -> None:
        if self.on_change is not None:
            self.on_change()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.interval):
                    await conn.close()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
