"""Rollout leadership: exactly one agent of a hub drives its rollouts at a time.

With a shared PostgreSQL store (``store.url``) every agent of a hub races for one session-level
advisory lock (``pg_try_advisory_lock``), its key derived from the hub's host name, on a
connection of its own that does nothing else. The winner is the hub's rollout leader
(``active``); the others are ``standby`` and try again every ``takeover_seconds / 4``. The lock
belongs to the leader's database session, so it goes when that session goes: a leader killed
with SIGKILL loses it at once (the kernel closes its socket and the server ends the session), a
leader cut off silently loses it when the server's TCP keepalives give up on it.

Timings, with T = ``store.takeover_seconds`` (docs/operations.md, "Several agents"):
- the leader renews every T/4 (one round trip: the session alive, the lock still in
  ``pg_locks``, the hub's epoch still its own, ``renewed_at`` stamped), and before every wave
  the engine starts (:meth:`Leadership.confirm`); a renewal that fails or takes longer than T/4
  ends its leadership at once. A wave starts only right after a renewal that succeeded (and
  takes its admission slot in the same database), so a leader cut off from the database starts
  nothing; its :attr:`PostgresLeadership.role` says ``standby`` once its last renewal is older
  than T/2, before anyone can take over;
- the server gives up on a silent leader's socket after T/2 idle plus three keepalive probes
  T/12 apart (T*3/4; ``tcp_user_timeout`` the same for unacknowledged data), set per session, so
  the lock is free again only after the old leader has stopped;
- a standby tries every T/4, so it takes over within T/4 of a kill -9 and within T of a silent
  death;
- a leader whose session the server cannot see die (a partition behind a proxy or a middlebox
  that keeps answering TCP for it) is ended by the standby: each renewal stamps the hub's
  ``leadership`` row (``renewed_at``, the database's time), and a standby that finds the lock
  held but the stamp older than T*3/4 terminates the holder's session (``pg_terminate_backend``:
  the agents share one database role, or have ``pg_signal_backend``) and takes the lock in the
  same attempt: within T of the leader's last renewal, as for a silent death.

Fencing (:mod:`services.store.fencing`): taking the lock moves the hub's epoch on in the same
transaction (after ending the old leader's fenced writes still in flight);
:attr:`PostgresLeadership.fence` is the token the engine's writes carry, so an old leader that
has not noticed yet writes nothing.

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
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import psycopg
import structlog

from services.store import fencing
from services.store.fencing import Fence, fence_key
from services.store.postgres import describe
from services.store.schema import migrate

__all__ = [
    "Leadership",
    "LocalLeadership",
    "PostgresLeadership",
    "leadership_key",
    "session_conninfo",
    "session_options",
]

_log = structlog.get_logger("services.store.leadership")
_T = TypeVar("_T")
_Conn = psycopg.AsyncConnection[tuple[object, ...]]


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

    @property
    def fence(self) -> Fence | None:
        """The token the leader's store writes carry (None: not leading, or nothing to fence)."""
        ...

    @property
    def epoch(self) -> int | None:
        """The epoch this agent leads in (None: standby, or nothing shared to fence)."""
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

    @property
    def fence(self) -> Fence | None:
        """None: nothing is shared, nothing to fence."""
        return None

    @property
    def epoch(self) -> int | None:
        """None: nothing is shared, no epoch."""
        return None

    async def confirm(self) -> bool:
        """Always True."""
        return True

    async def run(self) -> None:
        """Nothing to keep: waits until cancelled."""
        await asyncio.Event().wait()

    async def close(self) -> None:
        """Nothing to close."""


class PostgresLeadership:
    """The hub's rollout leadership as a PostgreSQL session advisory lock, with a fencing epoch.

    Args:
        url: the shared store's ``postgresql://`` URL (a secret: never logged).
        hub_host: the IoT Hub's host name (the lock's key).
        takeover_seconds: ``store.takeover_seconds`` (T above).
        on_change: called after this agent became or stopped being the leader.
        clock: monotonic seconds (injected for tests).
        agent: this agent's name in the ``leadership`` row (for an operator reading it).
    """

    def __init__(
        self,
        url: str,
        hub_host: str,
        takeover_seconds: float,
        *,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        agent: str | None = None,
    ) -> None:
        self._url = url
        self.hub_host = hub_host
        self.key = leadership_key(hub_host)
        self.takeover_seconds = takeover_seconds
        self.on_change = on_change
        self.agent = agent or f"{socket.gethostname()}:{os.getpid()}"
        self._clock = clock
        self._conn: _Conn | None = None
        self._migrated = False
        self._confirmed_at: float | None = None
        self._epoch: int | None = None
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
    def silence(self) -> float:
        """Seconds after its last renewal (database time) a leader's session is ended: T*3/4."""
        return self.takeover_seconds * 3 / 4

    @property
    def role(self) -> str:
        """``active`` while the last renewal is younger than the lease, else ``standby``."""
        return "active" if self._leading() else "standby"

    @property
    def changes(self) -> int:
        """Times this agent became or stopped being the leader."""
        return self._changes

    @property
    def epoch(self) -> int | None:
        """The epoch this agent leads in (None while standby)."""
        return self._epoch if self._confirmed_at is not None else None

    @property
    def fence(self) -> Fence | None:
        """The token of :attr:`epoch` (None while standby)."""
        epoch = self.epoch
        return None if epoch is None else Fence(self.hub_host.lower(), epoch)

    def _leading(self) -> bool:
        at = self._confirmed_at
        return at is not None and self._clock() - at < self.lease

    async def confirm(self) -> bool:
        """Renew now: True when the session is alive, still holds the lock and the hub's epoch
        is still this agent's (the renewal stamps ``renewed_at``).

        A standby answers False at once (it does not try to take the lock here: that is
        :meth:`run`'s job, every T/4).
        """
        if self._confirmed_at is None:
            return False
        async with self._lock:
            if self._confirmed_at is None:
                return False
            held = await self._attempt(self._renew)
            if held is None or self._confirmed_at is None:
                return False  # the store did not answer: lost already
            if held:
                self._confirmed_at = self._clock()
                return True
            self._lose("the advisory lock is no longer held, or another agent's epoch is newer")
            await self._drop()  # a fresh session: no lock of this one can linger
            return False

    async def _renew(self, conn: _Conn) -> bool:
        cursor = await conn.execute(
            "UPDATE leadership SET renewed_at = now() WHERE hub = %s AND epoch = %s "
            "AND EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
            "AND pid = pg_backend_pid() AND granted AND objsubid = 1 "
            "AND classid::bigint = %s AND objid::bigint = %s) RETURNING 1",
            (self.hub_host.lower(), self._epoch, self.key >> 32, self.key & 0xFFFF_FFFF),
        )
        return await cursor.fetchone() is not None

    async def try_acquire(self) -> bool:
        """One attempt to take the lock (a standby's); True when this agent now leads, in a new
        epoch. A leader found silent for T*3/4 has its session ended first."""
        async with self._lock:
            if self._confirmed_at is not None:
                return True
            epoch = await self._attempt(self._take)
            if epoch is None:
                return False
            self._epoch = epoch
            self._confirmed_at = self._clock()
            self._changes += 1
            _log.info("rollout leadership taken", hub=self.hub_host, epoch=epoch,
                      store=self.location)  # fmt: skip
            self._notify()
            return True

    async def _take(self, conn: _Conn) -> int | None:
        """Take the lock and move the epoch on, in one transaction; None when another holds it.

        A failure after the lock was taken drops the connection (:meth:`_attempt`): the session
        ends and the lock with it, whatever the transaction did.
        """
        hub = self.hub_host.lower()
        locks = (
            "FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            "AND classid::bigint = %s AND objid::bigint = %s AND pid <> pg_backend_pid()"
        )
        wait_ms = max(1, round(self.interval * 1000 / 2))
        async with conn.transaction():
            if not await self._one(conn, "SELECT pg_try_advisory_lock(%s)", (self.key,)):
                # Held: by a live leader, or by a silent one the server cannot see die.
                cursor = await conn.execute(
                    f"SELECT pid {locks} AND EXISTS (SELECT 1 FROM leadership WHERE hub = %s "
                    "AND renewed_at < now() - make_interval(secs => %s))",
                    (self.key >> 32, self.key & 0xFFFF_FFFF, hub, self.silence),
                )
                silent = [row[0] for row in await cursor.fetchall()]
                if not silent:
                    return None
                _log.warning("rollout leadership: the leader is silent, ending its session",
                             hub=self.hub_host, silent_seconds=self.silence)  # fmt: skip
                for pid in silent:
                    await conn.execute("SELECT pg_terminate_backend(%s, %s)", (pid, wait_ms))
                if not await self._one(conn, "SELECT pg_try_advisory_lock(%s)", (self.key,)):
                    return None
            # End the old leaders' fenced writes still in flight, then move the epoch on.
            fence = fence_key(hub)
            await conn.execute(
                f"SELECT pg_terminate_backend(pid, %s) {locks}",
                (wait_ms, fence >> 32, fence & 0xFFFF_FFFF),
            )
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (fence,))
            cursor = await conn.execute(
                "INSERT INTO leadership (hub, epoch, renewed_at, agent) VALUES (%s, 1, now(), %s) "
                "ON CONFLICT (hub) DO UPDATE SET epoch = leadership.epoch + 1, "
                "renewed_at = now(), agent = excluded.agent RETURNING epoch",
                (hub, self.agent),
            )
            row = await cursor.fetchone()
            assert row is not None
            return int(str(row[0]))

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
                await self._attempt(
                    lambda conn: self._one(conn, "SELECT pg_advisory_unlock(%s)", (self.key,))
                )
                if self._confirmed_at is not None:
                    self._lose("the agent is stopping")
            await self._drop()

    @staticmethod
    async def _one(conn: _Conn, sql: str, params: tuple[object, ...]) -> bool:
        row = await (await conn.execute(sql, params)).fetchone()
        return bool(row and row[0])

    def _migrate(self) -> None:
        connect_timeout = max(2, round(self.interval))
        with psycopg.connect(self._url, autocommit=True, connect_timeout=connect_timeout) as conn:
            migrate(conn, fencing.COMPONENT, fencing.MIGRATIONS)

    async def _attempt(self, action: Callable[[_Conn], Awaitable[_T]]) -> _T | None:
        """Run ``action`` on the dedicated connection (opened, and the ``leadership`` schema
        migrated, when needed); None (and the connection dropped, leadership lost) on any
        failure or after T/4."""
        try:
            async with asyncio.timeout(self.interval):
                if not self._migrated:
                    await asyncio.to_thread(self._migrate)
                    self._migrated = True
                if self._conn is None or self._conn.closed:
                    conninfo = session_conninfo(self._url, self.takeover_seconds, "leadership")
                    self._conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
                result = await action(self._conn)
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
        return result

    def _lose(self, why: str) -> None:
        self._confirmed_at = None
        self._changes += 1
        _log.warning("rollout leadership lost", hub=self.hub_host, epoch=self._epoch, reason=why)
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
