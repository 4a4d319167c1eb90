"""The stand-in's registry of Things: who bound them, over which connection, and their services.

Rules (reference §5.4, §9):

- a Thing is known from its first BIND on; it stays known (and answers 503 to REST calls) after
  its connection drops or it is unbound, so that a disconnected agent is told apart from a name
  nobody ever bound (404);
- the last BIND of a name wins across connections (``LAST_BIND_WINS``); the older connection is
  not told, and an UNBIND or a disconnect of the older connection no longer affects the Thing;
- the metadata learned through GetMetadata belongs to one binding: a new bind forgets it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from agent.alwayson.metadata import ThingMetadata
from emulator.thingworx.unconfirmed import LAST_BIND_WINS

__all__ = ["BindingOwner", "ThingEntry", "ThingRegistry"]

_log = structlog.get_logger("emulator.thingworx.things")


class BindingOwner(Protocol):
    """What the registry needs of a connection: an id for logs and listings."""

    @property
    def conn_id(self) -> str:
        """The connection's id."""
        ...


@dataclass
class ThingEntry:
    """A Thing the stand-in knows.

    Attributes:
        name: the Thing's name.
        owner: the connection the Thing is bound on, or None when not bound now.
        bound_at: wall-clock time (epoch seconds) of the last bind.
        metadata: services learned from GetMetadata for the current binding, or None.
        metadata_error: why the last GetMetadata failed, if it did.
        properties: the latest values pushed by UpdateSubscribedPropertyValues.
    """

    name: str
    owner: BindingOwner | None = None
    bound_at: float = 0.0
    metadata: ThingMetadata | None = None
    metadata_error: str | None = None
    properties: dict[str, object] = field(default_factory=dict)

    @property
    def connected(self) -> bool:
        """True while the Thing is bound on a live connection."""
        return self.owner is not None


class ThingRegistry:
    """Bound Things by name; the single place where binds, unbinds and drops take effect."""

    def __init__(self) -> None:
        self._things: dict[str, ThingEntry] = {}
        self._changed = asyncio.Event()

    def get(self, name: str) -> ThingEntry | None:
        """The Thing called ``name``, or None if it was never bound."""
        return self._things.get(name)

    def all(self) -> list[ThingEntry]:
        """Every known Thing, by name."""
        return [self._things[n] for n in sorted(self._things)]

    def bound_names(self) -> list[str]:
        """Names of the Things bound now, sorted."""
        return sorted(n for n, e in self._things.items() if e.connected)

    def bind(self, name: str, owner: BindingOwner) -> bool:
        """Bind ``name`` to ``owner``.

        Returns:
            True if the bind took effect (always, with last-bind-wins; otherwise False when
            another live connection holds the Thing).
        """
        entry = self._things.setdefault(name, ThingEntry(name))
        previous = entry.owner
        if previous is not None and previous is not owner:
            if not LAST_BIND_WINS:
                _log.warning("bind refused", thing=name, conn_id=owner.conn_id)
                return False
            _log.warning(
                "thing rebound",
                thing=name,
                conn_id=owner.conn_id,
                previous_conn_id=previous.conn_id,
            )
        entry.owner = owner
        entry.bound_at = time.time()
        entry.metadata = None
        entry.metadata_error = None
        _log.debug("thing bound", thing=name, conn_id=owner.conn_id)
        self._notify()
        return True

    def unbind(self, name: str, owner: BindingOwner) -> None:
        """Unbind ``name`` if ``owner`` holds it (a stale connection's UNBIND is ignored)."""
        entry = self._things.get(name)
        if entry is None or entry.owner is not owner:
            return
        entry.owner = None
        entry.metadata = None
        _log.debug("thing unbound", thing=name, conn_id=owner.conn_id)
        self._notify()

    def drop(self, owner: BindingOwner) -> list[str]:
        """Unbind every Thing ``owner`` holds (its connection closed).

        Returns:
            The names that were unbound.
        """
        names = [n for n, e in self._things.items() if e.owner is owner]
        for name in names:
            self.unbind(name, owner)
        return names

    def owned_by(self, owner: BindingOwner) -> list[str]:
        """Names ``owner`` holds now."""
        return sorted(n for n, e in self._things.items() if e.owner is owner)

    async def wait_bound(self, name: str, timeout: float) -> ThingEntry:
        """Wait until ``name`` is bound.

        Raises:
            TimeoutError: not bound within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while not self._is_bound(name):
                await self._changed.wait()
        return self._things[name]

    async def wait_metadata(self, name: str, timeout: float) -> ThingEntry:
        """Wait until ``name`` is bound and its metadata (or a metadata error) is known.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while not self._has_metadata(name):
                await self._changed.wait()
        return self._things[name]

    def set_metadata(
        self, name: str, owner: BindingOwner, metadata: ThingMetadata | None, error: str | None
    ) -> None:
        """Record GetMetadata's outcome for ``name`` if ``owner`` still holds it."""
        entry = self._things.get(name)
        if entry is None or entry.owner is not owner:
            return
        entry.metadata = metadata
        entry.metadata_error = error
        self._notify()

    def _is_bound(self, name: str) -> bool:
        entry = self._things.get(name)
        return entry is not None and entry.connected

    def _has_metadata(self, name: str) -> bool:
        entry = self._things.get(name)
        return (
            entry is not None
            and entry.connected
            and (entry.metadata is not None or entry.metadata_error is not None)
        )

    def _notify(self) -> None:
        # Wake every waiter, then give later waiters a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()
