"""``AlwaysOnClient.last_error``, ``last_failure`` and ``wait_error``: why the last attempt or
link failed, for each kind of failure, against the real websockets server (the mini AlwaysOn
server) or a real socket; ``last_failure`` is the same failure as a value (kind, text, hint)."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest
import trustme

from agent.channel import AlwaysOnClient, ChannelError, LinkFailure
from agent.channel.errors import FAILURE_HINTS
from agent.errors import AgentError
from tests.agent.channel.miniserver import MiniServer
from tests.support.channel import make_registry, running, settings


def failure_of(client: AlwaysOnClient, kind: str) -> LinkFailure:
    """The client's last_failure, checked against last_error and its kind."""
    failure = client.last_failure
    assert failure is not None
    assert (failure.kind, failure.detail) == (kind, client.last_error)
    assert failure.hint == FAILURE_HINTS[kind]
    return failure


def test_channel_errors_hang_under_the_agent_root_and_every_kind_has_a_hint() -> None:
    assert issubclass(ChannelError, AgentError)
    assert set(FAILURE_HINTS) >= {"auth_refused", "bind_refused", "tls", "refused", "dns",
                                  "timeout", "closed", "protocol", "config"}  # fmt: skip
    assert all(hint and "\n" not in hint for hint in FAILURE_HINTS.values())


async def test_none_while_all_is_well_and_wait_error_has_a_deadline() -> None:
    async with MiniServer() as server:
        client = AlwaysOnClient(settings(server.url), make_registry())
        async with running(client):
            assert client.last_error is None
            with pytest.raises(TimeoutError):
                await client.wait_error(0.1)
            assert client.last_failure is None
        assert client.last_error is None  # stop() is not a failure
        assert client.last_failure is None


async def test_refused_key_is_authentication_refused() -> None:
    async with MiniServer(app_key="other") as server:
        client = AlwaysOnClient(settings(server.url), make_registry())
        async with running(client, ready=False):
            error = await client.wait_error(5)
        assert error.startswith("authentication refused: AUTH answered")
        assert client.last_error == error
        assert "test-key" not in error  # the key is never in it
        assert "thingworx.app_key" in failure_of(client, "auth_refused").hint


async def test_refused_connection_is_link_failed_cannot_connect() -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    client = AlwaysOnClient(settings(f"ws://127.0.0.1:{port}/Thingworx/WS"), make_registry())
    async with running(client, ready=False):
        error = await client.wait_error(5)
    assert error.startswith("link failed: cannot connect:")
    assert "\n" not in error
    failure_of(client, "refused")


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
    failure_of(client, "closed")


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
    failure_of(client, "timeout")


async def test_unresolvable_host_is_dns() -> None:
    client = AlwaysOnClient(settings("ws://no-such-host.invalid/Thingworx/WS"), make_registry())
    async with running(client, ready=False):
        await client.wait_error(20)
    failure_of(client, "dns")


async def test_http_404_to_the_upgrade_is_no_endpoint() -> None:
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
    assert "/Thingworx/WS" in failure_of(client, "endpoint").hint


async def test_untrusted_certificate_is_tls() -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    async with MiniServer(ssl=context) as server:
        client = AlwaysOnClient(settings(server.url), make_registry())
        async with running(client, ready=False):
            await client.wait_error(5)
    assert "thingworx.ca_file" in failure_of(client, "tls").hint
