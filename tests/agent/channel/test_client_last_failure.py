"""``AlwaysOnClient.last_failure``: the kind, text and hint of the last failure, set wherever
``last_error`` is, for each kind a real server (or a real socket) can produce here."""

from __future__ import annotations

import asyncio
import socket
import ssl

import trustme

from agent.channel import AlwaysOnClient, ChannelError, LinkFailure
from agent.channel.errors import FAILURE_HINTS
from agent.errors import AgentError
from tests.agent.channel.miniserver import MiniServer
from tests.agent.channel.test_client import make_registry, running, settings


def _same_as_last_error(client: AlwaysOnClient) -> LinkFailure:
    failure = client.last_failure
    assert failure is not None
    assert failure.detail == client.last_error
    assert failure.hint == FAILURE_HINTS[failure.kind]
    return failure


def test_channel_errors_hang_under_the_agent_root() -> None:
    assert issubclass(ChannelError, AgentError)
    assert set(FAILURE_HINTS) >= {"auth_refused", "bind_refused", "tls", "refused", "dns",
                                  "timeout", "closed", "protocol", "config"}  # fmt: skip
    assert all(hint and "\n" not in hint for hint in FAILURE_HINTS.values())


async def test_none_while_all_is_well() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(settings(server.url), make_registry())
        async with running(client):
            assert client.last_failure is None
        assert client.last_failure is None  # stop() is not a failure


async def test_refused_key() -> None:
    async with MiniServer(app_key="other") as server:
        client = AlwaysOnClient(settings(server.url), make_registry())
        async with running(client, ready=False):
            await client.wait_error(5)
    failure = _same_as_last_error(client)
    assert failure.kind == "auth_refused"
    assert "thingworx.app_key" in failure.hint


async def test_refused_connection() -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    client = AlwaysOnClient(settings(f"ws://127.0.0.1:{port}/Thingworx/WS"), make_registry())
    async with running(client, ready=False):
        await client.wait_error(5)
    assert _same_as_last_error(client).kind == "refused"


async def test_unresolvable_host() -> None:
    client = AlwaysOnClient(settings("ws://no-such-host.invalid/Thingworx/WS"), make_registry())
    async with running(client, ready=False):
        await client.wait_error(20)
    assert _same_as_last_error(client).kind == "dns"


async def test_http_404_is_no_endpoint() -> None:
    async def answer_404(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_404, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = AlwaysOnClient(settings(f"ws://127.0.0.1:{port}/wrong"), make_registry())
        async with running(client, ready=False):
            await client.wait_error(5)
    finally:
        server.close()
        await server.wait_closed()
    failure = _same_as_last_error(client)
    assert failure.kind == "endpoint"
    assert "/Thingworx/WS" in failure.hint


async def test_untrusted_certificate() -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    async with MiniServer(ssl=context) as server:
        client = AlwaysOnClient(settings(server.url), make_registry())
        async with running(client, ready=False):
            await client.wait_error(5)
    failure = _same_as_last_error(client)
    assert failure.kind == "tls"
    assert "thingworx.ca_file" in failure.hint


async def test_close_by_the_server() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(settings(server.url), make_registry())
        async with running(client):
            first = await server.wait_link(1)
            await first.ws.close(1001, "server restarting")
            await client.wait_error(5)
            await server.wait_link(2)
            await client.wait_ready(5)
            failure = _same_as_last_error(client)  # kept after the reconnect
    assert failure.kind == "closed"
    assert failure.detail == "link lost: closed by the server (1001 server restarting)"


async def test_missing_pong() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(
            settings(server.url, ping_interval=0.1, pong_timeout=0.3), make_registry()
        )
        async with running(client):
            first = await server.wait_link(1)
            first.ws.transport.pause_reading()
            await client.wait_error(5)
            first.ws.transport.resume_reading()
            await server.wait_link(2)
    failure = _same_as_last_error(client)
    assert failure.kind == "timeout"
    assert failure.detail == "link lost: pong timeout (no pong within 0.3 s)"
