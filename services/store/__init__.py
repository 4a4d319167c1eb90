"""The agent's own state: rollouts, hub-job admission and the audit log, in SQLite (one agent) or
a PostgreSQL database shared by several agents (``store.url``; docs/operations.md).

Rules:
- One schema per component (``rollouts``, ``audit``, ...), each versioned by its own row of
  ``schema_versions`` and migrated forward on open (:func:`services.store.schema.migrate`), the
  same migrations on both databases.
- Stores hold no logic: the engine and the services decide, the store remembers.
"""

from services.store.schema import migrate

__all__ = ["migrate"]
