"""The AlwaysOn channel under test: its settings for a test server, a registry of small services
(``Echo``, ``Sleep``, ``Big``, ``Fail`` on the gateway Thing and the Things given), and the client
running for the length of a block.

Also the stand-in's side of the same (:func:`standin_settings`, :func:`standin_registry`: the
Things ``Gw`` and ``Dev1`` with every base type), and :func:`nested_broken` (a request whose
nested InfoTables end in an unknown type byte).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from agent.alwayson import (
    BaseType,
    Characteristic,
    DataShape,
    EntityType,
    FieldDefinition,
    InfoTable,
    Method,
    Request,
    Status,
    encode_message,
)
from agent.channel import AlwaysOnClient
from agent.registry import RemoteService, ServiceCall, ServiceError, ThingRegistry
from agent.settings import JobSettings, ThingWorxSettings
from tests.support.settings import thingworx_settings

__all__ = [
    "EVERY_TYPE",
    "GATEWAY",
    "STANDIN_GATEWAY",
    "make_registry",
    "nested_broken",
    "one",
    "running",
    "settings",
    "standin_registry",
    "standin_settings",
    "text_params",
]

F = FieldDefinition
GATEWAY = "AzureIotHub"
STANDIN_GATEWAY = "Gw"
STANDIN_APP_KEY = "test-app-key-0123"  # tests/emulator/thingworx/conftest.py's stand-in key


def settings(url: str, **overrides: Any) -> ThingWorxSettings:
    """``[thingworx]`` for a test server at ``url`` (app key ``test-key``, gateway Thing
    ``AzureIotHub``)."""
    return thingworx_settings(url, **{"app_key": "test-key", "gateway_thing": GATEWAY, **overrides})


def make_registry(*things: str) -> ThingRegistry:
    registry = ThingRegistry(JobSettings(call_deadline=5.0))

    async def echo(call: ServiceCall) -> str:
        return f"{call.thing}:{call.inputs['text']}"

    async def sleep(call: ServiceCall) -> str:
        await asyncio.sleep(call.inputs["seconds"])
        return "slept"

    async def big(call: ServiceCall) -> str:
        return "x" * int(call.inputs["size"])

    async def fail(call: ServiceCall) -> None:
        raise ServiceError("the hub is throttling; retry in a minute", Status.SERVICE_UNAVAILABLE)

    text = DataShape.of(F("text", BaseType.STRING, "", {"isRequired": True}))
    for thing in (GATEWAY, *things):
        registry.add_thing(thing)
        registry.add_service(
            thing, RemoteService("Echo", "echo", text, BaseType.STRING, None, echo)
        )
        registry.add_service(
            thing,
            RemoteService(
                "Sleep",
                "",
                DataShape.of(F("seconds", BaseType.NUMBER, "", {"defaultValue": 0.0})),
                BaseType.STRING,
                None,
                sleep,
            ),
        )
        registry.add_service(
            thing,
            RemoteService(
                "Big",
                "",
                DataShape.of(F("size", BaseType.INTEGER)),
                BaseType.STRING,
                None,
                big,
            ),
        )
        registry.add_service(
            thing, RemoteService("Fail", "", DataShape(()), BaseType.NOTHING, None, fail)
        )
    return registry


def text_params(value: str) -> InfoTable:
    return InfoTable(DataShape.of(F("text", BaseType.STRING)), [{"text": value}])


def one(name: str, base_type: BaseType, value: Any) -> InfoTable:
    return InfoTable(DataShape.of(F(name, base_type)), [{name: value}])


@asynccontextmanager
async def running(client: AlwaysOnClient, ready: bool = True) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(client.run())
    try:
        if ready:
            await client.wait_ready(5)
        yield task
    finally:
        await client.stop()
        async with asyncio.timeout(5):
            await task


EVERY_TYPE = DataShape.of(
    F("s", BaseType.STRING),
    F("n", BaseType.NUMBER),
    F("i", BaseType.INTEGER),
    F("l", BaseType.LONG),
    F("b", BaseType.BOOLEAN),
    F("d", BaseType.DATETIME),
    F("j", BaseType.JSON),
    F("t", BaseType.INFOTABLE),
)


def standin_settings(url: str, **overrides: Any) -> ThingWorxSettings:
    """``[thingworx]`` for the stand-in at ``url`` (its test app key, gateway Thing ``Gw``)."""
    values = {"app_key": STANDIN_APP_KEY, "gateway_thing": STANDIN_GATEWAY, **overrides}
    return thingworx_settings(url, **values)


def standin_registry() -> ThingRegistry:
    """``Dev1`` with ``Every`` (every base type), ``Echo``, ``Big`` and ``Sleep``."""
    registry = ThingRegistry(JobSettings(call_deadline=10.0))

    async def every(call: ServiceCall) -> InfoTable:
        return InfoTable(EVERY_TYPE, [dict(call.inputs)])

    async def echo(call: ServiceCall) -> str:
        return str(call.inputs.get("text", ""))

    async def big(call: ServiceCall) -> str:
        return "z" * int(call.inputs["size"])

    async def sleep(call: ServiceCall) -> str:
        await asyncio.sleep(float(call.inputs["seconds"]))
        return "slept"

    registry.add_thing("Dev1")
    add = registry.add_service
    add("Dev1", RemoteService("Every", "", EVERY_TYPE, BaseType.INFOTABLE, EVERY_TYPE, every))
    text = DataShape.of(F("text", BaseType.STRING))
    add("Dev1", RemoteService("Echo", "", text, BaseType.STRING, None, echo))
    size = DataShape.of(F("size", BaseType.INTEGER))
    add("Dev1", RemoteService("Big", "", size, BaseType.STRING, None, big))
    seconds = DataShape.of(F("seconds", BaseType.NUMBER))
    add("Dev1", RemoteService("Sleep", "", seconds, BaseType.STRING, None, sleep))
    return registry


def nested_broken(depth: int, request_id: int, session_id: int) -> bytes:
    """A POST whose params nest ``depth`` InfoTables, the leaf's type byte set to 0x99."""
    table = InfoTable(DataShape.of(F("leaf", BaseType.STRING)), [{"leaf": "LEAFMARK"}])
    for _ in range(depth):
        table = InfoTable(DataShape.of(F("t", BaseType.INFOTABLE)), [{"t": table}])
    request = Request(Method.POST, request_id, 0, session_id, EntityType.THING, "Dev1",
                      Characteristic.SERVICES, "Echo", (), table)  # fmt: skip
    data = bytearray(encode_message(request)[0])
    data[data.find(b"\x08LEAFMARK") - 1] = 0x99
    return bytes(data)
