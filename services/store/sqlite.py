"""The rollout store in one SQLite file: the embedded default (one agent, ``store.url`` empty).

``rollouts.sqlite`` in ``rollouts.data_dir``, in WAL mode with ``synchronous=FULL``, opened (and
its schema migrated) on first use, so an agent that never runs (``jobs-agent check``) creates no
file.

Rules:
- The schema is component ``rollouts`` of :func:`services.store.schema.migrate`. A file of the
  agent before that (``PRAGMA user_version = 1``, no ``schema_versions`` row) is adopted as
  version 1 with its rows; ``user_version`` is not read again.
- Transactions are ``BEGIN IMMEDIATE`` for writes (the write lock first, no upgrade deadlock) and
  ``BEGIN`` for reads; ``sqlite3`` errors leave as :mod:`services.store.errors`.
- A rollout's device counts (``counts``, read by every GetRollout) are counted once and kept:
  counting 100,000 rows took 0.3 s per call (benchmarks/bench_rollout.py). A verdict
  (``judge``) moves them by the change it made to the judged wave's counts (that wave counted
  before and after, in the store's lock), ``create`` drops them. One agent owns the file, so
  no other writer changes them behind the cache (the shared PostgreSQL store, which other
  agents write, counts every time).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from services.store.errors import RolloutExistsError, StoreError, StoreUnavailable
from services.store.rollouts import COMPONENT, MIGRATIONS, RolloutRecord
from services.store.schema import migrate, schema_version
from services.store.tables import RolloutTables, Sql

__all__ = ["SqliteRolloutStore"]


class SqliteRolloutStore(RolloutTables):
    """:class:`~services.store.rollouts.RolloutStore` in one SQLite file.

    Args:
        path: the database file (its directory is created), or ``:memory:``.

    Raises:
        SchemaTooNewError: (on first use) the file's schema is newer than this agent knows.
    """

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._counts: dict[str, dict[str, int]] = {}

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection, opened (and the schema migrated) on first use."""
        if self._conn is None:
            path = self.path
            if str(path) != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                _adopt_user_version(db)
                migrate(db, COMPONENT, MIGRATIONS)
            except BaseException:
                db.close()
                raise
            self._conn = db
        return self._conn

    def create(self, record: RolloutRecord, devices: Sequence[tuple[str, int]]) -> None:
        """Store a new rollout and its devices (see :class:`RolloutTables`)."""
        with self._lock:
            self._counts.pop(record.rollout_id, None)
            super().create(record, devices)

    def counts(self, rollout_id: str) -> dict[str, int]:
        """Devices by status and ``retried``: counted once, kept until ``create``/``judge``."""
        with self._lock:
            cached = self._counts.get(rollout_id)
            if cached is None:
                cached = self._counts[rollout_id] = super().counts(rollout_id)
            return dict(cached)

    def judge(self, rollout_id: str, wave: int, *verdict: Any, **rollout: Any) -> None:
        """Store a round's verdict whole (see :class:`RolloutTables`); kept counts move by the
        change of the judged wave's own counts (10,000 rows counted twice, not the rollout's
        100,000 again)."""
        with self._lock:
            cached = self._counts.pop(rollout_id, None)
            before = None if cached is None else self._wave_counts(rollout_id, wave)
            super().judge(rollout_id, wave, *verdict, **rollout)
            if cached is not None and before is not None:
                after = self._wave_counts(rollout_id, wave)
                for key in cached:
                    cached[key] += after.get(key, 0) - before.get(key, 0)
                self._counts[rollout_id] = cached

    @property
    def schema_version(self) -> int:
        """The version of the rollout schema the file holds."""
        with self._lock:
            return schema_version(self._db, COMPONENT)

    @contextlib.contextmanager
    def _tx(self, *, write: bool) -> Iterator[Sql]:
        with self._lock:
            try:
                db = self._db
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield Sql(db.cursor(), "?")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" not in str(exc):
                    raise StoreError(
                        f"the rollout store {self.path} refused a write: {exc}"
                    ) from exc
                raise RolloutExistsError(f"the rollout is stored already ({exc})") from None
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(
                    f"the rollout store {self.path} failed: {exc}; check the disk and the file"
                ) from exc
            except sqlite3.Error as exc:
                raise StoreError(f"the rollout store {self.path} failed: {exc}") from exc

    def close(self) -> None:
        """Close the database (if it was opened)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _adopt_user_version(db: sqlite3.Connection) -> None:
    """A file of the agent before ``schema_versions``: record its ``user_version`` (1) as the
    ``rollouts`` component's version, so :func:`migrate` goes on from there."""
    (old,) = db.execute("PRAGMA user_version").fetchone()
    if old and schema_version(db, COMPONENT) == 0:
        db.execute(
            "INSERT INTO schema_versions (component, version) VALUES (?, ?)", (COMPONENT, old)
        )
