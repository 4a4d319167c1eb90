"""``AlwaysOnClient.last_error`` and ``wait_error``: why the last attempt or link failed, for
each kind of failure, against the real websockets server (the mini AlwaysOn server)."""

from __future__ import annotations

import socket

import pytest

from agent.channel import AlwaysOnClient
from tests.agent.channel.miniserver import MiniServer
from tests.support.channel import make_registry, running, settings


async def test_none_while_all_is_well_and_wait_error_has_a_deadline() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(settings(server.url), make_registry())
        async with running(client):
            assert client.last_error is None
            with pytest.raises(TimeoutError):
                await client.wait_error(0.1)
        assert client.last_error is None  # stop() is not a failure


async def test_refused_key_is_authentication_refused() -> None:
    async with MiniServer(app_key="other") as server:
        client = AlwaysOnClient(settings(server.url), make_registry())
        async with running(client, ready=False):
            error = await client.wait_error(5)
        assert error.startswith("authentication refused: AUTH answered")
        assert client.last_error == error
        assert "test-key" not in error  # the key is never in it


async def test_refused_connection_is_link_failed_cannot_connect() -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    client = AlwaysOnClient(settings(f"ws://127.0.0.1:{port}/Thingworx/WS"), make_registry())
    async with running(client, ready=False):
        error = await client.wait_error(5)
    assert error.startswith("link failed: cannot connect:")
    assert "\n" not in error


async def test_close_by_the_server_names_code_and_reason() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(settings(server.url), make_registry())
        async with running(client):
            first = await server.wait_link(1)
            await first.ws.close(1001, "server restarting")
            error = await client.wait_error(5)
            await server.wait_link(2)
            await client.wait_ready(5)
            assert client.last_error == error  # kept after the reconnect
    assert error == "link lost: closed by the server (1001 server restarting)"


async def test_missing_pong_is_a_pong_timeout() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(
            settings(server.url, ping_interval=0.1, pong_timeout=0.3), make_registry()
        )
        async with running(client):
            first = await server.wait_link(1)
            first.ws.transport.pause_reading()
            error = await client.wait_error(5)
            first.ws.transport.resume_reading()
            await server.wait_link(2)
    assert error == "link lost: pong timeout (no pong within 0.3 s)"
