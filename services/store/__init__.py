"""The agent's own state: rollouts, hub-job admission and the audit log, in SQLite (one agent) or
a PostgreSQL database shared by several agents (``store.url``; docs/operations.md).

Layout: :mod:`~services.store.schema` (versioned schemas per component),
:mod:`~services.store.rollouts` (the rollout store's interface, records and schema, and the
:class:`~services.store.rollouts.AsyncRolloutStore` seam), :mod:`~services.store.tables` (its SQL,
shared), :mod:`~services.store.sqlite` and :mod:`~services.store.postgres` (the two backends),
:mod:`~services.store.fencing` (the leadership epoch a leader's writes carry),
:mod:`~services.store.errors`. :func:`open_store` picks the backend from the settings.

Rules:
- One schema per component (``rollouts``, ``audit``, ...), each versioned by its own row of
  ``schema_versions`` and migrated forward on open (:func:`services.store.schema.migrate`), the
  same migrations on both databases.
- Stores hold no logic: the engine and the services decide, the store remembers.
- The store URL is a secret: never logged; a store names itself by host and database only.
"""

from __future__ import annotations

import pathlib
import typing

from services.store.errors import (
    FencedError,
    RolloutExistsError,
    StaleRolloutError,
    StoreError,
    StoreUnavailable,
)
from services.store.fencing import Fence
from services.store.postgres import PostgresRolloutStore
from services.store.rollouts import AsyncRolloutStore, RolloutStore
from services.store.schema import migrate
from services.store.sqlite import SqliteRolloutStore

if typing.TYPE_CHECKING:
    from agent.settings import Settings

__all__ = [
    "SQLITE_FILE",
    "AsyncRolloutStore",
    "Fence",
    "FencedError",
    "PostgresRolloutStore",
    "RolloutExistsError",
    "RolloutStore",
    "SqliteRolloutStore",
    "StaleRolloutError",
    "StoreError",
    "StoreUnavailable",
    "migrate",
    "open_store",
]

SQLITE_FILE = "rollouts.sqlite"
"""The SQLite store's file name in ``rollouts.data_dir``."""


def open_store(settings: Settings) -> RolloutStore:
    """The agent's rollout store: PostgreSQL when ``store.url`` is set, else the SQLite file
    ``rollouts.sqlite`` in ``rollouts.data_dir``. Nothing is opened until the first call.

    Args:
        settings: the agent's settings.
    """
    url = settings.store.url.get_secret_value()
    if url:
        return PostgresRolloutStore(url)
    return SqliteRolloutStore(pathlib.Path(settings.rollouts.data_dir) / SQLITE_FILE)
