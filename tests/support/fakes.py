"""In-memory fakes of the IoT Hub emulator's ports (emulator/iothub/ports.py), one of each.

- :class:`FakeTwins` is a TwinStore: twin documents with tags and versioned desired/reported
  properties, deterministic device keys, connection states; it records job patches and
  connection-state changes.
- :class:`FakeLink` is a DeviceLink whose devices' readiness and answers the test controls; it
  records method invocations and pushed desired patches.

Each stands in for a part of the emulator in another part's tests (the engine, the REST API, the
device endpoint, the fleet); the real parts meet in the integration tests.

Rules: the fakes follow the protocols' documented behaviour (merge-patch with ``null`` deleting,
sorted ids, 404103 for an offline device, 504101 for a silent one); options cover only what the
tests differ in.
"""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from emulator.iothub.errors import HubError
from emulator.iothub.ports import MethodReply, Predicate

__all__ = ["FakeLink", "FakeTwins", "device_answer", "device_key", "echo_answer"]


def device_key(device_id: str) -> str:
    """A deterministic base64 key per device."""
    return base64.b64encode(f"key-of-{device_id}".ljust(32, "#").encode()).decode()


class FakeTwins:
    """A TwinStore keeping twin documents in a dict.

    Attributes:
        docs: per device, the twin document (``deviceId``, ``tags``, ``properties``) that queries
            match against.
        desired, reported: per device, the same property sections as in ``docs`` (one object).
        keys: per device, its (primary, secondary) keys (:func:`device_key`, no secondary).
        connected: per device, its last recorded connection state.
        state_changes: every ``(device_id, connected)`` recorded, in order.
        patch_calls: the device ids of every :meth:`apply_job_patch` call, in order.
        ghosts: ids selected by queries (matched on ``deviceId`` alone) that are gone when
            patched, as a device deleted between a job's query and its patch.
    """

    def __init__(
        self,
        device_ids: Sequence[str],
        *,
        tags: Mapping[str, Mapping[str, Any]] | None = None,
        host: str = "fake-hub.local",
    ) -> None:
        """Make twins for ``device_ids``, each with ``$version`` 1 desired and reported.

        Args:
            device_ids: the devices.
            tags: optional initial tags per device.
            host: what :meth:`hub_host` returns (may be changed later through ``host``).
        """
        self.host = host
        self.keys: dict[str, tuple[str, str]] = {d: (device_key(d), "") for d in device_ids}
        self.desired: dict[str, dict[str, Any]] = {d: {"$version": 1} for d in device_ids}
        self.reported: dict[str, dict[str, Any]] = {d: {"$version": 1} for d in device_ids}
        self.docs: dict[str, dict[str, Any]] = {
            d: {
                "deviceId": d,
                "tags": copy.deepcopy(dict((tags or {}).get(d, {}))),
                "properties": {"desired": self.desired[d], "reported": self.reported[d]},
            }
            for d in device_ids
        }
        self.connected: dict[str, bool] = {d: False for d in device_ids}
        self.state_changes: list[tuple[str, bool]] = []
        self.patch_calls: list[list[str]] = []
        self.ghosts: set[str] = set()

    def hub_host(self) -> str:
        return self.host

    def device_keys(self, device_id: str) -> tuple[str, str] | None:
        return self.keys.get(device_id)

    def twin_properties(self, device_id: str) -> dict[str, Any]:
        return {
            "desired": copy.deepcopy(self.desired[device_id]),
            "reported": copy.deepcopy(self.reported[device_id]),
        }

    def patch_reported(self, device_id: str, patch: Mapping[str, Any]) -> int:
        reported = self.reported[device_id]
        _merge(reported, patch)
        reported["$version"] += 1
        return int(reported["$version"])

    def set_connection_state(self, device_id: str, connected: bool, when: datetime) -> None:
        self.connected[device_id] = connected
        self.state_changes.append((device_id, connected))

    def select_device_ids(self, condition: Predicate | None) -> list[str]:
        ids = [d for d, doc in self.docs.items() if condition is None or condition.matches(doc)]
        ids.extend(
            d for d in self.ghosts if condition is None or condition.matches({"deviceId": d})
        )
        return sorted(ids)

    def apply_job_patch(
        self,
        device_ids: Sequence[str],
        tags: Mapping[str, Any] | None,
        desired: Mapping[str, Any] | None,
    ) -> dict[str, dict[str, Any]]:
        self.patch_calls.append(list(device_ids))
        out: dict[str, dict[str, Any]] = {}
        for device_id in device_ids:
            doc = self.docs.get(device_id)
            if doc is None:
                continue  # a ghost: the engine fails its row
            if tags:
                _merge(doc["tags"], tags)
            if desired is None:
                out[device_id] = {}
                continue
            section = self.desired[device_id]
            _merge(section, desired)
            section["$version"] += 1
            out[device_id] = {**desired, "$version": section["$version"]}
        return out

    def desired_patch(self, device_id: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a desired patch and return what to push (with the new ``$version``)."""
        return self.apply_job_patch([device_id], None, patch)[device_id]


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


Answer = Callable[[str, str, Any], MethodReply]
"""What a ready device answers when the test set no answer for it: (device, method, payload)."""


def device_answer(device_id: str, method_name: str, payload: Any) -> MethodReply:
    """Status 200 with payload ``{"device": device_id}`` (FakeLink's default)."""
    return MethodReply(200, {"device": device_id})


def echo_answer(device_id: str, method_name: str, payload: Any) -> MethodReply:
    """Status 201 with payload ``{"method": method_name, "echo": payload}``."""
    return MethodReply(201, {"method": method_name, "echo": payload})


class FakeLink:
    """A DeviceLink whose devices' readiness and answers the test controls.

    - ``ready``: devices that are method-ready (:meth:`set_ready` also wakes waiters).
    - ``silent``: connected devices that never answer: 504101 GatewayTimeout at once.
    - Any other device is offline: 404103 DeviceNotOnline at once (the real endpoint waits
      ``connect_timeout`` seconds first; its callers do not care how long).
    - ``answers``: per device, a MethodReply or a HubError to raise; otherwise ``answer``.
    - ``gates``: per device, an event the invocation waits for before answering (to observe the
      running state).
    - ``invocations``: every ``(device, method, payload, response_timeout, connect_timeout)``.
    - ``pushes``: every ``(device, patch)`` pushed with :meth:`push_desired`.
    """

    def __init__(
        self,
        ready: Sequence[str] = (),
        *,
        answer: Answer = device_answer,
        wait_for_ready: bool = True,
    ) -> None:
        """Make a link with ``ready`` devices method-ready.

        Args:
            ready: the devices ready from the start.
            answer: the default answer of a ready device (:func:`device_answer`,
                :func:`echo_answer` or the test's own).
            wait_for_ready: whether :meth:`wait_method_ready` waits up to its timeout for
                :meth:`set_ready` (True) or returns the current readiness at once (False).
        """
        self.ready: set[str] = set(ready)
        self.silent: set[str] = set()
        self.answers: dict[str, MethodReply | HubError] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.invocations: list[tuple[str, str, Any, float, float]] = []
        self.pushes: list[tuple[str, dict[str, Any]]] = []
        self._answer = answer
        self._wait_for_ready = wait_for_ready
        self._waiters: dict[str, asyncio.Event] = {}

    def set_ready(self, device_id: str) -> None:
        """Make ``device_id`` method-ready and wake whoever waits for it."""
        self.ready.add(device_id)
        self._waiters.setdefault(device_id, asyncio.Event()).set()

    def is_connected(self, device_id: str) -> bool:
        return device_id in self.ready or device_id in self.silent

    def is_method_ready(self, device_id: str) -> bool:
        return self.is_connected(device_id)

    async def wait_method_ready(self, device_id: str, timeout: float) -> bool:
        if self.is_method_ready(device_id) or not self._wait_for_ready:
            return self.is_method_ready(device_id)
        event = self._waiters.setdefault(device_id, asyncio.Event())
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return False
        return True

    async def invoke_method(
        self,
        device_id: str,
        method_name: str,
        payload: Any,
        *,
        response_timeout: float,
        connect_timeout: float,
    ) -> MethodReply:
        self.invocations.append(
            (device_id, method_name, payload, response_timeout, connect_timeout)
        )
        if device_id in self.silent:
            raise HubError.gateway_timeout(response_timeout)
        if device_id not in self.ready:
            raise HubError.device_not_online(connect_timeout)
        gate = self.gates.get(device_id)
        if gate is not None:
            await gate.wait()
        answer = self.answers.get(device_id)
        if answer is None:
            return self._answer(device_id, method_name, payload)
        if isinstance(answer, HubError):
            raise answer
        return answer

    def push_desired(self, device_id: str, patch: Mapping[str, Any]) -> None:
        self.pushes.append((device_id, dict(patch)))
