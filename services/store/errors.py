"""What the agent's stores raise: their drivers' errors translated at the store's boundary.

::

    StoreError                the database refused or failed a call (rolled back)
    ├── StoreUnavailable      the database cannot be reached or failed a call (the call's
    │                         transaction stored all or nothing; the next call reconnects)
    ├── RolloutExistsError    a rollout with that id is stored already
    ├── StaleRolloutError     a write decided from a rollout's status and request that another
    │                         writer changed since they were read (nothing written)
    └── FencedError           a write of a leader whose epoch is no longer the hub's: another
                              agent took over (nothing written)
"""

from __future__ import annotations

__all__ = [
    "FencedError",
    "RolloutExistsError",
    "StaleRolloutError",
    "StoreError",
    "StoreUnavailable",
]


class StoreError(RuntimeError):
    """A store call that failed."""


class StoreUnavailable(StoreError):
    """The store's database is unreachable or failed the call.

    The call's one transaction was rolled back (or, when the connection died during its
    ``COMMIT``, committed whole): never half. The next call opens a new connection.
    """


class RolloutExistsError(StoreError):
    """A rollout with that id is stored already."""


class StaleRolloutError(StoreError):
    """A write that expected a rollout's status and request as they were read, and found them
    changed by another writer (another agent's service call, on a shared store): refused in its
    own transaction, nothing written. The writer decides again from a fresh read."""


class FencedError(StoreError):
    """A write carrying a leadership epoch older than the hub's: another agent leads now.

    Refused inside the write's own transaction, before anything was written
    (:mod:`services.store.fencing`).
    """
