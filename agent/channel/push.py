"""The pushes waiting for a synchronised link: property values and events (reference §7.1 to
§7.3, §7.6).

Rules:
- The queue is bounded (``thingworx.push_queue_size``): when full, the oldest push is dropped
  and counted (``jobs_agent_pushes_dropped_total``), so a long outage keeps the latest news.
- A push waits until its Thing is synchronised on the current link: the server called
  ``NotifyPropertyUpdate`` and the edge read the property subscriptions ("pushing data before
  synchronization causes data loss", §7.1). A Thing's pushes keep their order.
- The latest value of every property is kept apart from the queue: on each synchronisation the
  channel pushes the Thing's current values first (§7.2 step 4), whatever the queue dropped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from agent.alwayson import InfoTable, PropertyValue

__all__ = ["EventPush", "PropertyPush", "Push", "PushQueue"]


@dataclass(frozen=True, slots=True)
class PropertyPush:
    """Property changes of one Thing (one ``UpdateSubscribedPropertyValues`` call)."""

    thing: str
    values: tuple[PropertyValue, ...]


@dataclass(frozen=True, slots=True)
class EventPush:
    """One event of one Thing (a request with characteristic EVENTS)."""

    thing: str
    event: str
    data: InfoTable


Push = PropertyPush | EventPush


class PushQueue:
    """Pushes in order, bounded, oldest dropped first.

    Args:
        limit: the most pushes kept.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._items: deque[Push] = deque()
        self._latest: dict[str, dict[str, PropertyValue]] = {}
        self._wake = asyncio.Event()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, push: Push) -> None:
        """Queue ``push`` (dropping the oldest when full) and wake the sender."""
        if isinstance(push, PropertyPush):
            latest = self._latest.setdefault(push.thing, {})
            for value in push.values:
                latest[value.name] = value
        self._items.append(push)
        while len(self._items) > self._limit:
            self._items.popleft()
            self.dropped += 1
        self._wake.set()

    def latest(self, thing: str) -> list[PropertyValue]:
        """The latest value of each property of ``thing`` pushed so far."""
        return list(self._latest.get(thing, {}).values())

    def take(self, ready: Iterable[str] | frozenset[str]) -> Push | None:
        """Remove and return the oldest push whose Thing is in ``ready``, or None."""
        ready = ready if isinstance(ready, frozenset | set) else frozenset(ready)
        for index, push in enumerate(self._items):
            if push.thing in ready:
                del self._items[index]
                return push
        return None

    def put_back(self, push: Push) -> None:
        """Return a push that could not be sent to the front of the queue (the link dropped).

        It is the oldest push: when the queue has filled up meanwhile, it is the one dropped
        (and counted), never a newer one.
        """
        if len(self._items) >= self._limit:
            self.dropped += 1
            return
        self._items.appendleft(push)

    def put_current(self, thing: str) -> None:
        """Put the latest value of each property of ``thing`` first, for a synchronisation.

        These values are kept apart from the queue (see the module's rules): they take no room
        in it, so they never make a queued push drop.
        """
        current = self.latest(thing)
        if current:
            self._items.appendleft(PropertyPush(thing, tuple(current)))
        self._wake.set()

    def wake(self) -> None:
        """Wake the sender (a Thing became synchronised)."""
        self._wake.set()

    async def wait(self, timeout: float) -> None:
        """Wait until something is queued or :meth:`wake` is called, at most ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            pass
        self._wake.clear()
