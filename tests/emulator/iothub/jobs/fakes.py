"""Small in-memory fakes of the job engine's ports (TwinStore, DeviceLink).

The real registry and MQTT endpoint meet the engine in the integration tests; here the engine is
tested alone (with the real query language compiling its conditions).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping, Sequence
from typing import Any

from emulator.iothub.errors import HubError
from emulator.iothub.ports import MethodReply, Predicate


class FakeTwins:
    """A TwinStore keeping twin documents in a dict and recording every job patch."""

    def __init__(self, device_ids: Sequence[str], tags: Mapping[str, dict[str, Any]] | None = None):
        self.docs: dict[str, dict[str, Any]] = {}
        for device_id in device_ids:
            self.docs[device_id] = {
                "deviceId": device_id,
                "tags": dict((tags or {}).get(device_id, {})),
                "properties": {"desired": {"$version": 1}, "reported": {"$version": 1}},
            }
        self.patch_calls: list[list[str]] = []
        self.ghosts: set[str] = set()  # selected by queries but gone when patched

    def hub_host(self) -> str:
        return "fake-hub.local"

    def device_keys(self, device_id: str) -> tuple[str, str] | None:
        return None

    def twin_properties(self, device_id: str) -> dict[str, Any]:
        return copy.deepcopy(self.docs[device_id]["properties"])

    def patch_reported(self, device_id: str, patch: Mapping[str, Any]) -> int:
        raise NotImplementedError

    def set_connection_state(self, device_id: str, connected: bool, when: Any) -> None:
        raise NotImplementedError

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
        pushes: dict[str, dict[str, Any]] = {}
        for device_id in device_ids:
            doc = self.docs.get(device_id)
            if doc is None:
                continue
            if tags:
                doc["tags"].update(tags)
            if desired:
                section = doc["properties"]["desired"]
                section.update(desired)
                section["$version"] += 1
                pushes[device_id] = {**desired, "$version": section["$version"]}
            else:
                pushes[device_id] = {}
        return pushes


class FakeLink:
    """A DeviceLink whose devices' readiness and answers the test controls.

    - ``ready``: devices that are method-ready (``set_ready`` wakes waiters).
    - ``answers``: per device, a MethodReply or a HubError to raise; default: status 200,
      payload ``{"device": id}``.
    - ``gates``: per device, an event the invocation waits for before answering (to observe the
      running state).
    - An offline device with connect_timeout > 0 fails at once with 404103 (the real endpoint
      waits connect_timeout seconds first; the engine does not care how long).
    """

    def __init__(self, ready: Sequence[str] = ()) -> None:
        self.ready: set[str] = set(ready)
        self.answers: dict[str, MethodReply | HubError] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.invocations: list[tuple[str, str, Any, float, float]] = []
        self.pushes: list[tuple[str, dict[str, Any]]] = []
        self._waiters: dict[str, asyncio.Event] = {}

    def set_ready(self, device_id: str) -> None:
        self.ready.add(device_id)
        self._waiters.setdefault(device_id, asyncio.Event()).set()

    def is_connected(self, device_id: str) -> bool:
        return device_id in self.ready

    def is_method_ready(self, device_id: str) -> bool:
        return device_id in self.ready

    async def wait_method_ready(self, device_id: str, timeout: float) -> bool:
        if device_id in self.ready:
            return True
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
        if device_id not in self.ready:
            raise HubError.device_not_online(connect_timeout)
        gate = self.gates.get(device_id)
        if gate is not None:
            await gate.wait()
        answer = self.answers.get(device_id, MethodReply(200, {"device": device_id}))
        if isinstance(answer, HubError):
            raise answer
        return answer

    def push_desired(self, device_id: str, patch: Mapping[str, Any]) -> None:
        self.pushes.append((device_id, dict(patch)))
