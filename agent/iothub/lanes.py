"""The IoT Hub client's lanes and per-call limits: what keeps slow devices and heavy callers
from taking the agent from everyone else.

A :class:`Lane` is a bounded thread pool with an admission count. The client has two, which never
share a queue: the *hub lane* runs the quick calls (jobs, twins, queries; ``iothub.workers``
threads, ``iothub.hub_queue`` more may wait), the *device lane* the direct methods, each of which
holds its thread while the hub waits on the device (``iothub.device_calls`` threads, none may
wait). A :class:`CallBudget` bounds what one call may read from the hub (rows and bytes,
``iothub.max_rows_per_call`` and ``iothub.max_bytes_per_call``), checked page by page while
reading.

Rules:
- Admission is decided at once, on the event loop: a call that finds its lane full raises
  :class:`LaneFull` before anything is sent (so the caller may retry it safely), never waits
  until its deadline.
- A slot is held until the worker thread is done with the call, not until the caller stops
  waiting: a call whose caller gave up still counts while its thread is busy, so the count is
  the threads' real load.
- Refusals are counted per lane; the client counts the calls over their budget; both reach
  ``/metrics`` as :class:`LoadCounters`.

Exceptions (both in the :mod:`agent.iothub.errors` tree, under
:class:`~agent.iothub.errors.IotHubError`, so every caller of the client already handles them;
re-exported here): :class:`LaneFull` (a lane was full; nothing was sent) and
:class:`CallTooLarge` (one call read more than its budget allows; it was stopped there).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from agent.iothub.errors import CallTooLarge, LaneFull

__all__ = ["CallBudget", "CallTooLarge", "Lane", "LaneFull", "LoadCounters"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class LoadCounters:
    """The lanes' load and the calls refused to protect the others, since the client was made
    (for ``/metrics``).

    Attributes:
        hub_busy: calls the hub lane holds now (running or waiting for a thread).
        device_busy: direct-method calls the device lane holds now.
        refused_hub: calls refused because the hub lane was full.
        refused_device: calls refused because the device lane was full.
        too_large: calls stopped because they read more than one call may.
    """

    hub_busy: int = 0
    device_busy: int = 0
    refused_hub: int = 0
    refused_device: int = 0
    too_large: int = 0


class Lane:
    """A bounded thread pool that refuses, at once, the calls it has no room for.

    Args:
        name: ``"hub"`` or ``"device"`` (thread names, errors, counters).
        workers: threads.
        queue: calls that may wait for a thread besides those running.
        refusal: makes the one-line refusal from the number of calls the lane holds.
    """

    def __init__(self, name: str, workers: int, queue: int, refusal: Callable[[int], str]) -> None:
        self.name = name
        self.capacity = workers + queue
        self.refused = 0
        self._refusal = refusal
        self._busy = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=f"iothub-{name}"
        )

    @property
    def busy(self) -> int:
        """Calls the lane holds now (running or waiting for a thread)."""
        return self._busy

    def submit(self, work: Callable[[], _T]) -> Future[_T]:
        """Run ``work`` in one of the lane's threads.

        Raises:
            LaneFull: the lane holds ``capacity`` calls already; ``work`` was not started.
        """
        with self._lock:
            if self._busy >= self.capacity:
                self.refused += 1
                busy = self._busy
                full = True
            else:
                self._busy += 1
                full = False
        if full:
            raise LaneFull(self._refusal(busy), lane=self.name, busy=busy)
        try:
            future = self._executor.submit(work)
        except BaseException:
            self._release(None)
            raise
        # Done when the work has ended, or was cancelled before it started.
        future.add_done_callback(self._release)
        return future

    def _release(self, _future: Future[_T] | None) -> None:
        with self._lock:
            self._busy -= 1

    def shutdown(self) -> None:
        """Stop the threads once their calls end; calls not started are dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class CallBudget:
    """What one call has read from the hub, against its limits.

    Args:
        what: the call, as errors name it (``list jobs``).
        max_rows: rows it may read (``iothub.max_rows_per_call``).
        max_bytes: bytes of answers it may read (``iothub.max_bytes_per_call``).

    Used on the event loop, one page at a time, before the page's rows are kept.
    """

    def __init__(self, what: str, max_rows: int, max_bytes: int) -> None:
        self._what = what
        self._max_rows = max_rows
        self._max_bytes = max_bytes
        self.rows = 0
        self.bytes = 0

    def add(self, rows: int, size: int) -> None:
        """Count one page read (``rows`` rows, ``size`` bytes of answer text).

        Raises:
            CallTooLarge: the call has now read more than its limits allow.
        """
        self.rows += rows
        self.bytes += size
        if self.rows > self._max_rows:
            raise CallTooLarge(
                f"{self._what}: more than {self._max_rows} rows "
                f"(iothub.max_rows_per_call = {self._max_rows})"
            )
        if self.bytes > self._max_bytes:
            raise CallTooLarge(
                f"{self._what}: more than {self._max_bytes} bytes of IoT Hub answers "
                f"(iothub.max_bytes_per_call = {self._max_bytes})"
            )
