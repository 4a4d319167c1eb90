"""Fencing tokens: a hub's rollout-leadership epoch, checked inside the store's write transactions.

Leadership (:mod:`services.store.leadership`) is a session advisory lock, and a leader learns it
lost the lock only at its next renewal: a leader cut off, paused or slow mid-step could write to
the shared store after another agent took over. So every time an agent becomes a hub's leader it
moves the hub's row of ``leadership`` to a new, strictly greater ``epoch``, in the transaction
that holds the lock, and every write transaction of its engine carries that epoch
(:class:`Fence`) and checks it first (:func:`check_fence`): a write whose epoch is no longer the
stored one is refused with :class:`~services.store.errors.FencedError`, before it wrote anything.

The check and the epoch's increment meet on a second advisory lock of the hub (:func:`fence_key`):
a fenced write holds it shared for its whole transaction, the new leader takes it exclusively
(transaction-level) to move the epoch on, after ending the sessions that still hold it shared
(an old leader's writes in flight; their transactions roll back). So an old leader's write is
either committed whole before the new epoch exists (and the new leader reads it), or rolled back,
or refused; never applied after the new leader started.

With the SQLite store (one agent) nothing is fenced: that agent is always the leader.

Rules:
- The epoch only moves forward, by one, in the transaction that confirms the lock is held.
- :func:`check_fence` is a write transaction's first statement: every row lock a fenced write
  takes is taken after it, so ending the sessions that hold the fence lock ends every old write.
- Times (``renewed_at``) are the database's ``now()``, never an agent's clock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from services.store.errors import FencedError

__all__ = ["COMPONENT", "MIGRATIONS", "Fence", "check_fence", "fence_key"]

COMPONENT = "leadership"
"""The schema's component name in ``schema_versions``."""

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE leadership (
        hub TEXT PRIMARY KEY,
        epoch BIGINT NOT NULL,
        renewed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        agent TEXT
    );
    """,
}


def fence_key(hub_host: str) -> int:
    """The advisory-lock key (a positive 63-bit integer) of ``hub_host``'s fence: held shared by
    fenced writes, exclusively by the agent moving the epoch on."""
    digest = hashlib.sha256(f"jobs-agent fence {hub_host.lower()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class Fence:
    """The fencing token a leader's writes carry: its hub and the epoch it leads in.

    Attributes:
        hub: the IoT Hub's host name, lower case (the ``leadership`` row's key).
        epoch: the epoch this agent became leader in.
    """

    hub: str
    epoch: int

    @property
    def lock_key(self) -> int:
        """:func:`fence_key` of the hub."""
        return fence_key(self.hub)


def check_fence(cursor: Any, fence: Fence) -> None:
    """Refuse the transaction under way (psycopg ``cursor``, inside ``BEGIN``) unless ``fence``'s
    epoch is still the hub's. Waits while a new leader moves the epoch on.

    Args:
        cursor: a psycopg cursor in the write transaction (nothing written yet).
        fence: the writer's token.

    Raises:
        FencedError: the hub's stored epoch is not ``fence.epoch`` (another agent took over).
    """
    cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", (fence.lock_key,))
    # A statement of its own: under READ COMMITTED it reads the epoch committed by a takeover
    # the lock above waited for.
    cursor.execute("SELECT epoch FROM leadership WHERE hub = %s", (fence.hub,))
    row = cursor.fetchone()
    stored = int(row[0]) if row else 0
    if stored != fence.epoch:
        raise FencedError(
            f"write refused: this agent led hub {fence.hub} in epoch {fence.epoch}, the hub's "
            f"leadership is at epoch {stored} now (another agent took over); nothing was written"
        )
