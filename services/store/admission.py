"""Admission slots shared by the agents of one hub: a rollout wave's hub job takes a slot first.

IoT Hub's job quota and throttle are per hub, not per agent, so with a shared PostgreSQL store
the agents keep one row per slot (``iothub.max_concurrent_jobs``, or the tier's quota) in
``admission_slots`` and take one with ``SELECT ... FOR UPDATE SKIP LOCKED`` before creating a
wave's hub job: two agents racing for the last free slot lock different rows or none, so they
never start two waves into one slot. Normally only the leader (:mod:`services.store.leadership`)
starts waves; the slots also hold while leadership changes hands.

A slot is ``free``, ``reserved`` (taken for a job about to be created) or ``created`` (its job
exists on the hub). The hub's job list stays the source of truth: a ``created`` slot whose job
is no longer queued or running in a listing that began after the slot was marked is free again
(and the engine frees it at once when it reads its own job's end from the hub),
and a ``reserved`` slot left by an agent that died mid-create is free after
``reservation_seconds`` (or taken again at once by the same job id: the deterministic wave job
ids make the new leader's retry of the same part find its slot).

Plain ``AzureIotDeviceJobSchedule*`` calls take no slot: they are a user's call, answered at once
with the hub's own verdict (``429004`` when the quota is full), and the engine counts them
anyway, through the hub's job list, before it takes a slot (docs/operations.md).

With the SQLite store (one agent) :class:`LocalAdmission` grants every slot the hub's job list
allows.

Rules:
- Times compared are the database's (``now()``), never an agent's clock.
- Every wait is bounded (``timeout``); a store that does not answer refuses the slot (the wave
  waits for the next step), never grants it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from datetime import datetime
from typing import Protocol

import psycopg
import structlog

from services.store.leadership import session_conninfo
from services.store.postgres import describe
from services.store.schema import migrate

__all__ = ["MIGRATIONS", "Admission", "LocalAdmission", "PostgresAdmission"]

_log = structlog.get_logger("services.store.admission")

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE admission_slots (
        hub TEXT NOT NULL,
        slot INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'free',
        job_id TEXT,
        agent TEXT,
        changed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (hub, slot)
    );
    CREATE INDEX admission_slots_by_job ON admission_slots (hub, job_id);
    """,
}


class Admission(Protocol):
    """Where a rollout wave takes its hub-job slot."""

    async def listing_started(self) -> datetime | None:
        """Mark the start of a hub job listing (the store's time), before listing."""
        ...

    async def take(self, job_id: str, active: Collection[str], listed_at: datetime | None) -> bool:
        """Take a slot for ``job_id``; False when none is free."""
        ...

    async def created(self, job_id: str) -> None:
        """``job_id`` exists on the hub now (created, or found after a crash)."""
        ...

    async def release(self, job_id: str) -> None:
        """``job_id`` was not created, or the engine saw its job end: its slot is free again."""
        ...

    async def close(self) -> None:
        """Close the store connection."""
        ...


class LocalAdmission:
    """One agent, nothing shared: the hub's job list alone decides (every take succeeds)."""

    async def listing_started(self) -> datetime | None:
        """No store time: None."""
        return None

    async def take(self, job_id: str, active: Collection[str], listed_at: datetime | None) -> bool:
        """Always True."""
        return True

    async def created(self, job_id: str) -> None:
        """Nothing to record."""

    async def release(self, job_id: str) -> None:
        """Nothing to record."""

    async def close(self) -> None:
        """Nothing to close."""


class PostgresAdmission:
    """The hub's admission slots in the shared PostgreSQL store.

    The first decision migrates the ``admission`` schema and creates the hub's slot rows (so an
    agent starts while its database is down, and waits for it; :meth:`prepare` does it at once).

    Args:
        url: the store's ``postgresql://`` URL (a secret: never logged).
        hub_host: the IoT Hub's host name (slots are per hub).
        slots: hub jobs queued or running at once (``iothub.max_concurrent_jobs`` or the tier's).
        agent: this agent's name in the slot rows (for an operator reading the table).
        timeout: seconds one admission decision may take.
        reservation_seconds: how long a slot reserved by an agent that then vanished stays taken.
    """

    def __init__(
        self,
        url: str,
        hub_host: str,
        slots: int,
        *,
        agent: str,
        timeout: float = 5.0,
        reservation_seconds: float = 120.0,
    ) -> None:
        self._url = url
        self.hub = hub_host.lower()
        self.slots = slots
        self.agent = agent
        self.timeout = timeout
        self.reservation_seconds = reservation_seconds
        self.location = describe(url)
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._lock = asyncio.Lock()
        self._prepared = False

    async def prepare(self) -> PostgresAdmission:
        """Migrate the ``admission`` schema and create the hub's slot rows now (rather than at
        the first decision).

        Returns:
            This object.

        Raises:
            psycopg.Error: the store cannot be reached or refused the migration.
        """
        async with self._lock:
            await self._prepare()
        return self

    async def _prepare(self) -> None:
        def prepare() -> None:
            connect_timeout = max(2, round(self.timeout))
            with psycopg.connect(self._url, autocommit=True, connect_timeout=connect_timeout) as c:
                migrate(c, "admission", MIGRATIONS)
                c.execute(
                    "INSERT INTO admission_slots (hub, slot) "
                    "SELECT %s, n FROM generate_series(1, %s) AS n ON CONFLICT DO NOTHING",
                    (self.hub, self.slots),
                )

        await asyncio.to_thread(prepare)
        self._prepared = True

    async def _connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if not self._prepared:
            await self._prepare()
        if self._conn is None or self._conn.closed:
            conninfo = session_conninfo(self._url, self.timeout * 4, "admission")
            self._conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        return self._conn

    async def listing_started(self) -> datetime | None:
        """The store's ``now()``, or None when it does not answer (then no ``created`` slot is
        freed by the listing that follows)."""
        async with self._lock:
            try:
                async with asyncio.timeout(self.timeout):
                    conn = await self._connection()
                    row = await (await conn.execute("SELECT now()")).fetchone()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                await self._failed("listing time", exc)
                return None
        value = row[0] if row else None
        return value if isinstance(value, datetime) else None

    async def take(self, job_id: str, active: Collection[str], listed_at: datetime | None) -> bool:
        """Take a free slot for ``job_id`` (or the one it holds already).

        Args:
            job_id: the wave's deterministic hub job id.
            active: ids of the hub's jobs queued or running, from a listing begun at
                ``listed_at``.
            listed_at: :meth:`listing_started`'s answer (None: no slot is freed by the listing).

        Returns:
            True when ``job_id`` holds a slot now; False when none is free or the store did
            not answer.
        """
        async with self._lock:
            try:
                async with asyncio.timeout(self.timeout):
                    conn = await self._connection()
                    return await self._take(conn, job_id, list(active), listed_at)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                await self._failed("take", exc)
                return False

    async def _take(
        self,
        conn: psycopg.AsyncConnection[tuple[object, ...]],
        job_id: str,
        active: list[str],
        listed_at: datetime | None,
    ) -> bool:
        # One statement, one round trip: the slot this job holds already (a retry, or the new
        # leader retrying a dead one's part), else the first free one that no other agent has
        # locked right now; reserved for the job in the same statement.
        row = await (
            await conn.execute(
                "WITH mine AS ("
                "  SELECT slot FROM admission_slots WHERE hub = %(hub)s AND job_id = %(job)s"
                "  FOR UPDATE"
                "), free AS ("
                "  SELECT slot FROM admission_slots WHERE hub = %(hub)s AND slot <= %(n)s AND ("
                "   state = 'free'"
                "   OR (state = 'created' AND %(listed)s::timestamptz IS NOT NULL"
                "       AND changed_at < %(listed)s::timestamptz"
                "       AND NOT (job_id = ANY(%(active)s::text[])))"
                "   OR (state = 'reserved'"
                "       AND changed_at < now() - make_interval(secs => %(reservation)s))"
                "  ) ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED"
                "), chosen AS ("
                "  (SELECT slot FROM mine) UNION ALL (SELECT slot FROM free) LIMIT 1"
                ") UPDATE admission_slots SET state = 'reserved', job_id = %(job)s,"
                " agent = %(agent)s, changed_at = now()"
                " FROM chosen WHERE admission_slots.hub = %(hub)s"
                " AND admission_slots.slot = chosen.slot RETURNING admission_slots.slot",
                {
                    "hub": self.hub,
                    "job": job_id,
                    "agent": self.agent,
                    "n": self.slots,
                    "listed": listed_at,
                    "active": active,
                    "reservation": self.reservation_seconds,
                },
            )
        ).fetchone()
        return row is not None

    async def created(self, job_id: str) -> None:
        """Mark ``job_id``'s slot ``created`` (a listing begun later frees it once it ended)."""
        await self._set(
            "UPDATE admission_slots SET state = 'created', changed_at = now() "
            "WHERE hub = %s AND job_id = %s",
            job_id,
        )

    async def release(self, job_id: str) -> None:
        """Free ``job_id``'s slot (its job was not created, or has ended)."""
        await self._set(
            "UPDATE admission_slots SET state = 'free', job_id = NULL, changed_at = now() "
            "WHERE hub = %s AND job_id = %s",
            job_id,
        )

    async def held(self) -> dict[int, tuple[str, str | None]]:
        """The hub's slots now: slot -> (state, job id) (for tests and operators)."""
        async with self._lock:
            async with asyncio.timeout(self.timeout):
                conn = await self._connection()
                rows = await (
                    await conn.execute(
                        "SELECT slot, state, job_id FROM admission_slots WHERE hub = %s "
                        "AND slot <= %s ORDER BY slot",
                        (self.hub, self.slots),
                    )
                ).fetchall()
        return {int(str(r[0])): (str(r[1]), None if r[2] is None else str(r[2])) for r in rows}

    async def _set(self, sql: str, job_id: str) -> None:
        async with self._lock:
            try:
                async with asyncio.timeout(self.timeout):
                    conn = await self._connection()
                    await conn.execute(sql, (self.hub, job_id))
            except (psycopg.Error, OSError, TimeoutError) as exc:
                # Left as it was: a reserved slot is taken again by the same job id, or expires.
                await self._failed("update", exc)

    async def _failed(self, what: str, exc: BaseException) -> None:
        error = "no answer in time" if isinstance(exc, TimeoutError) else str(exc).strip()
        _log.warning(
            "admission: store unreachable",
            store=self.location,
            step=what,
            error=error.splitlines()[0] if error else type(exc).__name__,
        )
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeout):
                    await conn.close()

    async def close(self) -> None:
        """Close the store connection."""
        async with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
