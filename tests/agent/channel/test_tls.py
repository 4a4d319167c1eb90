"""wss://: the server certificate is verified by default; ca_file adds a CA; verify_tls=false."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme

from agent.channel import AlwaysOnClient, ChannelNotReady, ChannelState
from tests.agent.channel.miniserver import MiniServer
from tests.support.channel import make_registry, running, settings


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_ca_file_is_trusted(
    ca: trustme.CA, server_tls: ssl.SSLContext, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with MiniServer(ssl=server_tls) as server:
        client = AlwaysOnClient(settings(server.url, ca_file=str(ca_file)), make_registry())
        async with running(client):
            assert client.state is ChannelState.READY
            assert server.link.bound


async def test_unknown_ca_is_refused_by_default(server_tls: ssl.SSLContext) -> None:
    async with MiniServer(ssl=server_tls) as server:
        client = AlwaysOnClient(settings(server.url), make_registry())
        async with running(client, ready=False):
            with pytest.raises(ChannelNotReady):
                await client.wait_ready(0.5)
            assert client.stats.connection_attempts >= 1
            assert server.links == []  # the handshake never completed


async def test_verify_tls_false_connects(server_tls: ssl.SSLContext) -> None:
    async with MiniServer(ssl=server_tls) as server:
        client = AlwaysOnClient(settings(server.url, verify_tls=False), make_registry())
        async with running(client):
            assert client.state is ChannelState.READY


async def test_given_ssl_context_is_used(ca: trustme.CA, server_tls: ssl.SSLContext) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with MiniServer(ssl=server_tls) as server:
        client = AlwaysOnClient(settings(server.url), make_registry(), ssl_context=context)
        async with running(client):
            await asyncio.sleep(0)
            assert client.state is ChannelState.READY
