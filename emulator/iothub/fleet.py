"""A fleet of simulated devices: lightweight asyncio MQTT clients of the emulator's device side.

Each device is one :class:`asyncio.Protocol` over TLS speaking MQTT 3.1.1 with the client side of
:mod:`emulator.iothub.mqtt.packets` (not the azure-iot-device SDK: no threads, a few KB per
device). Devices behave like SDK devices with handlers set (reference/iothub.md §2.1-2.4):

- TLS through :class:`~emulator.iothub.mqtt.tls.TlsAdapter` (small per-connection memory);
  CONNECT with CleanSession 0, user name ``{hub}/{id}/?api-version=2021-04-12`` and a SAS token
  built with :func:`~emulator.iothub.sas.make_token`; they subscribe to method requests, desired
  patches and twin responses only when the hub reports no session (so a reconnect relies on the
  hub's persistent session, as the SDK does), and renew their token by reconnecting 120 s before
  it expires.
- Methods, answered after ``answer_delay`` seconds: ``reboot`` → 200
  ``{"rebooting": true, "delaySeconds": <payload delaySeconds or 0>}``; ``setTelemetryInterval`` →
  200 ``{"intervalSeconds": n}`` for a positive number ``n``, else 400 with an error text; any other
  method → 200 echoing the request payload.
- A desired-properties patch is reported back (the same members, without ``$version``) as a
  reported-properties PATCH.

What the devices received is counted, per device: :attr:`Fleet.methods_received` (method requests,
each answered) and :attr:`Fleet.patches_received` (desired-properties patches), so a test can
prove that no device got an operation twice, or none.

Which devices start offline is deterministic: with ``n`` devices, share ``s`` and seed ``k``, the
device at index ``i`` is offline iff ``floor((j + 1) * s) > floor(j * s)`` where
``j = (i + k) mod n``, so exactly ``floor(n * s)`` devices, evenly spread (every 5th one for 20 %
with seed 0: indexes 4, 9, 14, ...). :meth:`Fleet.offline_at_start` lists them.

Every wait has a deadline (``connect_timeout``). Errors: :class:`FleetError`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import ssl
import time
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import structlog

from emulator.errors import EmulatorError
from emulator.iothub.mqtt import topics
from emulator.iothub.mqtt.packets import (
    ConnAck,
    Connect,
    Disconnect,
    MqttProtocolError,
    Packet,
    PacketReader,
    PingReq,
    Publish,
    SubAck,
    Subscribe,
)
from emulator.iothub.mqtt.tls import TlsAdapter
from emulator.iothub.sas import make_token

__all__ = ["Fleet", "FleetError", "method_answer"]

_log = structlog.get_logger("emulator.iothub.fleet")

_API_VERSION = "2021-04-12"
_RENEWAL_MARGIN = 120.0  # seconds before expiry, like the SDK


class FleetError(EmulatorError):
    """A simulated device could not connect (refused, TLS failure, timeout)."""


class Fleet:
    """N simulated devices connected to one hub's MQTT endpoint.

    Args:
        host: address to connect to (also the TLS server name checked against the cert).
        port: the endpoint's port (8883 for a real hub; tests may use any).
        ca_pem: PEM of the CA that signed the endpoint's certificate.
        hub_host: the hub's host name as put in user names and SAS resources.
        devices: ``(device_id, primary_key)`` pairs.
        offline_share: share of devices left offline by :meth:`start` (0..1).
        answer_delay: seconds a device waits before answering a method.
        seed: rotates which devices are offline.
        keepalive: MQTT keep-alive in seconds; devices ping at this interval.
        sas_ttl: lifetime of device SAS tokens in seconds (renewed 120 s early when > 120).
        connect_timeout: deadline of one device's TLS + CONNECT + SUBSCRIBE.
        max_handshakes: connections opened at once by :meth:`start`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        ca_pem: str,
        hub_host: str,
        devices: Sequence[tuple[str, str]],
        *,
        offline_share: float = 0.0,
        answer_delay: float = 0.0,
        seed: int = 0,
        keepalive: int = 60,
        sas_ttl: int = 3600,
        connect_timeout: float = 30.0,
        max_handshakes: int = 100,
    ) -> None:
        if not 0.0 <= offline_share <= 1.0:
            raise ValueError("offline_share must be within 0..1")
        self._host = host
        self._port = port
        self._ssl = ssl.create_default_context(cadata=ca_pem)
        self.hub_host = hub_host
        self._keys = dict(devices)
        self._order = [device_id for device_id, _ in devices]
        self.answer_delay = answer_delay
        self.keepalive = keepalive
        self.sas_ttl = sas_ttl
        self._connect_timeout = connect_timeout
        self._max_handshakes = max_handshakes
        self._offline = _offline_indexes(len(self._order), offline_share, seed)
        self._clients: dict[str, _DeviceClient] = {}
        self.methods_received: Counter[str] = Counter()
        self.patches_received: Counter[str] = Counter()
        self._renewals: set[asyncio.Task[None]] = set()

    def offline_at_start(self) -> list[str]:
        """The ids :meth:`start` leaves offline (see the module docstring for the rule)."""
        return [d for i, d in enumerate(self._order) if i in self._offline]

    def online_ids(self) -> list[str]:
        """Ids of the devices connected now, in the order they were given."""
        return [d for d in self._order if (c := self._clients.get(d)) and c.online]

    async def start(self) -> None:
        """Connect every device not chosen offline, ``max_handshakes`` at a time.

        Raises:
            FleetError: when some devices could not connect (the others stay connected).
        """
        gate = asyncio.Semaphore(self._max_handshakes)

        async def one(device_id: str) -> None:
            async with gate:
                await self._connect(device_id)

        wanted = [d for i, d in enumerate(self._order) if i not in self._offline]
        results = await asyncio.gather(*(one(d) for d in wanted), return_exceptions=True)
        failed = [(d, r) for d, r in zip(wanted, results, strict=True) if r is not None]
        _log.info("fleet started", online=len(wanted) - len(failed), failed=len(failed))
        if failed:
            device_id, error = failed[0]
            raise FleetError(f"{len(failed)} devices failed to connect; {device_id}: {error}")

    async def stop(self) -> None:
        """Disconnect every device (MQTT DISCONNECT, then close)."""
        for task in list(self._renewals):
            task.cancel()
        await asyncio.gather(
            *(self.set_online(d, False) for d in list(self._clients)), return_exceptions=True
        )
        _log.info("fleet stopped")

    async def set_online(self, device_id: str, online: bool) -> None:
        """Connect or disconnect one device.

        Raises:
            KeyError: the device is not part of the fleet.
            FleetError: it could not connect.
        """
        if device_id not in self._keys:
            raise KeyError(device_id)
        client = self._clients.get(device_id)
        if online:
            if client is None or not client.online:
                await self._connect(device_id)
            return
        if client is not None:
            self._clients.pop(device_id, None)
            await client.disconnect(self._connect_timeout)

    # --- internals ------------------------------------------------------------------------

    async def _connect(self, device_id: str) -> None:
        loop = asyncio.get_running_loop()
        expiry = int(time.time()) + self.sas_ttl
        password = make_token(f"{self.hub_host}/devices/{device_id}", self._keys[device_id], expiry)
        connect = Connect(
            client_id=device_id,
            keepalive=self.keepalive,
            clean_session=False,
            username=f"{self.hub_host}/{device_id}/?api-version={_API_VERSION}",
            password=password.encode(),
        )
        try:
            async with asyncio.timeout(self._connect_timeout):
                client = _DeviceClient(self, device_id)
                _, tls = await loop.create_connection(
                    lambda: TlsAdapter(
                        self._ssl,
                        client,
                        server_side=False,
                        server_hostname=self._host,
                        handshake_timeout=self._connect_timeout,
                    ),
                    self._host,
                    self._port,
                )
                await tls.handshake
                await client.handshake(connect)
        except TimeoutError:
            raise FleetError(
                f"{device_id}: no connection within {self._connect_timeout}s"
            ) from None
        except (OSError, ssl.SSLError, MqttProtocolError) as exc:
            raise FleetError(f"{device_id}: {exc}") from exc
        old = self._clients.get(device_id)
        self._clients[device_id] = client
        if old is not None and old is not client:
            old.abort()
        if self.sas_ttl > _RENEWAL_MARGIN:
            client.renew_at(loop.time() + self.sas_ttl - _RENEWAL_MARGIN)

    def _renew(self, client: _DeviceClient) -> None:
        if self._clients.get(client.device_id) is not client:
            return

        async def renew() -> None:
            await client.disconnect(self._connect_timeout)
            try:
                await self._connect(client.device_id)
            except FleetError as exc:
                _log.warning("sas renewal failed", device_id=client.device_id, error=str(exc))

        task = asyncio.get_running_loop().create_task(renew())
        self._renewals.add(task)
        task.add_done_callback(self._renewals.discard)


class _DeviceClient(asyncio.Protocol):
    """One simulated device's connection."""

    __slots__ = (
        "_closed",
        "_connack",
        "_fleet",
        "_loop",
        "_packet_ids",
        "_ping_timer",
        "_reader",
        "_renew_timer",
        "_suback",
        "_transport",
        "device_id",
        "online",
    )

    def __init__(self, fleet: Fleet, device_id: str) -> None:
        self._fleet = fleet
        self.device_id = device_id
        self._loop = asyncio.get_running_loop()
        self._reader = PacketReader()
        self._transport: asyncio.Transport | None = None
        self._connack: asyncio.Future[ConnAck] = self._loop.create_future()
        self._suback: asyncio.Future[SubAck] | None = None
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._packet_ids = itertools.cycle(range(1, 0x10000))
        self._ping_timer: asyncio.TimerHandle | None = None
        self._renew_timer: asyncio.TimerHandle | None = None
        self.online = False

    async def handshake(self, connect: Connect) -> None:
        """Send CONNECT, wait for CONNACK, subscribe when the hub kept no session."""
        self._send(connect)
        ack = await self._connack
        if ack.return_code != 0:
            self.abort()
            raise FleetError(f"{self.device_id}: CONNACK return code {ack.return_code}")
        if not ack.session_present:
            self._suback = self._loop.create_future()
            filters = (topics.METHODS_FILTER, topics.DESIRED_FILTER, topics.TWIN_RESPONSE_FILTER)
            self._send(Subscribe(next(self._packet_ids), tuple((f, 1) for f in filters)))
            suback = await self._suback
            if SubAck.FAILURE in suback.return_codes:
                self.abort()
                raise FleetError(f"{self.device_id}: subscription refused")
        self.online = True
        self._ping_timer = self._loop.call_later(self._fleet.keepalive, self._ping)

    def renew_at(self, when: float) -> None:
        self._renew_timer = self._loop.call_at(when, self._fleet._renew, self)

    async def disconnect(self, timeout: float) -> None:
        self.online = False
        self._send(Disconnect())
        if self._transport is not None:
            self._transport.close()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._closed)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        self.online = False
        if self._transport is not None:
            self._transport.abort()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            packets = self._reader.feed(data)
        except MqttProtocolError as exc:
            _log.warning("protocol error from hub", device_id=self.device_id, error=str(exc))
            self.abort()
            return
        for packet in packets:
            self._dispatch(packet)

    def connection_lost(self, exc: Exception | None) -> None:
        self.online = False
        for timer in (self._ping_timer, self._renew_timer):
            if timer is not None:
                timer.cancel()
        error = FleetError(f"{self.device_id}: connection closed by the hub")
        for fut in (self._connack, self._suback):
            if fut is not None and not fut.done():
                fut.set_exception(error)
                fut.exception()  # mark retrieved: the awaiting side may already be gone
        if not self._closed.done():
            self._closed.set_result(None)

    # behaviour

    def _dispatch(self, packet: Packet) -> None:
        if isinstance(packet, Publish):
            if packet.topic.startswith(topics.METHOD_REQUEST_PREFIX):
                self._on_method(packet)
            elif packet.topic.startswith(topics.DESIRED_PATCH_PREFIX):
                self._on_desired(packet)
        elif isinstance(packet, ConnAck):
            if not self._connack.done():
                self._connack.set_result(packet)
        elif isinstance(packet, SubAck) and self._suback is not None and not self._suback.done():
            self._suback.set_result(packet)
        # PUBACK, PINGRESP and twin responses need no action

    def _on_method(self, packet: Publish) -> None:
        name = packet.topic[len(topics.METHOD_REQUEST_PREFIX) :].split("/", 1)[0]
        rid = topics.property_bag(packet.topic).get("$rid", "")
        self._fleet.methods_received[self.device_id] += 1
        try:
            payload = json.loads(packet.payload) if packet.payload.strip() else None
        except ValueError:
            payload = None
        status, body = method_answer(name, payload)
        reply = Publish(
            topics.method_response_topic(status, rid),
            json.dumps(body).encode(),
            qos=1,
            packet_id=next(self._packet_ids),
        )
        if self._fleet.answer_delay > 0:
            # not tracked: _send drops the reply if the connection closed meanwhile
            self._loop.call_later(self._fleet.answer_delay, self._send, reply)
        else:
            self._send(reply)

    def _on_desired(self, packet: Publish) -> None:
        try:
            patch = json.loads(packet.payload)
        except ValueError:
            return
        if not isinstance(patch, dict):
            return
        self._fleet.patches_received[self.device_id] += 1
        reported = {k: v for k, v in patch.items() if not k.startswith("$")}
        rid = format(next(self._packet_ids), "x")
        self._send(
            Publish(
                topics.reported_patch_topic(rid),
                json.dumps(reported).encode(),
                qos=1,
                packet_id=next(self._packet_ids),
            )
        )

    def _ping(self) -> None:
        if self.online:
            self._send(PingReq())
            self._ping_timer = self._loop.call_later(self._fleet.keepalive, self._ping)

    def _send(self, packet: Packet) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(packet.encode())


def method_answer(name: str, payload: Any) -> tuple[int, Any]:
    """A simulated device's answer (status, payload) to a direct method."""
    if name == "reboot":
        delay = payload.get("delaySeconds", 0) if isinstance(payload, dict) else 0
        return 200, {"rebooting": True, "delaySeconds": delay}
    if name == "setTelemetryInterval":
        interval = payload.get("intervalSeconds") if isinstance(payload, dict) else None
        number = isinstance(interval, int | float) and not isinstance(interval, bool)
        if number and math.isfinite(float(interval or 0)) and float(interval or 0) > 0:
            return 200, {"intervalSeconds": interval}
        return 400, {"error": "intervalSeconds must be a positive number"}
    return 200, payload


def _offline_indexes(count: int, share: float, seed: int) -> frozenset[int]:
    if count == 0 or share <= 0:
        return frozenset()
    exact = Fraction(share).limit_denominator(1_000_000)  # 0.2 is 1/5, not 0.2000000000000000111
    p, q = exact.numerator, exact.denominator
    return frozenset(
        i for i in range(count) if ((i + seed) % count + 1) * p // q > ((i + seed) % count) * p // q
    )
