"""Test support for the device side: an in-memory TwinStore, TLS material, a raw MQTT client.

The fake twin store stands in for the hub core (written separately); it follows the TwinStore
protocol of emulator/iothub/ports.py and records connection-state changes so tests can check them.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import errno
import random
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import trustme

from emulator.iothub.clock import SystemClock
from emulator.iothub.mqtt import DeviceEndpoint
from emulator.iothub.mqtt.packets import Connect, Packet, PacketReader
from emulator.iothub.ports import Predicate
from emulator.iothub.sas import make_token

HUB = "hub.test"


def device_key(device_id: str) -> str:
    """A deterministic base64 key per device."""
    return base64.b64encode(f"key-of-{device_id}".ljust(32, "#").encode()).decode()


class FakeTwins:
    """An in-memory TwinStore: versioned desired/reported, connection states."""

    def __init__(self, host: str, device_ids: Sequence[str]) -> None:
        self.host = host
        self.keys = {d: (device_key(d), "") for d in device_ids}
        self.desired: dict[str, dict[str, Any]] = {d: {"$version": 1} for d in device_ids}
        self.reported: dict[str, dict[str, Any]] = {d: {"$version": 1} for d in device_ids}
        self.connected: dict[str, bool] = {d: False for d in device_ids}
        self.state_changes: list[tuple[str, bool]] = []

    def hub_host(self) -> str:
        return self.host

    def device_keys(self, device_id: str) -> tuple[str, str] | None:
        return self.keys.get(device_id)

    def twin_properties(self, device_id: str) -> dict[str, Any]:
        return {
            "desired": copy.deepcopy(self.desired[device_id]),
            "reported": copy.deepcopy(self.reported[device_id]),
        }

    def patch_reported(self, device_id: str, patch: Mapping[str, Any]) -> int:
        reported = self.reported[device_id]
        _merge(reported, patch)
        reported["$version"] += 1
        return int(reported["$version"])

    def set_connection_state(self, device_id: str, connected: bool, when: datetime) -> None:
        self.connected[device_id] = connected
        self.state_changes.append((device_id, connected))

    def select_device_ids(self, condition: Predicate | None) -> list[str]:
        return sorted(self.keys)

    def apply_job_patch(
        self,
        device_ids: Sequence[str],
        tags: Mapping[str, Any] | None,
        desired: Mapping[str, Any] | None,
    ) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for device_id in device_ids:
            if desired is None:
                out[device_id] = {}
                continue
            twin = self.desired[device_id]
            _merge(twin, desired)
            twin["$version"] += 1
            out[device_id] = {**desired, "$version": twin["$version"]}
        return out

    def desired_patch(self, device_id: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a desired patch and return what to push (with the new ``$version``)."""
        return self.apply_job_patch([device_id], None, patch)[device_id]


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


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
