"""Fixtures: a stand-in on 127.0.0.1 port 0 and C-SDK-like raw edges connected to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from emulator.thingworx.server import ThingWorxStandIn
from tests.emulator.thingworx.csdk_edge import CsdkEdge, RawSocket
from tests.support.channel import STANDIN_APP_KEY

APP_KEY = STANDIN_APP_KEY

EdgeFactory = Callable[..., Awaitable[CsdkEdge]]


@pytest.fixture
async def standin() -> AsyncIterator[ThingWorxStandIn]:
    server = ThingWorxStandIn(APP_KEY, port=0, call_timeout=2.0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def connect_edge(standin: ThingWorxStandIn) -> AsyncIterator[EdgeFactory]:
    edges: list[CsdkEdge] = []

    async def connect(
        *, auth: bool = True, deflate: bool = False, max_frame_size: int | None = 8192
    ) -> CsdkEdge:
        sock = await RawSocket.connect(
            standin.port, app_key=APP_KEY, deflate=deflate, max_frame_size=max_frame_size
        )
        edge = CsdkEdge(sock, chunk_size=max_frame_size or 8192)
        edges.append(edge)
        if auth:
            answer = await edge.auth(APP_KEY)
            assert answer.ok
        return edge

    yield connect
    for edge in edges:
        await edge.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"appKey": APP_KEY}) as session:
        yield session
