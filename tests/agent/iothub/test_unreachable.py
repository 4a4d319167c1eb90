"""An unreachable hub gives one plain line naming the cause and the address, never requests' or
urllib3's text: against a real closed port, an unresolvable name, a real TLS server with a
certificate the agent does not trust, a plain-TCP server, a listener that never accepts and one
that never answers, all on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme
from pydantic import SecretStr

from agent.iothub import HubTimeout, HubUnreachable, IotHubClient, IotHubError
from agent.settings import IotHubSettings, JobSettings
from services.mapping import hub_failure

KEY = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ=="
THIRD_PARTY_WORDS = ("HTTPSConnectionPool", "Max retries", "NewConnectionError", "urllib3", "Errno")


def _client(host: str, ca_file: str = "", timeout: float = 2.0) -> IotHubClient:
    settings = IotHubSettings(
        connection_string=SecretStr(
            f"HostName={host};SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"
        ),
        ca_file=ca_file,
        request_timeout=timeout,
        read_retries=0,
    )
    return IotHubClient(settings, JobSettings())


async def _failure(client: IotHubClient) -> IotHubError:
    try:
        with pytest.raises(IotHubError) as caught:
            await client.get_job("x")
    finally:
        await client.close()
    for text in (str(caught.value), hub_failure(caught.value).message):
        assert "\n" not in text and not any(word in text for word in THIRD_PARTY_WORDS), text
    return caught.value


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_closed_port_is_connection_refused() -> None:
    port = _free_port()
    error = await _failure(_client(f"127.0.0.1:{port}"))
    assert isinstance(error, HubUnreachable)
    assert (
        str(error)
        == f"IoT Hub unreachable (connection refused at 127.0.0.1:{port}) for get job 'x'"
    )


async def test_unresolvable_name() -> None:
    error = await _failure(_client("no-such-hub.invalid:8443"))
    assert isinstance(error, HubUnreachable)
    text = str(error)
    # The resolver's own words follow the name (they differ with and without a network).
    assert text.startswith("IoT Hub unreachable (cannot resolve host 'no-such-hub.invalid'"), text
    assert text.endswith(") for get job 'x'"), text


@contextlib.asynccontextmanager
async def _server(tls: ssl.SSLContext | None) -> AsyncIterator[int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read(4096)
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_tls_server_with_an_untrusted_certificate(tmp_path: Path) -> None:
    served_by = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served_by.issue_cert("127.0.0.1").configure_cert(tls)
    trusted = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(trusted))
    async with _server(tls) as port:
        error = await _failure(_client(f"127.0.0.1:{port}", ca_file=str(trusted)))
    assert isinstance(error, HubUnreachable)
    assert str(error) == (
        f"TLS to IoT Hub failed (certificate not trusted at 127.0.0.1:{port}: unable to get "
        "local issuer certificate) for get job 'x': check iothub.ca_file and that the address "
        "is IoT Hub's HTTPS port"
    )


async def test_tls_certificate_for_another_name(tmp_path: Path) -> None:
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hub.example").configure_cert(tls)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with _server(tls) as port:
        error = await _failure(_client(f"127.0.0.1:{port}", ca_file=str(ca_file)))
    assert str(error).startswith(
        f"TLS to IoT Hub failed (certificate not trusted at 127.0.0.1:{port}: IP address mismatch"
    ), str(error)


async def test_plain_tcp_where_tls_is_expected() -> None:
    async with _server(None) as port:
        error = await _failure(_client(f"127.0.0.1:{port}"))
    assert isinstance(error, HubUnreachable)
    assert str(error).startswith("TLS to IoT Hub failed (")
    assert str(error).endswith(
        f" at 127.0.0.1:{port}) for get job 'x': check iothub.ca_file and that the address is "
        "IoT Hub's HTTPS port"
    )


@contextlib.contextmanager
def _listener_that_never_accepts() -> Iterator[int]:
    """A listening socket whose accept queue is full: further SYNs are dropped (Linux), so a
    connection attempt times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_no_connection_within_the_timeout() -> None:
    await asyncio.sleep(0.1)
    with _listener_that_never_accepts() as port:
        error = await _failure(_client(f"127.0.0.1:{port}", timeout=0.5))
    assert isinstance(error, HubTimeout) and not error.connected
    assert str(error) == (
        f"IoT Hub unreachable (no connection to 127.0.0.1:{port} within 0.5 s) for get job 'x'"
    )
    assert hub_failure(error).message == f"{error}; check the agent's network and iothub settings"


async def test_no_answer_within_the_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        error = await _failure(_client(f"127.0.0.1:{port}", timeout=0.5))
    assert isinstance(error, HubTimeout)
    assert str(error) == "IoT Hub did not answer get job 'x' within 0.5 s"
