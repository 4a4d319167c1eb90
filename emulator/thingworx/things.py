"""The stand-in's registry of Things: who bound them, over which connection, and their services.

Rules (reference §5.4, §9):

- a Thing is known from its first BIND on; it stays known (and answers 503 to REST calls) after
  its connection drops or it is unbound, so that a disconnected agent is told apart from a name
  nobody ever bound (404), but only the last ``keep_unbound`` names unbound are remembered:
  older ones are forgotten (404 again), so names a peer binds and drops cannot pile up;
- a connection's names are held in a set per connection: counting them (for the per-connection
  cap) and dropping them when the connection closes cost what that connection holds;
- a BIND of a name another live connection holds follows the bind protection policy
  (``bind_policy``): ``first-in-wins`` (the platform's default) refuses it, and
  :meth:`ThingRegistry.held_elsewhere` lets a session refuse a whole BIND before any name of it
  takes effect; ``last-in-wins`` moves the Thing to the new connection, the older one is not told,
  and an UNBIND or a disconnect of the older connection no longer affects the Thing;
- the metadata learned through GetMetadata belongs to one binding: a new bind forgets it;
- pushed property values and fired events belong to the Thing, not to a binding: they outlive
  reconnects; the last ``EVENTS_KEPT`` (1,000) events per Thing are kept, oldest dropped first,
  and each is also handed to every live subscriber (the console's live view), whose queue is
  bounded (a subscriber that does not read loses the oldest).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from agent.alwayson import InfoTable, PropertyValue, ThingMetadata
from emulator.thingworx.unconfirmed import BIND_POLICIES, DEFAULT_BIND_POLICY

__all__ = ["EVENTS_KEPT", "BindingOwner", "FiredEvent", "ThingEntry", "ThingRegistry"]

EVENTS_KEPT = 1000
"""Events kept per Thing (oldest dropped first)."""
_SUBSCRIBER_QUEUE = 1000

_log = structlog.get_logger("emulator.thingworx.things")


class BindingOwner(Protocol):
    """What the registry needs of a connection: an id for logs and listings."""

    @property
    def conn_id(self) -> str:
        """The connection's id."""
        ...


@dataclass(frozen=True)
class FiredEvent:
    """One event an edge fired (characteristic EVENTS, reference §7.6).

    Attributes:
        seq: the stand-in's sequence number (across all Things, from 1).
        thing: the Thing that fired it.
        event: the event's name.
        received: wall-clock time it arrived (epoch seconds).
        data: the event data.
    """

    seq: int
    thing: str
    event: str
    received: float
    data: InfoTable


@dataclass
class ThingEntry:
    """A Thing the stand-in knows.

    Attributes:
        name: the Thing's name.
        owner: the connection the Thing is bound on, or None when not bound now.
        bound_at: wall-clock time (epoch seconds) of the last bind.
        metadata: services learned from GetMetadata for the current binding, or None.
        metadata_error: why the last GetMetadata failed, if it did.
        properties: the latest value pushed by UpdateSubscribedPropertyValues, by name.
        events: the last :data:`EVENTS_KEPT` events fired, oldest first.
    """

    name: str
    owner: BindingOwner | None = None
    bound_at: float = 0.0
    metadata: ThingMetadata | None = None
    metadata_error: str | None = None
    properties: dict[str, PropertyValue] = field(default_factory=dict)
    events: deque[FiredEvent] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))

    @property
    def connected(self) -> bool:
        """True while the Thing is bound on a live connection."""
        return self.owner is not None


class ThingRegistry:
    """Bound Things by name; the single place where binds, unbinds and drops take effect.

    Args:
        keep_unbound: how many unbound names are remembered (503 rather than 404 for them).
        bind_policy: ``first-in-wins`` (a Thing bound on a live connection cannot be bound by
            another) or ``last-in-wins`` (the new bind takes it).

    Raises:
        ValueError: an unknown bind policy.
    """

    def __init__(self, keep_unbound: int = 1_000, bind_policy: str = DEFAULT_BIND_POLICY) -> None:
        if bind_policy not in BIND_POLICIES:
            raise ValueError(
                f"bind policy {bind_policy!r} is unknown: use one of {', '.join(BIND_POLICIES)}"
            )
        self.bind_policy = bind_policy
        self._things: dict[str, ThingEntry] = {}
        self._owned: dict[BindingOwner, set[str]] = {}
        self._unbound: OrderedDict[str, None] = OrderedDict()
        self._keep_unbound = keep_unbound
        self._changed = asyncio.Event()
        self._event_seq = 0
        self._subscribers: set[asyncio.Queue[FiredEvent]] = set()

    def record_event(self, thing: str, event: str, data: InfoTable) -> FiredEvent | None:
        """Keep an event ``thing`` fired and hand it to every live subscriber.

        Returns:
            The event as kept, or None when the Thing is unknown.
        """
        entry = self._things.get(thing)
        if entry is None:
            return None
        self._event_seq += 1
        fired = FiredEvent(self._event_seq, thing, event, time.time(), data)
        entry.events.append(fired)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(fired)
        return fired

    def subscribe(self) -> asyncio.Queue[FiredEvent]:
        """A queue that receives every event fired from now on (bounded, oldest lost);
        :meth:`unsubscribe` it when done."""
        queue: asyncio.Queue[FiredEvent] = asyncio.Queue(_SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[FiredEvent]) -> None:
        """Stop feeding ``queue``."""
        self._subscribers.discard(queue)

    def get(self, name: str) -> ThingEntry | None:
        """The Thing called ``name``, or None if it was never bound."""
        return self._things.get(name)

    def all(self) -> list[ThingEntry]:
        """Every known Thing, by name."""
        return [self._things[n] for n in sorted(self._things)]

    def bound_names(self) -> list[str]:
        """Names of the Things bound now, sorted."""
        return sorted(n for n, e in self._things.items() if e.connected)

    def held_elsewhere(self, names: Iterable[str], owner: BindingOwner) -> dict[str, BindingOwner]:
        """The names of ``names`` a BIND by ``owner`` may not take, with who holds each.

        Empty under ``last-in-wins``; under ``first-in-wins``, every name bound now on another
        connection.
        """
        if self.bind_policy != "first-in-wins":
            return {}
        held: dict[str, BindingOwner] = {}
        for name in names:
            entry = self._things.get(name)
            if entry is not None and entry.owner is not None and entry.owner is not owner:
                held[name] = entry.owner
        return held

    def bind(self, name: str, owner: BindingOwner) -> bool:
        """Bind ``name`` to ``owner``.

        Returns:
            True if the bind took effect (always, with last-in-wins; with first-in-wins, False
            when another live connection holds the Thing).
        """
        entry = self._things.setdefault(name, ThingEntry(name))
        previous = entry.owner
        if previous is not None and previous is not owner:
            if self.bind_policy == "first-in-wins":
                _log.warning("bind refused", thing=name, conn_id=owner.conn_id)
                return False
            _log.warning(
                "thing rebound",
                thing=name,
                conn_id=owner.conn_id,
                previous_conn_id=previous.conn_id,
            )
            self._disown(name, previous)
        self._unbound.pop(name, None)
        self._owned.setdefault(owner, set()).add(name)
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
        self._release(entry, owner)
        _log.debug("thing unbound", thing=name, conn_id=owner.conn_id)
        self._notify()

    def drop(self, owner: BindingOwner) -> list[str]:
        """Unbind every Thing ``owner`` holds (its connection closed).

        Returns:
            The names that were unbound, sorted.
        """
        names = sorted(self._owned.get(owner, ()))
        for name in names:
            self._release(self._things[name], owner)
        self._owned.pop(owner, None)
        if names:
            _log.info("things unbound", count=len(names), conn_id=owner.conn_id)
            self._notify()
        return names

    def owned_by(self, owner: BindingOwner) -> list[str]:
        """Names ``owner`` holds now."""
        return sorted(self._owned.get(owner, ()))

    def owns(self, name: str, owner: BindingOwner) -> bool:
        """Whether ``owner`` holds ``name`` now."""
        return name in self._owned.get(owner, ())

    def count_owned(self, owner: BindingOwner) -> int:
        """How many Things ``owner`` holds now."""
        return len(self._owned.get(owner, ()))

    def _disown(self, name: str, owner: BindingOwner) -> None:
        names = self._owned.get(owner)
        if names is not None:
            names.discard(name)
            if not names:
                del self._owned[owner]

    def _release(self, entry: ThingEntry, owner: BindingOwner) -> None:
        """Unbind ``entry`` from ``owner``; remember its name among the last unbound ones."""
        self._disown(entry.name, owner)
        entry.owner = None
        entry.metadata = None
        self._unbound[entry.name] = None
        while len(self._unbound) > self._keep_unbound:
            forgotten, _ = self._unbound.popitem(last=False)
            old = self._things.get(forgotten)
            if old is not None and old.owner is None:
                del self._things[forgotten]

    async def wait_bound(self, name: str, timeout: float) -> ThingEntry:
        """Wait until ``name`` is bound.

        Raises:
            TimeoutError: not bound within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while not self._is_bound(name):
                await self._changed.wait()
        return self._things[name]

    async def wait_unbound(self, name: str, timeout: float) -> None:
        """Wait until ``name`` is not bound (its connection closed or it was unbound).

        Raises:
            TimeoutError: still bound after ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while self._is_bound(name):
                await self._changed.wait()

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
