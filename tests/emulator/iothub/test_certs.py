"""The emulator's CA and server certificate: made once, reused, renewed when the host changes."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509

from emulator.iothub.certs import ensure_certificates, server_ssl_context


def _sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.DNSName)} | {
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    }


def test_ca_is_a_ca_and_server_cert_covers_the_host(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path, "127.0.0.9")
    ca = x509.load_pem_x509_certificate(paths.ca_pem.read_bytes())
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert basic.ca and usage.key_cert_sign
    assert _sans(paths.server_pem) >= {"localhost", "127.0.0.1", "127.0.0.9"}
    assert paths.ca_pem == tmp_path / "ca.pem" and paths.server_key.exists()


def test_reused_then_renewed_for_another_host(tmp_path: Path) -> None:
    first = ensure_certificates(tmp_path, "localhost")
    ca_bytes, server_bytes = first.ca_pem.read_bytes(), first.server_pem.read_bytes()
    again = ensure_certificates(tmp_path, "localhost")
    assert again.server_pem.read_bytes() == server_bytes
    other = ensure_certificates(tmp_path, "hub.example.test")
    assert other.ca_pem.read_bytes() == ca_bytes  # clients that trust ca.pem keep working
    assert other.server_pem.read_bytes() != server_bytes
    assert "hub.example.test" in _sans(other.server_pem)


async def test_tls_handshake_verifies_against_the_ca(tmp_path: Path) -> None:
    host = "127.0.0.9"
    paths = ensure_certificates(tmp_path, host)
    server_ctx = server_ssl_context(paths)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hi")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, host, 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    client_ctx = ssl.create_default_context(cafile=str(paths.ca_pem))
    async with server:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=client_ctx, server_hostname=host), 10
        )
        assert await asyncio.wait_for(reader.read(), 10) == b"hi"
        writer.close()
    assert ipaddress.ip_address(host).is_loopback
