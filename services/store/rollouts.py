"""The rollout engine's memory: the :class:`RolloutStore` interface, its records, its schema,
and :class:`AsyncRolloutStore`, the seam that keeps store calls off the event loop.

Two implementations share the schema and the SQL (:mod:`services.store.tables`):
:class:`~services.store.sqlite.SqliteRolloutStore` (one file in the agent's data directory, one
agent) and :class:`~services.store.postgres.PostgresRolloutStore` (one database shared by several
agents); :func:`services.store.open_store` picks one by ``store.url``.

Tables: ``rollouts`` (one row per rollout: its request, plan, status and counters), ``devices``
(one row per targeted device: wave, status, attempts, last hub job and its result), ``rounds``
(a wave's round: its members and when it may start) and ``parts`` (one hub job of a round, with
its deterministic id and whether it was created). They are component ``rollouts`` of
:func:`services.store.schema.migrate`.

Rules:
- Every method is one transaction: a verdict (device outcomes, the next round, the rollout's
  status) is stored whole or not at all, so a crash leaves the state before or after it.
- The store holds no logic of its own: the engine decides, the store remembers.
- Store methods are synchronous and may block (a network database); the engine and the services
  call them through :class:`AsyncRolloutStore`, one worker thread per store, never on the loop.
- Driver errors leave a store as :mod:`services.store.errors` only.
- Fencing (:mod:`services.store.fencing`): the write calls an engine step makes inside
  :meth:`AsyncRolloutStore.fencing` carry its leadership epoch (a context variable, so the
  services' own writes from other tasks, a Start or a Cancel, are never fenced).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol, TypeVar

from services.store.fencing import Fence

__all__ = [
    "COMPONENT",
    "MIGRATIONS",
    "AsyncRolloutStore",
    "DeviceRecord",
    "DeviceUpdate",
    "Expect",
    "PartRecord",
    "RolloutRecord",
    "RolloutStore",
    "RoundRecord",
    "WaveRecord",
    "wave_records",
]

COMPONENT = "rollouts"
"""The schema's component name in ``schema_versions``."""

# The same SQL on SQLite and PostgreSQL: TEXT, INTEGER, no dialect-only types (times are ISO
# 8601 text in UTC, JSON is text), so a database can move between the two with plain copies.
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE rollouts (
        rollout_id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        operation TEXT NOT NULL,
        inputs TEXT NOT NULL,
        status TEXT NOT NULL,
        requested TEXT,
        reason TEXT,
        priority INTEGER NOT NULL,
        device_count INTEGER NOT NULL,
        wave INTEGER NOT NULL DEFAULT 0,
        wave_count INTEGER NOT NULL,
        current_job_id TEXT,
        created_time TEXT NOT NULL,
        start_time TEXT,
        end_time TEXT,
        last_wave_end TEXT
    );
    CREATE TABLE devices (
        rollout_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        wave INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        retried INTEGER NOT NULL DEFAULT 0,
        last_job_id TEXT,
        error_code TEXT,
        error_description TEXT,
        method_status INTEGER,
        method_payload TEXT,
        end_time TEXT,
        PRIMARY KEY (rollout_id, device_id)
    );
    CREATE INDEX devices_by_wave ON devices (rollout_id, wave, seq);
    CREATE TABLE rounds (
        rollout_id TEXT NOT NULL,
        wave INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        members TEXT NOT NULL,
        not_before TEXT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (rollout_id, wave, attempt)
    );
    CREATE TABLE parts (
        job_id TEXT PRIMARY KEY,
        rollout_id TEXT NOT NULL,
        wave INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        part INTEGER NOT NULL,
        condition TEXT NOT NULL,
        state TEXT NOT NULL,
        hub_status TEXT
    );
    CREATE INDEX parts_by_round ON parts (rollout_id, wave, attempt, part);
    """,
}


@dataclass(frozen=True)
class RolloutRecord:
    """A rollout as stored: what was asked, its status and where it is.

    Attributes:
        rollout_id: its id.
        type: ``twinUpdate`` or ``deviceMethod``.
        operation: the checked operation (patch, or method name/payload/timeouts).
        inputs: the plan's inputs as given (``waveSize``...), to rebuild the plan.
        status: a :class:`rollouts.RolloutStatus` value.
        requested: a pause or cancel waiting for the running wave's end, or None.
        reason: why it aborted or failed, or None.
        priority: 1 (first) .. 1000.
        device_count: devices targeted.
        wave: the last wave started (0 before the first).
        wave_count: waves planned.
        current_job_id: the hub job in flight, or None.
        created_time: when it was started.
        start_time: when its first hub job was created.
        end_time: when it ended.
        last_wave_end: when its last round ended (the pause between waves counts from there).
    """

    rollout_id: str
    type: str
    operation: dict[str, Any]
    inputs: dict[str, Any]
    status: str
    requested: str | None
    reason: str | None
    priority: int
    device_count: int
    wave: int
    wave_count: int
    current_job_id: str | None
    created_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    last_wave_end: datetime | None


@dataclass(frozen=True)
class DeviceRecord:
    """One device of a rollout (a row of ``AzureIotDeviceJobQueryRolloutResults``)."""

    device_id: str
    wave: int
    status: str
    attempts: int
    retried: int
    last_job_id: str | None
    error_code: str | None
    error_description: str | None
    method_status: int | None
    method_payload: Any
    end_time: datetime | None


@dataclass(frozen=True)
class RoundRecord:
    """A round of a wave: ``attempt`` 1 is the wave itself, later ones its retries.

    ``state``: ``planned`` (waits for ``not_before``), ``running`` (its parts are being created
    or run), ``judged`` (its verdict is stored) or ``dropped`` (never run: cancelled, aborted).
    """

    rollout_id: str
    wave: int
    attempt: int
    members: tuple[str, ...]
    not_before: datetime
    state: str


@dataclass(frozen=True)
class PartRecord:
    """One hub job of a round. ``state``: ``intent`` (to create; a create after a crash may
    meet 409104 and attach), ``created``, ``ended`` (terminal on the hub, ``hub_status`` says
    how) or ``skipped`` (never created: the round was cancelled first)."""

    job_id: str
    rollout_id: str
    wave: int
    attempt: int
    part: int
    condition: str
    state: str
    hub_status: str | None


class DeviceUpdate(NamedTuple):
    """What a judged round stores about one device (a named tuple: a verdict makes one per
    device of its wave, 10,000 at a time, and a frozen dataclass took four times as long)."""

    device_id: str
    status: str
    attempts: int
    retried: bool
    last_job_id: str | None
    error_code: str | None
    error_description: str | None
    method_status: int | None
    method_payload: Any
    end_time: datetime | None


Expect = tuple[str, str | None]
"""A rollout's ``(status, requested)`` as read by a writer that decided from them: its write
goes through only while they are unchanged (compare-and-set), else
:class:`~services.store.errors.StaleRolloutError`."""


class RolloutStore(Protocol):
    """The rollout engine's memory (:mod:`services.store.sqlite`, :mod:`services.store.postgres`).

    Every method is one transaction and may raise
    :class:`~services.store.errors.StoreUnavailable`.
    """

    def create(self, record: RolloutRecord, devices: Sequence[tuple[str, int]]) -> None:
        """Store a new rollout and its devices (``(id, wave)`` in plan order).

        Raises:
            RolloutExistsError: a rollout with that id is stored already.
        """
        ...

    def get(self, rollout_id: str) -> RolloutRecord | None:
        """A rollout, or None."""
        ...

    def find(self, statuses: Iterable[str] | None = None) -> list[RolloutRecord]:
        """Rollouts (with one of ``statuses`` when given), oldest first."""
        ...

    def update(self, rollout_id: str, *, expect: Expect | None = None, **fields: Any) -> None:
        """Change a rollout's columns (``status``, ``requested``, ``reason``...).

        Raises:
            StaleRolloutError: ``expect`` was given and the rollout's ``(status, requested)``
                are no longer those (nothing written).
        """
        ...

    def devices(
        self,
        rollout_id: str,
        *,
        wave: int | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[DeviceRecord]:
        """A rollout's devices in plan order, filtered by wave and/or status."""
        ...

    def device_attempts(
        self, rollout_id: str, *, wave: int, status: str | None = None
    ) -> list[tuple[str, int]]:
        """``(device id, attempts)`` of a wave's devices in plan order (with ``status`` when
        given): the engine's read of a wave, without the devices' other columns."""
        ...

    def counts(self, rollout_id: str) -> dict[str, int]:
        """Devices by status, and ``retried`` (devices retried at least once)."""
        ...

    def rounds(self, rollout_id: str, state: str | None = None) -> list[RoundRecord]:
        """A rollout's rounds (in ``state`` when given), by wave and attempt."""
        ...

    def add_round(self, round_: RoundRecord, parts: Sequence[PartRecord], **rollout: Any) -> None:
        """Store a round, its parts and the rollout's changed columns, together."""
        ...

    def set_round_state(self, rollout_id: str, state: str, *, where_state: str) -> None:
        """Move every round of a rollout in ``where_state`` to ``state``."""
        ...

    def parts(self, rollout_id: str, wave: int, attempt: int) -> list[PartRecord]:
        """The parts of one round, in order."""
        ...

    def set_part(
        self,
        job_id: str,
        state: str,
        hub_status: str | None = None,
        *,
        expect: Expect | None = None,
        **rollout: Any,
    ) -> None:
        """Record a part's new state and its rollout's changed columns, together.

        Raises:
            StaleRolloutError: as :meth:`update` (nothing written).
        """
        ...

    def end_parts(self, ended: Sequence[tuple[str, str]]) -> None:
        """Record parts whose hub jobs ended, ``(job id, the hub's status)`` each, together."""
        ...

    def judge(
        self,
        rollout_id: str,
        wave: int,
        attempt: int,
        updates: Sequence[DeviceUpdate],
        next_round: RoundRecord | None,
        *,
        expect: Expect | None = None,
        **rollout: Any,
    ) -> None:
        """Store a round's verdict whole: devices, the retry round, the rollout's columns.

        Raises:
            StaleRolloutError: as :meth:`update` (nothing written).
        """
        ...

    def close(self) -> None:
        """Close the store."""
        ...

    def waves(self, rollout_id: str, limit: int | None = None) -> list[WaveRecord]:
        """One :class:`WaveRecord` per round (wave and attempt), then one per wave not yet
        planned, by wave and attempt; at most ``limit``."""
        ...


_T = TypeVar("_T")

_FENCE: contextvars.ContextVar[Fence | None] = contextvars.ContextVar(
    "rollout_store_fence", default=None
)


class AsyncRolloutStore:
    """A :class:`RolloutStore` for the event loop: each call runs in the store's own worker
    thread, so a slow or lost database never blocks the loop.

    One thread per store: the store serialises its calls on one connection anyway, and its
    callers see them in the order they made them.

    Args:
        store: the synchronous store (it is closed by :meth:`close`).
    """

    def __init__(self, store: RolloutStore) -> None:
        self.sync = store
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout-store")

    async def _call(self, method: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, functools.partial(method, *args, **kwargs))

    async def _write(self, method: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """A write call: under the fence of the calling task's :meth:`fencing`, if any (and the
        store fences: a store without ``fenced`` writes unfenced)."""
        fence = _FENCE.get()
        fenced = getattr(self.sync, "fenced", None)
        if fence is None or fenced is None:
            return await self._call(method, *args, **kwargs)

        def write() -> _T:
            with fenced(fence):
                return method(*args, **kwargs)

        return await self._call(write)

    @staticmethod
    @contextlib.contextmanager
    def fencing(fence: Fence | None) -> Iterator[None]:
        """Write calls the current task (and the tasks it starts) makes inside carry ``fence``.

        Args:
            fence: the leader's token (None: unfenced).
        """
        token = _FENCE.set(fence)
        try:
            yield
        finally:
            _FENCE.reset(token)

    async def create(self, record: RolloutRecord, devices: Sequence[tuple[str, int]]) -> None:
        """:meth:`RolloutStore.create`."""
        await self._write(self.sync.create, record, devices)

    async def get(self, rollout_id: str) -> RolloutRecord | None:
        """:meth:`RolloutStore.get`."""
        return await self._call(self.sync.get, rollout_id)

    async def find(self, statuses: Iterable[str] | None = None) -> list[RolloutRecord]:
        """:meth:`RolloutStore.find`."""
        return await self._call(self.sync.find, None if statuses is None else list(statuses))

    async def update(self, rollout_id: str, *, expect: Expect | None = None, **fields: Any) -> None:
        """:meth:`RolloutStore.update`."""
        await self._write(self.sync.update, rollout_id, expect=expect, **fields)

    async def devices(
        self,
        rollout_id: str,
        *,
        wave: int | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[DeviceRecord]:
        """:meth:`RolloutStore.devices`."""
        return await self._call(
            self.sync.devices, rollout_id, wave=wave, status=status, limit=limit
        )

    async def device_attempts(
        self, rollout_id: str, *, wave: int, status: str | None = None
    ) -> list[tuple[str, int]]:
        """:meth:`RolloutStore.device_attempts`."""
        return await self._call(self.sync.device_attempts, rollout_id, wave=wave, status=status)

    async def counts(self, rollout_id: str) -> dict[str, int]:
        """:meth:`RolloutStore.counts`."""
        return await self._call(self.sync.counts, rollout_id)

    async def rounds(self, rollout_id: str, state: str | None = None) -> list[RoundRecord]:
        """:meth:`RolloutStore.rounds`."""
        return await self._call(self.sync.rounds, rollout_id, state)

    async def add_round(
        self, round_: RoundRecord, parts: Sequence[PartRecord], **rollout: Any
    ) -> None:
        """:meth:`RolloutStore.add_round`."""
        await self._write(self.sync.add_round, round_, parts, **rollout)

    async def set_round_state(self, rollout_id: str, state: str, *, where_state: str) -> None:
        """:meth:`RolloutStore.set_round_state`."""
        await self._write(self.sync.set_round_state, rollout_id, state, where_state=where_state)

    async def parts(self, rollout_id: str, wave: int, attempt: int) -> list[PartRecord]:
        """:meth:`RolloutStore.parts`."""
        return await self._call(self.sync.parts, rollout_id, wave, attempt)

    async def set_part(
        self,
        job_id: str,
        state: str,
        hub_status: str | None = None,
        *,
        expect: Expect | None = None,
        **rollout: Any,
    ) -> None:
        """:meth:`RolloutStore.set_part`."""
        await self._write(self.sync.set_part, job_id, state, hub_status, expect=expect, **rollout)

    async def end_parts(self, ended: Sequence[tuple[str, str]]) -> None:
        """:meth:`RolloutStore.end_parts`."""
        await self._write(self.sync.end_parts, ended)

    async def judge(
        self,
        rollout_id: str,
        wave: int,
        attempt: int,
        updates: Sequence[DeviceUpdate],
        next_round: RoundRecord | None,
        *,
        expect: Expect | None = None,
        **rollout: Any,
    ) -> None:
        """:meth:`RolloutStore.judge`."""
        await self._write(
            self.sync.judge,
            rollout_id,
            wave,
            attempt,
            updates,
            next_round,
            expect=expect,
            **rollout,
        )

    async def waves(self, rollout_id: str, limit: int | None = None) -> list[WaveRecord]:
        """:meth:`RolloutStore.waves`."""
        return await self._call(self.sync.waves, rollout_id, limit)

    def close(self) -> None:
        """Wait for the call in flight (if any), stop the worker and close the store."""
        self._worker.shutdown(wait=True)
        self.sync.close()


@dataclass(frozen=True)
class WaveRecord:
    """One round of a rollout's wave as a progress row (``AzureIotDeviceJobGetRolloutWaves``).

    ``status`` is the round's state (``planned``, ``running``, ``judged``, ``dropped``), or
    ``waiting`` for a wave whose first round is not planned yet (``attempt`` 1, no job).
    """

    wave: int
    attempt: int
    device_count: int
    succeeded: int
    failed: int
    pending: int
    job_ids: tuple[str, ...]
    status: str


def wave_records(
    rounds: Sequence[RoundRecord],
    parts: Iterable[Sequence[Any]],
    devices: Iterable[Sequence[Any]],
    limit: int | None = None,
) -> list[WaveRecord]:
    """The per-round progress rows of :meth:`RolloutStore.waves`, from the rollout's rounds,
    its parts (``wave, attempt, job_id, state``) and its devices (``device_id, wave, status``).

    Shared by every store: only the reading of the three tables differs.
    """
    jobs: dict[tuple[int, int], list[str]] = {}
    for wave, attempt, job_id, state in parts:
        if state != "skipped":
            jobs.setdefault((wave, attempt), []).append(job_id)
    status_of: dict[str, str] = {}
    per_wave: dict[int, int] = {}
    for device_id, wave, status in devices:
        status_of[device_id] = status
        per_wave[wave] = per_wave.get(wave, 0) + 1
    last: dict[str, tuple[int, int]] = {}
    for round_ in rounds:
        for device_id in round_.members:
            last[device_id] = (round_.wave, round_.attempt)
    records: list[WaveRecord] = []
    for round_ in rounds:
        key = (round_.wave, round_.attempt)
        counts = dict.fromkeys(("succeeded", "failed", "pending"), 0)
        for device_id in round_.members:
            if round_.state != "judged":
                counts["pending"] += 1
            elif last.get(device_id) != key:
                counts["failed"] += 1  # retried in a later round: this attempt failed
            else:
                status = status_of.get(device_id, "pending")
                counts[status] = counts.get(status, 0) + 1
        records.append(
            WaveRecord(
                round_.wave,
                round_.attempt,
                len(round_.members),
                counts["succeeded"],
                counts["failed"],
                counts["pending"],
                tuple(jobs.get(key, ())),
                round_.state,
            )
        )
    started = {r.wave for r in rounds}
    for wave in sorted(per_wave):
        if wave not in started:
            count = per_wave[wave]
            records.append(WaveRecord(wave, 1, count, 0, 0, count, (), "waiting"))
    records.sort(key=lambda r: (r.wave, r.attempt))
    return records if limit is None else records[:limit]
