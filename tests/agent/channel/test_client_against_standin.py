"""The AlwaysOn client against the project's ThingWorx stand-in (emulator/thingworx), end to end:
REST call → stand-in → AlwaysOn → agent registry → back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from agent.channel import AlwaysOnClient, ChannelState
from emulator.thingworx.server import ThingWorxStandIn
from tests.support.channel import GATEWAY, make_registry, running, settings

KEY = "test-key"


@pytest.fixture
async def standin() -> AsyncIterator[ThingWorxStandIn]:
    server = ThingWorxStandIn(KEY, port=0, call_timeout=5.0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def rest_call(
    server: ThingWorxStandIn, thing: str, service: str, inputs: dict[str, Any]
) -> tuple[int, Any]:
    url = f"{server.rest_url}/Things/{thing}/Services/{service}"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json=inputs, headers={"appKey": KEY}) as reply,
    ):
        body = await reply.text()
        if reply.content_type == "application/json":
            return reply.status, json.loads(body)
        return reply.status, body


async def test_rest_calls_through_the_standin(standin: ThingWorxStandIn) -> None:
    client = AlwaysOnClient(settings(standin.ws_url), make_registry("Dev1"))
    async with running(client):
        await standin.wait_metadata("Dev1", 5)
        assert set(standin.bound_things()) == {GATEWAY, "Dev1"}
        status, body = await rest_call(standin, "Dev1", "Echo", {"text": "hello"})
        assert status == 200, body
        assert body["rows"] == [{"result": "Dev1:hello"}]
        # A result of 25 chunks crosses as multipart.
        status, body = await rest_call(standin, "Dev1", "Big", {"size": 200_000})
        assert status == 200 and body["rows"][0]["result"] == "x" * 200_000
        # The caller's mistake: a 400 with the registry's one-line message.
        status, body = await rest_call(standin, "Dev1", "Echo", {})
        assert status == 400 and "missing required input text" in body
        status, body = await rest_call(standin, "Dev1", "Fail", {})
        assert status == 500 and "throttling" in body
        # NotifyPropertyUpdate after the bind was answered (the stand-in logs it); calls counted.
        assert client.stats.snapshot().calls["Echo"] == 2
    assert standin.bound_things() == []  # stop() unbound everything


async def test_concurrent_rest_calls(standin: ThingWorxStandIn) -> None:
    client = AlwaysOnClient(settings(standin.ws_url), make_registry("Dev1"))
    async with running(client):
        await standin.wait_metadata("Dev1", 5)
        results = await asyncio.gather(
            *(rest_call(standin, "Dev1", "Echo", {"text": str(i)}) for i in range(30))
        )
        assert [body["rows"][0]["result"] for _, body in results] == [
            f"Dev1:{i}" for i in range(30)
        ]


async def test_standin_restart_reconnects_and_rebinds() -> None:
    first = ThingWorxStandIn(KEY, port=0, call_timeout=5.0)
    port = await first.start()
    client = AlwaysOnClient(settings(f"ws://127.0.0.1:{port}/Thingworx/WS"), make_registry("Dev1"))
    async with running(client):
        await first.wait_bound("Dev1", 5)
        await first.stop()
        second = ThingWorxStandIn(KEY, port=port, call_timeout=5.0)
        await second.start()
        try:
            await second.wait_metadata("Dev1", 5)
            await client.wait_ready(5)
            assert client.state is ChannelState.READY
            status, body = await rest_call(second, "Dev1", "Echo", {"text": "back"})
            assert status == 200 and body["rows"] == [{"result": "Dev1:back"}]
            assert client.stats.reconnects == 1
        finally:
            await client.stop()
            await second.stop()


async def test_wrong_key_is_refused_at_upgrade(standin: ThingWorxStandIn) -> None:
    client = AlwaysOnClient(settings(standin.ws_url, app_key="wrong"), make_registry())
    async with running(client, ready=False):
        await asyncio.sleep(0.4)
        assert client.state is not ChannelState.READY
        assert client.stats.connection_attempts >= 2
        assert standin.bound_things() == []
