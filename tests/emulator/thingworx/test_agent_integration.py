"""The agent's AlwaysOn client against the stand-in over real websockets on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from agent.alwayson import FieldDefinition
from agent.channel import AlwaysOnClient, ChannelNotReady, ChannelState
from emulator.thingworx.server import ThingWorxStandIn
from tests.support.channel import EVERY_TYPE, running
from tests.support.channel import STANDIN_GATEWAY as GATEWAY
from tests.support.channel import standin_registry as make_registry
from tests.support.channel import standin_settings as make_settings

F = FieldDefinition


@pytest.fixture
async def agent(standin: ThingWorxStandIn) -> AsyncIterator[AlwaysOnClient]:
    client = AlwaysOnClient(make_settings(standin.ws_url), make_registry())
    async with running(client):
        await standin.wait_metadata("Dev1", 5)
        yield client


async def rest(
    http: aiohttp.ClientSession, standin: ThingWorxStandIn, service: str, body: dict[str, Any]
) -> tuple[int, Any]:
    url = f"{standin.rest_url}/Things/Dev1/Services/{service}"
    async with http.post(url, json=body, headers={"Accept": "application/json"}) as r:
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, (await r.text()).strip()


async def test_auth_bind_and_metadata(standin: ThingWorxStandIn, agent: AlwaysOnClient) -> None:
    assert agent.state is ChannelState.READY
    assert standin.bound_things() == ["Dev1", GATEWAY]
    entry = standin.registry.get("Dev1")
    assert entry is not None and entry.metadata is not None
    assert {"Every", "Echo", "Big", "Sleep", "GetMetadata"} <= set(entry.metadata.services)
    assert entry.metadata.services["Every"].inputs == EVERY_TYPE


async def test_wrong_app_key_is_refused(standin: ThingWorxStandIn) -> None:
    client = AlwaysOnClient(make_settings(standin.ws_url, app_key="wrong"), make_registry())
    async with running(client, ready=False):
        with pytest.raises(ChannelNotReady):
            await client.wait_ready(0.5)
        assert standin.bound_things() == []


async def test_every_base_type_through_rest(
    standin: ThingWorxStandIn, agent: AlwaysOnClient, http: aiohttp.ClientSession
) -> None:
    table = {
        "dataShape": {"fieldDefinitions": {"k": {"name": "k", "baseType": "INTEGER"}}},
        "rows": [{"k": 1}, {"k": 2}],
    }
    body = {
        "s": "héllo",
        "n": 4,
        "i": -7,
        "l": 2**53 + 1,
        "b": False,
        "d": "2030-01-02T03:04:05.006+00:00",
        "j": {"list": [1, "two", None]},
        "t": table,
    }
    status, result = await rest(http, standin, "Every", body)
    assert status == 200, result
    (row,) = result["rows"]
    millis = int(datetime(2030, 1, 2, 3, 4, 5, 6000, tzinfo=UTC).timestamp() * 1000)
    assert row == {**body, "n": 4.0, "d": millis, "t": {**row["t"], "rows": table["rows"]}}
    assert row["t"]["dataShape"]["fieldDefinitions"]["k"]["baseType"] == "INTEGER"


async def test_100_concurrent_calls(
    standin: ThingWorxStandIn, agent: AlwaysOnClient, http: aiohttp.ClientSession
) -> None:
    results = await asyncio.gather(
        *(rest(http, standin, "Echo", {"text": f"call {i}"}) for i in range(100))
    )
    assert [(s, b["rows"][0]["result"]) for s, b in results] == [
        (200, f"call {i}") for i in range(100)
    ]


async def test_result_larger_than_the_chunk_size(
    standin: ThingWorxStandIn, agent: AlwaysOnClient, http: aiohttp.ClientSession
) -> None:
    status, body = await rest(http, standin, "Big", {"size": 300_000})
    assert status == 200 and body["rows"][0]["result"] == "z" * 300_000
    status, body = await rest(http, standin, "Echo", {"text": "q" * 100_000})
    assert status == 200 and body["rows"][0]["result"] == "q" * 100_000


async def test_link_dropped_mid_call_then_reconnect_and_rebind(
    standin: ThingWorxStandIn, agent: AlwaysOnClient, http: aiohttp.ClientSession
) -> None:
    loop = asyncio.get_running_loop()
    call = asyncio.create_task(rest(http, standin, "Sleep", {"seconds": 5}))
    await asyncio.sleep(0.3)
    (session,) = standin.sessions()
    started = loop.time()
    session.link.abort()
    status, text = await call
    assert status == 503 and "disconnected" in text
    assert loop.time() - started < 1.0  # the caller is told at once, not at its deadline
    # The agent reconnects, authenticates again and re-binds; the next call succeeds.
    await standin.wait_metadata("Dev1", 5)
    new_sessions = standin.sessions()
    assert len(new_sessions) == 1 and new_sessions[0] is not session
    status, body = await rest(http, standin, "Echo", {"text": "back"})
    assert status == 200 and body["rows"][0]["result"] == "back"


async def test_malformed_frame_to_the_agent(
    standin: ThingWorxStandIn, agent: AlwaysOnClient, http: aiohttp.ClientSession
) -> None:
    (session,) = standin.sessions()
    sid = (session.session_id or 0).to_bytes(4, "big")
    # A POST whose entity type byte is undefined, then pure junk shorter than a header.
    session.link.send(bytes.fromhex("01 03 00 00 FF 01 00 00 00 01") + sid + b"\x00\x99\x04Dev1")
    session.link.send(b"\x07junk")
    await asyncio.sleep(0.2)
    assert agent.state is ChannelState.READY
    status, body = await rest(http, standin, "Echo", {"text": "alive"})
    assert status == 200 and body["rows"][0]["result"] == "alive"
    assert standin.sessions() == [session]  # the same link survived
