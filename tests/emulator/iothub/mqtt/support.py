"""Test support for the device side: TLS material, a raw MQTT client, SDK connection strings.

The twin store standing in for the hub core is :class:`tests.support.fakes.FakeTwins`.
"""

from __future__ import annotations

import asyncio
import errno
import random
import ssl
import time
from collections.abc import Callable
from typing import Any

import trustme

from emulator.iothub.clock import SystemClock
from emulator.iothub.mqtt import DeviceEndpoint
from emulator.iothub.mqtt.packets import Connect, Packet, PacketReader
from emulator.iothub.sas import make_token
from tests.support.fakes import FakeTwins, device_key

HUB = "hub.test"


CA = trustme.CA()
CA_PEM = CA.cert_pem.bytes().decode()


def server_context(*names: str) -> ssl.SSLContext:
    """A TLS server context with a certificate for ``names`` signed by :data:`CA`."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    CA.issue_cert(*names).configure_cert(ctx)
    return ctx


def client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    CA.configure_trust(ctx)
    return ctx


async def start_on_8883(endpoint: DeviceEndpoint) -> str:
    """Start ``endpoint`` on a fresh loopback address, port 8883 (the SDK's fixed port).

    Returns:
        The address, to be used as HostName in the device connection string.
    """
    for _ in range(40):
        address = f"127.0.0.{random.randint(20, 250)}"
        try:
            await endpoint.start(address, 8883, server_context(address))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        return address
    raise RuntimeError("no free loopback address for port 8883")


def connection_string(address: str, device_id: str) -> str:
    return f"HostName={address};DeviceId={device_id};SharedAccessKey={device_key(device_id)}"


def new_endpoint(twins: FakeTwins, **kwargs: Any) -> DeviceEndpoint:
    return DeviceEndpoint(twins, SystemClock(), **kwargs)


class RawClient:
    """A minimal MQTT client over TLS driven packet by packet (for protocol-level tests)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.packets = PacketReader()
        self.queue: list[Packet] = []

    @classmethod
    async def open(
        cls, address: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> RawClient:
        """Connect over TLS, trusting :data:`CA` unless another context is given."""
        reader, writer = await asyncio.open_connection(
            address, port, ssl=ssl_context or client_context(), server_hostname=address
        )
        return cls(reader, writer)

    def send(self, packet: Packet) -> None:
        self.writer.write(packet.encode())

    def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)

    async def receive(self, timeout: float = 5.0) -> Packet:
        """The next packet; raises EOFError when the server closed the connection."""
        async with asyncio.timeout(timeout):
            while not self.queue:
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError("closed by the server")
                self.queue.extend(self.packets.feed(data))
        return self.queue.pop(0)

    async def closed_by_server(self, timeout: float = 5.0) -> bool:
        """Wait for the server to close; True when it did within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        data = await self.reader.read(65536)
                    except (ConnectionError, ssl.SSLError):
                        return True
                    if not data:
                        return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        self.writer.close()
        try:
            async with asyncio.timeout(2):
                await self.writer.wait_closed()
        except (TimeoutError, ConnectionError, ssl.SSLError):
            pass


def device_connect(
    device_id: str,
    *,
    host: str = HUB,
    key: str | None = None,
    clean_session: bool = False,
    keepalive: int = 60,
    ttl: int = 3600,
) -> Connect:
    """The CONNECT an SDK device would send."""
    expiry = int(time.time()) + ttl
    token = make_token(f"{host}/devices/{device_id}", key or device_key(device_id), expiry)
    return Connect(
        client_id=device_id,
        keepalive=keepalive,
        clean_session=clean_session,
        username=f"{host}/{device_id}/?api-version=2021-04-12",
        password=token.encode(),
    )


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not reached within {timeout}s")
